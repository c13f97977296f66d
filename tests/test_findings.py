"""The paper's findings, each stated as the paper or the spec states it and judged by one rule, fixed before
the runs (issue 31; the margins and their reasons are in ``notes/findtests.md``, written before any
outcome was read).

The rule is ``seis-lightning compare``'s: :func:`seis_lightning.compare.welch_verdict`, a difference
against ``t_{0.975, df}`` times its SE with Welch-Satterthwaite ``df``, two-sided ("raised", "lowered" or
"within noise"). The SEs are the artefact's own where it has them (Figure 3's seeds and jackknife, the
MobileNetV2 reference's jackknife, the live run's jackknife); where it has none, an assumed jackknife SE
with 9 degrees of freedom: ``DIGITS_SE`` for the digits CNN (the largest per-run jackknife SE of any digits
score in ``fig3_seeds_runs.csv``, rounded up) and ``SHAPES_SE`` for the ResNet-18 on shapes (half as many
probe images: ``sqrt(2)`` times that, rounded up). A score read against its null gets a second term, the
null's, at the same SE. Layers of one run share their probe images, so the unpaired SE of their difference
errs large when they move together: a stricter test, not a looser one.

Figure 2 runs live (one small digits run, 4 epochs, its own jackknife SEs) and on the committed artefacts;
Figure 3, Figure 4, the rotation sweep and the MobileNetV2 reference read the committed CSVs under
``docs/figures`` (rebuilt by ``make figures`` / ``scripts/figure3_seeds.py`` / ``scripts/sweep_figure.py``
/ ``scripts/reference_networks.py``), so these tests judge the artefacts the README shows. A claim that the
artefact does not bear out is a strict ``xfail`` whose reason gives the measured numbers: it fails the suite
once a rebuilt artefact bears the claim out, so the mark and the README must then change.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from scripts.figure3_seeds import read_runs, table
from scripts.reproduce_figures import run_recipe
from seis_lightning.compare import welch_verdict
from seis_lightning.sweeps import halfway_magnitude

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
DIGITS_SE = 0.012  # notes/findtests.md: the largest jackknife SE of a digits score in fig3_seeds_runs.csv, rounded up
SHAPES_SE = 0.02  # 256 probe images, half the digits' 512: 0.012 * sqrt(2) = 0.017, rounded up
ASSUMED_DF = 9  # the df of a jackknife SE from 10 groups, the artefacts' G
LIVE_GROUPS = 8  # the live run's jackknife groups: its SEs have G - 1 = 7 df


def read(name: str) -> list[dict]:
    with (FIGURES / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


def difference(a: float, b: float, *ses: float, df: float = ASSUMED_DF) -> dict:
    """The shared verdict on ``b - a``, each SE of ``ses`` one independent term with ``df``."""
    return welch_verdict(b - a, [(se**2, df) for se in ses])


def xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"does not hold on the committed artefact: {reason}")


# ---------------------------------------------------------------------------------------------- Figure 2
# Spec, "Expected behaviour", last paragraph: "Through a network ... a small CNN trained on digits:
# equivariance falls with depth (≈ 0.91 conv1 → 0.69 last conv) while invariance rises (≈ 0.11 → 0.19 on
# conv maps, ≈ 0.84 at the pooled features) and channel_invariance rises (≈ 0.36 → 0.83 at the logits)."

DEPTHS = {  # conv maps in depth order, the pooled features, the logits
    "digits": (("conv1", "conv2", "conv3"), "pool", "fc"),
    "resnet": (("encoder.stem", "encoder.layer1", "encoder.layer2", "encoder.layer3", "encoder.layer4"), "pool", "fc"),
}


def depth_claims(
    scores: dict | None, network: str, se_of: Callable[[str, str], float] | None = None, df: float = ASSUMED_DF
) -> dict[str, tuple[str, str, str]]:
    """Each depth claim of the spec: name -> (verdict wanted, verdict found, what was measured), by the Welch
    rule with the SE ``se_of(layer, score)`` of each score (``df`` each); ``scores=None``: the names only."""
    convs, pooled, logits = DEPTHS[network]

    def verdict(score: str, shallow: str, deep: str) -> tuple[str, str]:
        if scores is None:  # the claims' names only
            return "", ""
        a, b = scores[shallow][score], scores[deep][score]
        found = difference(a, b, se_of(shallow, score), se_of(deep, score), df=df)
        return found["verdict"], f"{score} {shallow} {a:.3f} -> {deep} {b:.3f} (bar {found['bar']:.3f})"

    claims = {
        "equivariance falls over the conv maps": ("lowered", verdict("equivariance", convs[0], convs[-1])),
        "invariance rises over the conv maps": ("raised", verdict("invariance", convs[0], convs[-1])),
        "invariance rises at the pooled features": ("raised", verdict("invariance", convs[-1], pooled)),
        "channel_invariance rises to the logits": ("raised", verdict("channel_invariance", convs[0], logits)),
    }
    for shallow, deep in itertools.pairwise(convs):
        claims[f"equivariance does not rise {shallow} -> {deep}"] = (
            "not raised",
            verdict("equivariance", shallow, deep),
        )
    for shallow, deep in itertools.pairwise((*convs, pooled)):
        claims[f"invariance does not fall {shallow} -> {deep}"] = ("not lowered", verdict("invariance", shallow, deep))
    return {name: (wanted, *found) for name, (wanted, found) in claims.items()}


def failed_claims(claims: dict) -> list[str]:
    def holds(wanted: str, verdict: str) -> bool:
        return verdict != wanted.removeprefix("not ") if wanted.startswith("not ") else verdict == wanted

    return [f"{name}: {verdict} ({measured})" for name, (wanted, verdict, measured) in claims.items()
            if not holds(wanted, verdict)]  # fmt: skip


@pytest.mark.slow
def test_figure2_depth_live(tmp_path):
    """Figure 2 on a small digits CNN trained here (width 16, 4 epochs, 192 probe images, scored once at
    the end with ``jackknife_groups=8``): each depth claim of the spec by the Welch rule on the run's own
    jackknife SEs (df 7 each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a second intra-op thread only spins on these small maps (tests/setups.py)
    try:
        history = _live_digits(tmp_path)
    finally:
        torch.set_num_threads(threads)
    scores = history[-1]["scores"]["random_affine"]

    claims = depth_claims(scores, "digits", lambda layer, score: scores[layer][f"{score}_se"], df=LIVE_GROUPS - 1)
    assert len(claims) == 4 + 2 + 3
    assert not failed_claims(claims), failed_claims(claims)


def _live_digits(log_dir: Path) -> list[dict]:
    return run_recipe(
        "digits_cnn",
        "--trainer.max_epochs=4",
        "--model.width=16",
        "--seis.num_samples=192",
        "--seis.score_before_training=false",
        "--seis.every_n_epochs=1000",
        f"--seis.jackknife_groups={LIVE_GROUPS}",
        log_dir=log_dir,
    )


def final_epoch(name: str) -> dict:
    rows = read(name)
    last = max(float(row["epochs_trained"]) for row in rows)
    return {
        row["layer"]: {key: float(value) for key, value in row.items() if key not in ("epochs_trained", "layer")}
        for row in rows
        if float(row["epochs_trained"]) == last
    }


ARTEFACTS = {"digits": ("fig2_depth_epoch.csv", DIGITS_SE), "resnet": ("fig2b_resnet_shapes.csv", SHAPES_SE)}
FIGURE2_NOT_HELD: dict[tuple[str, str], str] = {
    ("resnet", "equivariance does not rise encoder.layer3 -> encoder.layer4"): "raised: encoder.layer3 0.476 ->"
    " encoder.layer4 0.597 (bar 0.059); over the conv maps as a whole it falls (stem 0.885 -> layer4 0.597, lowered)",
}


def _figure2_params():
    for network in ARTEFACTS:
        names = depth_claims(None, network)
        for name in names:
            reason = FIGURE2_NOT_HELD.get((network, name))
            yield pytest.param(network, name, id=f"{network}-{name}", marks=[xfail(reason)] if reason else [])


@pytest.mark.parametrize(("network", "claim"), list(_figure2_params()))
def test_figure2_depth_artefacts(network, claim):
    """Figure 2 on the committed artefacts (digits CNN, 12 epochs; ResNet-18 on shapes, 4 epochs), the last
    epoch: each depth claim of the spec by the Welch rule, with the assumed SE of the network's probe set."""
    name, se = ARTEFACTS[network]
    claims = depth_claims(final_epoch(name), network, lambda layer, score: se)
    assert not failed_claims({claim: claims[claim]}), claims[claim]


# ---------------------------------------------------------------------------------------------- Figure 3
# Spec, same paragraph: "Training with random-affine augmentation raises all three at the deeper layers."
# Deeper layers: the last conv and after (conv3, pool, fc): verdict "raised". The rise is limited to them,
# so at conv1 and conv2 the claim is no change: verdict "within noise", two-sided. Verdicts by compare_runs
# (welch_verdict) over the 3 + 3 seeds of docs/figures/fig3_seeds_runs.csv, seeds and jackknife (G = 10).

DEEP, SHALLOW = ("conv3", "pool", "fc"), ("conv1", "conv2")
SCORES = ("equivariance", "invariance", "channel_invariance")
FIGURE3_NOT_HELD: dict[tuple[str, str, str], str] = {  # plain -> augmented, means over 3 seeds each
    ("mnist", "conv3", "equivariance"): "within noise: 0.803 -> 0.808, delta +0.0054, bar 0.0114 (df 11.2)",
    ("mnist", "conv3", "invariance"): "within noise: 0.603 -> 0.612, delta +0.0088, bar 0.0161 (df 13.8)",
    ("mnist", "conv3", "channel_invariance"): "within noise: 0.736 -> 0.743, delta +0.0064, bar 0.0224 (df 4.0)",
    ("mnist", "pool", "channel_invariance"): "within noise: 0.902 -> 0.919, delta +0.0169, bar 0.0440 (df 10.1)",
    ("mnist", "fc", "channel_invariance"): "within noise: 0.934 -> 0.942, delta +0.0086, bar 0.0146 (df 7.7)",
    ("digits", "conv3", "equivariance"): "within noise: 0.799 -> 0.805, delta +0.0063, bar 0.0287 (df 8.7)",
    ("digits", "conv3", "invariance"): "within noise: 0.606 -> 0.587, delta -0.0190, bar 0.0339 (df 6.1)",
    ("digits", "conv3", "channel_invariance"): "within noise: 0.745 -> 0.747, delta +0.0022, bar 0.0258 (df 3.2)",
    ("digits", "pool", "channel_invariance"): "within noise: 0.891 -> 0.924, delta +0.0330, bar 0.0513 (df 13.5)",
}


def _figure3_params():
    for dataset, layer, score in itertools.product(("mnist", "digits"), (*SHALLOW, *DEEP), SCORES):
        wanted = "raised" if layer in DEEP else "within noise"
        reason = FIGURE3_NOT_HELD.get((dataset, layer, score))
        marks = [xfail(reason)] if reason else []
        yield pytest.param(dataset, layer, score, wanted, id=f"{dataset}-{layer}-{score}", marks=marks)


@pytest.fixture(scope="module")
def figure3_table() -> dict[tuple[str, str, str], dict]:
    rows = table(read_runs(FIGURES / "fig3_seeds_runs.csv"))
    return {(row["dataset"], row["layer"], row["score"]): row for row in rows}


@pytest.mark.parametrize(("dataset", "layer", "score", "wanted"), list(_figure3_params()))
def test_figure3_augmentation(figure3_table, dataset, layer, score, wanted):
    """Augmentation raises each score at the deeper layers and leaves the shallow ones unchanged, beyond the
    noise of 3 training seeds and the probe images (compare_runs's Welch rule, both sides 3 seeds)."""
    row = figure3_table[(dataset, layer, score)]
    assert row["plain_seeds"] == row["augment_seeds"] == 3, row
    assert row["verdict"] == wanted, (
        f"{row['verdict']}: delta {row['delta']:+.4f}, bar {row['bar']:.4f} (df {row['df']:.1f})"
    )


def test_figure3_committed_table_is_the_shared_rule(figure3_table):
    """docs/figures/fig3_seeds.csv is what compare_runs gives from the committed runs (no stale table)."""
    committed = read("fig3_seeds.csv")
    assert len(committed) == len(figure3_table) == 30
    for row in committed:
        again = figure3_table[(row["dataset"], row["layer"], row["score"])]
        assert row["verdict"] == again["verdict"], row
        for key in ("delta", "se", "bar"):
            assert float(row[key]) == pytest.approx(again[key], abs=2e-6), (row, key)


# ---------------------------------------------------------------------------------------------- Figure 4
# README, "What the scores say", Figure 4 (the paper's claims): at the bottleneck (encoder.layer4) the
# segmentation models keep more equivariance than the multi-task model, which keeps more than the classifier;
# the classifier is the more invariant there; skip connections (U-Net) bring equivariance back across the
# decoder, where the FCN's decoder does not. Everything as score - null (the U-Net's last maps have a null
# near 0.5: CCA's upward bias on few channels and many positions), each score and null with SHAPES_SE.

FCN, UNET, MULTI, CLS = "segmentation (FCN)", "segmentation (U-Net)", "multitask (U-Net)", "classification"
BOTTLENECK = "encoder.layer4"
FIGURE4_NOT_HELD: dict[str, str] = {  # score - null at encoder.layer4; SHAPES_SE on each score and null
    f"equivariance: {UNET} > {MULTI}": "within noise: multi-task 0.596, U-Net 0.630 (bar 0.081)",
    f"equivariance: {MULTI} > {CLS}": "within noise: classification 0.561, multi-task 0.596 (bar 0.081)",
    f"invariance: {CLS} > {FCN}": "lowered: FCN 0.715, classification 0.554 (bar 0.081)",
    f"invariance: {CLS} > {UNET}": "within noise: U-Net 0.628, classification 0.554 (bar 0.081)",
    "U-Net recovers more than the FCN": "lowered: equivariance - null U-Net encoder.layer4 0.630 ->"
    " decoder.classifier 0.445 (-0.185), FCN encoder.layer4 0.713 -> decoder.upsample 0.749 (+0.036), bar 0.113",
    "U-Net ends above its bottleneck": "lowered: equivariance - null U-Net encoder.layer4 0.630 ->"
    " decoder.classifier 0.445 (bar 0.081; raw 0.92 against a null of 0.47 at the end)",
}


@pytest.fixture(scope="module")
def figure4() -> dict[str, dict[str, dict[str, float]]]:
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for row in read("fig4_tasks_decoders.csv"):
        runs.setdefault(row["run"], {})[row["layer"]] = {
            k: float(v) for k, v in row.items() if k not in ("run", "layer")
        }
    return runs


def excess(values: dict[str, float], score: str) -> float:
    return values[score] - values[f"{score}_null"]


def _figure4_params():
    cases = [
        ("equivariance", FCN, MULTI),  # (score, the run that keeps more, the run that keeps less)
        ("equivariance", UNET, MULTI),
        ("equivariance", MULTI, CLS),
        ("invariance", CLS, FCN),
        ("invariance", CLS, UNET),
    ]
    for score, more, less in cases:
        case = f"{score}: {more} > {less}"
        reason = FIGURE4_NOT_HELD.get(case)
        yield pytest.param(score, more, less, id=case, marks=[xfail(reason)] if reason else [])


@pytest.mark.parametrize(("score", "more", "less"), list(_figure4_params()))
def test_figure4_bottleneck_order(figure4, score, more, less):
    """At the bottleneck, ``more`` keeps more of ``score`` than ``less``, read against each one's null."""
    a, b = excess(figure4[less][BOTTLENECK], score), excess(figure4[more][BOTTLENECK], score)
    found = difference(a, b, *[SHAPES_SE] * 4)
    assert found["verdict"] == "raised", f"{score} - null: {less} {a:.3f}, {more} {b:.3f} (bar {found['bar']:.3f})"


def decoder_recovery(run: dict[str, dict[str, float]]) -> tuple[float, str]:
    """Equivariance - null at the decoder's last layer (the run's last row) minus at the bottleneck."""
    last = list(run)[-1]
    end, start = excess(run[last], "equivariance"), excess(run[BOTTLENECK], "equivariance")
    return end - start, f"{BOTTLENECK} {start:.3f} -> {last} {end:.3f}"


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param(claim, marks=[xfail(FIGURE4_NOT_HELD[claim])] if claim in FIGURE4_NOT_HELD else [])
        for claim in ("U-Net recovers more than the FCN", "U-Net ends above its bottleneck")
    ],
)
def test_figure4_unet_decoder_recovers_equivariance(figure4, claim):
    """Skip connections bring equivariance back at the end of the decoder: the U-Net's recovery
    (equivariance - null, last decoder layer minus bottleneck) exceeds the FCN's (8 terms: 4 scores, 4 nulls),
    and the U-Net's last layer is above its own bottleneck (4 terms)."""
    unet, unet_measured = decoder_recovery(figure4[UNET])
    fcn, fcn_measured = decoder_recovery(figure4[FCN])
    if claim == "U-Net recovers more than the FCN":
        found = difference(fcn, unet, *[SHAPES_SE] * 8)
    else:
        found = difference(0.0, unet, *[SHAPES_SE] * 4)
    assert found["verdict"] == "raised", (
        f"equivariance - null: U-Net {unet_measured}, FCN {fcn_measured} (bar {found['bar']:.3f})"
    )


