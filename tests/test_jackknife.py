"""The delete-half jackknife of SEIS_SPEC.md, "Uncertainty": its values, its streaming, its validity."""

from __future__ import annotations

import itertools
import math
import random
import warnings

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF  # noqa: N812

from seis_lightning import SEISMetric
from seis_lightning.functional import (
    SCORES,
    SCORES_AND_NULLS,
    SEISWarning,
    family_se,
    jackknife_se,
    seis_combine_statistics,
    seis_from_statistics,
    seis_scores,
    seis_statistics,
)
from seis_lightning.synthetic import digits_images, random_cnn
from tests.reference import reference_scores
from tests.test_functional import warped

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def pair(digit_maps, generator):
    a = digit_maps[:100, :, ::2, ::2]
    return a, warped(a, generator)


def _reference_half_samples(groups: int) -> list[tuple[int, ...]]:
    """The spec's half-samples, written from its text: every choice of ceil(G/2) groups when there are at
    most 32, else 32 distinct ones from ``random.Random(0).sample``, sorted, in the order drawn."""
    kept = (groups + 1) // 2
    every = list(itertools.combinations(range(groups), kept))
    if len(every) <= 32:
        return every
    generator, halves = random.Random(0), []
    while len(halves) < 32:
        half = tuple(sorted(generator.sample(range(groups), kept)))
        if half not in halves:
            halves.append(half)
    return halves


@pytest.mark.parametrize("groups", [4, 9])
def test_standard_errors_equal_the_float64_reference(pair, groups):
    """Each half-sample's scores are the reference's on the images of the groups it keeps (image n in
    group n mod G), each paired for the null with the transformed image n - 1 of the whole set; the
    SE is sqrt(m/d · (N_S - 1)/N_S) times their sample standard deviation (spec, "Uncertainty").
    G = 4: all 6 half-samples of 2 groups; G = 9: 32 of the 126 choices of 5 groups, scale sqrt(5/4 · 125/126)."""
    a, b = (t[:72, :16].double() for t in pair)  # 16 maps of 7x7
    result = seis_scores(a, b, jackknife_groups=groups, precision="float64")
    whole = seis_scores(a, b, precision="float64")
    for name in SCORES_AND_NULLS:
        assert result[name] == pytest.approx(whole[name], abs=1e-9), name
    kept = (groups + 1) // 2
    count = math.comb(groups, kept)
    scale = math.sqrt(kept / (groups - kept) * (count - 1) / count)
    halves = _reference_half_samples(groups)
    assert len(halves) == min(count, 32)
    maps_a, maps_b = a.flatten(2).numpy(), b.flatten(2).numpy()
    index = np.arange(len(a))
    values = []
    for half in halves:
        images = index[np.isin(index % groups, half)]
        reference = reference_scores(maps_a[images], maps_b[images], b_null=maps_b[(images - 1) % len(a)])
        values.append([reference[name] for name in SCORES_AND_NULLS])
    values = np.array(values)
    expected_replicates = values.mean(0) + scale * (values - values.mean(0))
    expected_se = scale * values.std(0, ddof=1)
    for i, name in enumerate(SCORES_AND_NULLS):
        np.testing.assert_allclose(result["jackknife"][name].numpy(), expected_replicates[:, i], rtol=0, atol=1e-9)
        assert result[f"{name}_se"] == pytest.approx(expected_se[i], abs=1e-9), name
        assert result[f"{name}_se"] > 0


def test_three_groups_give_the_delete_one_group_jackknife(pair):
    """G = 3: the half-samples are the 3 leave-one-group-out sets, and the SE is (G-1)/G · Σ_g (s_(g) - s̄)²."""
    a, b = (t[:60, :8].double() for t in pair)
    result = seis_scores(a, b, jackknife_groups=3, precision="float64")
    index = torch.arange(len(a))
    left_out = [seis_scores(a[index % 3 != g], b[index % 3 != g], precision="float64") for g in range(3)]
    for name in SCORES:
        values = np.array([one[name] for one in left_out])
        expected = math.sqrt(2 / 3 * np.sum((values - values.mean()) ** 2))
        assert result[f"{name}_se"] == pytest.approx(expected, abs=1e-9), name


