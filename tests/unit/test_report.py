import csv
import json
import logging
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from dst_cli.errors import UserError
from dst_cli.report import Report, build_report, main, sweep_report
from dst_cli.report.runs import collect_runs, find_run_dirs
from dst_cli.report.sections import group_sections, mean_std
from dst_cli.report.tables import runs_to_compare
from dst_cli.schema import nested

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SWEEP_PLOTS = ["acc_vs_sparsity.png", "test_acc_curves.png", "explored_curves.png"]
EPOCHS = 3


nest = nested  # {"acq.c": 1} -> {"acq": {"c": 1}}


def write_run(
    run_dir: Path,
    acq: str,
    sparsity: float,
    seed: int,
    best: float,
    status: str = "completed",
    extra: dict | None = None,
    with_summary: bool = True,
) -> None:
    """A run dir as Hydra and the trainer write it; extra = more dotted config keys, given as overrides."""
    extra = extra or {}
    overrides = [f"acq={acq}", f"sparsity={sparsity}", f"seed={seed}", *(f"{k}={v}" for k, v in extra.items())]
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True)
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    schedule = extra.get("schedule", "itop")
    config = {
        "sparsity": sparsity, "seed": seed, "distribution": "erk", "dense_first_layer": False,
        "model.name": "vgg_small", "dataset.name": "digits", "dataset.root": "data", "acq.name": acq,
        "schedule.name": schedule, "schedule.update_interval": 20, "optim.name": "sgd", "optim.lr": 0.05,
        "trainer.epochs": EPOCHS, "trainer.progress": "auto", "trainer.device": "auto",
        **{key: value for key, value in extra.items() if key != "schedule"},
    }
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(nest(config)))
    choices = {"acq": acq, "model": "vgg_small", "dataset": "digits", "schedule": schedule}
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
        "distribution": "erk", "schedule": schedule, "seed": seed, "overrides": overrides,
        "epochs": EPOCHS, "epochs_completed": epochs_done, "steps": 10 * epochs_done,
        "final_test_acc": best - 0.0123456789, "final_test_loss": 0.5, "final_train_loss": 0.4,
        "best_test_acc": best, "best_epoch": epochs_done,
        "density": round(1 - sparsity, 6), "explored": 0.3 + seed / 100,
        "train_flops_ratio": 0.1234567890123456 + sparsity / 10, "inference_flops_ratio": 0.1,
        "wall_time_s": 123.456789012345 + seed, "world_size": 1, "effective_batch_size": 64,
        "layers": {
            "features.0.weight": {"shape": [8, 1, 3, 3], "numel": 72, "target_density": 0.5, "density": 0.5},
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


def sections_of(path: Path):
    return group_sections(runs_to_compare(collect_runs([path])))


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


def test_sweep_report_writes_every_file_whole(built_sweep):
    sweep, report = built_sweep
    names = ["summary.csv", "report.md", *SWEEP_PLOTS]
    assert [path.name for path in report.files] == names
    for name in SWEEP_PLOTS:
        assert (sweep / name).read_bytes().startswith(PNG_SIGNATURE)
    assert not (sweep / "layer_density.png").exists()  # only for a single run
    assert not list(sweep.glob(".*tmp*"))  # no temporary file left


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


def test_tables_rows_are_methods_columns_sparsities(built_sweep):
    sweep, report = built_sweep
    [(title, [accuracy, flops, explored])] = report.sections
    assert title == "vgg_small / digits (distribution=erk, 3 epochs, schedule=itop)"
    assert accuracy.header == flops.header == explored.header == ["method", "90%", "95%"]
    # rigl at 95%: only seed 0 completed (no ±); the failed seed's 0.01 is left out; DST-EE last, as in its paper
    assert accuracy.rows == [
        ["rigl-itop", "79.00 ± 1.41 (2)", "75.00 (1)"],
        ["ee", "82.00 ± 2.83 (2)", "72.00 ± 2.83 (2)"],
    ]
    # training FLOPs in the fake summaries: 0.1234567890123456 + sparsity / 10
    assert flops.rows[1] == ["ee", "0.213× / 0.100×", "0.218× / 0.100×"]
    assert explored.rows[1] == ["ee", "30.50 ± 0.71 (2)", "30.50 ± 0.71 (2)"]


def test_best_accuracy_per_sparsity_is_bold(built_sweep):
    sweep, report = built_sweep
    [(_, [accuracy, flops, explored])] = report.sections
    assert accuracy.bold == {(1, 1), (0, 2)}  # ee at 90%, rigl-itop at 95%
    assert flops.bold == explored.bold == set()
    markdown = (sweep / "report.md").read_text()
    assert "| ee | **82.00 ± 2.83 (2)** | 72.00 ± 2.83 (2) |" in markdown
    assert "| rigl-itop | 79.00 ± 1.41 (2) | **75.00 (1)** |" in markdown
    assert markdown.count("**") == 4


def test_report_lists_runs_that_did_not_complete(built_sweep):
    sweep, _ = built_sweep
    markdown = (sweep / "report.md").read_text()
    assert "9 runs: 7 completed, 1 failed, 1 no summary." in markdown
    listed = markdown.split("## Runs that did not complete (2)")[1]
    assert "| 7 | rigl | 0.95 | 1 | failed | 1/3 | non-finite loss at step 12 |" in listed
    assert "| 8 | set | 0.95 | 0 | no summary | 3 | no summary.json" in listed
    assert "Warnings" not in markdown and "could not be read" not in markdown


def test_curves_average_seeds_per_epoch(sweep):
    [section] = sections_of(sweep)
    stats = section.epoch_stats("ee", 0.9, "test/acc")
    assert list(stats) == [1, 2, 3]
    assert stats[3].mean == pytest.approx(0.82)
    assert stats[1].mean == pytest.approx(0.82 / 3)
    assert stats[1].n == 2


def test_repeated_seed_counts_once_as_the_mean_of_its_runs(tmp_path, capsys):
    # three runs of seed 0 (as a rerun with another progress mode makes) and one of seed 1
    for job, (seed, best, progress) in enumerate([(0, 0.80, "auto"), (0, 0.82, "log"), (0, 0.84, "bar"),
                                                   (1, 0.90, "auto")]):
        write_run(tmp_path / "sweep" / str(job), "ee", 0.9, seed, best, extra={"trainer.progress": progress})
    assert main([str(tmp_path / "sweep")]) == 0
    printed = capsys.readouterr().out
    markdown = (tmp_path / "sweep" / "report.md").read_text()
    # seed 0 -> mean(0.80, 0.82, 0.84) = 0.82; over the seeds 0.82 and 0.90: 86.00 ± 5.66 (2)
    assert "| ee | **86.00 ± 5.66 (2)** |" in markdown
    assert markdown.count("\n## vgg_small / digits") == 1  # trainer.progress is result-neutral: one section
    warning = "ee at 90%: seed 0 is repeated by 3 runs (0, 1, 2); counted as one seed, the mean of its runs"
    assert warning in markdown.split("## Warnings")[1]
    assert f"warning: vgg_small / digits (distribution=erk, 3 epochs, schedule=itop): {warning}" in " ".join(
        printed.split()
    )


def test_result_neutral_keys_do_not_split_sections_but_other_keys_do(tmp_path):
    write_run(tmp_path / "0", "ee", 0.9, 0, 0.8, extra={"trainer.device": "cpu", "dataset.root": "/a"})
    write_run(tmp_path / "1", "ee", 0.9, 1, 0.7, extra={"trainer.device": "cuda", "dataset.root": "/b"})
    write_run(tmp_path / "2", "ee", 0.9, 0, 0.6, extra={"optim.lr": 0.1})
    sections = sections_of(tmp_path)
    assert [section.title for section in sections] == [
        "vgg_small / digits (distribution=erk, 3 epochs, schedule=itop, optim.lr=0.05)",
        "vgg_small / digits (distribution=erk, 3 epochs, schedule=itop, optim.lr=0.1)",
    ]
    assert [len(section.runs) for section in sections] == [2, 1]


# conf/method/ of experiment=dstee_table (plus static and random regrowth): (acq, extra config) -> row name
PAPER_ROWS = {
    "dense": ("static", {"sparsity": 0.0}),
    "snip": ("static", {"init.name": "snip"}),
    "grasp": ("static", {"init.name": "grasp"}),
    "synflow": ("static", {"init.name": "synflow"}),
    "static": ("static", {"init.name": "random"}),
    "random": ("random", {}),
    "set": ("set", {}),
    "dsr": ("dsr", {"schedule.regrow_dropped": False}),  # what method=dsr records; True in every other row
    "snfs": ("snfs", {}),
    "rigl": ("rigl", {"schedule": "rigl", "schedule.drop_fraction": 0.3}),
    "mest": ("mest", {}),
    "rigl-itop": ("rigl", {}),
    "granet": ("rigl", {"schedule": "gradual"}),
    "ee": ("ee", {}),
}


def test_paper_table_rows_have_the_papers_names_in_the_papers_order(tmp_path):
    for job, name in enumerate(reversed(PAPER_ROWS)):  # the order of the runs must not matter
        acq, extra = PAPER_ROWS[name]
        config = {"init.name": "random", "schedule.regrow_dropped": True, **extra}
        write_run(tmp_path / str(job), acq, config.pop("sparsity", 0.9), 0, 0.8, extra=config)
    [section] = sections_of(tmp_path)
    assert {run.run_dir.name: section.rows[run.run_dir] for run in section.runs} == {
        str(job): name for job, name in enumerate(reversed(PAPER_ROWS))
    }
    assert section.methods == list(PAPER_ROWS)
    assert section.title == "vgg_small / digits (distribution=erk, 3 epochs)"  # schedule and init vary


def test_method_rows_add_a_schedule_other_than_the_published_one_and_differing_options(tmp_path):
    jobs = [
        ("ee", {"acq.c": 0.5}), ("ee", {"acq.c": 1e-3}), ("set", {}), ("set", {"schedule": "rigl"}),
        ("rigl", {"schedule": "rigl", "init.name": "snip"}), ("static", {"init.name": "snip", "schedule": "rigl"}),
        ("set", {"schedule": "gradual"}), ("rigl", {"schedule": "gradual", "init.name": "grasp"}),
    ]
    for job, (acq, extra) in enumerate(jobs):
        write_run(tmp_path / str(job), acq, 0.9, 0, 0.8, extra=extra)
    [section] = sections_of(tmp_path)
    assert [section.rows[run.run_dir] for run in section.runs] == [
        "ee (acq.c=0.5)", "ee (acq.c=0.001)", "set", "set-rigl", "rigl (init=snip)", "snip-rigl", "set-gradual",
        "granet (init=grasp)",
    ]
    assert section.methods == [
        "snip-rigl", "set", "set-gradual", "set-rigl", "rigl (init=snip)", "granet (init=grasp)",
        "ee (acq.c=0.001)", "ee (acq.c=0.5)",
    ]


def test_two_methods_that_would_share_a_name_are_both_named_in_full(tmp_path):
    # a custom acq registered as "snip" and SNIP pruning at initialization (acq=static init=snip)
    write_run(tmp_path / "0", "snip", 0.9, 0, 0.8)
    write_run(tmp_path / "1", "static", 0.9, 0, 0.7, extra={"init.name": "snip"})
    write_run(tmp_path / "2", "static", 0.9, 0, 0.6, extra={"init.name": "grasp"})
    [section] = sections_of(tmp_path)
    assert [section.rows[run.run_dir] for run in section.runs] == ["snip-itop", "static-itop (init=snip)", "grasp"]
    [(_, [accuracy, _, _])] = build_report([tmp_path], tmp_path).sections
    assert [row[:2] for row in accuracy.rows] == [  # a name not in the papers' order follows its acq's row
        ["snip-itop", "80.00 (1)"], ["grasp", "60.00 (1)"], ["static-itop (init=snip)", "70.00 (1)"],
    ]


def test_dense_runs_are_a_named_row_in_every_sparsity_column(tmp_path):
    write_run(tmp_path / "0", "ee", 0.0, 0, 0.95)
    write_run(tmp_path / "1", "rigl", 0.0, 1, 0.97)  # the acq of a dense run makes no difference
    write_run(tmp_path / "2", "ee", 0.9, 0, 0.90)
    write_run(tmp_path / "3", "ee", 0.98, 0, 0.80)
    report = build_report([tmp_path], tmp_path)
    [(_, [accuracy, flops, explored])] = report.sections
    assert accuracy.rows == [["dense", "96.00 ± 1.41 (2)", "96.00 ± 1.41 (2)"], ["ee", "90.00 (1)", "80.00 (1)"]]
    assert accuracy.bold == {(1, 1), (1, 2)}  # the best sparse method; dense is the reference
    assert flops.rows[0] == ["dense", "0.123× / 0.100×", "0.123× / 0.100×"]  # as the fake summaries say
    assert [row[0] for row in explored.rows] == ["ee"]  # every weight of a dense model is active
    assert "| dense | 96.00 ± 1.41 (2) | 96.00 ± 1.41 (2) |" in (tmp_path / "report.md").read_text()


def test_single_run_report_adds_layer_densities_with_shapes(tmp_path):
    run_dir = tmp_path / "runs" / "2024-01-01_00-00-00"
    write_run(run_dir, "ee", 0.9, 0, 0.8)
    report = build_report([run_dir], run_dir)
    names = [path.name for path in report.files]
    assert names == ["summary.csv", "report.md", *SWEEP_PLOTS, "layer_density.png"]
    assert (run_dir / "layer_density.png").read_bytes().startswith(PNG_SIGNATURE)


def test_layer_density_names_layers_with_their_shape_or_size(tmp_path):
    from dst_cli.report.plots import layer_density_figure

    write_run(tmp_path / "run", "ee", 0.9, 0, 0.8)
    [run] = collect_runs([tmp_path / "run"])
    [axis] = layer_density_figure(run).axes
    labels = [label.get_text() for label in axis.get_yticklabels()]
    assert labels == ["features.0.weight [8×1×3×3]", "classifier.weight (1,280 weights)"]


def test_accuracy_axis_leaves_a_collapsed_method_off_scale_and_marks_it(tmp_path):
    from dst_cli.report.plots import acc_vs_sparsity_figure

    accuracies = {"ee": (0.97, 0.96, 0.95), "rigl": (0.968, 0.957, 0.945), "set": (0.965, 0.95, 0.94),
                  "random": (0.96, 0.94, 0.30)}
    for acq, values in accuracies.items():
        for sparsity, best in zip((0.9, 0.95, 0.98), values):
            for seed in (0, 1):
                write_run(tmp_path / f"{acq}-{sparsity}-{seed}", acq, sparsity, seed, best + seed * 0.002)
    write_run(tmp_path / "other" / "0", "ee", 0.9, 0, 0.99, extra={"optim.lr": 0.1})
    figure = acc_vs_sparsity_figure(sections_of(tmp_path))
    first, second = figure.axes[:2]
    low, high = first.get_ylim()
    assert second.get_ylim() == (low, high)  # panels share y-limits
    assert 90 < low < 94 and 99.2 < high < 100  # random's 30.1% at 98% does not stretch the axis
    [marker] = [text for text in first.texts]
    assert marker.get_text() == "30.1" and marker.xy == (98.0, low)
    legend = [text.get_text() for text in first.get_legend().get_texts()]
    assert legend == ["random (n=2)", "set (n=2)", "rigl-itop (n=2)", "ee (n=2)"]


def test_single_failed_run_is_still_shown(tmp_path):
    run_dir = tmp_path / "run"
    write_run(run_dir, "set", 0.8, 3, 0.6, status="interrupted")
    report = build_report([run_dir], tmp_path / "out")
    [(_, [accuracy, _, _])] = report.sections
    assert accuracy.rows == [["set", "60.00 (1)"]]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert f"| {run_dir.resolve()} | set | 0.8 | 3 | interrupted | 1/3 |" in markdown


def test_all_runs_failed_gives_tables_and_list_but_no_plots(tmp_path):
    for job in range(2):
        write_run(tmp_path / "sweep" / str(job), "ee", 0.9, job, 0.1, status="failed")
    report = build_report([tmp_path / "sweep"], tmp_path / "sweep")
    assert [path.name for path in report.files] == ["summary.csv", "report.md"]
    assert len(report.incomplete.rows) == 2


def test_refused_job_record_is_listed_and_counted(tmp_path, capsys):
    """A sweep job refused for a bad value leaves only summary.json: status failed, the error, its overrides."""
    sweep_dir = tmp_path / "sweep"
    write_run(sweep_dir / "0", "ee", 0.9, 0, 0.8)
    (sweep_dir / "1").mkdir()
    record = {"status": "failed", "error": "sparsity=1.5 is invalid; allowed: a number in [0, 1)",
              "overrides": ["experiment=quickstart", "sparsity=1.5"]}
    (sweep_dir / "1" / "summary.json").write_text(json.dumps(record))
    assert sweep_report(sweep_dir) == 1
    assert "2 runs: 1 completed, 1 failed" in capsys.readouterr().out
    markdown = (sweep_dir / "report.md").read_text()
    assert "2 runs: 1 completed, 1 failed." in markdown
    assert "| 1 | None | 1.5 | None | failed | 0 | sparsity=1.5 is invalid; allowed: a number in [0, 1) |" in (
        markdown.split("## Runs that did not complete (1)")[1]
    )
    row = read_csv(sweep_dir / "summary.csv")[1]
    assert (row["status"], row["sparsity"], row["overrides"]) == ("failed", "1.5", "experiment=quickstart")
    assert row["error"] == record["error"]


def test_runs_are_found_recursively_once_in_numeric_order(sweep):
    for job in (10, 9):  # 10 must sort after 9, not after 1
        write_run(sweep / str(job), "ee", 0.9, job, 0.5)
    names = [path.name for path in find_run_dirs(sweep.parent.parent)]
    assert names == [str(job) for job in range(11)]
    runs = collect_runs([sweep, sweep / "3", sweep.parent])  # overlapping paths: each run once
    assert len(runs) == 11


TORN_ROW = '{"epoch": 4, "test/ac'
# job -> (file, what is written into it (None: a torn row appended), problem listed, run still in the tables)
BROKEN_FILES = {
    1: ("summary.json", "[1, 2]", "summary.json: holds a list, not a JSON object", "no"),
    2: ("summary.json", b"\xff\xfe{}", "summary.json: not UTF-8 text (byte 0)", "no"),
    3: ("summary.json", '{"status": "compl', "summary.json: not valid JSON (Unterminated string", "no"),
    4: ("summary.json", '{"status": "completed", "best_test_acc": "high"}',
        "summary.json: best_test_acc='high' is not a number", "no"),
    5: (".hydra/config.yaml", "sparsity: [0.9", ".hydra/config.yaml: not valid YAML", "no"),
    6: (".hydra/config.yaml", "- 1\n- 2\n", ".hydra/config.yaml: holds a list, not a mapping", "no"),
    7: (".hydra/overrides.yaml", "{a: 1}", ".hydra/overrides.yaml: not a list of overrides", "yes"),
    8: (".hydra/overrides.yaml", "['sparsity=[0.9']", ".hydra/overrides.yaml: no viable alternative", "yes"),
    9: (".hydra/hydra.yaml", "\t:", ".hydra/hydra.yaml: not valid YAML", "yes"),
    10: ("metrics.jsonl", None, "metrics.jsonl: last line torn (a kill mid-write?), left out", "yes"),
}


def test_unreadable_files_are_listed_with_their_reason(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    for job, (file, content, _, _) in {0: (None, None, None, None), **BROKEN_FILES}.items():
        write_run(sweep_dir / str(job), "ee", 0.9, job, 0.8)
        broken = sweep_dir / str(job)
        if file == ".hydra/overrides.yaml":  # summary.json's own copy comes first
            summary = json.loads((broken / "summary.json").read_text())
            del summary["overrides"]
            (broken / "summary.json").write_text(json.dumps(summary))
        if file is not None and content is None:
            with (broken / file).open("a") as handle:
                handle.write(TORN_ROW)
        elif file is not None:
            (broken / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main([str(sweep_dir)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "Files that could not be read" in captured.out
    markdown = (sweep_dir / "report.md").read_text()
    listed = markdown.split("## Files that could not be read")[1].splitlines()
    for job, (_, _, problem, in_tables) in BROKEN_FILES.items():
        [row] = [line for line in listed if line.startswith(f"| {job} |")]
        assert problem in row and row.endswith(f"| {in_tables} |"), row
    # in the tables: job 0 and the four broken runs whose summary and config are readable, one seed each
    assert "| ee | **80.00 ± 0.00 (5)** |" in markdown
    assert "11 runs: 7 completed, 4 unreadable." in markdown


def test_torn_metrics_line_is_left_out_and_named(tmp_path):
    write_run(tmp_path / "run", "ee", 0.9, 0, 0.8)
    with (tmp_path / "run" / "metrics.jsonl").open("a") as file:
        file.write('[1]\n{"epoch": 4, "test/ac')
    [run] = collect_runs([tmp_path / "run"])
    assert [row["epoch"] for row in run.metrics] == [1, 2, 3]
    assert run.problems == (
        "metrics.jsonl: last line torn (a kill mid-write?), left out",
        "metrics.jsonl: line 4 not an epoch row, left out",
    )


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
        (lambda tmp: [str(tmp / "run"), "--out", str(tmp / "notes.txt")], "notes.txt is a file"),
        (lambda tmp: [str(tmp / "run"), "--out", str(tmp / "notes.txt" / "report")], "cannot create the report"),
    ],
)
def test_dst_report_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, make_args, message):
    (tmp_path / "empty").mkdir()
    write_run(tmp_path / "run", "ee", 0.9, 0, 0.8)
    (tmp_path / "notes.txt").write_text("mine")
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    assert main(make_args(tmp_path)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("dst-report: error: ") and message in captured.err
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_dst_report_unwritable_out_dir_is_one_line(tmp_path, capsys):
    write_run(tmp_path / "run", "ee", 0.9, 0, 0.8)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if (locked / "probe").exists() or _can_write(locked):
            pytest.skip("permissions are not enforced for this user (root)")
        assert main([str(tmp_path / "run"), "--out", str(locked)]) == 2
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "Permission denied" in err
    assert list(locked.iterdir()) == []


def test_report_file_that_cannot_be_replaced_is_one_line_and_leaves_no_temporary(tmp_path, capsys):
    write_run(tmp_path / "run", "ee", 0.9, 0, 0.8)
    (tmp_path / "out" / "report.md").mkdir(parents=True)  # a folder where the report file goes
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "report.md" in err
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["report.md", "summary.csv"]


def _can_write(folder: Path) -> bool:
    try:
        (folder / "probe").write_text("")
    except PermissionError:
        return False
    (folder / "probe").unlink()
    return True


def test_collect_runs_raises_user_error_for_missing_path(tmp_path):
    with pytest.raises(UserError, match="missing"):
        collect_runs([tmp_path / "missing"])


def test_the_sweep_report_is_built_in_the_sweep_dir(sweep, capsys):
    assert sweep_report(sweep) == 2  # runs that did not complete
    assert (sweep / "report.md").is_file()
    assert "Best test accuracy (%)" in capsys.readouterr().out


def test_the_sweep_report_only_warns_when_it_fails(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dst_cli"):
        assert sweep_report(tmp_path / "never_created") == 0
    assert "could not build the sweep report" in caplog.text
    assert "does not exist" in caplog.text


def test_the_sweep_report_callback_builds_the_report_in_the_sweep_dir(sweep, capsys):
    from dst_cli.callbacks import SweepReport

    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert (sweep / "report.md").is_file() and "Best test accuracy (%)" in capsys.readouterr().out
