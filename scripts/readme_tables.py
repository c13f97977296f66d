"""Hold the README to the artefacts in ``docs/figures/``: its tables are generated from the CSVs, its numbers in prose
are read from them.

    python scripts/readme_tables.py --check   # exit 1 naming every table or number that differs from its CSV
    python scripts/readme_tables.py --write   # rewrite the generated tables, then check (what `make figures` runs)

A generated table sits between ``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->`` in ``README.md``, ``NAME``
a key of :data:`TABLES`, whose function renders it from the CSVs. A number in prose is a :class:`Held`: a phrase
of the README with ``{}`` where the number goes, the CSV, the row (column values that pick exactly one row), the
column and the digits it is rounded to; the check renders the phrase from the CSV and finds it in the README. A
:class:`Derived` number is computed from several cells (a difference and its noise), a :class:`Measured` one is
read from what a build recorded beside its files in ``docs/figures/MANIFEST.json`` (a validation accuracy).
Tables and numbers of an artefact that does not exist yet (:data:`WHEN_PRESENT`, :data:`MEASURED` before the
manifest has their entry) are held from the build that makes it. ``tests/test_artefacts.py`` runs the check on the
committed README and artefacts.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
README = ROOT / "README.md"
MINUS = "\u2212"  # the README writes negative numbers with a minus sign, not a hyphen
BLOCK = re.compile(r"(<!-- figures:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /figures:(?P=name) -->)", re.S)


def read_csv(figures: Path, name: str) -> list[dict]:
    with (Path(figures) / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def pick(rows: list[dict], where: Mapping[str, str], source: str = "") -> dict:
    """The one row whose columns hold ``where``'s values; a ``LookupError`` naming the CSV when not exactly one."""
    found = [row for row in rows if all(row.get(key) == str(value) for key, value in where.items())]
    if len(found) != 1:
        raise LookupError(f"{source}: {len(found)} rows with {dict(where)}, expected exactly one")
    return found[0]


def number(value: float | str, digits: int = 3, sign: bool = False) -> str:
    """``value`` rounded to ``digits`` decimals, negative with a minus sign, with ``+`` when ``sign``."""
    text = f"{float(value):{'+' if sign else ''}.{digits}f}"
    return text.replace("-", MINUS)


# ---- generated tables ------------------------------------------------------------------------------------------


