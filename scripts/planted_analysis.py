"""Tables of the planted-teacher study: test accuracy and the share of the planted connections found.

    python scripts/planted_analysis.py choose-c C_GRID_DIR
    python scripts/planted_analysis.py report STUDY_DIR [--into FILE]

STUDY_DIR is laid out by scripts/planted_study.sh:
    ee_c/               DST-EE's c grid (tuning seeds); only its validation accuracy is used to choose c
    planted/<method>/   one sweep per method on the planted teacher; the folder name is the row label
    digits/<method>/    the same methods on digits (accuracy only: digits has no planted structure)
`choose-c` prints the c whose final validation accuracy, averaged over the grid's sparsities and seeds, is
highest (ties: the smaller c). `report` prints the tables and writes them into FILE (default
STUDY_DIR/results-planted.md) between two marker lines: text outside the markers (the reading) is kept,
and a file without the markers gets the block appended.

The found metrics (dst_cli.data.planted.connections_found / relevant_share) are computed from each run's
files only: the nonzero pattern of the model's first layer in checkpoints/last.pt (inactive weights are
exactly 0 there) and the teacher rebuilt from the dataset node of .hydra/config.yaml.
"""

import argparse
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from dst_cli.checkpoint import last_checkpoint, load_checkpoint
from dst_cli.data.planted import build_planted, connections_found, relevant_share, teacher_from_config
from dst_cli.errors import UserError
from dst_cli.report.runs import Run, collect_runs

PLANTED_TARGET = f"{build_planted.__module__}.{build_planted.__name__}"
BEGIN = "<!-- planted_analysis: generated tables, replaced on every run -->"
END = "<!-- planted_analysis: end -->"
SETUP_KEYS = ("model._target_", "trainer.epochs", "trainer.batch_size", "optim.lr", "schedule.update_interval",
              "distribution")


@dataclass(frozen=True)
class Result:
    method: str
    sparsity: float
    seed: int
    c: float | None  # acq.c of DST-EE runs
    test_acc: float
    val_acc: float | None
    found: float | None  # planted runs only
    relevant: float | None


def dataset_node(run: Run) -> dict:
    return {key.removeprefix("dataset."): value for key, value in run.config.items() if key.startswith("dataset.")}


def first_layer_pattern(run_dir: Path, num_features: int) -> Tensor:
    """Nonzero pattern (out, in) of the first 2-D weight of the model in checkpoints/last.pt."""
    path = last_checkpoint(run_dir)
    if path is None:
        raise UserError(f"{run_dir} has no checkpoints/last.pt; run the study with trainer.checkpoint=true")
    model = load_checkpoint(path)["model"]
    name, weight = next(((name, tensor) for name, tensor in model.items() if tensor.ndim == 2), (None, None))
    if weight is None or weight.shape[1] != num_features:
        shape = None if weight is None else tuple(weight.shape)
        raise UserError(f"{path}: the first 2-D weight ({name}, shape {shape}) does not read the "
                        f"{num_features} inputs; the found metrics need a first linear layer on the inputs")
    return weight != 0


def result(run: Run, method: str) -> Result:
    found = relevant = None
    dataset = dataset_node(run)
    if dataset.get("_target_") == PLANTED_TARGET:
        teacher = teacher_from_config(dataset)
        student = first_layer_pattern(run.run_dir, teacher.first.shape[1])
        found, relevant = connections_found(teacher.support, student), relevant_share(teacher.relevant, student)
    val_acc = run.metrics[-1].get("val/acc") if run.metrics else None
    return Result(method, run.setting["sparsity"], run.setting["seed"], run.config.get("acq.c"),
                  run.summary["final_test_acc"], val_acc, found, relevant)


def completed_runs(path: Path) -> list[Run]:
    runs = collect_runs([path])
    for run in runs:
        if run.status != "completed":
            print(f"skipped {run.run_dir}: {run.status} ({run.error})", file=sys.stderr)
    return [run for run in runs if run.status == "completed"]