# ---------------------------------------------------------------------------------------------- rotation sweep
# Spec, "Sweep summaries", and README "How far a rotation is absorbed": at the deep layers (conv3, pool, fc)
# equivariance and invariance fall with the angle (0° -> 45°, "lowered", DIGITS_SE each), and the half-way
# angle of equivariance is defined (finite, inside the sweep) and is the spec's definition of the curve.

SWEEP_NOT_HELD: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def sweep() -> dict[tuple[str, str], list[tuple[float, float, float, float]]]:
    """(layer, score) -> [(angle, value, null, equivariance_halfway)] in angle order."""
    curves: dict[tuple[str, str], list] = {}
    for row in read("sweep_digits_rotate.csv"):
        point = tuple(float(row[k]) for k in ("angle", "value", "null", "equivariance_halfway"))
        curves.setdefault((row["layer"], row["score"]), []).append(point)
    return {key: sorted(points) for key, points in curves.items()}


@pytest.mark.parametrize(
    ("layer", "score"),
    [
        pytest.param(layer, score, marks=[xfail(SWEEP_NOT_HELD[(layer, score)])] if (layer, score) in SWEEP_NOT_HELD
                     else [])
        for layer in DEEP
        for score in ("equivariance", "invariance")
    ],
)  # fmt: skip
def test_sweep_deep_layers_fall_with_angle(sweep, layer, score):
    by_angle = {angle: value for angle, value, _, _ in sweep[(layer, score)]}
    found = difference(by_angle[0.0], by_angle[45.0], DIGITS_SE, DIGITS_SE)
    assert found["verdict"] == "lowered", f"{layer} {score}: 0° {by_angle[0.0]:.3f}, 45° {by_angle[45.0]:.3f}"


