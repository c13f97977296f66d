"""Float32 and float64 Gram products against the float64 reference (SEIS_SPEC.md, "Precision")."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import torchvision.transforms.v2.functional as TF  # noqa: N812
from threadpoolctl import threadpool_limits

from seis_lightning import SEISMetric, _precision, functional
from seis_lightning.functional import (
    FLOAT32_EPS,
    SEISWarning,
    resolve_precision,
    seis_combine_statistics,
    seis_from_statistics,
    seis_scores,
    seis_statistics,
    statistics_eps,
)
from seis_lightning.synthetic import synthetic_pairs
from tests.reference import reference_scores
from tests.test_functional import ALL_SCORES, assert_matches_reference, exempt_scores, warped

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
BATCH_SIZE = 128


def batched_scores(a: torch.Tensor, b: torch.Tensor, precision: str, **kwargs) -> dict:
    """Scores from statistics summed over batches of 128, each centred on its own mean map in float32."""
    stats = seis_combine_statistics(
        *(seis_statistics(x, y, precision=precision) for x, y in zip(a.split(BATCH_SIZE), b.split(BATCH_SIZE)))
    )
    return seis_from_statistics(stats, precision=precision, **kwargs)


@pytest.fixture(scope="module")
def table_cases(digit_maps):
    """The spec's expected-behaviour table on 512 digits, plain and with a large common offset, with the reference."""
    cases = {}
    for offset, maps in (("", digit_maps), ("offset ", 50 * F.softplus(digit_maps))):
        for name, b in synthetic_pairs(maps, torch.Generator().manual_seed(1234)).items():
            with threadpool_limits(1):  # numpy's BLAS threads only fight over a small machine
                reference = reference_scores(maps.flatten(2), b.flatten(2), batch_size=BATCH_SIZE)
            cases[offset + name] = (maps, b, reference)
    return cases


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_expected_behaviour_table_matches_the_reference(table_cases, precision):
    """Every case of the table, also on maps 50·softplus(A) (offset 50x their spread): float32 within 1e-4.

    Except invariance at near-ties (rotate30: neighbouring ρ 1e-9 to 1e-6 apart), up to 0.01 (spec, "Precision").
    """
    worst = 0.0
    for a, b, reference in table_cases.values():
        result = batched_scores(a, b, precision)
        assert_matches_reference(result, reference, atol=TOLERANCE[precision], exempt_near_ties=precision == "float32")
        exempt = exempt_scores(reference, precision == "float32")
        worst = max(worst, *(abs(result[score] - reference[score]) for score in ALL_SCORES if score not in exempt))
    print(f"{precision}: largest deviation from the reference over {len(table_cases)} cases {worst:.1e}")