def test_half_samples_leave_the_global_random_streams_alone(pair):
    a, b = pair
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    first = seis_scores(a, b, jackknife_groups=16)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == python_state
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    torch.manual_seed(123)
    random.seed(123)
    second = seis_scores(a, b, jackknife_groups=16)
    for name in SCORES_AND_NULLS:
        torch.testing.assert_close(second["jackknife"][name], first["jackknife"][name], rtol=0, atol=1e-12)


def test_without_the_jackknife_nothing_changes(pair):
    a, b = pair
    result = seis_scores(a, b)
    assert "jackknife" not in result and not any(key.endswith("_se") for key in result)
    stats = seis_statistics(a, b)
    assert stats["num_images"].ndim == 0


def test_streamed_metric_equals_one_call(pair):
    """Batches of 24 (not a multiple of G): the groups continue across updates, resets start them again."""
    a, b = pair
    groups = 8
    bs = [b, a.flip(-1)]
    metric = SEISMetric(num_transforms=2, jackknife_groups=groups, precision="float64")
    metric.update(torch.randn(5, *a.shape[1:]), [torch.randn(5, *a.shape[1:])] * 2)
    metric.reset()
    for i in range(0, len(a), 24):
        metric.update(a[i : i + 24], [t[i : i + 24] for t in bs])
    streamed = metric.compute()
    assert metric.map_sum_a.shape == (groups, *a.shape[1:2], a.shape[2] * a.shape[3])
    functional = seis_from_statistics(
        seis_combine_statistics(
            *(
                seis_statistics(
                    a[i : i + 24],
                    [t[i : i + 24] for t in bs],
                    jackknife_groups=groups,
                    first_index=i,
                    precision="float64",
                )
                for i in range(0, len(a), 24)
            )
        )
    )
    for t, result, expected in zip(bs, streamed, functional):
        one_call = seis_scores(a, t, jackknife_groups=groups, precision="float64")
        for name in SCORES_AND_NULLS:
            assert result[f"{name}_se"] == pytest.approx(expected[f"{name}_se"], abs=1e-12)
            torch.testing.assert_close(result["jackknife"][name], expected["jackknife"][name], rtol=0, atol=1e-12)
        # The null pairs within each batch; everything else is the one call's.
        for name in SCORES:
            assert result[f"{name}_se"] == pytest.approx(one_call[f"{name}_se"], abs=1e-9)
            torch.testing.assert_close(result["jackknife"][name], one_call["jackknife"][name], rtol=0, atol=1e-9)


def test_forward_continues_the_groups(pair):
    a, b = pair
    updated, forwarded = SEISMetric(jackknife_groups=8), SEISMetric(jackknife_groups=8)
    for x, y in zip(a.split(30), b.split(30)):
        updated.update(x, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SEISWarning)  # one batch's scores have too few rows
            forwarded(x, y)
    expected, result = updated.compute(), forwarded.compute()
    for name in SCORES_AND_NULLS:
        assert result[f"{name}_se"] == pytest.approx(expected[f"{name}_se"], abs=1e-12)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric SEISMetric was called before")
def test_empty_metric_has_nan_standard_errors():
    with pytest.warns(SEISWarning, match="needs at least 2 images"):
        result = SEISMetric(jackknife_groups=4).compute()
    assert all(math.isnan(result[f"{name}_se"]) for name in SCORES_AND_NULLS)


@pytest.mark.parametrize("groups", [1, -2, 2.5, True])
def test_bad_jackknife_groups_raise(groups, pair):
    a, b = pair
    with pytest.raises(ValueError, match="`jackknife_groups`"):
        seis_scores(a, b, jackknife_groups=groups)
    with pytest.raises(ValueError, match="`jackknife_groups`"):
        SEISMetric(jackknife_groups=groups)


def test_bad_first_index_raises(pair):
    a, b = pair
    with pytest.raises(ValueError, match="`first_index`"):
        seis_statistics(a, b, jackknife_groups=4, first_index=-1)


def test_jackknife_se_is_the_sample_standard_deviation_of_the_replicates():
    assert jackknife_se(torch.tensor([1.0, 2.0, 3.0, 4.0])) == pytest.approx(math.sqrt(5 / 3))
    with pytest.raises(ValueError, match="at least 2"):
        jackknife_se(torch.tensor([1.0]))


