"""The precision policy of the Gram products (``SEIS_SPEC.md``, "Precision" and "Ties").

The devices whose float64 runs at full rate (what ``"auto"`` means on a device:
:func:`~seis_lightning.options.resolve_precision`), the ``eps`` floor and tie tolerance that go with each
precision, where float64 sums live on a device without float64, and float32 products without TF32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal, get_args

import torch

Precision = Literal["auto", "float64", "float32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

# Neighbouring canonical correlations this close chain into a tied block, whose canonical vectors
# the SVD leaves to rounding; the principal-axes rule fixes them (spec, "Ties"). Float32 products
# spread exact ties by about 1e-7.
TIE_TOLERANCE = {"float64": 1e-9, "float32": 1e-6}

# CUDA compute capabilities whose float64 runs at half the float32 rate (P100, V100, A100, H100);
# other GPUs run it at 1/32 to 1/64, Apple MPS has none (spec, "Precision").
FULL_RATE_FLOAT64 = ((6, 0), (7, 0), (8, 0), (9, 0))
# Float32 Gram products carry rounding of about 1e-7 of their columns' scale (4e-8 to 1.2e-7 of λ_max
# measured in the null space of rank-deficient maps, 256 to 262,144 rows): from float32 statistics,
# a direction v is rounding below 1e-6 of vᵀ diag(C) v, and ``eps`` is raised to this floor
# (:func:`statistics_eps`), applied per direction (spec, "Precision").
FLOAT32_EPS = 1e-6


def statistics_eps(eps: float, precision: str) -> float:
    """The ``eps`` to score statistics of ``precision`` with: at least :data:`FLOAT32_EPS` for float32."""
    return max(eps, FLOAT32_EPS) if precision == "float32" and eps >= 0 else eps


def _has_float64(device: torch.device) -> bool:
    return device.type != "mps"


def _float64_home(device: torch.device) -> torch.device:
    """Where float64 sums of tensors on ``device`` live (statistics, metric states): the device, or the CPU
    if it has no float64."""
    return device if _has_float64(device) else torch.device("cpu")


@contextlib.contextmanager
def _ieee_float32() -> Iterator[None]:
    """Float32 products without TF32 (CUDA) or bf16 (oneDNN on CPU), whatever the user set; restored after."""
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    saved = [backend.fp32_precision for backend in backends]
    try:
        exact = torch.get_float32_matmul_precision() == "highest"
    except RuntimeError:  # torch refuses to answer once legacy and per-backend settings were mixed
        exact = False
    if exact and all(value in ("none", "ieee") for value in saved):
        yield
        return
    for backend in backends:
        backend.fp32_precision = "ieee"
    try:
        yield
    finally:
        for backend, value in zip(backends, saved):
            backend.fp32_precision = value