@pytest.fixture(scope="module")
def permuted_cases(digit_maps):
    """Maps of 16x16 positions (256: the float32 reductions' vector width divides it) and B's that move them.

    hflip, rot90, roll and transpose permute A's positions exactly (every canonical correlation tied
    at 1); rotate30 interpolates them (correlations 1e-8 apart). Each B is a strided view, as the
    transforms return it.
    """
    maps = F.interpolate(digit_maps, size=16)
    moves = {
        "hflip": maps.flip(-1),
        "rot90": maps.rot90(1, dims=(-2, -1)),
        "roll3": maps.roll(3, dims=-1),
        "transpose": maps.transpose(-1, -2),
        "rotate30": TF.rotate(maps, 30.0),
    }
    cases = {}
    for name, b in moves.items():
        with threadpool_limits(1):
            cases[name] = (maps, b, reference_scores(maps.flatten(2), b.flatten(2), batch_size=BATCH_SIZE))
    return cases


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_keeps_tied_correlations_on_any_thread_count(permuted_cases, threads):
    """Float32 within 1e-4 of the reference where B moves A's positions, with 1 and 2 threads (spec, "Ties").

    The ties hold only while B's products round exactly like A's. A version that computed the float32
    spatial Grams by blocks (the float64 shortcut) broke them: on one thread invariance was off by 0.04
    (hflip, rot90) and 0.09 (roll) on these maps, and by 5e-4 for rotate30, whose correlations lie
    1e-8 apart.
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        worst = 0.0
        for a, b, reference in permuted_cases.values():
            result = batched_scores(a, b, "float32")
            assert_matches_reference(result, reference, atol=1e-4, exempt_near_ties=True)
            exempt = exempt_scores(reference, True)
            worst = max(worst, *(abs(result[s] - reference[s]) for s in ALL_SCORES if s not in exempt))
    finally:
        torch.set_num_threads(saved)
    print(f"float32 on {threads} thread(s): largest deviation over {len(permuted_cases)} moves {worst:.1e}")


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_rounding_spreads_exact_ties_by_less_than_the_float32_tie_tolerance(permuted_cases, threads):
    """hflip moves A's positions: every correlation is 1, float32 rounding spreads them, the 1e-6 chain joins them.

    No bitwise property of BLAS is assumed (Intel and AMD kernels round differently): float32 Gram
    entries carry relative rounding of about sqrt(R)·2^-24 ~ 4e-6 over R = 4096 rows, whitened to gaps
    between neighbouring ρ of about 1e-7 (spec, "Ties"), well inside the chained tolerance.
    """
    a, b, _ = permuted_cases["hflip"]
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        stats = seis_statistics(a[:BATCH_SIZE], b[:BATCH_SIZE], precision="float32")
    finally:
        torch.set_num_threads(saved)
    rho = seis_from_statistics(stats, precision="float32")["spatial_rho"]
    gaps = rho[:-1] - rho[1:]
    assert float(gaps.max()) < functional.TIE_TOLERANCE["float32"]
    assert float(1 - rho.min()) < 1e-4
    moved = torch.arange(256).view(16, 16).flip(-1).flatten()
    gram = stats["spatial_gram_aa"]
    # float32 products of the same centred maps in another order: equal to rounding, relative to the diagonal
    scale = gram.diagonal().max()
    assert float((stats["spatial_gram_ab"] - gram[:, moved]).abs().max()) <= 1e-5 * scale
    assert float((stats["spatial_gram_bb"] - gram[moved][:, moved]).abs().max()) <= 1e-5 * scale


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("keep", [0.99, 1.0])
@pytest.mark.parametrize(
    ("shape", "layout"),
    [((96, 8, 5, 5), "channels_first"), ((80, 6, 12), "channels_first"), ((150, 12), "channels_first")],
    ids=["conv2d", "conv1d", "vectors"],
)
def test_random_activations_match_the_reference(shape, layout, keep, precision, generator):
    a = torch.randn(shape, generator=generator) + 3 * torch.randn(shape[1:], generator=generator)
    b = warped(a, generator)
    result = seis_scores(a, b, keep=keep, precision=precision)
    reference = reference_scores(a.reshape(shape[0], shape[1], -1), b.reshape(shape[0], shape[1], -1), keep=keep)
    assert_matches_reference(result, reference, atol=TOLERANCE[precision], exempt_near_ties=precision == "float32")


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_tokens_match_the_reference(precision, generator):
    tokens = 20 + torch.randn(64, 17, 8, generator=generator)  # [N, T, D] with a class token
    b = tokens + 0.5 * torch.randn(tokens.shape, generator=generator)
    result = seis_scores(tokens, b, layout="channels_last", num_prefix_tokens=1, precision=precision)
    reference = reference_scores(tokens[:, 1:].transpose(1, 2), b[:, 1:].transpose(1, 2))
    assert_matches_reference(result, reference, atol=TOLERANCE[precision], exempt_near_ties=precision == "float32")


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_rank_deficient_layer_keeps_only_its_dimensions(precision, generator):
    """8 channels mixed from 2 maps, keep = 1: float32 rounding in the 6 empty directions is not signal."""
    base = torch.randn(96, 2, 5, 5, generator=generator)
    a = torch.einsum("dc,nchw->ndhw", torch.randn(8, 2, generator=generator), base) + 10
    b = a.roll(1, dims=-1) + 0.1 * torch.randn(a.shape, generator=generator)
    result = seis_scores(a, b, keep=1.0, precision=precision)
    assert result["channel_kx"] == 2
    assert_matches_reference(
        result,
        reference_scores(a.flatten(2), b.flatten(2), keep=1.0),
        atol=TOLERANCE[precision],
        exempt_near_ties=precision == "float32",
    )


def test_constant_layers_are_nan_for_the_same_reasons(generator):
    """The same maps for every image (a bias-only layer) and an all-zero layer: NaN with the float64 reasons."""
    constant = (100 * torch.randn(1, 4, 3, 3, generator=generator)).expand(32, 4, 3, 3)
    for a in (constant, torch.zeros(32, 4, 3, 3)):
        b = torch.randn(32, 4, 3, 3, generator=generator)
        with pytest.warns(SEISWarning, match="do not vary across images"):
            results = {precision: seis_scores(a, b, precision=precision) for precision in ("float64", "float32")}
        assert all(math.isnan(results["float32"][name]) for name in ALL_SCORES)
        assert results["float32"]["reasons"] == results["float64"]["reasons"]


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_r31_keep_1_keeps_small_real_channels_at_both_precisions(precision):
    """``r31_keep1_float32.py``: one channel 1000x the others (eigenvalues 1e-6 of λ_max). float32's floor is
    per direction, relative to ``vᵀ diag(C) v`` (spec, "Precision"): before, 1e-6 λ_max dropped 2 and 3 of the
    8 channels (dims 6, 5; channel_invariance 0.0386 instead of 0.0321)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(128, 8, 6, 6, generator=g, dtype=torch.float64)
    b = base.roll(1, -1) + 0.3 * torch.randn(base.shape, generator=g, dtype=torch.float64)
    scale = torch.ones(1, 8, 1, 1, dtype=torch.float64)
    scale[0, 0] = 1e3
    a, b = base * scale, b * scale
    result = seis_scores(a, b, precision=precision, keep=1.0)
    assert (result["channel_kx"], result["channel_ky"]) == (8, 8)
    assert round(result["channel_invariance"], 4) == 0.0321
    assert_matches_reference(result, reference_scores(a.flatten(2), b.flatten(2), keep=1.0), atol=TOLERANCE[precision])


