"""``compare_runs`` and ``seis-lightning compare``: Student's t quantiles against printed tables and closed
forms, verdicts on synthetic runs whose differences are known (numbers worked out by hand below, before
the runs), the callback's ``seis_scores.csv`` read back, the figure's bars, and the subcommand."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from statistics import NormalDist

import pytest
import torch
from torch import nn

import seis_lightning
from seis_lightning.cli import main
from seis_lightning.compare import (
    columns,
    compare_runs,
    comparison_figure,
    format_comparison,
    read_scores_csv,
    t_cdf,
    t_quantile,
    welch_verdict,
)
from seis_lightning.functional import SCORES
from seis_lightning.plotting import score_rows
from seis_lightning.trainer_io import CSV_NAME, _write_csv

# ------------------------------------------------------------------ Student's t


@pytest.mark.parametrize(
    ("p", "df", "table"),
    [
        (0.975, 1, 12.706),
        (0.975, 2, 4.303),
        (0.975, 3, 3.182),
        (0.975, 4, 2.776),
        (0.975, 10, 2.228),
        (0.975, 30, 2.042),
        (0.95, 5, 2.015),
        (0.995, 3, 5.841),
        (0.9, 20, 1.325),
        (0.975, math.inf, 1.960),
    ],
)
def test_t_quantile_matches_printed_tables(p, df, table):
    assert t_quantile(p, df) == pytest.approx(table, abs=5e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-t_quantile(p, df), rel=1e-12)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.999])
def test_t_quantile_matches_closed_forms(p):
    # df = 1 is Cauchy, df = 2 has a closed-form quantile, df = inf is the normal
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    assert t_quantile(p, math.inf) == pytest.approx(NormalDist().inv_cdf(p), rel=1e-9)
    assert t_cdf(t_quantile(p, 7.3), 7.3) == pytest.approx(p, abs=1e-12)


def test_t_cdf_matches_cauchy_and_quantiles_fall_with_df():
    for t in (-3.0, -0.5, 0.0, 0.7, 12.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    quantiles = [t_quantile(0.975, df) for df in (0.5, 1, 1.5, 2, 2.5, 4, 8.7, 50, 1e4)]
    assert quantiles == sorted(quantiles, reverse=True)
    assert quantiles[-1] == pytest.approx(1.96, abs=1e-3)


@pytest.mark.parametrize(("p", "df"), [(0.0, 3), (1.0, 3), (1.2, 3), (0.9, 0), (0.9, -1), (0.9, math.nan)])
def test_t_quantile_refuses_bad_arguments(p, df):
    with pytest.raises(ValueError, match=r"p in \(0, 1\)" if not 0 < p < 1 else "df > 0"):
        t_quantile(p, df)


# ------------------------------------------------------------------ verdicts on synthetic runs

SD = (-0.01, 0.0, 0.01)  # offsets of three seeds: sample sd exactly 0.01


def runs(centres: dict[str, float], se: float | None = None, offsets=SD) -> list[dict]:
    """One ``score_model``-like result per seed: every score of layer L at ``centres[L] + offset``."""
    results = []
    for offset in offsets:
        by_layer = {}
        for layer, centre in centres.items():
            values = {score: centre + offset for score in SCORES}
            if se is not None:
                values.update({f"{score}_se": se for score in SCORES})
            by_layer[layer] = values
        results.append({"hflip": by_layer})
    return results


def pick(rows, layer, score="invariance"):
    return next(r for r in rows if (r["layer"], r["score"]) == (layer, score))


def test_verdicts_follow_welch_t_not_a_fixed_two():
    # 3 + 3 seeds, sd 0.01 each side: seed SE sqrt(2 * 0.01**2 / 3) = 0.0081650, Welch df = 4 exactly,
    # t_{0.975,4} = 2.7764, bar = 0.022670. "nudged" moves by 0.02: beyond 2 SE (0.01633), within the bar.
    a = runs({"up": 0.50, "down": 0.50, "same": 0.50, "nudged": 0.50})
    b = runs({"up": 0.55, "down": 0.45, "same": 0.502, "nudged": 0.52})
    rows = compare_runs(a, b, names=("plain", "augment"))
    assert [r["layer"] for r in rows[::3]] == ["up", "down", "same", "nudged"]
    assert [r["score"] for r in rows[:3]] == list(SCORES)
    verdicts = {r["layer"]: r["verdict"] for r in rows if r["score"] == "invariance"}
    assert verdicts == {"up": "raised", "down": "lowered", "same": "within noise", "nudged": "within noise"}
    up = pick(rows, "up")
    assert up["plain_seeds"] == up["augment_seeds"] == 3
    assert up["plain_mean"] == pytest.approx(0.50, abs=1e-12)
    assert up["augment_sd"] == pytest.approx(0.01, rel=1e-9)
    assert up["delta"] == pytest.approx(0.05, abs=1e-12)
    assert up["seed_se"] == pytest.approx(0.0081650, rel=1e-4)
    assert up["se"] == up["seed_se"]
    assert math.isnan(up["jackknife_se"]) and up["se_from"] == "seeds"
    assert up["df"] == pytest.approx(4.0, rel=1e-12)
    assert up["t_critical"] == pytest.approx(2.7764, abs=1e-4)
    assert up["bar"] == pytest.approx(0.022670, rel=1e-4)
    assert up["t"] == pytest.approx(0.05 / 0.0081650, rel=1e-4)
    nudged = pick(rows, "nudged")
    assert 2 * nudged["se"] < nudged["delta"] < nudged["bar"]
    assert set(rows[0]) == set(columns(("plain", "augment")))


def test_jackknife_terms_combine_by_welch_satterthwaite():
    # seeds: two terms 0.01**2 / 3 = 3.3333e-5 with 2 df; jackknife SE 0.004 per side, G = 10: two terms
    # 1.6e-5 with 9 df. se = sqrt(9.8667e-5) = 0.0099331; df = 9.8667e-5**2 / (2 * 3.3333e-5**2 / 2
    # + 2 * 1.6e-5**2 / 9) = 8.3347; t_{0.975, 8.3347} = 2.2867 (between 2.306 at 8 and 2.262 at 9 df).
    a, b = runs({"L": 0.50}, se=0.004), runs({"L": 0.53}, se=0.004)
    row = pick(compare_runs(a, b, jackknife_groups=10), "L")
    assert row["jackknife_se"] == pytest.approx(math.sqrt(2) * 0.004, rel=1e-12)
    assert row["se"] == pytest.approx(0.0099331, rel=1e-4)
    assert row["df"] == pytest.approx(8.3347, rel=1e-4)
    assert 2.262 < row["t_critical"] < 2.306
    assert row["verdict"] == "raised" and row["se_from"] == "seeds+jackknife"
    exact = pick(compare_runs(a, b), "L")  # no G: the jackknife terms are exact, df from the seeds' alone
    assert exact["se"] == row["se"]
    assert exact["df"] == pytest.approx(9.8667e-5**2 / (2 * 3.3333e-5**2 / 2), rel=1e-4)


def test_unequal_seeds_and_nan_scores():
    # A: 0.50 +- (0.01, 0, 0.01); B: two seeds 0.60, 0.64 (mean 0.62, sd 0.028284) and one NaN, left out.
    a = runs({"L": 0.50})
    b = [{"hflip": {"L": {s: v for s in SCORES}}} for v in (0.60, 0.64, math.nan)]
    row = pick(compare_runs(a, b), "L")
    assert (row["a_seeds"], row["b_seeds"]) == (3, 2)
    assert row["b_mean"] == pytest.approx(0.62, abs=1e-12)
    va, vb = 0.01**2 / 3, 0.0008 / 2
    assert row["se"] == pytest.approx(math.sqrt(va + vb), rel=1e-9)
    assert row["df"] == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 1), rel=1e-9)
    # df = 1.170: the 2-seed side dominates; t = 0.12 / 0.020817 = 5.76 < t_{0.975, 1.170} = 9.083 (checked
    # by integrating the t density numerically): 6 SE is within noise with 2 seeds on a side. (Worked out by
    # hand first as "raised", with the df wrong; the test caught it.)
    assert row["df"] == pytest.approx(1.16955, rel=1e-4)
    assert row["t"] == pytest.approx(5.7646, rel=1e-4)
    assert row["t_critical"] == pytest.approx(9.0828, rel=1e-4)
    assert row["verdict"] == "within noise"


def test_one_seed_per_side_falls_back_to_the_jackknife_or_says_so():
    a, b = runs({"L": 0.50}, se=0.004, offsets=(0,)), runs({"L": 0.53}, se=0.004, offsets=(0,))
    row = pick(compare_runs(a, b), "L")
    assert row["verdict"] == "not enough seeds" and math.isnan(row["bar"]) and row["se_from"] == ""
    row = pick(compare_runs(a, b, jackknife_groups=5), "L")
    # two terms 0.004**2 with 4 df each: df = 8, se = 0.0056569, t_{0.975,8} = 2.306, bar = 0.013045
    assert row["se_from"] == "jackknife" and math.isnan(row["seed_se"])
    assert row["df"] == pytest.approx(8.0, rel=1e-12)
    assert row["bar"] == pytest.approx(2.306 * 0.0056569, rel=1e-3)
    assert row["verdict"] == "raised"
    no_se = pick(compare_runs(runs({"L": 0.5}, offsets=(0,)), runs({"L": 0.9}, offsets=(0,)), jackknife_groups=5), "L")
    assert no_se["verdict"] == "not enough seeds"
    assert "not enough seeds" in format_comparison([no_se])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"names": ("x", "x")}, "two different non-empty names"),
        ({"level": 1.5}, r"confidence level in \(0, 1\)"),
        ({"jackknife_groups": 1}, "G >= 2"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare_runs(runs({"L": 0.5}), runs({"L": 0.6}), **kwargs)


@pytest.mark.filterwarnings("ignore::seis_lightning.functional.SEISWarning")  # few probe images: biased, still compared
def test_score_model_results_compare_directly():
    from seis_lightning import score_model

    torch.manual_seed(0)
    images = torch.rand(32, 3, 6, 6)
    results = []
    for seed in range(4):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        results.append(score_model(model, images, layers=["1", "3"], transforms=["hflip"], precision="float64"))
    rows = compare_runs(results[:2], results[2:])
    assert [(r["transform"], r["layer"]) for r in rows[::3]] == [("hflip", "1"), ("hflip", "3")]
    row = pick(rows, "1", "equivariance")
    mean_a = (results[0]["hflip"]["1"]["equivariance"] + results[1]["hflip"]["1"]["equivariance"]) / 2
    assert row["a_mean"] == pytest.approx(mean_a, rel=1e-12)
    assert row["verdict"] in ("raised", "lowered", "within noise")
    assert seis_lightning.compare_runs is compare_runs


def test_welch_verdict_by_hand():
    """Two terms of equal variance v and df 2: df = (2v)**2 / (2 v**2 / 2) = 4, t_{0.975,4} = 2.776; a delta
    just beyond and just within the bar, of either sign; one exact term alone: the normal's 1.960."""
    terms = [(0.01**2, 2), (0.01**2, 2)]
    se = math.sqrt(2) * 0.01
    at = 2.7764451 * se
    assert welch_verdict(1.001 * at, terms)["verdict"] == "raised"
    assert welch_verdict(-1.001 * at, terms)["verdict"] == "lowered"
    assert welch_verdict(0.999 * at, terms)["verdict"] == "within noise"
    assert welch_verdict(-0.999 * at, terms)["verdict"] == "within noise"
    verdict = welch_verdict(0.05, terms)
    assert verdict["df"] == pytest.approx(4.0, rel=1e-12)
    assert verdict["se"] == pytest.approx(se, rel=1e-12)
    assert verdict["bar"] == pytest.approx(at, rel=1e-6)
    assert verdict["t"] == pytest.approx(0.05 / se, rel=1e-12)
    assert welch_verdict(0.0, [(0.01**2, math.inf)])["bar"] == pytest.approx(1.959964 * 0.01, rel=1e-6)