def test_sweep_halfway_angle(sweep):
    """The committed half-way angle is the spec's (recomputed from the curve, every layer, NaN as NaN; to
    1e-3 degrees, the CSV keeping 6 decimals of each score), and at the deep layers it is defined and inside
    the sweep."""
    for (layer, score), points in sweep.items():
        if score != "equivariance":
            continue
        angles, values, nulls, committed = zip(*points)
        assert all(c == committed[0] for c in committed) or all(map(math.isnan, committed)), (layer, committed)
        again = halfway_magnitude(angles, values, nulls)
        assert (math.isnan(again) and math.isnan(committed[0])) or again == pytest.approx(committed[0], abs=1e-3), (
            layer,
            again,
            committed[0],
        )
        if layer in DEEP:
            assert angles[0] < again < angles[-1], (layer, again)


# ---------------------------------------------------------------------------------------------- MobileNetV2
# The spec's depth claim on a real network (README "Reference: real networks", docs/figures/ref_mobilenet.csv:
# jackknife SEs over 11 photograph groups, df 10; a null gets its score's SE). Blocks features.1 .. features.17.

BLOCKS = ("features.1", "features.3", "features.6", "features.10", "features.13", "features.17")
FULL_POSITIONS = ("features.10", "features.13", "features.17")  # the blocks under the position cap
REFERENCE_DF = 10
MOBILENET_NOT_HELD: dict[str, str] = {}


