"""Figures and tables of SEIS scores: depth-wise curves, layer x epoch heatmaps, TensorBoard layouts.

Scores come as ``{layer: {score: value}}`` for one transformation and one epoch (layers in depth
order), and a history as a list of ``(step, scores)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from seis_lightning.functional import SCORES

Scores = Mapping[str, Mapping[str, float]]
COLOURS = {"equivariance": "tab:blue", "invariance": "tab:red", "channel_invariance": "tab:green"}


def depth_figure(scores: Scores, title: str = "") -> Figure:
    """Each score (solid) and its null baseline (dotted) against depth (x = layer, in depth order)."""
    layers = list(scores)
    figure, axes = plt.subplots(figsize=(max(6.5, 0.8 * len(layers) + 3.5), 3.6), layout="constrained")
    x = np.arange(len(layers))
    for score in SCORES:
        colour = COLOURS[score]
        axes.plot(x, [scores[layer][score] for layer in layers], "o-", color=colour, label=score)
        null = [scores[layer].get(f"{score}_null", math.nan) for layer in layers]
        axes.plot(x, null, ":", color=colour, alpha=0.7, label=f"{score} (null)")
    axes.set_xticks(x, layers, rotation=30, ha="right")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("layer (depth order)")
    axes.set_ylabel("score")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure


def heatmap_figure(history: Sequence[tuple[int, Scores]], score: str, title: str = "") -> Figure:
    """A layer x epoch heatmap of one score (rows in depth order, columns the logged steps)."""
    layers = list(history[-1][1]) if history else []
    steps = [step for step, _ in history]
    values = np.array([[h.get(layer, {}).get(score, math.nan) for _, h in history] for layer in layers], dtype=float)
    figure, axes = plt.subplots(
        figsize=(max(4.0, 0.35 * len(steps) + 2.5), max(2.5, 0.4 * len(layers) + 1)), layout="constrained"
    )
    image = axes.imshow(values.reshape(len(layers), len(steps)), aspect="auto", vmin=0, vmax=1, cmap="viridis")
    axes.set_yticks(range(len(layers)), layers)
    tick_every = max(1, len(steps) // 12)
    axes.set_xticks(range(0, len(steps), tick_every), steps[::tick_every])
    axes.set_xlabel("epochs trained")
    axes.set_title(title or score)
    figure.colorbar(image, ax=axes, label=score)
    return figure


def custom_scalars_layout(transforms: Sequence[str]) -> dict[str, dict[str, list]]:
    """TensorBoard custom-scalars layout: one chart per (transformation, score) with all its layers."""
    return {
        f"SEIS {name}": {
            score: ["Multiline", [rf"seis/{name}/{score}/.*", rf"seis/{name}/{score}_null/.*"]] for score in SCORES
        }
        for name in transforms
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