def test_welch_verdict_is_compare_runs_rule():
    """compare_runs's row is welch_verdict on its four terms (seed terms df n - 1, jackknife terms df G - 1)."""
    plain, augment = (0.50, 0.53, 0.51), (0.56, 0.55, 0.60)
    a = [{"t": {"l": {"invariance": v, "invariance_se": s}}} for v, s in zip(plain, (0.01, 0.02, 0.015))]
    b = [{"t": {"l": {"invariance": v, "invariance_se": s}}} for v, s in zip(augment, (0.01, 0.01, 0.02))]
    row = compare_runs(a, b, jackknife_groups=10)[0]
    sd_a, sd_b = (float(torch.tensor(x, dtype=torch.float64).std()) for x in (plain, augment))
    se_a, se_b = 0.015, (0.01 + 0.01 + 0.02) / 3
    terms = [(sd_a**2 / 3, 2), (sd_b**2 / 3, 2), (se_a**2, 9), (se_b**2, 9)]
    expected = welch_verdict(row["delta"], terms)
    for key in ("se", "df", "t_critical", "bar"):
        assert row[key] == pytest.approx(expected[key], rel=1e-9), key
    assert row["verdict"] == expected["verdict"]


@pytest.mark.parametrize(
    ("terms", "level", "message"),
    [
        ([], 0.95, "at least one"),
        ([(-1.0, 2)], 0.95, "variance >= 0"),
        ([(math.nan, 2)], 0.95, "variance >= 0"),
        ([(0.1, 0)], 0.95, "df > 0"),
        ([(0.1, 2)], 1.0, "level"),
    ],
)
def test_welch_verdict_rejects(terms, level, message):
    with pytest.raises(ValueError, match=message):
        welch_verdict(0.1, terms, level=level)


