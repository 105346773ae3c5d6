"""PNG plots of a report, drawn on matplotlib's Agg canvas (no display needed, no pyplot state).

Every figure names its setup (a panel title per section) and the number of distinct seeds behind each line
(the legend); the panels of one figure share their y-limits.
"""

import math
import statistics
import textwrap

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dst_cli.report.runs import Run
from dst_cli.report.sections import DENSE, Section, Stat, sparsity_text

PANEL_SIZE = (5.5, 3.8)  # inches
TITLE_LINE_CHARS = 70  # a longer panel title line is wrapped: it would be cut at the panel's edges
# (line style, marker) of the n-th method of a section: lines that lie on top of each other (SET and random
# explore alike) stay distinguishable; colours follow matplotlib's cycle in the same order
METHOD_STYLES = [("-", "o"), ("--", "s"), ("-.", "^"), (":", "v"), ("-", "D"), ("--", "P")]
DENSE_STYLE = {"color": "black", "linestyle": "--", "marker": None}
# A mean this far below the lower quartile of all means (percentage points) is off the accuracy axis: at
# least 3 interquartile ranges (Tukey's far-out fence), and at least MIN_COLLAPSE_GAP.
MIN_COLLAPSE_GAP = 5.0
NOTE_CHARS_PER_INCH = 13  # at font size 8
OFF_SCALE_BAND = 0.15  # share of the accuracy axis kept empty below the data for off-scale marks
SEED_NOTE = "Lines: mean over distinct seeds (n in the legend); bands and bars: ± sample std."


def _panel_grid(rows: int, columns: int, title: str, note: str) -> tuple[Figure, list[list]]:
    width = PANEL_SIZE[0] * columns + 1.5  # inches, with room for the legend
    figure = Figure(figsize=(width, PANEL_SIZE[1] * rows + 0.4), layout="constrained")
    figure.suptitle(title)
    figure.supxlabel(textwrap.fill(note, int(width * NOTE_CHARS_PER_INCH)), fontsize=8)
    return figure, figure.subplots(rows, columns, squeeze=False, sharey=True)


def acc_vs_sparsity_figure(sections: list[Section]) -> Figure:
    """Best test accuracy against sparsity, a line per method (dense: a horizontal line), error bars = std.

    The y-range holds every method but collapsed ones (a mean far below the rest, e.g. random at 98%):
    those are drawn as an arrow at the bottom edge with their value, so the methods that matter stay apart.
    """
    stats = {
        (index, method): {sparsity: section.stat(method, sparsity, "best_test_acc") for sparsity in section.sparsities}
        for index, section in enumerate(sections)
        for method in section.methods
    }
    means = [stat for cells in stats.values() for stat in cells.values() if stat is not None]
    low, high = readable_range(means)
    if any(stat.mean * 100 < low for stat in means):
        low -= OFF_SCALE_BAND * (high - low)  # an empty band for the marks, below every line kept on scale
    note = SEED_NOTE + " An arrow with a value: a mean below the axis (a collapsed method)."
    figure, axes = _panel_grid(len(sections), 1, "Best test accuracy vs sparsity", note)
    for index, (section, (axis,)) in enumerate(zip(sections, axes)):
        off_scale_per_x: dict[float, int] = {}
        for method in section.methods:
            points = [(sparsity * 100, stat) for sparsity, stat in stats[index, method].items() if stat is not None]
            style = _method_style(section, method)
            label = f"{method} ({seeds_text(section.seed_counts(method))})"
            if method == DENSE:
                stat = points[0][1]
                axis.axhline(stat.mean * 100, label=label, color=style["color"], linestyle=style["linestyle"])
                axis.axhspan((stat.mean - stat.std) * 100, (stat.mean + stat.std) * 100, color="black", alpha=0.08)
                continue
            axis.errorbar(
                [x for x, _ in points],
                [stat.mean * 100 for _, stat in points],
                yerr=[stat.std * 100 for _, stat in points],
                capsize=3,
                label=label,
                **style,
            )
            for x, stat in points:
                if stat.mean * 100 < low:
                    stacked = off_scale_per_x.get(x, 0)
                    off_scale_per_x[x] = stacked + 1
                    _mark_off_scale(axis, x, stat.mean * 100, low, style["color"], stacked)
        axis.set_ylim(low, high)
        axis.set_xticks([sparsity * 100 for sparsity in section.sparsities])
        _label(axis, section.title, "sparsity (%)", "best test accuracy (%)")
        _legend_outside(axis, [axis])
    return figure


def readable_range(stats: list[Stat]) -> tuple[float, float]:
    """y-limits in % holding every mean ± std except collapsed means (see MIN_COLLAPSE_GAP)."""
    means = [stat.mean * 100 for stat in stats]
    fence = -math.inf
    if len(means) >= 4:
        lower_quartile, _, upper_quartile = statistics.quantiles(means, n=4)
        fence = lower_quartile - max(3 * (upper_quartile - lower_quartile), MIN_COLLAPSE_GAP)
    kept = [stat for stat in stats if stat.mean * 100 >= fence]
    low = min((stat.mean - stat.std) * 100 for stat in kept)
    high = max((stat.mean + stat.std) * 100 for stat in kept)
    pad = max((high - low) * 0.08, 0.5)
    return low - pad, high + pad


