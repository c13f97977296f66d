"""Magnitude sweeps: expansion and names, the identity at magnitude 0, the half-way summary, and what a
real Trainer run logs for a sweep (figures and summaries read back from TensorBoard, the CSV's columns)."""

from __future__ import annotations

import csv
import math
import warnings

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn

from seis_lightning import SEISCallback, score_model
from seis_lightning.cli import SEISLightningCLI
from seis_lightning.functional import SCORES, SEISWarning
from seis_lightning.plotting import sweep_figure
from seis_lightning.recipes import resolve_recipe
from seis_lightning.scoring import SEISProbe
from seis_lightning.sweeps import halfway, halfway_magnitude, sweep_families, sweep_summaries, sweep_summary_reasons
from seis_lightning.trainer_io import CSV_NAME
from seis_lightning.transforms import RandomAffine, parse_transforms
from tests.conftest import digits_images
from tests.lightning_helpers import TinyCNN, digits_loaders, read_events, trainer


@pytest.mark.parametrize(
    ("spec", "names", "magnitudes"),
    [
        ("rotate:0:60:20", ["rotate0", "rotate20", "rotate40", "rotate60"], [0, 20, 40, 60]),
        ("rotate:0:90:15", [f"rotate{m}" for m in range(0, 91, 15)], list(range(0, 91, 15))),
        ("rotate:0:50:20", ["rotate0", "rotate20", "rotate40"], [0, 20, 40]),  # stop not on the grid: left out
        ("rotate:-10:10:10", ["rotate-10", "rotate0", "rotate10"], [-10, 0, 10]),
        ("rotate:30:30:5", ["rotate30"], [30]),
        (
            "translate:0:0.3:0.1",
            ["translate0_0", "translate0.1_0", "translate0.2_0", "translate0.3_0"],
            [0, 0.1, 0.2, 0.3],
        ),
        ("scale:0.8:1.2:0.2", ["scale0.8", "scale1", "scale1.2"], [0.8, 1.0, 1.2]),
        ("shift:0:1.5:0.5", ["shift0_0", "shift0.5_0", "shift1_0", "shift1.5_0"], [0, 0.5, 1.0, 1.5]),
    ],
)
def test_a_sweep_is_one_transformation_per_magnitude_named_as_its_single_form(spec, names, magnitudes):
    transforms = parse_transforms(spec)
    family = spec.split(":")[0]
    assert [t.name for t in transforms] == names
    assert [t.family for t in transforms] == [family] * len(names)
    assert [t.magnitude for t in transforms] == pytest.approx(magnitudes, abs=1e-12)
    single = [parse_transforms(f"{family}:{m:g}")[0] for m in magnitudes]  # "rotate:20" -> rotate20
    assert [t.name for t in single] == names
    assert [t.maps for t in single] == [t.maps for t in transforms]


def test_sweeps_mix_with_other_transformations_everywhere():
    specs = ["random_affine", "rotate:0:40:20", "hflip"]
    names = ["random_affine", "rotate0", "rotate20", "rotate40", "hflip"]
    assert [t.name for t in SEISProbe(transforms=specs).transforms] == names
    assert [t.name for t in SEISCallback(transforms=specs).probe.transforms] == names
    assert [t.name for t in parse_transforms(None)] == ["random_affine"] and isinstance(
        parse_transforms(None)[0], RandomAffine
    )
    scores = score_model(nn.Sequential(nn.Conv2d(1, 4, 3)), digits_images(16, size=10), layers="0", transforms=specs)
    assert list(scores) == names
    with pytest.raises(ValueError, match="distinct names"):
        SEISProbe(transforms=["rotate:20", "rotate:0:40:20"])