def fig3_seeds_mnist(figures: Path) -> str:
    """Figure 3 over seeds on MNIST, invariance: each side's mean ± sd between seeds (mean jackknife SE), the
    difference, its seed and jackknife SEs and the verdict (``fig3_seeds.csv``)."""
    rows = [r for r in read_csv(figures, "fig3_seeds.csv") if (r["dataset"], r["score"]) == ("mnist", "invariance")]
    lines = [
        "| layer | plain | augmented | Δ | seed SE of Δ | jackknife SE of Δ | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sides = [
            f"{number(r[f'{side}_mean'])} ± {number(r[f'{side}_sd'])} ({number(r[f'{side}_se'])})"
            for side in ("plain", "augment")
        ]
        lines.append(
            f"| {r['layer']} | {sides[0]} | {sides[1]} | {number(r['delta'], sign=True)} | {number(r['seed_se'])}"
            f" | {number(r['jackknife_se'])} | {r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


# Positions of MobileNetV2's blocks at 160 px and what the cap of 256 leaves (the architecture, not a measurement).
MOBILENET_POSITIONS = {
    "features.1": "6400 → 256",
    "features.3": "1600 → 256",
    "features.6": "400 → 256",
    "features.10": "100",
    "features.13": "100",
    "features.17": "25",
}


def ref_mobilenet(figures: Path) -> str:
    """MobileNetV2 pretrained against untrained, random affine: value ± SE (null) per block (``ref_mobilenet.csv``)."""
    rows = read_csv(figures, "ref_mobilenet.csv")
    lines = [
        "| block (positions) | pretrained equivariance | pretrained invariance | untrained equivariance"
        " | untrained invariance |",
        "|---|---|---|---|---|",
    ]
    layers = dict.fromkeys(r["layer"] for r in rows if r["transform"] == "random_affine")
    for layer in layers:
        cells = []
        for model in ("pretrained", "untrained"):
            for score in ("equivariance", "invariance"):
                where = {"model": model, "transform": "random_affine", "layer": layer, "score": score}
                r = pick(rows, where, "ref_mobilenet.csv")
                cells.append(f"{number(r['value'])} ± {number(r['se'])} ({number(r['null'])})")
        lines.append(f"| {layer} ({MOBILENET_POSITIONS.get(layer, '?')}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CAP_NETWORKS = ("mobilenet_v2", "digits_cnn", "resnet18_untrained")  # the README's order
CAP_COLUMNS = [(method, cap) for cap in (1024, 576, 256) for method in ("adaptive", "random")]


def beyond(value: float, full: float, se: float) -> bool:
    """A reduced reading beyond 2 SE and 0.02 of full resolution (``position_cap_study._within``, negated)."""
    return abs(value - full) > max(2 * se, 0.02)


def position_cap(figures: Path) -> str:
    """Per early layer, transformation and score: full resolution ± SE, then the old pooling (``adaptive``) and
    the subset (``random``) at caps 1024, 576 and 256, ✗ beyond 2 SE and 0.02, ``=`` where the map fits
    (``position_cap_study.csv``)."""
    rows = read_csv(figures, "position_cap_study.csv")
    header = ["network, layer (positions)", "transform", "score", "full resolution ± SE"]
    header += ["pooled 1024 (before)", "subset 1024 (now)", "pooled 576", "subset 576", "pooled 256", "subset 256"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys = dict.fromkeys((r["network"], r["layer"], r["transform"], r["score"]) for r in rows)
    for network in CAP_NETWORKS:
        for key in [k for k in keys if k[0] == network]:
            where = dict(zip(("network", "layer", "transform", "score"), key))
            full = pick(rows, {**where, "method": "full"}, "position_cap_study.csv")
            value, se = float(full["value"]), float(full["se"])
            cells = [f"{network} {key[1]} ({full['positions']})", key[2], key[3]]
            cells.append(f"{number(value)} ± {number(se)}")
            for method, cap in CAP_COLUMNS:
                found = [r for r in rows if r.items() >= {**where, "method": method, "cap": str(cap)}.items()]
                if not found:
                    cells.append("=")
                    continue
                reduced = float(pick(found, {}, "position_cap_study.csv")["value"])
                cells.append(number(reduced) + " ✗" * beyond(reduced, value, se))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# Labels of the BlurPool table's layers beyond the name and stride (words, not measurements).
BLURPOOL_LABELS = {"conv1.1": ", ReLU before any pooling"}


def blurpool_aliasing(figures: Path) -> str:
    """Per layer with a stride, the aliasing gap with max pooling and with BlurPool: mean ± SE between seeds (mean
    run SE), the difference, its bar and the verdict (``blurpool_aliasing.csv``; ``scripts/blurpool_aliasing``)."""
    lines = [
        "| layer (stride) | max pool: gap ± SE (run SE) | BlurPool: gap ± SE (run SE) | delta | bar (t·SE) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in read_csv(figures, "blurpool_aliasing.csv"):
        sides = [
            f"{number(r[f'{kind}_gap'])} ± {number(r[f'{kind}_seed_se'])} ({number(r[f'{kind}_jackknife_se'])})"
            for kind in ("maxpool", "blurpool")
        ]
        label = f"{r['layer']} ({r['stride']}){BLURPOOL_LABELS.get(r['layer'], '')}"
        lines.append(
            f"| {label} | {sides[0]} | {sides[1]} | {number(r['delta'], sign=True)} | {number(r['bar'])}"
            f" | {r['verdict']} |"
        )
    return "\n".join(lines) + "\n"


# The README's worked example: rows of the digits recipe's run with the jackknife on, invariance.
DIFFERENCE_ROWS = (("12", "conv2"), ("12", "conv3"), ("11", "conv3"), ("2", "conv3"))


def difference_example(figures: Path) -> str:
    """Invariance of some scorings of the digits recipe with 8 jackknife groups: value, SE and null
    (``difference_example.csv``; ``scripts/difference_example``)."""
    rows = read_csv(figures, "difference_example.csv")
    lines = ["| row (epoch, global step, layer) | value | se | null |", "|---|---|---|---|"]
    for epoch, layer in DIFFERENCE_ROWS:
        r = pick(rows, {"epochs_trained": epoch, "layer": layer, "score": "invariance"}, "difference_example.csv")
        cells = " | ".join(number(r[column], 4) for column in ("value", "se", "null"))
        lines.append(f"| {epoch}, {r['global_step']}, {layer} | {cells} |")
    return "\n".join(lines) + "\n"


TABLES: dict[str, Callable[[Path], str]] = {
    "fig3_seeds_mnist": fig3_seeds_mnist,
    "ref_mobilenet": ref_mobilenet,
    "position_cap": position_cap,
    "blurpool_aliasing": blurpool_aliasing,
    "difference_example": difference_example,
}
# The tables the README must hold between markers.
REQUIRED = ("fig3_seeds_mnist", "ref_mobilenet", "position_cap", "blurpool_aliasing")


# ---- numbers in prose ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A number the README states in prose: ``phrase`` with ``{}`` where it goes, read from ``csv`` in the row that
    ``where`` picks, its ``column`` rounded to ``digits`` (``sign``: with ``+`` or the minus sign)."""

    phrase: str
    csv: str
    where: dict = field(hash=False)
    column: str
    digits: int = 3
    sign: bool = False

    def value(self, figures: Path) -> float:
        return float(pick(read_csv(figures, self.csv), self.where, self.csv)[self.column])

    def source(self) -> str:
        return f"{self.csv} {self.where} {self.column}"

    def expected(self, figures: Path, value: float | None = None) -> str:
        """The phrase with the CSV's number (or ``value``) at the stated rounding."""
        value = self.value(figures) if value is None else value
        return self.phrase.format(number(value, self.digits, self.sign))


@dataclass(frozen=True)
class Derived(Held):
    """A number the README derives from several cells of ``csv`` (a difference, its noise): ``compute`` takes the
    function that picks a row's ``column`` value by ``where`` (``cell(column, **where)``) and returns it."""

    compute: Callable = field(default=None, hash=False)

    def value(self, figures: Path) -> float:
        rows = read_csv(figures, self.csv)
        return float(self.compute(lambda column, **where: float(pick(rows, where, self.csv)[column])))

    def source(self) -> str:
        return f"{self.csv} ({self.column})"


def _h(phrase: str, csv_name: str, column: str, digits: int = 3, sign: bool = False, **where: str) -> Held:
    return Held(phrase, csv_name, where, column, digits, sign)


F1M, F1D, F2, F2B, SW, F3, F4, REF = (
    "fig1_mnist.csv",
    "fig1_synthetic.csv",
    "fig2_depth_epoch.csv",
    "fig2b_resnet_shapes.csv",
    "sweep_digits_rotate.csv",
    "fig3_seeds.csv",
    "fig4_tasks_decoders.csv",
    "ref_mobilenet.csv",
)
_SEED = {"transform": "random_affine"}
_PRE = {"model": "pretrained", "transform": "random_affine"}
_UNT = {"model": "untrained", "transform": "random_affine"}
HELD: list[Held] = [
    # What the scores say: Figure 1
    _h("rot90 {}", F1M, "invariance", case="rot90"),
    _h("roll by 3 {}", F1M, "invariance", case="roll3"),
    _h("rotate 30° {})", F1M, "invariance", case="rotate30"),
    _h("(rot90 {},", F1D, "invariance", case="rot90"),
    _h("roll {}, rotate 30°", F1D, "invariance", case="roll3"),
    _h("rotate 30° {}, the values in Caveats", F1D, "invariance", case="rotate30"),
    # Figure 2: the digits CNN after 12 epochs, the ResNet-18 on shapes after 4
    _h("({} conv1 →", F2, "equivariance", 2, epochs_trained="12", layer="conv1"),
    _h("→ {} conv3)", F2, "equivariance", 2, epochs_trained="12", layer="conv3"),
    _h("invariance rises ({} →", F2, "invariance", 2, epochs_trained="12", layer="conv1"),
    _h("then {} at the pooled features", F2, "invariance", 2, epochs_trained="12", layer="pool"),
    _h("`channel_invariance` ({} →", F2, "channel_invariance", 2, epochs_trained="12", layer="conv1"),
    _h("→ {} at the logits", F2, "channel_invariance", 2, epochs_trained="12", layer="fc"),
    _h("equivariance {} (stem)", F2B, "equivariance", 2, epochs_trained="4", layer="encoder.stem"),
    _h("→ {} (layer3)", F2B, "equivariance", 2, epochs_trained="4", layer="encoder.layer3"),
    _h("invariance\n{} →", F2B, "invariance", 2, epochs_trained="4", layer="encoder.stem"),
    _h("→ {} (layer4)", F2B, "invariance", 2, epochs_trained="4", layer="encoder.layer4"),
    _h("→ {} (logits)", F2B, "invariance", 2, epochs_trained="4", layer="fc"),
    # the rotation sweep of the digits CNN
    _h("(conv1 1.00 → {} at 15°", SW, "value", 2, angle="15", layer="conv1", score="invariance"),
    _h("→ {} at 60°; conv3", SW, "value", 2, angle="60", layer="conv1", score="invariance"),
    _h("conv3 {} at 15°", SW, "value", 2, angle="15", layer="conv3", score="invariance"),
    _h("{} at 30°)", SW, "value", 2, angle="30", layer="conv3", score="invariance"),
    _h("(pool {} at 15°", SW, "value", 2, angle="15", layer="pool", score="invariance"),
    _h("{} at 30°, 0.44 at 45°", SW, "value", 2, angle="30", layer="pool", score="invariance"),
    _h("{} at 45°, 0.17 at 60°", SW, "value", 2, angle="45", layer="pool", score="invariance"),
    _h("0.44 at 45°, {} at 60°", SW, "value", 2, angle="60", layer="pool", score="invariance"),
    _h("fc {}, 0.80", SW, "value", 2, angle="15", layer="fc", score="invariance"),
    _h("fc 0.96, {}, 0.52", SW, "value", 2, angle="30", layer="fc", score="invariance"),
    _h("0.80, {}, 0.21)", SW, "value", 2, angle="45", layer="fc", score="invariance"),
    _h("0.52, {})", SW, "value", 2, angle="60", layer="fc", score="invariance"),
    _h("(1.00 → {}\nat 90°", SW, "value", 2, angle="90", layer="conv1", score="equivariance"),
    _h("null {}: it never", SW, "null", 2, angle="90", layer="conv1", score="equivariance"),
    _h("half-way at {}° (conv2)", SW, "equivariance_halfway", 0, angle="0", layer="conv2", score="equivariance"),
    _h("{}°\n(conv3)", SW, "equivariance_halfway", 0, angle="0", layer="conv3", score="equivariance"),
    _h("(conv3), {}° (pool)", SW, "equivariance_halfway", 0, angle="0", layer="pool", score="equivariance"),
    _h("and {}° (fc)", SW, "equivariance_halfway", 0, angle="0", layer="fc", score="equivariance"),
    _h("pool and fc ({},", SW, "value", 2, angle="90", layer="pool", score="invariance"),
    _h("fc (0.15, {})", SW, "value", 2, angle="90", layer="fc", score="invariance"),
    # Figure 3 over seeds: MNIST's borderline cell, and the digits in prose
    _h("Δ {} against a bar", F3, "delta", 4, True, dataset="mnist", layer="pool", score="invariance", **_SEED),
    _h("against a bar of {} (t", F3, "bar", 4, dataset="mnist", layer="pool", score="invariance", **_SEED),
    _h("(t = {}, df", F3, "t", 2, dataset="mnist", layer="pool", score="invariance", **_SEED),
    _h("df {}); with", F3, "df", 1, dataset="mnist", layer="pool", score="invariance", **_SEED),
    _h("(pool {} against a bar of", F3, "delta", 3, True, dataset="mnist", layer="pool", score="channel_invariance"),
    _h("conv1 {} ±\n", F3, "plain_mean", dataset="digits", layer="conv1", score="invariance", **_SEED),
    _h("{} (0.004) → 0.363", F3, "plain_sd", dataset="digits", layer="conv1", score="invariance", **_SEED),
    _h("0.012 ({}) → 0.363", F3, "plain_se", dataset="digits", layer="conv1", score="invariance", **_SEED),
    _h("→ {} ± 0.019", F3, "augment_mean", dataset="digits", layer="conv1", score="invariance", **_SEED),
    _h("0.363 ± {} (0.004), conv2", F3, "augment_sd", dataset="digits", layer="conv1", score="invariance", **_SEED),
    _h("0.019 ({}), conv2", F3, "augment_se", dataset="digits", layer="conv1", score="invariance", **_SEED),
    _h("conv2 {} →", F3, "plain_mean", dataset="digits", layer="conv2", score="invariance", **_SEED),
    _h("→ {}, conv3", F3, "augment_mean", dataset="digits", layer="conv2", score="invariance", **_SEED),
    _h("conv3 {} → 0.587", F3, "plain_mean", dataset="digits", layer="conv3", score="invariance", **_SEED),
    _h("0.606 → {}, all", F3, "augment_mean", dataset="digits", layer="conv3", score="invariance", **_SEED),
    _h("pool {} ± 0.007", F3, "plain_mean", dataset="digits", layer="pool", score="invariance", **_SEED),
    _h("0.936 ± {} (0.002)", F3, "plain_sd", dataset="digits", layer="pool", score="invariance", **_SEED),
    _h("→ {} ± 0.005 (0.001)", F3, "augment_mean", dataset="digits", layer="pool", score="invariance", **_SEED),
    _h("fc {} ± 0.005 →", F3, "plain_mean", dataset="digits", layer="fc", score="invariance", **_SEED),
    _h("→ {} ± 0.004, raised", F3, "augment_mean", dataset="digits", layer="fc", score="invariance", **_SEED),
    _h("raised by\n{} and", F3, "delta", dataset="digits", layer="pool", score="invariance", **_SEED),
    _h("and {} against", F3, "delta", dataset="digits", layer="fc", score="invariance", **_SEED),
    _h("bars of {} and", F3, "bar", dataset="digits", layer="pool", score="invariance", **_SEED),
    _h("and {} (`channel", F3, "bar", dataset="digits", layer="fc", score="invariance", **_SEED),
    _h("at fc only, {})", F3, "delta", 3, True, dataset="digits", layer="fc", score="channel_invariance"),
    # Figure 4 at the bottleneck and across the decoders
    _h("equivariance FCN {},", F4, "equivariance", 2, run="segmentation (FCN)", layer="encoder.layer4"),
    _h("U-Net {}, multi-task", F4, "equivariance", 2, run="segmentation (U-Net)", layer="encoder.layer4"),
    _h("multi-task\n{},", F4, "equivariance", 2, run="multitask (U-Net)", layer="encoder.layer4"),
    _h("classification {})", F4, "equivariance", 2, run="classification", layer="encoder.layer4"),
    _h("last layer scores {} but", F4, "equivariance", 2, run="segmentation (U-Net)", layer="decoder.classifier"),
    _h("its null is {} (its", F4, "equivariance_null", 2, run="segmentation (U-Net)", layer="decoder.classifier"),
    _h("ends at {} with", F4, "equivariance", 2, run="segmentation (FCN)", layer="decoder.upsample"),
    _h("with a null of {}.", F4, "equivariance_null", 2, run="segmentation (FCN)", layer="decoder.upsample"),
    _h("(invariance {} →", F4, "invariance", 2, run="segmentation (U-Net)", layer="decoder.up1"),
    _h("→ {} from up1", F4, "invariance", 2, run="segmentation (U-Net)", layer="decoder.classifier"),
    # Reference: real networks, in prose
    _h("more equivariant: {} /", REF, "value", 2, layer="features.10", score="equivariance", **_PRE),
    _h("0.58 / {} / 0.47", REF, "value", 2, layer="features.13", score="equivariance", **_PRE),
    _h("0.57 / {} against", REF, "value", 2, layer="features.17", score="equivariance", **_PRE),
    _h("against {} / 0.35", REF, "value", 2, layer="features.10", score="equivariance", **_UNT),
    _h("0.39 / {} / 0.36", REF, "value", 2, layer="features.13", score="equivariance", **_UNT),
    _h("0.35 / {} untrained", REF, "value", 2, layer="features.17", score="equivariance", **_UNT),
    _h("(pretrained {}, untrained 0.32", REF, "value", 2, layer="features.17", score="invariance", **_PRE),
    _h("untrained {}; SE", REF, "value", 2, layer="features.17", score="invariance", **_UNT),
    _h(
        "but the last ({} pretrained",
        REF,
        "value",
        2,
        model="pretrained",
        transform="rotate30",
        layer="features.17",
        score="invariance",
    ),
    _h(
        "{} untrained).",
        REF,
        "value",
        2,
        model="untrained",
        transform="rotate30",
        layer="features.17",
        score="invariance",
    ),
]


def _difference(epoch_a: str, layer_a: str, epoch_b: str, layer_b: str, noise: bool = False) -> Callable:
    """Invariance at (epoch_a, layer_a) minus at (epoch_b, layer_b), or with ``noise`` twice the SE of that
    difference as the README computes it, ``2·sqrt(se_a² + se_b²)``."""

    def compute(cell: Callable) -> float:
        a = {"epochs_trained": epoch_a, "layer": layer_a, "score": "invariance"}
        b = {"epochs_trained": epoch_b, "layer": layer_b, "score": "invariance"}
        if noise:
            return 2 * (cell("se", **a) ** 2 + cell("se", **b) ** 2) ** 0.5
        return cell("value", **a) - cell("value", **b)

    return compute


def _d(phrase: str, compute: Callable, what: str, digits: int = 3) -> Derived:
    return Derived(phrase, DIFFERENCE, {}, what, digits, False, compute)


DIFFERENCE = "difference_example.csv"
_INV12 = {"epochs_trained": "12", "score": "invariance"}
# "Is a difference real?": held once difference_example.csv is among the artefacts (make figures-fast builds it).
HELD_DIFFERENCE: list[Held] = [
    _d("conv3 − conv2 = {}, against", _difference("12", "conv3", "12", "conv2"), "conv3 - conv2 at 12"),
    _h("`2·sqrt({}² +", DIFFERENCE, "se", 4, layer="conv3", **_INV12),
    _h("² + {}²)` =", DIFFERENCE, "se", 4, layer="conv2", **_INV12),
    _d("` = {}:\n  conv3 is more", _difference("12", "conv3", "12", "conv2", True), "2 SE of conv3 - conv2"),
    _d(
        "by about {} standard errors",
        lambda cell: (
            _difference("12", "conv3", "12", "conv2")(cell)
            / (_difference("12", "conv3", "12", "conv2", True)(cell) / 2)
        ),
        "the difference over its SE",
        0,
    ),
    _d("epoch 2 − epoch 12 = {} against", _difference("2", "conv3", "12", "conv3"), "conv3 at 2 - at 12"),
    _d("against {}: conv3's", _difference("2", "conv3", "12", "conv3", True), "2 SE of conv3 at 2 - at 12"),
    _d("epoch 12 − epoch 11 = {} against", _difference("12", "conv3", "11", "conv3"), "conv3 at 12 - at 11"),
    _d("against {}: no change", _difference("12", "conv3", "11", "conv3", True), "2 SE of conv3 at 12 - at 11"),
    _h("**Against the null**: {} against", DIFFERENCE, "value", 2, layer="conv3", **_INV12),
    _h("against a null of {}: far", DIFFERENCE, "null", 3, layer="conv3", **_INV12),
]
BLUR = "blurpool_aliasing_runs.csv"


def _seed_mean(downsample: str, layer: str, shift: str) -> Callable:
    """Mean equivariance over the seeds 0, 1, 2 of one recipe, layer and shift (the runs CSV)."""
    return lambda cell: (
        sum(cell("equivariance", downsample=downsample, seed=str(seed), layer=layer, shift=shift) for seed in (0, 1, 2))
        / 3
    )


def _b(phrase: str, downsample: str, layer: str, shift: str, digits: int = 3) -> Derived:
    what = f"equivariance, {downsample} {layer} at {shift} px, mean of seeds 0-2"
    return Derived(phrase, BLUR, {}, what, digits, False, _seed_mean(downsample, layer, shift))


# "BlurPool against max pooling" in What the scores say (the table is generated: blurpool_aliasing).
HELD += [
    _b("(conv1, stride 2: {} at 4 px", "maxpool", "conv1", "4"),
    _b("against {} at 3 px;", "maxpool", "conv1", "3"),
    _b("conv2, stride 4: {} at 4 px", "maxpool", "conv2", "4"),
    _b("against {} at 2 px)", "maxpool", "conv2", "2"),
    _b("(conv1 {} at 3 px,", "blurpool", "conv1", "3"),
    _b("conv2 {} at 2 px)", "blurpool", "conv2", "2"),
    _b("at conv3, 4 px reads {} with max pooling", "maxpool", "conv3", "4"),
    _b("with max pooling and {} with BlurPool", "blurpool", "conv3", "4"),
]
# Tables and numbers the README must hold once their CSV is among the artefacts.
WHEN_PRESENT = {DIFFERENCE: (("difference_example",), HELD_DIFFERENCE)}


@dataclass(frozen=True)
class Measured(Held):
    """A number the README takes from the manifest: what the build of artefact ``csv`` measured beside it
    (``MANIFEST.json``, its entry's ``measured[column]``), e.g. a validation accuracy."""

    def value(self, figures: Path) -> float:
        return float(self.measured(figures))

    def measured(self, figures: Path) -> Any:
        """What the build recorded under ``measured[column]``; a ``LookupError`` naming the artefact when nothing."""
        entry = _manifest_entry(figures, self.csv)
        if entry is None or self.column not in entry.get("measured", {}):
            raise LookupError(f"MANIFEST.json: the entry of {self.csv} has no measured {self.column!r}")
        return entry["measured"][self.column]

    def source(self) -> str:
        return f"MANIFEST.json {self.csv} measured {self.column!r}"


@dataclass(frozen=True)
class MeasuredOf(Measured):
    """A number derived from what a build measured per run (``measured[column]``, a mapping ``{run: value}``):
    ``compute`` takes the mapping and returns the number (e.g. the smallest of some runs)."""

    compute: Callable = field(default=None, hash=False)

    def value(self, figures: Path) -> float:
        return float(self.compute(self.measured(figures)))


def _runs_of(kind: str, pick_: Callable) -> Callable:
    return lambda runs: pick_(value for run, value in runs.items() if run.startswith(f"digits_cnn_{kind} "))


def _manifest_entry(figures: Path, name: str) -> dict | None:
    path = Path(figures) / "MANIFEST.json"
    return json.loads(path.read_text()).get("artefacts", {}).get(name) if path.exists() else None


# Numbers measured by the builds (in MANIFEST.json), held once the manifest has an entry for their artefact.
MEASURED: list[Held] = [
    Measured("6 epochs, validation accuracy {}) scored", SW, {}, "val_acc", 2),
    Measured("(12 epochs, val_acc {}), run from", DIFFERENCE, {}, "val_acc", 3),
    Measured("top-1 {} on the 20 labelled", REF, {}, "pretrained_top1", 2),
    Measured("(held-out accuracy {}) on 256", "position_cap_study.csv", {}, "digits_cnn_heldout_accuracy", 2),
    Measured("(validation mIoU {} vs", F4, {}, "segmentation (U-Net): val_miou", 2),
    Measured("vs {}). Tested on this", F4, {}, "segmentation (FCN): val_miou", 2),
    MeasuredOf("accuracy is alike: {}–", BLUR, {}, "val_acc", 3, False, _runs_of("maxpool", min)),
    MeasuredOf("–{} with max pooling,", BLUR, {}, "val_acc", 3, False, _runs_of("maxpool", max)),
    MeasuredOf("with max pooling, {}–", BLUR, {}, "val_acc", 3, False, _runs_of("blurpool", min)),
    MeasuredOf("–{} with BlurPool (3", BLUR, {}, "val_acc", 3, False, _runs_of("blurpool", max)),
]


# ---- the check -------------------------------------------------------------------------------------------------


def render(text: str, figures: Path, tables: Mapping = TABLES) -> str:
    """``text`` with every generated table rendered again from the CSVs in ``figures``."""

    def table(match: re.Match) -> str:
        if match["name"] not in tables:
            raise KeyError(f"README: no table named {match['name']!r} (known: {', '.join(tables)})")
        return match.group(1) + tables[match["name"]](figures) + match.group(4)

    return BLOCK.sub(table, text)


def check(
    text: str,
    figures: Path,
    tables: Mapping = TABLES,
    held: list[Held] | None = None,
    required: tuple[str, ...] | None = None,
) -> list[str]:
    """What in ``text`` differs from the CSVs in ``figures``: generated tables that render otherwise, tables of
    ``required`` (:data:`REQUIRED`; default all ``tables`` when those are given) with no markers, and numbers of
    ``held`` (:data:`HELD`) whose phrase, rendered from its CSV, is not there; by default also the tables and
    numbers of :data:`WHEN_PRESENT` whose CSV is in ``figures`` and those of :data:`MEASURED` whose artefact has
    an entry in the manifest."""
    problems = []
    found = {match["name"]: match for match in BLOCK.finditer(text)}
    if required is None:
        required = REQUIRED if tables is TABLES else tuple(tables)
    if held is None:
        held = list(HELD)
        for csv_name, (names, numbers) in WHEN_PRESENT.items():
            if (Path(figures) / csv_name).exists():
                required, held = (*required, *names), held + numbers
        held += [number_ for number_ in MEASURED if _manifest_entry(figures, number_.csv) is not None]
    for name in required:
        if name not in found:
            problems.append(f"table {name}: no <!-- figures:{name} --> ... <!-- /figures:{name} --> block")
    for name, match in found.items():
        if name not in tables:
            problems.append(f"table {name}: no renderer of that name (known: {', '.join(tables)})")
            continue
        rendered = tables[name](figures)
        if match["body"] != rendered:
            pairs = zip(match["body"].splitlines(), rendered.splitlines())
            differ = [f"    README: {a}\n    CSV:    {b}" for a, b in pairs if a != b]
            problems.append(f"table {name} differs from its CSV (`--write` renders it):\n" + "\n".join(differ[:5]))
    for number_ in held:
        try:
            expected = number_.expected(figures)
        except (LookupError, OSError, ValueError) as error:
            problems.append(f"{number_.phrase!r}: {error}")
            continue
        if expected not in text:
            problems.append(f"{number_.phrase!r}: the README does not say {expected!r}, which {number_.source()} gives")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 naming what differs")
    mode.add_argument("--write", action="store_true", help="rewrite the generated tables, then check")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--figures", type=Path, default=FIGURES)
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    if args.write:
        rendered = render(text, args.figures)
        if rendered != text:
            args.readme.write_text(rendered, encoding="utf-8")
            print(f"{args.readme}: generated tables rewritten from {args.figures}")
        text = rendered
    problems = check(text, args.figures)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(problems)} difference(s) between {args.readme.name} and {args.figures}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
