"""Hyperparameter search with Hydra's Optuna sweeper: trials maximise the validation accuracy each run returns,
failed trials are recorded as failed, the best parameters land in the sweep dir and the report lists the trials."""
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
SMALL = ["experiment=planted", "trainer.epochs=1", "dataset.train_size=512", "dataset.val_size=128",
         "dataset.test_size=128", "trainer.progress=none", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4",
         "hydra.sweeper.n_jobs=1", "hydra.sweeper.sampler.seed=0"]


def dst_train(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dst_cli", "-m", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_a_study_maximises_validation_accuracy_and_records_failed_trials(tmp_path):
    sweep_dir = tmp_path / "study"
    # a negative c is refused when the trial's run is built: that trial fails, the others complete
    result = dst_train(*SMALL, "acq.c=interval(-0.02, 0.01)", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert "Directions: ['maximize']" in result.stderr + result.stdout
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"]["acq.c"] >= 0
    report = (sweep_dir / "report.md").read_text()
    table = report.split("Tuning study in study")[1].split("##")[0]
    assert "best val/acc" in table and "| failed |" in table and "| completed |" in table
    failed = table.count("| failed |")
    assert failed == 3 and result.returncode == 1  # seed 0: c = -0.0035, 0.0015, -0.0019, -0.0037
    assert (sweep_dir / "trials_study.png").stat().st_size > 0


def test_tuning_without_a_validation_split_is_refused_in_one_line(tmp_path):
    result = dst_train(*SMALL, "dataset.val_size=0", "acq.c=tag(log, interval(1e-5, 1e-1))",
                       f"hydra.sweep.dir={tmp_path / 'study'}", cwd=tmp_path)
    assert result.returncode == 2 and not (tmp_path / "study").exists()
    assert result.stderr.strip().splitlines() == [
        "dst-train: error: tuning maximises the validation accuracy, and this dataset has no validation split (the "
        "test split is never tuned on); give it one, e.g. dataset.val_size=5000 for CIFAR"]
