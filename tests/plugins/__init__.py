"""A user's own model, acquisition function and dataset, importable as tests.plugins.* (repo root on the path):
the CLI tests run them through `model._target_`, `acq._target_` and `dataset._target_`."""
