"""PNG plots of a report, drawn on matplotlib's Agg canvas (no display needed, no pyplot state)."""

import textwrap
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dst_cli.report.runs import Run
from dst_cli.report.tables import Setup, epoch_stats, sparsity_text, summary_stat

PANEL_SIZE = (5.5, 3.8)  # inches
TITLE_LINE_CHARS = 70  # a longer panel title line is wrapped: it would be cut at the panel's edges
# (line style, marker) of the n-th acq of a setup: lines that lie on top of each other (SET and random
# explore alike) stay distinguishable; colours follow matplotlib's cycle in the same order
ACQ_STYLES = [("-", "o"), ("--", "s"), ("-.", "^"), (":", "v"), ("-", "D"), ("--", "P")]


def _panel_grid(rows: int, columns: int, title: str) -> tuple[Figure, list[list]]:
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    figure.suptitle(title)
    return figure, figure.subplots(rows, columns, squeeze=False)


def plot_acc_vs_sparsity(setups: list[Setup], path: Path) -> None:
    """Best test accuracy against sparsity, one line per acq, error bars = std over seeds."""
    figure, axes = _panel_grid(len(setups), 1, "Best test accuracy vs sparsity")
    for setup, (axis,) in zip(setups, axes):
        for index, acq in enumerate(setup.acqs):
            points = [
                (sparsity, summary_stat(setup.runs_of(acq, sparsity), "best_test_acc"))
                for sparsity in setup.sparsities
            ]
            points = [(sparsity, stat) for sparsity, stat in points if stat is not None]
            axis.errorbar(
                [sparsity * 100 for sparsity, _ in points],
                [stat.mean * 100 for _, stat in points],
                yerr=[stat.std * 100 for _, stat in points],
                capsize=3,
                label=acq,
                **_acq_style(index),
            )
        axis.set_xticks([sparsity * 100 for sparsity in setup.sparsities])
        _label(axis, setup.title, "sparsity (%)", "best test accuracy (%)")
    figure.savefig(path)


def plot_curves(setups: list[Setup], metric_key: str, y_label: str, title: str, path: Path) -> None:
    """A metrics.jsonl value per epoch (in %), mean over seeds with a ±std band, one line per acq.

    One row of panels per setup, one panel per sparsity.
    """
    columns = max(len(setup.sparsities) for setup in setups)
    figure, axes = _panel_grid(len(setups), columns, title)
    for setup, row in zip(setups, axes):
        for axis in row[len(setup.sparsities):]:
            axis.set_visible(False)
        for sparsity, axis in zip(setup.sparsities, row):
            for index, acq in enumerate(setup.acqs):
                _plot_mean_curve(axis, setup.runs_of(acq, sparsity), metric_key, acq, _acq_style(index))
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            _label(axis, f"{setup.title}\nsparsity {sparsity_text(sparsity)}", "epoch", y_label)
    figure.savefig(path)


def _plot_mean_curve(axis, runs: list[Run], metric_key: str, label: str, style: dict) -> None:
    stats = epoch_stats(runs, metric_key)
    epochs = list(stats)
    line = axis.plot(epochs, [stat.mean * 100 for stat in stats.values()], label=label, markersize=3, **style)[0]
    # the plotted values are shares: the band stops at 0% and 100%
    axis.fill_between(
        epochs,
        [max(stat.mean - stat.std, 0.0) * 100 for stat in stats.values()],
        [min(stat.mean + stat.std, 1.0) * 100 for stat in stats.values()],
        color=line.get_color(),
        alpha=0.2,
    )


def _acq_style(index: int) -> dict:
    linestyle, marker = ACQ_STYLES[index % len(ACQ_STYLES)]
    return {"color": f"C{index % 10}", "linestyle": linestyle, "marker": marker}


def plot_layer_density(run: Run, path: Path) -> None:
    """Target and actual density of every masked layer of one run, as horizontal bars."""
    layers = run.summary["layers"]
    names = list(layers)
    positions = range(len(names))
    figure = Figure(figsize=(8, 1.5 + 0.3 * len(names)), layout="constrained")
    axis = figure.subplots()
    bar_height = 0.4
    axis.barh(
        [position - bar_height / 2 for position in positions],
        [layers[name]["target_density"] * 100 for name in names],
        height=bar_height,
        label="target",
    )
    axis.barh(
        [position + bar_height / 2 for position in positions],
        [layers[name]["density"] * 100 for name in names],
        height=bar_height,
        label="actual",
    )
    axis.set_yticks(list(positions), names, fontsize=8)
    axis.invert_yaxis()  # first layer at the top
    setting = run.setting
    title = (
        f"Layer density: {setting['model']} / {setting['dataset']}, "
        f"acq {setting['acq']}, sparsity {sparsity_text(setting['sparsity'])}"
    )
    _label(axis, title, "density (%)", "layer")
    figure.savefig(path)


def _label(axis, title: str, x_label: str, y_label: str) -> None:
    wrapped = "\n".join(textwrap.fill(line, TITLE_LINE_CHARS) for line in title.split("\n"))
    axis.set_title(wrapped, fontsize=9)
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.grid(alpha=0.3)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(fontsize=8)
