import csv
import json
import logging
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dst_cli.callbacks import SweepReport
from dst_cli.errors import UserError
from dst_cli.report import Report, build_report, main
from dst_cli.report.runs import collect_runs, find_run_dirs
from dst_cli.report.tables import epoch_stats, mean_std

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SWEEP_PLOTS = ["acc_vs_sparsity.png", "test_acc_curves.png", "explored_curves.png"]
EPOCHS = 3


def write_run(
    run_dir: Path,
    acq: str,
    sparsity: float,
    seed: int,
    best: float,
    status: str = "completed",
    extra_overrides: tuple[str, ...] = (),
    with_summary: bool = True,
) -> None:
    """A run dir as Hydra and the trainer write it."""
    overrides = [f"acq={acq}", f"sparsity={sparsity}", f"seed={seed}", *extra_overrides]
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"sparsity": sparsity, "seed": seed, "distribution": "erk", "acq": {"name": acq}}
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config))
    choices = {"acq": acq, "model": "vgg_small", "dataset": "digits", "schedule": "itop"}
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))

    epochs_done = EPOCHS if status == "completed" else 1
    rows = [
        {"epoch": epoch, "step": 10 * epoch, "test/acc": best * epoch / EPOCHS, "mask/explored": 0.1 * epoch}
        for epoch in range(1, epochs_done + 1)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if not with_summary:
        return
    summary = {
        "status": status, "error": None if status == "completed" else "non-finite loss at step 12",
        "run_dir": str(run_dir), "model": "vgg_small", "dataset": "digits", "acq": acq, "sparsity": sparsity,
        "distribution": "erk", "schedule": "itop", "seed": seed, "overrides": overrides,
        "epochs": EPOCHS, "epochs_completed": epochs_done, "steps": 10 * epochs_done,
        "final_test_acc": best - 0.0123456789, "final_test_loss": 0.5, "final_train_loss": 0.4,
        "best_test_acc": best, "best_epoch": epochs_done,
        "density": round(1 - sparsity, 6), "explored": 0.3 + seed / 100,
        "train_flops_ratio": 0.1234567890123456 + sparsity / 10, "inference_flops_ratio": 0.1,
        "wall_time_s": 123.456789012345 + seed, "world_size": 1, "effective_batch_size": 64,
        "layers": {
            "features.0.weight": {"numel": 216, "target_density": 0.5, "density": 0.5},
            "classifier.weight": {"numel": 1280, "target_density": 0.05, "density": 0.05},
        },
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


# (acq, sparsity, seed, best test accuracy) of the completed jobs 0-6 of the fake sweep
COMPLETED_JOBS = [
    ("ee", 0.9, 0, 0.80), ("ee", 0.9, 1, 0.84), ("rigl", 0.9, 0, 0.78), ("rigl", 0.9, 1, 0.80),
    ("ee", 0.95, 0, 0.70), ("ee", 0.95, 1, 0.74), ("rigl", 0.95, 0, 0.75),
]


def make_sweep(root: Path) -> Path:
    """Jobs 0-6 completed, 7 failed (its partial accuracy must not count), 8 died before summary.json."""
    sweep_dir = root / "multiruns" / "2024-01-01_00-00-00"
    for job, (acq, sparsity, seed, best) in enumerate(COMPLETED_JOBS):
        write_run(sweep_dir / str(job), acq, sparsity, seed, best)
    write_run(sweep_dir / "7", "rigl", 0.95, 1, 0.01, status="failed")
    write_run(sweep_dir / "8", "set", 0.95, 0, 0.5, with_summary=False)
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    return sweep_dir


@pytest.fixture
def sweep(tmp_path) -> Path:
    return make_sweep(tmp_path)


@pytest.fixture(scope="module")
def built_sweep(tmp_path_factory) -> tuple[Path, Report]:
    """The fake sweep with its report built once, for the tests that only read it."""
    sweep_dir = make_sweep(tmp_path_factory.mktemp("built"))
    return sweep_dir, build_report([sweep_dir], sweep_dir)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_sweep_report_writes_every_file(built_sweep):
    sweep, report = built_sweep
    names = ["summary.csv", "report.md", *SWEEP_PLOTS]
    assert [path.name for path in report.files] == names
    for name in SWEEP_PLOTS:
        assert (sweep / name).read_bytes().startswith(PNG_SIGNATURE)
    assert not (sweep / "layer_density.png").exists()  # only for a single run


def test_summary_csv_holds_summary_json_values_unrounded(built_sweep):
    sweep, _ = built_sweep
    rows = read_csv(sweep / "summary.csv")
    assert [Path(row["run_dir"]).name for row in rows] == [str(job) for job in range(9)]
    for row in rows[:8]:
        summary = json.loads((Path(row["run_dir"]) / "summary.json").read_text())
        for column in ("best_test_acc", "final_test_acc", "explored", "train_flops_ratio",
                       "inference_flops_ratio", "wall_time_s", "sparsity"):
            assert float(row[column]) == summary[column], column
        for column in ("model", "dataset", "acq", "distribution", "schedule", "status"):
            assert row[column] == summary[column], column
        assert int(row["seed"]) == summary["seed"]
        assert row["overrides"] == ""
    assert rows[7]["status"] == "failed"
    assert rows[7]["error"] == "non-finite loss at step 12"


def test_run_without_summary_is_listed_with_its_setting_from_hydra_files(built_sweep):
    sweep, _ = built_sweep
    row = read_csv(sweep / "summary.csv")[8]
    assert row["status"] == "no summary"
    setting = [row[column] for column in ("model", "dataset", "acq", "sparsity", "seed", "distribution", "schedule")]
    assert setting == ["vgg_small", "digits", "set", "0.95", "0", "erk", "itop"]
    assert row["best_test_acc"] == ""
    assert "no summary.json" in row["error"]


def test_mean_std_is_the_sample_standard_deviation():
    stat = mean_std([0.80, 0.84])
    assert stat.mean == pytest.approx(0.82)
    assert stat.std == pytest.approx(0.0282842712)  # sqrt((0.02^2 + 0.02^2) / 1)
    assert stat.n == 2
    assert mean_std([0.5]).std == 0.0


def test_tables_average_completed_runs_over_seeds(built_sweep):
    sweep, report = built_sweep
    [(title, [accuracy, explored, flops])] = report.sections
    assert title == "vgg_small / digits (distribution=erk, schedule=itop)"
    assert accuracy.header == ["acq", "90%", "95%"]
    # rigl at 95%: only seed 0 completed; the failed seed's 0.01 is left out
    assert accuracy.rows == [
        ["ee", "82.00 ± 2.83 (2)", "72.00 ± 2.83 (2)"],
        ["rigl", "79.00 ± 1.41 (2)", "75.00 ± 0.00 (1)"],
    ]
    assert explored.rows[0] == ["ee", "30.50 ± 0.71 (2)", "30.50 ± 0.71 (2)"]
    # 0.1234567890123456 + sparsity / 10 in percent
    assert flops.rows[1] == ["rigl", "21.35 ± 0.00 (2)", "21.85 ± 0.00 (1)"]


def test_best_accuracy_per_column_is_bold(built_sweep):
    sweep, report = built_sweep
    [(_, [accuracy, explored, flops])] = report.sections
    assert accuracy.bold == {(0, 1), (1, 2)}  # ee at 90%, rigl at 95%
    assert explored.bold == set() and flops.bold == set()
    markdown = (sweep / "report.md").read_text()
    assert "| ee | **82.00 ± 2.83 (2)** | 72.00 ± 2.83 (2) |" in markdown
    assert "| rigl | 79.00 ± 1.41 (2) | **75.00 ± 0.00 (1)** |" in markdown
    assert markdown.count("**") == 4


def test_report_lists_runs_that_did_not_complete(built_sweep):
    sweep, _ = built_sweep
    markdown = (sweep / "report.md").read_text()
    assert "9 runs: 7 completed, 1 failed, 1 no summary." in markdown
    listed = markdown.split("## Runs that did not complete")[1]
    assert "| 7 | rigl | 0.95 | 1 | failed | 1/3 | non-finite loss at step 12 |" in listed
    assert "| 8 | set | 0.95 | 0 | no summary | 3 | no summary.json" in listed


def test_curves_average_seeds_per_epoch(sweep):
    runs = [run for run in collect_runs([sweep]) if run.run_dir.name in ("0", "1")]  # ee at 90%
    stats = epoch_stats(runs, "test/acc")
    assert list(stats) == [1, 2, 3]
    assert stats[3].mean == pytest.approx(0.82)
    assert stats[1].mean == pytest.approx(0.82 / 3)
    assert stats[1].n == 2


def test_single_run_report_adds_layer_densities_and_curves(tmp_path):
    run_dir = tmp_path / "runs" / "2024-01-01_00-00-00"
    write_run(run_dir, "ee", 0.9, 0, 0.8)
    report = build_report([run_dir], run_dir)
    names = [path.name for path in report.files]
    assert names == ["summary.csv", "report.md", *SWEEP_PLOTS, "layer_density.png"]
    assert (run_dir / "layer_density.png").read_bytes().startswith(PNG_SIGNATURE)


def test_single_failed_run_is_still_shown(tmp_path):
    run_dir = tmp_path / "run"
    write_run(run_dir, "set", 0.8, 3, 0.6, status="interrupted")
    report = build_report([run_dir], tmp_path / "out")
    [(_, [accuracy, _, _])] = report.sections
    assert accuracy.rows == [["set", "60.00 ± 0.00 (1)"]]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"| {run_dir.resolve()} | set | 0.8 | 3 | interrupted | 1/3 |" in markdown


def test_all_runs_failed_gives_tables_and_list_but_no_plots(tmp_path):
    for job in range(2):
        write_run(tmp_path / "sweep" / str(job), "ee", 0.9, job, 0.1, status="failed")
    report = build_report([tmp_path / "sweep"], tmp_path / "sweep")
    assert [path.name for path in report.files] == ["summary.csv", "report.md"]
    assert len(report.incomplete.rows) == 2


def test_other_overrides_split_setups_and_acq_overrides_label_rows(tmp_path):
    write_run(tmp_path / "0", "ee", 0.9, 0, 0.8, extra_overrides=("acq.c=0.5", "optim.lr=0.05"))
    write_run(tmp_path / "1", "ee", 0.9, 0, 0.7, extra_overrides=("optim.lr=0.1",))
    report = build_report([tmp_path], tmp_path)
    titles = [title for title, _ in report.sections]
    assert titles == [
        "vgg_small / digits (distribution=erk, schedule=itop, optim.lr=0.05)",
        "vgg_small / digits (distribution=erk, schedule=itop, optim.lr=0.1)",
    ]
    assert report.sections[0][1][0].rows == [["ee (acq.c=0.5)", "80.00 ± 0.00 (1)"]]
    overrides = [row["overrides"] for row in read_csv(tmp_path / "summary.csv")]
    assert overrides == ["acq.c=0.5 optim.lr=0.05", "optim.lr=0.1"]


def test_runs_are_found_recursively_once_in_numeric_order(sweep):
    for job in (10, 9):  # 10 must sort after 9, not after 1
        write_run(sweep / str(job), "ee", 0.9, job, 0.5)
    names = [path.name for path in find_run_dirs(sweep.parent.parent)]
    assert names == [str(job) for job in range(11)]
    runs = collect_runs([sweep, sweep / "3", sweep.parent])  # overlapping paths: each run once
    assert len(runs) == 11


def test_partial_last_metrics_line_is_ignored(tmp_path):
    write_run(tmp_path / "run", "ee", 0.9, 0, 0.8)
    with (tmp_path / "run" / "metrics.jsonl").open("a") as file:
        file.write('{"epoch": 4, "test/ac')
    [run] = collect_runs([tmp_path / "run"])
    assert [row["epoch"] for row in run.metrics] == [1, 2, 3]


def test_dst_report_main_writes_into_the_sweep_and_prints_the_table(sweep, capsys):
    assert main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "Best test accuracy (%)" in printed
    assert "82.00 ± 2.83 (2)" in printed
    assert "Runs that did not complete" in printed
    for name in ["summary.csv", "report.md", *SWEEP_PLOTS]:
        assert (sweep / name).is_file()


def test_dst_report_out_option(sweep, tmp_path):
    assert main([str(sweep / "0"), str(sweep / "1"), "--out", str(tmp_path / "combined")]) == 0
    assert len(read_csv(tmp_path / "combined" / "summary.csv")) == 2


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda tmp: [str(tmp / "missing")], "does not exist"),
        (lambda tmp: [str(tmp / "empty")], "holds no runs"),
        (lambda tmp: [str(tmp / "empty"), str(tmp / "empty")], "--out"),
    ],
)
def test_dst_report_bad_paths_exit_non_zero_with_one_line(tmp_path, capsys, make_args, message):
    (tmp_path / "empty").mkdir()
    assert main(make_args(tmp_path)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert message in captured.err


def test_collect_runs_raises_user_error_for_missing_path(tmp_path):
    with pytest.raises(UserError, match="missing"):
        collect_runs([tmp_path / "missing"])


def test_sweep_callback_builds_the_report_in_the_sweep_dir(sweep, capsys):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    SweepReport().on_multirun_end(config)
    assert (sweep / "report.md").is_file()
    assert "Best test accuracy (%)" in capsys.readouterr().out


def test_sweep_callback_only_warns_when_the_report_fails(tmp_path, caplog):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "never_created")}}})
    with caplog.at_level(logging.WARNING, logger="dst_cli.callbacks"):
        SweepReport().on_multirun_end(config)
    assert "could not build the sweep report" in caplog.text
    assert "does not exist" in caplog.text