def test_the_command_line_takes_a_sweep():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = SEISLightningCLI(
            args=["--config", str(resolve_recipe("digits_cnn")), "--seis.transforms=[rotate:0:90:15, hflip]"], run=False
        )
    assert [t.name for t in cli.seis.probe.transforms] == [f"rotate{m}" for m in range(0, 91, 15)] + ["hflip"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rotate:0:60:0", "step > 0 and stop >= start"),
        ("rotate:60:0:20", "step > 0 and stop >= start"),
        ("rotate:0:inf:20", "finite numbers"),
        ("rotate:0:sixty:20", "<name>:<start>:<stop>:<step> with numbers"),
        ("hflip:0:1:1", "sweeps are of rotate, translate, scale, shift"),
        ("rotate:0:360:1", "361 magnitudes (at most 100"),
        ("scale:0:1:0.5", "Expected a positive scale factor, but got 0.0"),
        ("rotate:0:60", "expected one of: random_affine"),
    ],
)
def test_a_malformed_sweep_says_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("*", r"\*")) as error:
        parse_transforms([spec])
    assert repr(spec) in str(error.value)


def test_magnitude_zero_is_the_identity_every_score_one():
    """rotate0 / translate0_0 / scale1 give the probe images themselves: every score is exactly 1 (its null is not)."""
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU())
    torch.manual_seed(0)
    scores = score_model(
        model,
        digits_images(64, size=12),
        layers=["1", "3"],
        precision="float64",
        transforms=["rotate:0:30:30", "translate:0:0.2:0.2", "scale:1:1.2:0.2"],
    )
    for name in ("rotate0", "translate0_0", "scale1"):
        for layer, values in scores[name].items():
            for score in SCORES:
                assert values[score] == pytest.approx(1.0, abs=1e-9), (name, layer, score)
                assert values[f"{score}_null"] < 0.99, (name, layer, score)
    assert scores["rotate30"]["1"]["invariance"] < 0.9  # a real rotation does move the map


def test_halfway_magnitude():
    assert halfway_magnitude([0, 10, 20], [1.0, 0.8, 0.4], [0.2, 0.2, 0.2]) == pytest.approx(15.0)
    assert halfway_magnitude([0, 10], [1.0, 0.6], [0.2, 0.2]) == pytest.approx(10.0)  # reaches it exactly
    assert halfway_magnitude([0, 5, 10], [0.9, 0.5, 0.1], [0.1, 0.3, 0.2]) == pytest.approx(5 * (0.9 - 0.55) / 0.4)
    assert math.isnan(halfway_magnitude([0, 10, 20], [1.0, 0.9, 0.8], [0.2, 0.2, 0.2]))  # never falls half-way
    assert math.isnan(halfway_magnitude([0, 10], [0.2, 0.1], [0.3, 0.3]))  # starts at its null
    assert math.isnan(halfway_magnitude([0, 10], [1.0, math.nan], [0.3, 0.3]))


@pytest.mark.parametrize(
    ("values", "nulls", "words"),
    [
        ([1.0, math.nan], [0.3, 0.3], "equivariance or its null is NaN at magnitude 10"),
        ([0.2, 0.1], [0.3, 0.3], "equivariance at the first magnitude 0 (0.2) is not above its null (0.3)"),
        ([1.0, 0.9], [0.2, 0.2], "never falls half-way (to 0.6) within the sweep: lowest 0.9 at 10"),
        ([1.0, 0.5, 0.9], [0.2, 0.2, 0.2], "rises back above half-way (0.6) at 20 after falling below it at 10"),
    ],
)
def test_halfway_is_nan_with_a_reason(values, nulls, words):
    value, reason = halfway([0, 10, 20][: len(values)], values, nulls)
    assert math.isnan(value) and words in reason


def test_halfway_of_a_fall_has_no_reason():
    assert halfway([0, 10, 20], [1.0, 0.8, 0.4], [0.2, 0.2, 0.2]) == (pytest.approx(15.0), "")
    assert halfway([0, 10, 20, 30], [1.0, 0.4, 0.5, 0.3], [0.2] * 4) == (pytest.approx(20 / 3), "")  # a bump below