def _mark_off_scale(axis, x: float, value: float, low: float, color: str, stacked: int) -> None:
    """An arrow onto the bottom edge at x, with the value above it; several at one x are stacked."""
    axis.annotate(
        f"{value:.1f}",
        xy=(x, low),
        xytext=(0, 14 + 11 * stacked),
        textcoords="offset points",
        ha="center",
        fontsize=8,
        color=color,
        arrowprops={"arrowstyle": "-|>", "color": color, "shrinkA": 0, "shrinkB": 0},
        annotation_clip=False,
    )


def curves_figure(
    sections: list[Section], metric_key: str, y_label: str, title: str, with_dense: bool = True
) -> Figure:
    """A metrics.jsonl value per epoch (in %), mean over seeds with a ±std band, a line per method.

    A row of panels per section, a panel per sparsity; dense (when with_dense) is drawn in every panel.
    """
    columns = max(len(section.sparsities) for section in sections)
    figure, axes = _panel_grid(len(sections), columns, title, SEED_NOTE)
    for section, row in zip(sections, axes):
        for axis in row[len(section.sparsities):]:
            axis.set_visible(False)
        methods = [method for method in section.methods if with_dense or method != DENSE]
        for sparsity, axis in zip(section.sparsities, row):
            for method in methods:
                stats = section.epoch_stats(method, sparsity, metric_key)
                label = f"{method} ({seeds_text(section.seed_counts(method))})"
                _plot_mean_curve(axis, stats, label, _method_style(section, method))
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.yaxis.set_tick_params(labelleft=True)
            _label(axis, f"{section.title}\nsparsity {sparsity_text(sparsity)}", "epoch", y_label)
        _legend_outside(row[len(section.sparsities) - 1], row[: len(section.sparsities)])
    return figure


def _plot_mean_curve(axis, stats: dict[int, Stat], label: str, style: dict) -> None:
    if not stats:
        return
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


def _method_style(section: Section, method: str) -> dict:
    """Dense: black dashed; the n-th sparse method: the n-th colour, line style and marker."""
    if method == DENSE:
        return DENSE_STYLE
    index = [other for other in section.methods if other != DENSE].index(method)
    linestyle, marker = METHOD_STYLES[index % len(METHOD_STYLES)]
    return {"color": f"C{index % 10}", "linestyle": linestyle, "marker": marker}


def seeds_text(counts: list[int]) -> str:
    """n=5, or n=2–5 when the method's cells have different numbers of seeds."""
    if not counts:
        return "n=0"
    return f"n={counts[0]}" if counts[0] == counts[-1] else f"n={counts[0]}–{counts[-1]}"


def layer_density_figure(run: Run) -> Figure:
    """Target and actual density of every masked layer of one run, as horizontal bars, layers with shapes."""
    layers = run.summary["layers"]
    names = [f"{name} {_size_text(layer)}" for name, layer in layers.items()]
    positions = range(len(names))
    figure = Figure(figsize=(8, 1.5 + 0.3 * len(names)), layout="constrained")
    axis = figure.subplots()
    bar_height = 0.4
    for offset, key, label in ((-bar_height / 2, "target_density", "target"), (bar_height / 2, "density", "actual")):
        bars = axis.barh(
            [position + offset for position in positions],
            [layer[key] * 100 for layer in layers.values()],
            height=bar_height,
            label=label,
        )
    axis.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)  # the actual density, in %
    axis.set_yticks(list(positions), names, fontsize=8)
    axis.invert_yaxis()  # first layer at the top
    setting = run.setting
    title = (
        f"Layer density: {setting['model']} / {setting['dataset']}, "
        f"acq {setting['acq']}, sparsity {sparsity_text(setting['sparsity'])}, seed {setting['seed']}"
    )
    _label(axis, title, "density (%)", "layer [weight shape]")
    axis.legend(fontsize=8)
    return figure


def _size_text(layer: dict) -> str:
    """[64×3×3×3] from the layer's shape; (1,728 weights) when summary.json gives only numel."""
    if isinstance(layer.get("shape"), list):
        return "[" + "×".join(map(str, layer["shape"])) + "]"
    return f"({layer['numel']:,} weights)" if isinstance(layer.get("numel"), int) else ""


def _label(axis, title: str, x_label: str, y_label: str) -> None:
    wrapped = "\n".join(textwrap.fill(line, TITLE_LINE_CHARS) for line in title.split("\n"))
    axis.set_title(wrapped, fontsize=9)
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.grid(alpha=0.3)


def _legend_outside(axis, axes: list) -> None:
    """One legend right of axis for the lines of all axes (a label once)."""
    handles = {}
    for each in axes:
        for handle, label in zip(*each.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        axis.legend(handles.values(), handles.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
