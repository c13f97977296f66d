"""Where the aliasing gap goes (spec, "Aliasing gap"): declared strides (checked by layer name), the rows of
``seis_scores.csv`` read back after a real Trainer run and compared by ``compare_runs``, and the figure of
equivariance against the shift with each layer's stride marked (its artists read back; its image in a
TensorBoard event file: ``tests/test_aliasing.py``)."""

from __future__ import annotations

import csv
import math
import warnings

import pytest
import torch
from matplotlib.container import ErrorbarContainer
from torch import nn

from seis_lightning import SEISCallback, score_model
from seis_lightning.compare import compare_runs, comparison_figure, read_scores_csv
from seis_lightning.options import check_options
from seis_lightning.plotting import CSV_COLUMNS, aliasing_figure
from seis_lightning.sweeps import Stride
from seis_lightning.trainer_io import CSV_NAME
from seis_lightning.transforms import parse_transforms
from tests.lightning_helpers import TinyCNN, digits_loaders, trainer

# ------------------------------------------------------------------ declared strides


@pytest.mark.parametrize(
    ("strides", "words"),
    [
        (16, "Expected `strides` to be a mapping from layer name to a positive number"),
        ({"blocks.3": 0}, "Expected `strides['blocks.3']` to be a positive number"),
        ({"blocks.3": -2}, "Expected `strides['blocks.3']` to be a positive number"),
        ({"blocks.3": True}, "Expected `strides['blocks.3']`"),
        ({"blocks.3": "16"}, "Expected `strides['blocks.3']`"),
    ],
)
def test_declared_strides_out_of_range_are_refused_naming_the_layer(strides, words):
    with pytest.raises(ValueError, match=f"^{words}".replace("[", r"\[").replace("]", r"\]")):
        check_options(strides=strides)
    with pytest.raises(ValueError, match="strides"):
        SEISCallback(layers=["conv1"], transforms="shift:0:2:1", strides=strides)


