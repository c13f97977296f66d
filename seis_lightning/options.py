"""The SEIS options, stated once: :class:`SEISOptions`, validated from one rule table.

``precision`` and ``layout`` are ``Literal`` types, so LightningCLI checks them too. The public
functions and classes validate their options here, once, in torchmetrics' ``_arg_validation``
style; the private kernels take resolved values (:meth:`SEISOptions.resolved`) with no defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from seis_lightning import _precision
from seis_lightning._precision import PRECISIONS, Precision, statistics_eps

Layout = Literal["channels_first", "channels_last"]
LAYOUTS: tuple[str, ...] = get_args(Layout)


def _integer(low: int):
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# The one rule table: option -> (what it must be, check). Options that may be given per layer
# (a mapping from layer name to value) are in _PER_LAYER.
RULES = {
    "keep": ("a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
    "eps": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    "layout": (f"one of {LAYOUTS}", lambda v: v in LAYOUTS),
    "num_prefix_tokens": ("a non-negative integer", _integer(0)),
    "max_positions": ("a positive integer", _integer(1)),
    "precision": (f"one of {PRECISIONS}", lambda v: v in PRECISIONS),
    "jackknife_groups": ("0 (off) or an integer >= 2", lambda v: _integer(0)(v) and v != 1),
    "batch_size": ("an integer >= 2", _integer(2)),
    "forward_batch_size": ("None or a positive integer", _integer(1)),
    "num_samples": ("an integer >= 2", _integer(2)),
    "every_n_epochs": ("a positive integer", _integer(1)),
    "strides": ("a positive number, the layer's total stride in input pixels", lambda v: _number(v) and v > 0),
}
_PER_LAYER = ("layout", "num_prefix_tokens", "strides")
_ONLY_PER_LAYER = ("strides",)  # a mapping from layer name to value, never one value for all layers


def check_options(**options: Any) -> None:
    """Raise ``ValueError`` naming the option and its allowed values for any option out of range.

    Options given as ``None`` are not checked; ``layout`` and ``num_prefix_tokens`` may be mappings
    per layer, and ``strides`` must be one (``{"blocks.3": 16}``), whose values are checked (an error
    names the layer).
    """
    for name, value in options.items():
        if value is None:
            continue
        allowed, check = RULES[name]
        if name in _ONLY_PER_LAYER and not isinstance(value, Mapping):
            raise ValueError(
                f"Expected `{name}` to be a mapping from layer name to {allowed}, e.g. {{'blocks.3': 16}},"
                f" but got {value!r}."
            )
        if isinstance(value, Mapping) and name in _PER_LAYER:
            for layer, item in value.items():
                if not isinstance(layer, str) or not check(item):
                    raise ValueError(f"Expected `{name}[{layer!r}]` to be {allowed}, but got {item!r}.")
            continue
        if not check(value):
            per_layer = " (or a mapping per layer)" if name in _PER_LAYER else ""
            raise ValueError(f"Expected `{name}` to be {allowed}{per_layer}, but got {value!r}.")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision of the Gram products on ``device``: ``"float64"`` or ``"float32"`` (spec, "Precision").

    ``"auto"`` picks ``"float64"`` on the CPU and on CUDA devices whose float64 runs at full rate
    (compute capability 6.0, 7.0, 8.0 or 9.0: :data:`~seis_lightning._precision.FULL_RATE_FLOAT64`), and
    ``"float32"`` elsewhere: Apple MPS, other GPUs. Float32 invariance is within ``1e-5 + 5e-6 · mean_i(1/g_i)`` of
    float64 (``g_i``: the gap from each canonical correlation to its nearest neighbour), which misses
    1e-4 wherever correlations lie closer than about 5e-5 (1 case in 5 measured), while float32 saves
    under 2x of the statistics' time on the CPU (``bench/README.md``): the CPU keeps float64.

    Raises:
        ValueError: if ``precision`` is not one of ``("auto", "float64", "float32")``, or is
            ``"float64"`` on a device without float64 (MPS).
    """
    check_options(precision=precision)
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cpu":
            return "float64"
        full_rate = device.type == "cuda" and torch.cuda.get_device_capability(device) in _precision.FULL_RATE_FLOAT64
        return "float64" if full_rate else "float32"
    if precision == "float64" and not _precision._has_float64(device):
        raise ValueError(f"Expected `precision` 'float32' or 'auto' on {device.type}, which has no float64.")
    return precision


@dataclass(frozen=True)
class ResolvedOptions:
    """:class:`SEISOptions` on one device: ``precision`` is ``"float64"`` or ``"float32"`` and ``eps``
    carries float32's floor (:func:`~seis_lightning._precision.statistics_eps`)."""

    keep: float
    eps: float
    layout: Layout
    num_prefix_tokens: int
    max_positions: int
    precision: Literal["float64", "float32"]
    jackknife_groups: int


@dataclass(frozen=True)
class SEISOptions:
    """The options of the SEIS math, validated once (``SEIS_SPEC.md``).

    Args:
        keep: share of variance kept by the SVD denoising, in (0, 1].
        eps: directions with eigenvalue below ``eps * λ_max`` are dropped, in [0, 1).
        layout: ``"channels_first"`` or ``"channels_last"`` (channels on the last axis).
        num_prefix_tokens: leading class/register tokens dropped from ``[N, T, D]`` tokens.
        max_positions: larger maps keep every k-th position along each axis, at most this many (spec, "Large maps").
        precision: of the Gram products, ``"auto"``, ``"float64"`` or ``"float32"`` (spec, "Precision").
        jackknife_groups: 0 (off) or the number G >= 2 of groups of the delete-half jackknife (spec, "Uncertainty").

    Raises:
        ValueError: naming the option and its allowed values.

    Example:
        >>> from seis_lightning.options import SEISOptions
        >>> SEISOptions(precision="auto").resolved("cpu").precision
        'float64'
        >>> SEISOptions(precision="float32").resolved("cpu").eps
        1e-06
    """

    keep: float = 0.99
    eps: float = 1e-8
    layout: Layout = "channels_first"
    num_prefix_tokens: int = 0
    max_positions: int = 1024
    precision: Precision = "auto"
    jackknife_groups: int = 0

    def __post_init__(self) -> None:
        check_options(**dataclasses.asdict(self))

    def resolved(self, device: torch.device | str) -> ResolvedOptions:
        """The options on ``device``: the precision ``"auto"`` stands for there, and the ``eps`` that goes with it.

        Raises:
            ValueError: for ``precision="float64"`` on a device without float64 (MPS).
        """
        precision = resolve_precision(self.precision, device)
        fields = {**dataclasses.asdict(self), "precision": precision, "eps": statistics_eps(self.eps, precision)}
        return ResolvedOptions(**fields)