def test_r32_float32_overflow_on_finite_activations_says_so(generator):
    """``r32_float32_overflow_reason.py``: finite activations of 1e20 overflow float32 products; the reason
    said "NaN or Inf values". float64 scores them as the reference does."""
    a = torch.randn(64, 4, 5, 5, generator=generator) * 1e20
    assert bool(torch.isfinite(a).all())
    with pytest.warns(SEISWarning, match="float32 Gram products overflowed"):
        result = seis_scores(a, a.flip(-1), precision="float32")
    assert all(math.isnan(result[name]) for name in ALL_SCORES)
    expected = "the float32 Gram products overflowed on finite activations; use precision='float64'"
    assert set(result["reasons"].values()) == {expected}
    result = seis_scores(a, a.flip(-1), precision="float64")
    assert_matches_reference(result, reference_scores(a.double().flatten(2), a.double().flip(-1).flatten(2)), 1e-9)


@pytest.mark.parametrize("offset", [1e6, 1e7])
def test_r28_large_offsets_are_scored_in_float32(offset):
    """``r28_constant_layer.py`` (a) with float32 products: centred in float64 first, then within float32's bound."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(128, 8, 6, 6, generator=g, dtype=torch.float64)
    b = base.roll(1, -1) + 0.3 * torch.randn(base.shape, generator=g, dtype=torch.float64)
    result = seis_scores(base + offset, b + offset, precision="float32")
    reference = reference_scores((base + offset).flatten(2), (b + offset).flatten(2))
    assert_matches_reference(result, reference, atol=TOLERANCE["float32"], exempt_near_ties=True)


def test_float32_statistics_are_sums_of_float64_parts(digit_maps):
    """Two halves add up to the whole batch's sums (nulls aside: they pair within a batch): by plain
    addition when taken about the whole batch's shifts, by ``seis_combine_statistics`` (which moves the
    second half to the first's shifts) when the second half is taken about its own."""
    a = 50 * F.softplus(digit_maps[:64, :, ::2, ::2])
    b = TF.rotate(a, 30.0)
    whole = seis_statistics(a, b, precision="float32")
    first, second = zip(a.split(32), b.split(32))
    about_whole = [seis_statistics(x, y, precision="float32", shift=whole) for x, y in (first, second)]
    added = {name: about_whole[0][name] + about_whole[1][name] for name in functional.STATISTICS}
    combined = seis_combine_statistics(about_whole[0], seis_statistics(*second, precision="float32"))
    assert whole["pooled"] is False
    assert float((seis_statistics(*second, precision="float32")["shift_a"] - whole["shift_a"]).abs().max()) > 0.1
    for name in functional.STATISTICS:
        value = whole[name]
        assert value.dtype == torch.float64, name
        if name.endswith(("gram_aa", "gram_bb", "gram_ab")):
            scale = float(value.abs().max())  # Grams about the mean map: their size is the spread
            for halves in (added, combined):
                assert float((value - halves[name]).abs().max()) <= 1e-6 * scale, name