def test_family_se_is_the_se_of_the_mean_over_draws():
    draws = [torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64), torch.tensor([0.7, 0.6, 0.5], dtype=torch.float64)]
    assert family_se(draws) == pytest.approx(0.0, abs=1e-15)  # two draws whose replicates cancel
    draws = [torch.tensor([0.5, 0.6, 0.8], dtype=torch.float64), torch.tensor([0.3, 0.6, 0.6], dtype=torch.float64)]
    assert family_se(draws) == pytest.approx(np.std([0.4, 0.6, 0.7], ddof=1), abs=1e-15)
    with pytest.raises(ValueError, match="at least one draw"):
        family_se([])


def _roll_and_noise(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """r30_jackknife_invariance.py's probe sets: 64 random 6x5x5 maps, rolled by one position plus noise."""
    common = torch.randn(1, 6, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    generator = torch.Generator().manual_seed(1000 + seed)
    a = torch.randn(64, 6, 5, 5, generator=generator, dtype=torch.float64) + 0.5 * common
    return a, a.roll(1, -1) * 0.8 + 0.4 * torch.randn(a.shape, generator=generator, dtype=torch.float64)


def _flip_and_little_noise(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Near-tied canonical correlations: maps against their mirror image plus noise of 0.05."""
    generator = torch.Generator().manual_seed(2000 + seed)
    a = torch.randn(64, 6, 5, 5, generator=generator, dtype=torch.float64)
    return a, a.flip(-1) + 0.05 * torch.randn(a.shape, generator=generator, dtype=torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("probe_set", [_roll_and_noise, _flip_and_little_noise], ids=["smooth", "near-tied"])
def test_invariance_se_matches_its_spread_where_a_delete_one_group_jackknife_overstates(probe_set):
    """r30: over independent probe sets the delete-a-group jackknife's mean SE of invariance was 2.6x its
    real spread (G = 8). Over 36 sets, the mean SE of every score is within [0.5, 2] of its spread."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        results = [seis_scores(*probe_set(seed), jackknife_groups=8, precision="float64") for seed in range(36)]
    for name in SCORES:
        spread = np.std([r[name] for r in results], ddof=1)
        if spread < 1e-4:
            continue  # equivariance of a mirror image: 0.999 in every set
        ratio = np.mean([r[f"{name}_se"] for r in results]) / spread
        assert 0.5 <= ratio <= 2, (name, ratio)


@pytest.mark.slow
def test_standard_errors_match_the_spread_over_independent_probe_sets(capsys):
    """SEIS_SPEC.md, "Uncertainty": over 28 disjoint sets of 64 digits through a small random CNN
    (its second conv block, 32 maps of 7x7; one shared affine), the mean SE (G = 8) is within a
    factor 2 of the actual spread of each score (delete-half jackknife: 0.99, 0.95, 1.11; the
    delete-one-group jackknife it replaced gave 0.88-1.51, 1.19-1.61, 0.79-1.43 over six partitions).
    """
    images = digits_images(1792, size=14)
    images = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))]
    block = random_cnn()[:5]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        results = []
        for x in images.split(64):
            a, b = block(x), block(TF.affine(x, angle=25.0, translate=[1, 1], scale=1.1, shear=[0.0]))
            results.append(seis_scores(a, b, jackknife_groups=8))
    assert len(results) == 28
    ratios = {}
    for name in SCORES:
        spread = torch.tensor([r[name] for r in results]).std()
        ratios[name] = float(torch.tensor([r[f"{name}_se"] for r in results]).mean() / spread)
    with capsys.disabled():
        print("\nmean SE / spread over 28 probe sets:", {name: round(ratio, 2) for name, ratio in ratios.items()})
    for name, ratio in ratios.items():
        assert 0.5 <= ratio <= 2, (name, ratio)


def test_more_groups_than_probe_images_is_an_error(generator):
    a = torch.randn(5, 3, 4, 4, generator=generator)
    with pytest.raises(ValueError, match=r"`jackknife_groups` at most the number of probe images.*=8 for 5 images"):
        seis_scores(a, a.flip(-1), jackknife_groups=8)
    metric = SEISMetric(jackknife_groups=8)
    metric.update(a, a.flip(-1))
    with pytest.raises(ValueError, match="use fewer groups or more probe images"):
        metric.compute()