# ------------------------------------------------------------------ the callback's CSV


def entry(stage, epoch, global_step, scores):
    return {
        "stage": stage,
        "epoch": epoch,
        "global_step": global_step,
        "step": max(global_step - 1, 0),
        "scores": scores,
    }


def write_run(folder: Path, finals: dict[str, float], se: float | None = 0.003) -> Path:
    """A ``seis_scores.csv`` as the callback writes it (its own row builder and writer): a scoring before
    training, one at epoch 1 (every score 0.1 below ``finals``) and one at epoch 2 (``finals``)."""
    path = folder / CSV_NAME
    for epoch, step, shift in ((0.0, 0, 0.3), (1.0, 45, 0.1), (2.0, 90, 0.0)):
        by_layer = {}
        for layer, value in finals.items():
            values = {score: value - shift for score in SCORES}
            values.update({f"{score}_null": 0.05 for score in SCORES})
            if se is not None:
                values.update({f"{score}_se": se for score in SCORES})
            by_layer[layer] = values
        _write_csv(str(path), score_rows(entry("fit", epoch, step, {"random_affine": by_layer})), "a")
    return path


def test_reads_the_callback_csv_last_scoring_by_default(tmp_path):
    path = write_run(tmp_path, {"conv1": 0.4, "pool": 0.9})
    lines = path.read_text().splitlines()
    assert lines[0] == "stage,epoch,global_step,step,transform,family,magnitude,layer,score,value,null,se,reason,stride"
    assert lines[1].startswith("fit,0.0,0,0,random_affine,,,conv1,equivariance,")
    label, scores = read_scores_csv(path)
    assert label == "fit, epoch 2, step 90"
    assert list(scores["random_affine"]) == ["conv1", "pool"]
    assert scores["random_affine"]["pool"] == {
        **{score: 0.9 for score in SCORES},
        **{f"{score}_null": 0.05 for score in SCORES},
        **{f"{score}_se": 0.003 for score in SCORES},
    }
    label, scores = read_scores_csv(path, epoch=1)
    assert label == "fit, epoch 1, step 45" and scores["random_affine"]["conv1"]["invariance"] == pytest.approx(0.3)
    assert read_scores_csv(path, step=0)[0] == "fit, epoch 0, step 0"
    with pytest.raises(ValueError, match=r"no scoring with stage='test'.*fit, epoch 0, step 0; fit, epoch 1"):
        read_scores_csv(path, stage="test")