@pytest.fixture(scope="module")
def mobilenet() -> dict[tuple[str, str, str], tuple[float, float, float]]:
    """(model, layer, score) -> (value, null, se) under random affine."""
    return {
        (row["model"], row["layer"], row["score"]): (float(row["value"]), float(row["null"]), float(row["se"]))
        for row in read("ref_mobilenet.csv")
        if row["transform"] == "random_affine"
    }


def _reference_params():
    for claim in (
        "pretrained invariance rises from the first block to the last",
        "pretrained invariance falls at no block",
        "pretrained equivariance - null falls over the full-position blocks",
        "training raises invariance at the last block",
    ):
        reason = MOBILENET_NOT_HELD.get(claim)
        yield pytest.param(claim, id=claim.replace(" ", "_"), marks=[xfail(reason)] if reason else [])


@pytest.mark.parametrize("claim", list(_reference_params()))
def test_mobilenet_reference(mobilenet, claim):
    def verdict(a, b, excess_of_null=False):
        (va, na, sa), (vb, nb, sb) = a, b
        if excess_of_null:
            return difference(va - na, vb - nb, sa, sa, sb, sb, df=REFERENCE_DF), f"{va - na:.3f} -> {vb - nb:.3f}"
        return difference(va, vb, sa, sb, df=REFERENCE_DF), f"{va:.3f} -> {vb:.3f}"

    def at(model, layer, score):
        return mobilenet[(model, layer, score)]

    if claim == "pretrained invariance rises from the first block to the last":
        found, measured = verdict(at("pretrained", BLOCKS[0], "invariance"), at("pretrained", BLOCKS[-1], "invariance"))
        assert found["verdict"] == "raised", measured
    elif claim == "pretrained invariance falls at no block":
        for shallow, deep in itertools.pairwise(BLOCKS):
            found, measured = verdict(at("pretrained", shallow, "invariance"), at("pretrained", deep, "invariance"))
            assert found["verdict"] != "lowered", (shallow, deep, measured)
    elif claim == "pretrained equivariance - null falls over the full-position blocks":
        first, last = (at("pretrained", block, "equivariance") for block in (FULL_POSITIONS[0], FULL_POSITIONS[-1]))
        found, measured = verdict(first, last, excess_of_null=True)
        assert found["verdict"] == "lowered", measured
    else:
        found, measured = verdict(at("untrained", BLOCKS[-1], "invariance"), at("pretrained", BLOCKS[-1], "invariance"))
        assert found["verdict"] == "raised", measured