def test_auto_resolves_by_device(monkeypatch):
    assert resolve_precision("auto", "cpu") == "float64"
    assert resolve_precision("float64", "cpu") == "float64"
    assert resolve_precision("float32", torch.device("cpu")) == "float32"
    for capability, expected in (((6, 0), "float64"), ((7, 0), "float64"), ((8, 0), "float64"), ((9, 0), "float64")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert resolve_precision("auto", "cuda") == expected, capability
    for capability in ((7, 5), (8, 6), (8, 9), (10, 0), (12, 0)):  # T4, RTX 30xx, L4/RTX 40xx, B200, RTX 50xx
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert resolve_precision("auto", "cuda:0") == "float32", capability
    assert resolve_precision("auto", "mps") == "float32"
    with pytest.raises(ValueError, match="`precision` 'float32' or 'auto' on mps"):
        resolve_precision("float64", "mps")
    with pytest.raises(ValueError, match=r"`precision` to be one of \('auto', 'float64', 'float32'\)"):
        resolve_precision("float16", "cpu")


def test_float32_raises_eps_to_its_floor():
    assert statistics_eps(1e-8, "float32") == FLOAT32_EPS
    assert statistics_eps(1e-3, "float32") == 1e-3
    assert statistics_eps(1e-8, "float64") == 1e-8


@pytest.fixture
def restore_matmul_precision():
    saved = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(saved)


@pytest.mark.usefixtures("restore_matmul_precision")
@pytest.mark.parametrize("setting", ["medium", "per-backend"])
def test_float32_products_ignore_reduced_precision_and_restore_it(setting, digit_maps):
    """The user's TF32/bf16 setting (bf16 on CPU: 3e-3 off on a matmul) is off in the products, then restored."""
    a = digit_maps[:128, :, ::2, ::2]
    b = TF.rotate(a, 30.0)
    expected = seis_scores(a, b, precision="float64")
    if setting == "medium":
        torch.set_float32_matmul_precision("medium")
    else:
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    before = (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision)
    result = seis_scores(a, b, precision="float32")
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision) == before
    if setting == "medium":
        assert torch.get_float32_matmul_precision() == "medium"
    assert_matches_reference(result, expected, atol=1e-4, exempt_near_ties=True)  # rotate30: near-ties


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_metric_streams_in_the_chosen_precision(precision, digit_maps, generator):
    a = digit_maps[:192, :, ::2, ::2]
    b = warped(a, generator)
    metric = SEISMetric(precision=precision)
    for x, y in zip(a.split(64), b.split(64)):
        metric.update(x, y)
    reference = reference_scores(a.flatten(2), b.flatten(2), batch_size=64)
    assert_matches_reference(
        metric.compute(), reference, atol=TOLERANCE[precision], exempt_near_ties=precision == "float32"
    )


def test_metric_rejects_an_unknown_precision():
    with pytest.raises(ValueError, match=r"`precision` to be one of \('auto', 'float64', 'float32'\)"):
        SEISMetric(precision="bfloat16")


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_jackknife_groups_keep_the_precision(precision, digit_maps):
    a = digit_maps[:128, :, ::2, ::2]
    b = a.roll(1, dims=-1) + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        grouped = seis_scores(a, b, jackknife_groups=4, precision=precision)
    plain = reference_scores(a.flatten(2), b.flatten(2))
    for name in ALL_SCORES:
        assert grouped[name] == pytest.approx(plain[name], abs=TOLERANCE[precision]), name


def test_float32_without_device_float64_matches_the_reference(table_cases, monkeypatch):
    """The branch for devices without float64 (Apple MPS), run on the CPU: float32 means, float64 sums kept apart."""
    monkeypatch.setattr(_precision, "_has_float64", lambda device: False)
    worst = 0.0
    for a, b, reference in table_cases.values():
        result = batched_scores(a, b, "float32")
        assert_matches_reference(result, reference, atol=TOLERANCE["float32"], exempt_near_ties=True)
        exempt = exempt_scores(reference, True)
        worst = max(worst, *(abs(result[score] - reference[score]) for score in ALL_SCORES if score not in exempt))
    print(f"float32 without device float64: largest deviation over {len(table_cases)} cases {worst:.1e}")
