"""Small, seeded versions of the paper's findings, run through the recipes (issue 5).

Each asserts the direction of an effect with a margin fixed before the runs were measured (for Figure 3,
from the seeds-and-jackknife noise of scripts/figure3_seeds.py). They are not tuned until they pass: a
finding that does not reproduce at this scale stays here as a strict ``xfail`` (it fails the suite if it
starts to reproduce, so the README gets updated) with the measured numbers in its reason, and is reported
in the README's "What the scores say".
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest

from scripts.reproduce_figures import run_recipe

DIGITS = ("--trainer.max_epochs=4", "--seis.num_samples=192", "--model.width=16")


def final_scores(log_dir, recipe: str, *overrides: str) -> dict:
    history = run_recipe(recipe, "--seis.score_before_training=false", *overrides, log_dir=log_dir)
    return history[-1]["scores"]["random_affine"]


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory) -> dict[str, dict]:
    """The digits CNN trained for 4 epochs, without and with random-affine augmentation."""
    log_dir = tmp_path_factory.mktemp("findings")
    return {
        "plain": final_scores(log_dir, "digits_cnn", *DIGITS),
        "augmented": final_scores(log_dir, "digits_cnn_augment", *DIGITS),
    }


@pytest.mark.slow
def test_invariance_rises_and_equivariance_dominates_early(digits_runs):
    """Figure 2: early layers keep the geometry (equivariance >> invariance), invariance rises with depth."""
    scores = digits_runs["plain"]
    invariance = [scores[layer]["invariance"] for layer in ("conv1", "conv2", "conv3", "pool")]
    assert all(deeper > shallower for shallower, deeper in itertools.pairwise(invariance)), invariance
    assert invariance[-1] > invariance[0] + 0.3, invariance
    assert scores["conv1"]["equivariance"] > scores["conv1"]["invariance"] + 0.3, scores["conv1"]


@pytest.mark.slow
def test_augmentation_raises_invariance_at_the_pooled_features_and_logits_only(digits_runs):
    """Figure 3, as far as it holds: random-affine augmentation raises the invariance of the pooled features and
    the logits, not of the convolutions. Over 3 training seeds with jackknife SEs (scripts/figure3_seeds.py,
    docs/figures/fig3_seeds.csv) MNIST gives +0.012 (pool) and +0.024 (fc), beyond twice the noise (about
    0.01), and every conv layer within it (-0.011 to +0.009); the margins below are those, not this run's
    (this run, before: pool 0.939 -> 0.969, fc 0.950 -> 0.976, conv3 0.617 -> 0.602)."""
    plain, augmented = digits_runs["plain"], digits_runs["augmented"]
    for layer in ("pool", "fc"):
        assert augmented[layer]["invariance"] > plain[layer]["invariance"] + 0.01, layer
    for layer in ("conv1", "conv2", "conv3"):
        assert augmented[layer]["invariance"] < plain[layer]["invariance"] + 0.02, layer


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="does not reproduce at this scale (2 epochs, width 8, seed 0): equivariance U-Net decoder.up3 0.875"
    " (null 0.546) vs FCN decoder.classifier 0.842 (null 0.171); the margin is 0.1",
)
def test_unet_decoder_recovers_equivariance_that_fcn_does_not(tmp_path):
    """Figure 4: skip connections bring equivariance back at the end of the decoder."""
    short = ("--trainer.max_epochs=2", "--trainer.limit_train_batches=12", "--seis.num_samples=96", "--model.width=8")
    fcn = final_scores(tmp_path, "shapes_seg_fcn", *short, "--seis.layers=[encoder.layer4, decoder.classifier]")
    unet = final_scores(tmp_path, "shapes_seg_unet", *short, "--seis.layers=[encoder.layer4, decoder.up3]")
    assert unet["decoder.up3"]["equivariance"] > fcn["decoder.classifier"]["equivariance"] + 0.1
    assert unet["decoder.up3"]["equivariance"] > unet["encoder.layer4"]["equivariance"]


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