def test_sweep_summary_reasons_say_why_a_summary_is_nan():
    transforms = parse_transforms(["shift:0:2:1", "rotate:0:20:10"])
    values = {"shift0_0": 1.0, "shift1_0": 0.5, "shift2_0": 0.95, "rotate0": 1.0, "rotate10": 0.8, "rotate20": 0.4}
    scores = {name: {"pool": {"equivariance": v, "equivariance_null": 0.2}} for name, v in values.items()}
    summaries = sweep_summaries("seis", scores, transforms)
    assert summaries["seis/sweep_rotate/equivariance_halfway/pool"] == pytest.approx(15.0)
    assert math.isnan(summaries["seis/sweep_shift/equivariance_halfway/pool"])
    reasons = sweep_summary_reasons("seis", scores, transforms)
    assert list(reasons) == ["seis/sweep_shift/equivariance_halfway/pool"]
    assert (
        "rises back above half-way (0.6) at 2 after falling below it at 1"
        in reasons["seis/sweep_shift/equivariance_halfway/pool"]
    )


def test_sweep_families_and_summaries():
    transforms = parse_transforms(["hflip", "rotate:0:20:10", "translate:0.1", "rotate:45"])
    assert sweep_families(transforms) == {
        "rotate": [(0, "rotate0"), (10, "rotate10"), (20, "rotate20"), (45, "rotate45")]
    }
    values = {"rotate0": 1.0, "rotate10": 0.8, "rotate20": 0.4, "rotate45": 0.3}
    scores = {name: {"fc": {"equivariance": v, "equivariance_null": 0.2}} for name, v in values.items()}
    assert sweep_summaries("seis", scores, transforms) == {
        "seis/sweep_rotate/equivariance_halfway/fc": pytest.approx(15.0)
    }


def test_sweep_figure_draws_one_line_per_layer_at_the_magnitudes():
    scores = [
        {layer: {"invariance": v + k, "invariance_null": 0.1} for k, layer in enumerate(("a", "b"))} for v in (0.1, 0.5)
    ]
    figure = sweep_figure([0.0, 30.0], scores, "invariance", "title")
    axes = figure.axes[0]
    lines = [line for line in axes.get_lines() if line.get_linestyle() == "-"]
    assert [list(line.get_xdata()) for line in lines] == [[0.0, 30.0]] * 2
    assert [list(line.get_ydata()) for line in lines] == [[0.1, 0.5], [1.1, 1.5]]
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["a", "b"]


def test_a_trainer_run_logs_sweep_figures_summaries_and_csv_columns(tmp_path):
    callback = SEISCallback(
        layers=["conv1", "conv2"], transforms=["hflip", "rotate:0:60:30"], num_samples=48, score_before_training=False
    )
    train, val = digits_loaders()
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    fitter = trainer(tmp_path, [callback], max_epochs=1, logger=[logger, CSVLogger(tmp_path, name="csv", version=0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        fitter.fit(TinyCNN(), train, val)
    events = read_events(logger.log_dir)
    steps = [entry["step"] for entry in callback.history]
    for score in SCORES:
        assert [e.step for e in events.Images(f"seis/sweep_rotate/{score}")] == steps
    last = callback.history[-1]["scores"]
    for layer in ("conv1", "conv2"):
        logged = events.Scalars(f"seis/sweep_rotate/equivariance_halfway/{layer}")
        values = [last[f"rotate{m}"][layer]["equivariance"] for m in (0, 30, 60)]
        nulls = [last[f"rotate{m}"][layer]["equivariance_null"] for m in (0, 30, 60)]
        expected = halfway_magnitude([0, 30, 60], values, nulls)
        assert [e.step for e in logged] == steps
        assert logged[-1].value == pytest.approx(expected, nan_ok=True, rel=1e-6)
    assert not any("sweep_hflip" in tag for tag in events.Tags()["images"])
    with open(tmp_path / "tb" / "version_0" / CSV_NAME) as handle:
        rows = list(csv.DictReader(handle))
    kinds = {(row["transform"], row["family"], row["magnitude"]) for row in rows}
    assert kinds == {
        ("hflip", "", ""),
        ("rotate0", "rotate", "0.0"),
        ("rotate30", "rotate", "30.0"),
        ("rotate60", "rotate", "60.0"),
    }
    final = [row for row in rows if row["global_step"] == str(fitter.global_step) and row["transform"] == "rotate30"]
    assert {(r["layer"], r["score"]): float(r["value"]) for r in final} == pytest.approx(
        {(layer, score): last["rotate30"][layer][score] for layer in ("conv1", "conv2") for score in SCORES}
    )