def _unpadded_cnn() -> nn.Module:
    """12 px -> conv 3x3 unpadded (10) -> max pool 2 (5): 12 / 5 is no stride, the pool's is 2 all the same."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(100, 3))


def test_a_declared_stride_gives_the_aliasing_gap_where_the_sizes_do_not_divide():
    images = torch.rand(48, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    options = dict(layers=["1", "2", "4"], transforms="shift:0:3:1", precision="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = score_model(_unpadded_cnn(), images, **options)
        declared = score_model(_unpadded_cnn(), images, strides={"2": 2, "4": 4}, **options)
    assert plain.strides["2"].stride is None and "not a multiple" in plain.strides["2"].reason
    assert "no stride for layer '2'" in plain.aliasing["2"].reason and math.isnan(plain.aliasing["2"].gap)
    assert declared.strides == {"1": plain.strides["1"], "2": Stride(2, ""), "4": Stride(4, "")}
    assert dict(declared) == dict(plain)  # the scores do not use strides
    e = [declared[f"shift{d}_0"]["2"]["equivariance"] for d in range(4)]
    assert declared.aliasing["2"].gap == pytest.approx(e[2] - (e[1] + e[3]) / 2, abs=1e-12)
    assert declared.aliasing["2"].reason == ""
    assert "no shift at a non-zero multiple of the stride 4" in declared.aliasing["4"].reason  # 4 px not swept


def test_a_declared_stride_of_a_layer_not_scored_is_refused_with_the_closest_names():
    images = torch.rand(16, 1, 12, 12)
    with pytest.raises(ValueError, match=r"`strides` names layer '3 ', which is not one of the scored layers\."):
        score_model(_unpadded_cnn(), images, layers=["1", "2"], transforms="shift:0:2:1", strides={"3 ": 2})
    with pytest.raises(ValueError, match=r"names layer 'conv3', .* Closest names: \['conv2', 'conv1'\]"):
        score_model(TinyCNN(), torch.rand(16, 1, 16, 16), layers=["conv1", "conv2"], strides={"conv3": 2})


def test_the_callback_refuses_a_declared_stride_of_an_unknown_layer_at_setup(tmp_path):
    train, val = digits_loaders()
    for layers, words in ((["conv1", "conv2"], "scored layers"), (None, "model's modules")):
        callback = SEISCallback(layers=layers, transforms="shift:0:2:1", num_samples=32, strides={"conv_2": 2})
        with pytest.raises(ValueError, match=rf"names layer 'conv_2', which is not one of the {words}.*'conv2'"):
            trainer(tmp_path, [callback], max_epochs=1, logger=False).fit(TinyCNN(), train, val)


# ------------------------------------------------------------------ the CSV and compare, after a real fit


def _fit_with_a_shift_sweep(tmp_path) -> tuple[SEISCallback, list[dict[str, str]]]:
    train, val = digits_loaders()
    callback = SEISCallback(
        layers=["conv1", "conv2", "pool"],
        transforms=["hflip", "shift:0:3:1"],
        num_samples=64,
        precision="float64",
        jackknife_groups=4,
        strides={"pool": 2},  # a pooled vector: no map, its stride declared
        log_figures=False,  # the figure's image in TensorBoard: tests/test_aliasing.py
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(tmp_path, [callback], max_epochs=1).fit(TinyCNN(), train, val)
    with open(tmp_path / "tb" / "version_0" / CSV_NAME, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return callback, list(reader)


def test_the_csv_holds_each_layer_s_aliasing_gap_its_se_and_stride_and_compare_reads_it(tmp_path):
    """After a fit (scorings at steps 0 and 6), per scoring and layer one ``sweep_shift`` / ``aliasing_gap`` row: the
    gap and its SE recomputed by hand from the same file's equivariance rows at 1, 2 and 3 px; the stride on every
    row of the layer (conv2's from its map, pool's declared); conv1 (stride 1, whole pixels only) NaN with why."""
    callback, rows = _fit_with_a_shift_sweep(tmp_path)
    strides = {"conv1": "1", "conv2": "2", "pool": "2"}
    assert {(row["layer"], row["stride"]) for row in rows} == set(strides.items())
    gaps = [row for row in rows if row["score"] == "aliasing_gap"]
    assert [(row["global_step"], row["layer"]) for row in gaps] == [
        (step, layer) for step in ("0", "6") for layer in ("conv1", "conv2", "pool")
    ]
    assert {(row["transform"], row["family"], row["magnitude"], row["null"]) for row in gaps} == {
        ("sweep_shift", "shift", "", "")
    }
    for row in gaps:
        curve = {
            int(float(r["magnitude"])): (float(r["value"]), float(r["se"]))
            for r in rows
            if r["global_step"] == row["global_step"] and r["layer"] == row["layer"]
            if r["family"] == "shift" and r["score"] == "equivariance"
        }
        assert sorted(curve) == [0, 1, 2, 3]
        if row["layer"] == "conv1":
            assert math.isnan(float(row["value"])) and row["se"] == ""
            assert "no shift at an odd half-multiple of the stride 1" in row["reason"]
            continue
        (e1, s1), (e2, s2), (e3, s3) = curve[1], curve[2], curve[3]
        assert row["reason"] == ""
        assert float(row["value"]) == pytest.approx(e2 - (e1 + e3) / 2, abs=1e-12)
        assert float(row["se"]) == pytest.approx(math.sqrt(s2**2 + (s1**2 + s3**2) / 4), abs=1e-12)
    last = callback.history[-1]
    assert last["strides"] == {"conv1": 1, "conv2": 2, "pool": 2}
    assert float(gaps[-2]["value"]) == last["aliasing"]["conv2"]["gap"]

    # compare reads the file: the aliasing gaps next to the scores
    label, scores = read_scores_csv(tmp_path / "tb" / "version_0" / CSV_NAME)
    assert label == "fit, epoch 1, step 6"  # the global_step
    assert scores["sweep_shift"]["conv2"]["aliasing_gap"] == float(gaps[-2]["value"])
    assert scores["sweep_shift"]["conv2"]["aliasing_gap_se"] == float(gaps[-2]["se"])
    compared = compare_runs(tmp_path / "tb", tmp_path / "tb" / "version_0", jackknife_groups=4)
    aliasing = {r["layer"]: r for r in compared if r["score"] == "aliasing_gap"}
    assert set(aliasing) == {"conv1", "conv2", "pool"}
    assert aliasing["conv2"]["a_mean"] == float(gaps[-2]["value"]) and aliasing["conv2"]["delta"] == 0
    assert aliasing["conv2"]["verdict"] == "within noise" and aliasing["conv1"]["verdict"] == "no scores"
    assert len(compared) == 3 * 3 * 5 + 3  # (hflip + 4 shifts) x 3 layers x 3 scores, and the gaps


def test_compare_runs_takes_the_aliasing_gaps_of_score_model_results():
    images = torch.rand(48, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = [
            score_model(_unpadded_cnn(), images * scale, layers=["2"], transforms="shift:0:3:1", strides={"2": 2})
            for scale in (1.0, 0.5)
        ]
    rows = compare_runs(runs[0], runs[1])
    (row,) = [r for r in rows if r["score"] == "aliasing_gap"]
    assert row["transform"] == "sweep_shift" and row["layer"] == "2"
    assert row["delta"] == pytest.approx(runs[1].aliasing["2"].gap - runs[0].aliasing["2"].gap, abs=1e-15)
    titles = [axes.get_title() for axes in comparison_figure(rows).axes]
    assert titles == ["equivariance", "invariance", "channel_invariance", "aliasing_gap"]
    assert len(comparison_figure(rows[:3]).axes) == 3  # no gaps compared: the three scores' panels


# ------------------------------------------------------------------ the figure

SHIFTS = [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4]


def _sweep_scores(se: bool) -> tuple[dict, list]:
    """Hand-made equivariance at ``SHIFTS`` for three layers (a: stride 1, b: stride 2, c: none)."""
    transforms = parse_transforms("shift:0:4:0.5")
    curves = {
        "a": [1.0, 0.90, 0.98, 0.91, 0.97, 0.92, 0.96, 0.90, 0.95],
        "b": [1.0, 0.95, 0.80, 0.93, 0.99, 0.94, 0.81, 0.92, 0.98],
        "c": [1.0, 0.99, 0.97, 0.96, 0.95, 0.93, 0.91, 0.90, 0.88],
    }
    nulls = {"a": 0.30, "b": 0.20, "c": 0.10}
    scores = {
        t.name: {
            layer: {
                "equivariance": curve[k],
                "equivariance_null": nulls[layer] + 0.001 * k,
                **({"equivariance_se": 0.01 * (1 + k % 3)} if se else {}),
            }
            for layer, curve in curves.items()
        }
        for k, t in enumerate(transforms)
    }
    return scores, transforms


@pytest.mark.parametrize("se", [False, True])
def test_the_aliasing_figure_draws_each_layer_s_curve_null_and_stride_multiples(se):
    scores, transforms = _sweep_scores(se)
    figure = aliasing_figure(scores, transforms, {"a": 1, "b": Stride(2, ""), "c": None})
    panels = [axes for axes in figure.axes if axes.get_visible()]
    assert len(panels) == 3
    for axes, layer, stride in zip(panels, "abc", (1, 2, None)):
        values = [scores[t.name][layer]["equivariance"] for t in transforms]
        nulls = [scores[t.name][layer]["equivariance_null"] for t in transforms]
        solid = [line for line in axes.lines if line.get_linestyle() == "-"]
        dashed = [line for line in axes.lines if line.get_linestyle() == "--"]
        dotted = [line for line in axes.lines if line.get_linestyle() == ":"]
        (curve,) = solid
        assert list(curve.get_xdata()) == SHIFTS and list(curve.get_ydata()) == values
        (null,) = dashed
        assert list(null.get_xdata()) == SHIFTS and list(null.get_ydata()) == pytest.approx(nulls, abs=1e-15)
        marks = [float(line.get_xdata()[0]) for line in dotted]
        assert marks == {1: [1.0, 2.0, 3.0, 4.0], 2: [2.0, 4.0], None: []}[stride]
        assert all(list(line.get_xdata()) == [x, x] for line, x in zip(dotted, marks))  # vertical
        bars = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == se
        if se:
            (segments,) = bars[0].lines[2]
            half = [(segment[1, 1] - segment[0, 1]) / 2 for segment in segments.get_segments()]
            assert half == pytest.approx([2 * 0.01 * (1 + k % 3) for k in range(len(SHIFTS))], abs=1e-12)
        low, high = axes.get_ylim()
        assert low < min(values) and high > max(values) and low > max(nulls)  # fits the curve; the null stated
    b = scores_b = [scores[t.name]["b"]["equivariance"] for t in transforms]
    gap_b = (b[4] + b[8]) / 2 - (b[2] + b[6]) / 2  # multiples 2, 4 px against 1, 3 px
    assert gap_b == pytest.approx(0.18, abs=1e-12) and len(scores_b) == 9
    title_b = panels[1].get_title()
    assert title_b.startswith("b (stride 2)\n") and f"gap {gap_b:.3f}" in title_b and "null 0.20" in title_b
    assert ("±" in title_b) == se
    assert panels[2].get_title().startswith("c (no stride)\n") and "gap" not in panels[2].get_title()


def test_the_aliasing_figure_of_a_score_model_result_and_without_a_shift_sweep():
    images = torch.rand(48, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = score_model(_unpadded_cnn(), images, layers=["1", "2"], transforms="shift:0:4:1", strides={"2": 2})
        rotations = score_model(_unpadded_cnn(), images, layers=["2"], transforms="rotate:0:20:10")
    figure = aliasing_figure(scores)  # its transforms and strides come with it
    first, second = figure.axes[:2]
    assert first.get_title().startswith("1 (no stride)") and second.get_title().startswith("2 (stride 2)")
    assert [float(line.get_xdata()[0]) for line in second.lines if line.get_linestyle() == ":"] == [2.0, 4.0]
    assert f"gap {scores.aliasing['2'].gap:.3f}" in second.get_title()
    with pytest.raises(ValueError, match=r"needs a `shift` sweep .* \['rotate0', 'rotate10', 'rotate20'\]"):
        aliasing_figure(rotations)
    with pytest.raises(ValueError, match="pass `transforms` when `scores` is a plain mapping"):
        aliasing_figure(dict(scores))
