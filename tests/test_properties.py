"""Property-based tests of the functional API over shapes, layouts and dtypes (hypothesis)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seis_lightning.functional import SCORES, SEISWarning, seis_scores

ALL_SCORES = (*SCORES, *(f"{name}_null" for name in SCORES))
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def activations(draw):
    """A seeded pair of activations with a random shape, layout and dtype."""
    num_images = draw(st.integers(2, 40))
    num_channels = draw(st.integers(1, 6))
    spatial = draw(st.lists(st.integers(1, 5), min_size=0, max_size=2))
    layout = draw(st.sampled_from(["channels_first", "channels_last"]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    shape = (num_images, num_channels, *spatial)
    a = torch.randn(shape, generator=generator, dtype=torch.float64)
    b = draw(st.floats(0, 1)) * a + torch.randn(shape, generator=generator, dtype=torch.float64)
    if layout == "channels_last" and spatial:
        a, b = a.movedim(1, -1), b.movedim(1, -1)
    return a.to(dtype), b.to(dtype), layout, generator


def quiet_scores(a, b, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        return seis_scores(a, b, **kwargs)


@PROPERTY_SETTINGS
@given(activations())
def test_scores_lie_in_unit_interval_or_are_nan_with_a_reason(pair):
    a, b, layout, _ = pair
    result = quiet_scores(a, b, layout=layout)
    for name in ALL_SCORES:
        value = result[name]
        if math.isnan(value):
            assert result["reasons"][name], name
        else:
            assert 0 <= value <= 1 + 1e-12, (name, value)
    if not math.isnan(result["invariance"]):
        assert result["invariance"] <= result["equivariance"] + 1e-12


@PROPERTY_SETTINGS
@given(activations())
def test_swapping_the_pair_keeps_the_canonical_correlations(pair):
    a, b, layout, _ = pair
    # Exact in float64; float32 products of (a, b) and (b, a) round apart by about 1e-8.
    forward = quiet_scores(a, b, layout=layout, precision="float64")
    backward = quiet_scores(b, a, layout=layout, precision="float64")
    for name in ("equivariance", "channel_invariance"):
        if not math.isnan(forward[name]):
            assert backward[name] == pytest.approx(forward[name], abs=1e-9), name


@PROPERTY_SETTINGS
@given(activations())
def test_channel_invariance_is_one_under_orthogonal_channel_mixing(pair):
    a, _, layout, generator = pair
    a = a.double()
    channel_axis = -1 if layout == "channels_last" and a.ndim > 2 else 1
    c = a.shape[channel_axis]
    q, _ = torch.linalg.qr(torch.randn(c, c, generator=generator, dtype=torch.float64))
    mixed = torch.tensordot(a.movedim(channel_axis, -1), q.T, dims=1).movedim(-1, channel_axis)
    result = quiet_scores(a, mixed, layout=layout)
    if not math.isnan(result["channel_invariance"]):
        assert result["channel_invariance"] == pytest.approx(1, abs=1e-6)


@PROPERTY_SETTINGS
@given(activations())
def test_equivariance_is_one_under_a_permutation_of_positions(pair):
    a, _, layout, generator = pair
    a = a.double()
    if layout == "channels_last" and a.ndim > 2:
        a = a.movedim(-1, 1)
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    permuted = flat[..., torch.randperm(flat.shape[-1], generator=generator)]
    result = quiet_scores(flat, permuted)
    if not math.isnan(result["equivariance"]):
        assert result["equivariance"] == pytest.approx(1, abs=1e-6)
        assert quiet_scores(flat, flat)["invariance"] == pytest.approx(1, abs=1e-6)