# ---------------------------------------------------------------------------------------------- BlurPool
# Zhang 2019 (beyond the paper): blurring each max pooling shrinks the aliasing gap where the network downsamples.


def test_blurpool_shrinks_the_aliasing_gap_at_the_downsampling_layers():
    """Zhang 2019, per layer: blurring each max pooling (BlurPool) lowers the aliasing gap of the layers that
    downsample, ``conv1`` (stride 2) and ``conv2`` (stride 4), beyond the noise of 3 seeds and the probe images
    (the Welch rule of ``compare_runs``), and leaves the layer before any pooling (``conv1.1``, stride 1) within
    noise. The expectation is the paper's, fixed before the 3-seed runs (a timing trial had shown seed 0); it
    reads the committed table of ``python -m scripts.blurpool_aliasing`` (docs/figures/blurpool_aliasing.csv)."""
    path = Path(__file__).resolve().parents[1] / "docs" / "figures" / "blurpool_aliasing.csv"
    with path.open() as handle:
        rows = {row["layer"]: row for row in csv.DictReader(handle)}
    assert {layer: int(rows[layer]["stride"]) for layer in ("conv1.1", "conv1", "conv2")} == {
        "conv1.1": 1,
        "conv1": 2,
        "conv2": 4,
    }
    for layer in ("conv1", "conv2"):
        row = rows[layer]
        assert int(row["maxpool_seeds"]) == int(row["blurpool_seeds"]) == 3, layer
        assert float(row["blurpool_gap"]) < float(row["maxpool_gap"]), layer
        assert row["verdict"] == "lowered", (layer, row)
    assert rows["conv1.1"]["verdict"] == "within noise", rows["conv1.1"]
