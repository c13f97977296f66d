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
from seis_lightning.sweeps import sweep_families

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
    """One row per transformation × layer × score of a history entry (columns :data:`CSV_COLUMNS`): the
    ``family`` and ``magnitude`` of each transformation come from ``transforms`` (its ``GeometricTransform``
    objects; blank for those without); ``reason`` says why a transformation or layer has NaN scores."""
    kinds = {t.name: (t.family, t.magnitude) for t in transforms if getattr(t, "family", None) is not None}
    return [
        {
            "stage": entry["stage"],
            "epoch": entry["epoch"],
            "global_step": entry["global_step"],
            "step": entry["step"],
            "transform": transform,
            "family": kinds.get(transform, ("", ""))[0],
            "magnitude": kinds.get(transform, ("", ""))[1],
            "layer": layer,
            "score": score,
            "value": values[score],
            "null": values.get(f"{score}_null", math.nan),
            "se": values.get(f"{score}_se", ""),
            "reason": entry.get("transform_reasons", {}).get(transform) or entry.get("reasons", {}).get(layer, ""),
        }
        for transform, by_layer in entry["scores"].items()
        for layer, values in by_layer.items()
        for score in SCORES
    ]
