"""Figures and tables of SEIS scores, pure: depth-wise curves, layer x epoch heatmaps, TensorBoard
layouts and the rows of the CSV of every score. Where they go (loggers, files) is
:mod:`seis_lightning.trainer_io`'s job.

Scores come as ``{layer: {score: value}}`` for one transformation and one scoring (layers in depth
order), and a history as a list of ``(epoch, scores)``. Figures are ``matplotlib.figure.Figure``
objects built without pyplot, so importing this module never changes matplotlib's backend.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from seis_lightning.functional import SCORES
from seis_lightning.sweeps import ALIASING, SHIFT_FAMILY, AliasingGap, Stride, aliasing_gap, sweep_families

Scores = Mapping[str, Mapping[str, float]]
COLOURS = {"equivariance": "tab:blue", "invariance": "tab:red", "channel_invariance": "tab:green"}
MARGIN = ("", "_lower", "_upper")  # value, lower and upper tags of a margin chart
CSV_COLUMNS = (
    "stage",
    "epoch",
    "global_step",
    "step",
    "transform",
    "family",
    "magnitude",
    "layer",
    "score",
    "value",
    "null",
    "se",
    "reason",
    "stride",
)


def progress_label(entry: Mapping[str, Any]) -> str:
    """How far a scored model was trained, in the same words everywhere (the terminal, figure titles,
    ``analyze``): ``epoch 12, step 539``: epochs trained (not Lightning's 0-based ``current_epoch``)
    and the step of its rows in TensorBoard and ``seis_scores.csv`` (Lightning's logging step: one
    below ``global_step``, the optimizer steps, at an epoch's end)."""
    return f"epoch {entry['epoch']:g}, step {entry['step']}"


def depth_figure(scores: Scores, title: str = "") -> Figure:
    """Each score (solid, with ±2 SE bars when known) and its null (dotted) against depth.

    Sized for a TensorBoard image card (about 300 px wide): few inches, so that the text stays
    readable when the card scales the image down, and one legend entry per score plus one for the nulls.
    """
    from matplotlib.lines import Line2D

    layers = list(scores)
    figure = Figure(figsize=(max(4.0, 0.45 * len(layers) + 2.2), 3.2), layout="constrained")
    axes = figure.add_subplot()
    x = np.arange(len(layers))
    for score in SCORES:
        colour = COLOURS[score]
        values = [scores[layer][score] for layer in layers]
        errors = [2 * scores[layer].get(f"{score}_se", math.nan) for layer in layers]
        if any(math.isfinite(e) for e in errors):
            axes.errorbar(x, values, yerr=errors, fmt="o-", color=colour, capsize=3, label=f"{score} ± 2 SE")
        else:
            axes.plot(x, values, "o-", color=colour, label=score)
        null = [scores[layer].get(f"{score}_null", math.nan) for layer in layers]
        axes.plot(x, null, ":", color=colour, alpha=0.7)
    axes.set_xticks(x, layers, rotation=30, ha="right")
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("score")
    axes.set_title(title, fontsize="medium")
    axes.grid(alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    handles.append(Line2D([], [], linestyle=":", color="grey"))
    labels.append("null (dotted)")
    figure.legend(handles, labels, fontsize="small", loc="outside lower center", ncol=2, frameon=False)
    return figure


def heatmap_figure(history: Sequence[tuple[float, Scores]], score: str, title: str = "") -> Figure:
    """A layer x epoch heatmap of one score (rows in depth order, columns the scorings, labelled by epoch)."""
    layers = list(history[-1][1]) if history else []
    epochs = [f"{epoch:g}" for epoch, _ in history]
    values = np.array([[h.get(layer, {}).get(score, math.nan) for _, h in history] for layer in layers], dtype=float)
    figure = Figure(figsize=(max(4.0, 0.35 * len(epochs) + 2.5), max(2.5, 0.4 * len(layers) + 1)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(values.reshape(len(layers), len(epochs)), aspect="auto", vmin=0, vmax=1, cmap="viridis")
    axes.set_yticks(range(len(layers)), layers)
    tick_every = max(1, len(epochs) // 12)
    axes.set_xticks(range(0, len(epochs), tick_every), epochs[::tick_every])
    axes.set_xlabel("epochs trained")
    axes.set_title(title or score)
    figure.colorbar(image, ax=axes, label=score)
    return figure


def sweep_figure(magnitudes: Sequence[float], scores: Sequence[Scores], score: str, title: str = "") -> Figure:
    """One score against the magnitude of a sweep: a line per layer (±2 SE bars when known), its null dotted.

    Args:
        magnitudes: the sweep's magnitudes, increasing.
        scores: for each magnitude, ``{layer: {score: value}}``.
        score: ``"equivariance"``, ``"invariance"`` or ``"channel_invariance"``.
        title: the figure's title.
    """
    from matplotlib import colormaps

    layers = list(scores[0]) if scores else []
    figure = Figure(figsize=(6.5, 3.6), layout="constrained")
    axes = figure.add_subplot()
    for k, layer in enumerate(layers):
        colour = colormaps["viridis"](0.9 * k / max(len(layers) - 1, 1))  # light to dark in depth order
        values = [by_layer[layer][score] for by_layer in scores]
        errors = [2 * by_layer[layer].get(f"{score}_se", math.nan) for by_layer in scores]
        if any(math.isfinite(e) for e in errors):
            axes.errorbar(magnitudes, values, yerr=errors, fmt="o-", color=colour, capsize=3, label=layer)
        else:
            axes.plot(magnitudes, values, "o-", color=colour, label=layer)
        null = [by_layer[layer].get(f"{score}_null", math.nan) for by_layer in scores]
        axes.plot(magnitudes, null, ":", color=colour, alpha=0.7)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("magnitude")
    axes.set_ylabel(f"{score} (dotted: null)")
    axes.set_title(title or score)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure


def sweep_figures(prefix: str, scores: Mapping[str, Scores], transforms: Sequence[Any], when: str) -> dict[str, Figure]:
    """``{<prefix>/sweep_<family>/<score>: figure}``: a :func:`sweep_figure` per score for every sweep among
    ``transforms`` (see :func:`~seis_lightning.sweeps.sweep_families`) scored in ``scores``."""
    tagged = {}
    for family, members in sweep_families(transforms).items():
        magnitudes = [magnitude for magnitude, name in members if name in scores]
        series = [scores[name] for _, name in members if name in scores]
        for score in SCORES:
            title = f"{score} against {family} magnitude, {when}"
            tagged[f"{prefix}/sweep_{family}/{score}"] = sweep_figure(magnitudes, series, score, title)
    return tagged


def aliasing_figure(
    scores: Mapping[str, Scores],
    transforms: Sequence[Any] | None = None,
    strides: Mapping[str, int | float | Stride | None] | None = None,
    title: str = "",
    gaps: Mapping[str, AliasingGap] | None = None,
) -> Figure:
    """Equivariance against the shift in pixels of a ``shift`` sweep, one panel per layer (depth order; each
    at the shifts where it is scored): ±2 SE
    bars when known, the null dashed, and dotted vertical lines at the non-zero multiples of the layer's stride,
    the shifts its map follows by whole positions. Each panel's title gives the stride, the aliasing gap ± SE
    and the mean null (spec, "Aliasing gap"); the vertical range fits the curve, so a null far below it is
    out of view but stated.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from seis_lightning import score_model
        >>> from seis_lightning.plotting import aliasing_figure
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2))
        >>> images = torch.rand(32, 1, 12, 12, generator=torch.Generator().manual_seed(0))
        >>> scores = score_model(model, images, layers=["1"], transforms="shift:0:5:1", precision="float64")
        >>> figure = aliasing_figure(scores)  # figure.savefig("aliasing.png")
        >>> figure.axes[0].get_title().splitlines()[0]
        '1 (stride 2)'
        >>> [float(line.get_xdata()[0]) for line in figure.axes[0].lines if line.get_linestyle() == ":"]
        [2.0, 4.0]

    Args:
        scores: ``{transform: {layer: {score: value}}}`` with a ``shift`` sweep among the transformations; a
            :func:`~seis_lightning.score_model` result brings its own ``transforms`` and ``strides``.
        transforms: the scored transformations (default: ``scores.transforms``).
        strides: ``{layer: total stride}`` in input pixels (``None``: none), or the result's ``Stride``
            records (default: ``scores.strides``; a layer without one has no marks and no gap).
        title: the figure's title.
        gaps: ``{layer: AliasingGap}`` for the titles (default: ``scores.aliasing``, else each layer's
            :func:`~seis_lightning.sweeps.aliasing_gap` over the shifts where it is scored, SEs from
            ``equivariance_se``).

    Raises:
        ValueError: when ``transforms`` hold no ``shift`` sweep scored in ``scores``.
    """
    transforms = getattr(scores, "transforms", ()) if transforms is None else transforms
    gaps = getattr(scores, "aliasing", None) if gaps is None else gaps
    strides = getattr(scores, "strides", {}) if strides is None else strides
    strides = {layer: s.stride if isinstance(s, Stride) else s for layer, s in strides.items()}
    members = [(shift, name) for shift, name in sweep_families(transforms).get(SHIFT_FAMILY, []) if name in scores]
    if len(members) < 2:
        raise ValueError(
            "aliasing_figure needs a `shift` sweep (two or more horizontal shifts in pixels, e.g. 'shift:0:4:0.5')"
            f" among the scored transformations, but got {[getattr(t, 'name', t) for t in transforms]}; pass"
            " `transforms` when `scores` is a plain mapping."
        )
    from matplotlib import colormaps

    layers = list(dict.fromkeys(layer for _, name in members for layer in scores[name]))
    columns = min(len(layers), 3)
    rows = math.ceil(len(layers) / columns)
    figure = Figure(figsize=(3.4 * columns, 2.5 * rows + 0.5), layout="constrained")
    panels = figure.subplots(rows, columns, sharex=True, squeeze=False).ravel()
    for k, (axes, layer) in enumerate(zip(panels, layers)):
        colour = colormaps["viridis"](0.9 * k / max(len(layers) - 1, 1))
        scored = [(shift, scores[name][layer]) for shift, name in members if layer in scores[name]]
        shifts = [shift for shift, _ in scored]
        values = [v["equivariance"] for _, v in scored]
        errors = [2 * v.get("equivariance_se", math.nan) for _, v in scored]
        if any(math.isfinite(e) for e in errors):
            axes.errorbar(shifts, values, yerr=errors, fmt="o-", color=colour, markersize=3, capsize=2)
        else:
            axes.plot(shifts, values, "o-", color=colour, markersize=3)
        low, high = _curve_range(values, errors)
        nulls = [v.get("equivariance_null", math.nan) for _, v in scored]
        axes.plot(shifts, nulls, "--", color="grey", linewidth=1)
        stride = strides.get(layer)
        if stride:
            first, last = math.ceil(min(shifts) / stride), math.floor(max(shifts) / stride)
            for multiple in range(first, last + 1):
                if multiple:
                    axes.axvline(multiple * stride, color="black", linestyle=":", linewidth=1)
        gap = gaps.get(layer) if gaps is not None else None
        if gap is None:
            ses = [v["equivariance_se"] for _, v in scored] if all("equivariance_se" in v for _, v in scored) else None
            gap = aliasing_gap(shifts, values, stride, se=ses)
        said = "" if gap.reason else f"gap {gap.gap:.3f}" + (f" ± {gap.se:.3f}" if math.isfinite(gap.se) else "")
        finite_nulls = [n for n in nulls if math.isfinite(n)]
        null = f"null {sum(finite_nulls) / len(finite_nulls):.2f}" if finite_nulls else ""
        heading = f"{layer} (stride {stride:g})" if stride else f"{layer} (no stride)"
        axes.set_title(heading + "\n" + ", ".join(part for part in (said, null) if part), fontsize="small")
        axes.set_ylim(low, high)
        axes.grid(alpha=0.3)
    for axes in panels[len(layers) :]:
        axes.set_visible(False)
    for axes in panels[(rows - 1) * columns :]:
        axes.set_xlabel("shift (pixels)")
    for axes in panels[::columns]:
        axes.set_ylabel("equivariance")
    figure.suptitle(
        title or "equivariance against shift; dotted: multiples of the layer's stride, dashed: null", fontsize="medium"
    )
    return figure


def _curve_range(values: Sequence[float], errors: Sequence[float]) -> tuple[float, float]:
    """Vertical limits that fit a curve and its error bars, with a margin (``[0, 1]`` when nothing is finite)."""
    ends = [v + sign * (e if math.isfinite(e) else 0) for v, e in zip(values, errors) for sign in (-1, 1)]
    ends = [end for end in ends if math.isfinite(end)]
    if not ends:
        return -0.02, 1.02
    low, high = min(ends), max(ends)
    margin = max(0.08 * (high - low), 0.005)
    return low - margin, high + margin


def aliasing_figures(
    prefix: str,
    scores: Mapping[str, Scores],
    transforms: Sequence[Any],
    strides: Mapping[str, int | float | None],
    when: str,
) -> dict[str, Figure]:
    """``{<prefix>/sweep_shift/aliasing: figure}``: the :func:`aliasing_figure` of a ``shift`` sweep among
    ``transforms`` scored in ``scores``; ``{}`` without one."""
    members = [name for _, name in sweep_families(transforms).get(SHIFT_FAMILY, []) if name in scores]
    if len(members) < 2:
        return {}
    title = f"equivariance against shift, {when}; dotted: multiples of the stride, dashed: null"
    return {f"{prefix}/sweep_{SHIFT_FAMILY}/aliasing": aliasing_figure(scores, transforms, strides, title)}


def custom_scalars_layout(
    transforms: Sequence[str],
    prefix: str = "seis",
    margins: Mapping[str, Sequence[str]] | None = None,
    layers: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, dict[str, list]]:
    """TensorBoard custom-scalars layout, charts few enough lines to tell apart (TensorBoard draws a run's
    lines in one colour): per transformation, one chart per score with its layers (each line named by its
    tag; no nulls), and, for the layers in ``layers[transform]``, one chart per layer and score with the
    score and its null (``<score> <layer> vs null``); for the layers in ``margins[transform]`` (those with
    jackknife standard errors), one margin chart per score and layer: the value between ``<score>_lower``
    and ``<score>_upper`` (± 2 SE)."""
    suffix = "" if prefix == "seis" else f" ({prefix})"
    layout: dict[str, dict[str, list]] = {}
    for name in transforms:
        layout[f"SEIS {name}{suffix}"] = {score: ["Multiline", [rf"{prefix}/{name}/{score}/.*"]] for score in SCORES}
        if layers and layers.get(name):
            layout[f"SEIS {name}, each layer against its null{suffix}"] = {
                f"{score} {layer} vs null": [
                    "Multiline",
                    [re.escape(f"{prefix}/{name}/{score}{end}/{layer}") for end in ("", "_null")],
                ]
                for layer in layers[name]
                for score in SCORES
            }
        if margins and margins.get(name):
            layout[f"SEIS {name} ± 2 SE{suffix}"] = {
                f"{score} {layer}": ["Margin", [f"{prefix}/{name}/{score}{end}/{layer}" for end in MARGIN]]
                for score in SCORES
                for layer in margins[name]
            }
    return layout


def margin_scalars(prefix: str, scores: Mapping[str, Scores]) -> dict[str, float]:
    """The lower and upper ends (value ∓ 2 SE) that TensorBoard's margin charts draw, for every score that
    has a standard error: ``<prefix>/<transform>/<score>_lower/<layer>`` and ``..._upper/...``."""
    return {
        f"{prefix}/{transform}/{score}{end}/{layer}": values[score] + sign * 2 * values[f"{score}_se"]
        for transform, by_layer in scores.items()
        for layer, values in by_layer.items()
        for score in SCORES
        if f"{score}_se" in values
        for end, sign in (("_lower", -1), ("_upper", 1))
    }


def format_score_table(scores: Mapping[str, Scores]) -> str:
    """A plain-text table: one row per (transformation, layer), the three scores and their nulls."""
    header = ["transform", "layer", *(f"{s} (null)" for s in SCORES)]
    rows = [
        [name, layer, *(f"{values[s]:.3f} ({values.get(s + '_null', math.nan):.3f})" for s in SCORES)]
        for name, by_layer in scores.items()
        for layer, values in by_layer.items()
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def score_rows(entry: Mapping[str, Any], transforms: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """The CSV rows (columns :data:`CSV_COLUMNS`) of a history entry: one per transformation × layer × score,
    then, with a ``shift`` sweep, one per layer for its aliasing gap (``transform`` ``sweep_shift``, ``score``
    ``aliasing_gap``, ``se`` its SE, no ``null``, ``reason`` why it is NaN). The ``family`` and ``magnitude`` of
    each transformation come from ``transforms`` (its ``GeometricTransform`` objects; blank for those without);
    ``stride`` is the layer's total stride in input pixels (blank without one); ``reason`` says why a
    transformation or layer has NaN scores."""
    kinds = {t.name: (t.family, t.magnitude) for t in transforms if getattr(t, "family", None) is not None}
    strides = entry.get("strides", {})
    progress = {name: entry[name] for name in ("stage", "epoch", "global_step", "step")}
    rows = [
        {
            **progress,
            "transform": transform,
            "family": kinds.get(transform, ("", ""))[0],
            "magnitude": kinds.get(transform, ("", ""))[1],
            "layer": layer,
            "score": score,
            "value": values[score],
            "null": values.get(f"{score}_null", math.nan),
            "se": values.get(f"{score}_se", ""),
            "reason": entry.get("transform_reasons", {}).get(transform) or entry.get("reasons", {}).get(layer, ""),
            "stride": _blank_if_none(strides.get(layer)),
        }
        for transform, by_layer in entry["scores"].items()
        for layer, values in by_layer.items()
        for score in SCORES
    ]
    rows += [
        {
            **progress,
            "transform": f"sweep_{SHIFT_FAMILY}",
            "family": SHIFT_FAMILY,
            "magnitude": "",
            "layer": layer,
            "score": ALIASING,
            "value": gap["gap"],
            "null": "",
            "se": gap["se"] if math.isfinite(gap["se"]) else "",
            "reason": gap["reason"],
            "stride": _blank_if_none(strides.get(layer)),
        }
        for layer, gap in entry.get("aliasing", {}).items()
    ]
    return rows


def _blank_if_none(value: Any) -> Any:
    return "" if value is None else value