def test_csv_without_jackknife_and_with_nan_scores(tmp_path):
    path = write_run(tmp_path, {"conv1": 0.4}, se=None)
    nan_entry = entry("validate", 2.0, 90, {"random_affine": {"fc": {s: math.nan for s in SCORES}}})
    nan_entry["reasons"] = {"fc": "layer 'fc' gave no output"}
    _write_csv(str(path), score_rows(nan_entry), "a")
    label, scores = read_scores_csv(path, stage="fit")
    assert label == "fit, epoch 2, step 90" and "invariance_se" not in scores["random_affine"]["conv1"]
    label, scores = read_scores_csv(path)
    assert label == "validate, epoch 2, step 90" and math.isnan(scores["random_affine"]["fc"]["invariance"])


# ------------------------------------------------------------------ the figure


def test_figure_draws_delta_with_its_bar_per_score():
    rows = compare_runs(runs({"up": 0.5, "same": 0.5}), runs({"up": 0.55, "same": 0.502}))
    figure = comparison_figure(rows)
    panels = figure.axes[: len(SCORES)]
    assert [axes.get_title() for axes in panels] == list(SCORES)
    bars = panels[1].containers[0].lines[2][0].get_segments()
    for segment, layer in zip(bars, ("up", "same")):
        (x0, low), (x1, high) = segment
        row = pick(rows, layer)
        assert x0 == x1
        assert (low + high) / 2 == pytest.approx(row["delta"], abs=1e-12)
        assert (high - low) / 2 == pytest.approx(row["bar"], rel=1e-9)