def method_results(sweeps_dir: Path) -> list[Result]:
    """The completed runs of every method folder under sweeps_dir, labelled by the folder name (dense first)."""
    folders = [child for child in sweeps_dir.iterdir() if child.is_dir()] if sweeps_dir.is_dir() else []
    methods = sorted(folders, key=lambda folder: (folder.name != "dense", folder.name))
    return [result(run, method.name) for method in methods for run in completed_runs(method)]


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values) * scale:.{digits}f} ± {std * scale:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def by_method_and_sparsity(results: list[Result], metric: Callable[[Result], float | None]) -> dict:
    cells: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for item in results:
        if metric(item) is not None:
            cells[item.method][item.sparsity].append(metric(item))
    return cells


def method_table(results: list[Result], metric: Callable[[Result], float | None], scale: float, digits: int) -> str:
    """Methods as rows in order of appearance, sparsities as columns; cells mean ± std over seeds, (n=) where
    a cell has fewer seeds than the table."""
    cells = by_method_and_sparsity(results, metric)
    sparsities = sorted({item.sparsity for item in results})
    seeds = len({item.seed for item in results})

    def cell(values: list[float]) -> str:
        if not values:
            return "–"
        return mean_std(values, scale, digits) + ("" if len(values) == seeds else f" (n={len(values)})")

    rows = [[method, *(cell(cells[method][sparsity]) for sparsity in sparsities)] for method in cells]
    return markdown_table(["method", *(f"{sparsity:.1%}" for sparsity in sparsities)], rows)


def choose_c(results: list[Result]) -> float:
    """The c with the highest mean over sparsities of the mean final validation accuracy (ties: smaller c)."""
    if not results or any(item.val_acc is None for item in results):
        raise UserError("choose-c needs completed DST-EE runs with a validation split (dataset.val_size > 0)")
    cells = by_method_and_sparsity(results, lambda item: item.val_acc)
    c_of = {item.method: item.c for item in results}
    score = {c_of[label]: statistics.fmean(map(statistics.fmean, by_sparsity.values()))
             for label, by_sparsity in cells.items()}
    return max(sorted(score), key=score.__getitem__)


def c_results(c_grid_dir: Path) -> list[Result]:
    """The grid's runs in increasing c, each labelled by its c."""
    runs = sorted(completed_runs(c_grid_dir), key=lambda run: run.config.get("acq.c"))
    return [result(run, f"c={run.config.get('acq.c'):g}") for run in runs]


def setup_text(results: list[Result], study_dir: Path) -> str:
    """The setting of the planted runs, as overrides read from one run's config."""
    run = completed_runs(study_dir / "planted")[0]
    keys = [f"dataset.{key}" for key in dataset_node(run)] + list(SETUP_KEYS)
    setting = " ".join(f"{key}={run.config.get(key)}" for key in keys)
    seeds = ",".join(str(seed) for seed in sorted({item.seed for item in results}))
    return f"Setting: `{setting}`, seeds {seeds}. Cells: mean ± sample std over seeds."


def report(study_dir: Path) -> str:
    planted = method_results(study_dir / "planted")
    if not planted:
        raise UserError(f"{study_dir / 'planted'} holds no completed runs; run scripts/planted_study.sh first")
    sections = ["## Planted teacher", setup_text(planted, study_dir)]
    if (study_dir / "ee_c").is_dir():
        grid = c_results(study_dir / "ee_c")
        sections += [
            f"### DST-EE's c, chosen on the validation split (tuning seeds): c = {choose_c(grid):g}",
            "Final validation accuracy (%):", method_table(grid, lambda item: item.val_acc, 100, 1),
            "Planted connections found (%):", method_table(grid, lambda item: item.found, 100, 1),
        ]
    sections += [
        "### Test accuracy (%)", method_table(planted, lambda item: item.test_acc, 100, 1),
        "### Planted connections found (%)",
        "Share of the teacher's connections that some student unit of the first layer also has, each teacher "
        "unit matched to its best student unit (`connections_found`).",
        method_table(planted, lambda item: item.found, 100, 1),
        "### First-layer connections on relevant inputs (%)",
        "Share of the student's first-layer connections that read an input the teacher uses (`relevant_share`; "
        "a random mask and the dense network score the relevant share of the inputs).",
        method_table(planted, lambda item: item.relevant, 100, 1),
    ]
    digits = method_results(study_dir / "digits")
    if digits:
        sections += ["## Digits (experiment=quickstart)", "### Test accuracy (%)",
                     method_table(digits, lambda item: item.test_acc, 100, 2)]
    return "\n\n".join(sections) + "\n"


def write_between_markers(path: Path, block: str) -> None:
    """Replace the generated block in `path` (or append it), keeping all other text; atomic."""
    text = path.read_text() if path.exists() else ""
    generated = f"{BEGIN}\n{block}{END}\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + generated + rest.split(END, 1)[1].removeprefix("\n")
    else:
        text += ("\n" if text and not text.endswith("\n") else "") + generated
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("choose-c").add_argument("c_grid_dir", type=Path)
    report_parser = commands.add_parser("report")
    report_parser.add_argument("study_dir", type=Path)
    report_parser.add_argument("--into", type=Path, help="markdown file (default STUDY_DIR/results-planted.md)")
    args = parser.parse_args()
    try:
        if args.command == "choose-c":
            print(f"{choose_c(c_results(args.c_grid_dir)):g}")
            return
        block = report(args.study_dir)
        into = args.into or args.study_dir / "results-planted.md"
        write_between_markers(into, block)
        print(block + f"\nwritten into {into}")
    except (UserError, OSError) as error:
        print(f"planted_analysis: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