# ------------------------------------------------------------------ the subcommand


def test_cli_compare_prints_writes_and_draws(tmp_path, capsys):
    for group, centre in (("plain", 0.50), ("augment", 0.55)):
        for k, offset in enumerate(SD):
            folder = tmp_path / group / f"version_{k}"
            folder.mkdir(parents=True)
            write_run(folder, {"conv1": 0.40 + offset, "pool": centre + offset})
    out = tmp_path / "out"
    main(
        ["compare", str(tmp_path / "plain"), "--vs", str(tmp_path / "augment"), "--names", "plain", "augment",
         "--jackknife-groups", "10", "--out", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.count("(fit, epoch 2, step 90)") == 6
    assert "plain: mean ± sd (se)" in printed
    pool = next(line for line in printed.splitlines() if " pool " in line and " invariance " in line)
    assert pool.split()[-1] == "raised" and "+0.0500" in pool
    conv1 = next(line for line in printed.splitlines() if " conv1 " in line and " invariance " in line)
    assert conv1.endswith("within noise") and "+0.0000" in conv1
    with (out / "compare.csv").open() as handle:
        written = list(csv.DictReader(handle))
    assert tuple(written[0]) == columns(("plain", "augment"))
    assert [(r["layer"], r["score"], r["verdict"]) for r in written] == [
        (layer, score, verdict)
        for layer, verdict in (("conv1", "within noise"), ("pool", "raised"))
        for score in SCORES
    ]
    assert float(written[4]["delta"]) == pytest.approx(0.05, abs=1e-6)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_compare_epoch_and_errors(tmp_path, capsys):
    for name, value in (("a", 0.4), ("b", 0.6)):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, {"L": value})
    main(["compare", str(tmp_path / "a"), "--vs", str(tmp_path / "b"), "--epoch", "1"])
    printed = capsys.readouterr().out
    assert "(fit, epoch 1, step 45)" in printed and "not enough seeds" in printed
    with pytest.raises(SystemExit) as raised:
        main(["compare", str(tmp_path / "a"), "--vs", str(tmp_path / "nowhere")])
    assert raised.value.code == 2
    assert f"No {CSV_NAME} in '{tmp_path / 'nowhere'}'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        main(["compare", "--help"])
    assert raised.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: seis-lightning compare")
    assert "--vs RUN_B [RUN_B ...]" in help_text and "--jackknife-groups G" in help_text
