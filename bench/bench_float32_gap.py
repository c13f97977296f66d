"""Float32 against float64 scores as a function of the canonical-correlation gaps (``SEIS_SPEC.md``, "Precision").

Cases: random maps (S = 2 to 36 positions, 256 to 512 images) against their flip or roll plus noise
(0.03 to 1), seeds 0-11; larger ones (S = 2 to 144, up to 4096 images, about 3e4 rows), seeds 100-103;
and the accuracy zoo of ``tests/test_zoo.py``. For each score and null: the float64 ρ, the smallest
gap between neighbours above 1e-9, ``mean_i(1/g_i)`` (``g_i`` the gap from ρ_i to its nearest
neighbour, ties within 1e-9 left out) and ``|float32 - float64|`` per score. Printed: the largest
deviation of equivariance and channel_invariance, and for invariance the largest ratio
``(deviation - 1e-5) / mean_i(1/g_i)`` (the spec's bound is ``1e-5 + 5e-6 · mean_i(1/g_i)``) and
the deviations by band of the smallest gap. CPU, one thread, about 2 minutes.

    .venv/bin/python bench/bench_float32_gap.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seis_lightning.functional import seis_scores

BOUND_BASE, BOUND_SLOPE = 1e-5, 5e-6


def _gap_measures(rho: np.ndarray) -> tuple[float, float]:
    gaps = rho[:-1] - rho[1:]
    live = gaps[(gaps > 1e-9) & (rho[1:] > 1e-6)]
    nearest = np.full(len(rho), np.inf)
    nearest[:-1] = np.minimum(nearest[:-1], gaps)
    nearest[1:] = np.minimum(nearest[1:], gaps)
    untied = nearest[(nearest > 1e-9) & np.isfinite(nearest)]
    return (float(live.min()) if len(live) else 1.0), (float(np.mean(1 / untied)) if len(untied) else 0.0)


def _case(rows: list, name: str, a: torch.Tensor, b: torch.Tensor, **options) -> None:
    r64, r32 = (seis_scores(a, b, precision=p, **options) for p in ("float64", "float32"))
    for suffix in ("", "_null"):
        smallest, mean_inverse = _gap_measures(r64["spatial_rho" + suffix].numpy())
        deviation = {
            s: abs(r32[s + suffix] - r64[s + suffix]) for s in ("equivariance", "invariance", "channel_invariance")
        }
        rows.append((name + suffix, smallest, mean_inverse, deviation))


def main() -> int:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rows: list = []
    moves = {"hflip": lambda t: t.flip(-1), "roll": lambda t: t.roll(1, -1)}
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        for shape in ((256, 16, 1, 2), (512, 8, 4, 4), (128, 8, 3, 3), (256, 4, 2, 4), (96, 6, 6, 6)):
            for noise in (0.03, 0.1, 0.3, 1.0):
                x = torch.randn(shape, generator=g, dtype=torch.float64)
                x = x + torch.randn(shape[1:], generator=g, dtype=torch.float64)
                for move_name, move in moves.items():
                    y = move(x) + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
                    _case(rows, f"seed {seed} {list(shape)} {move_name} {noise}", x, y)
    for seed in range(4):
        g = torch.Generator().manual_seed(100 + seed)
        for shape in ((2048, 16, 1, 2), (1024, 16, 8, 8), (512, 32, 12, 12), (4096, 4, 2, 2)):
            for noise in (0.03, 0.3):
                x = torch.randn(shape, generator=g, dtype=torch.float64)
                x = x + torch.randn(shape[1:], generator=g, dtype=torch.float64)
                _case(
                    rows,
                    f"seed {100 + seed} {list(shape)} hflip {noise}",
                    x,
                    x.flip(-1) + noise * torch.randn(x.shape, generator=g, dtype=torch.float64),
                )
    from tests.test_zoo import CASES

    for name, (a, b, options) in CASES.items():
        options = {key: value for key, value in options.items() if key != "offset"}
        _case(rows, f"zoo {name}", a, b, **options)

    smallest = np.array([row[1] for row in rows])
    mean_inverse = np.array([row[2] for row in rows])
    deviation = {s: np.array([row[3][s] for row in rows]) for s in ("equivariance", "invariance", "channel_invariance")}
    invariance = deviation["invariance"]
    print(f"{len(rows)} scores and nulls (float32 against float64 products, one thread)")
    for score in ("equivariance", "channel_invariance"):
        print(f"{score}: largest |float32 - float64| {deviation[score].max():.1e}")
    ratio = np.where(mean_inverse > 0, (invariance - BOUND_BASE) / np.maximum(mean_inverse, 1e-300), -np.inf)
    worst = int(np.argmax(ratio))
    print(
        f"invariance: largest (|deviation| - {BOUND_BASE:.0e}) / mean_i(1/g_i) = {ratio[worst]:.2e}"
        f" ({rows[worst][0]}: deviation {invariance[worst]:.1e}, smallest gap {smallest[worst]:.1e});"
        f" largest |deviation| x smallest gap {(invariance * smallest).max():.2e}"
    )
    outside = int((invariance > BOUND_BASE + BOUND_SLOPE * mean_inverse).sum())
    print(f"cases outside the spec's bound {BOUND_BASE:.0e} + {BOUND_SLOPE:.0e} * mean_i(1/g_i): {outside}")
    print(f"invariance off by more than 1e-4 in {(invariance > 1e-4).mean():.0%} of the cases")
    print(f"{'smallest gap':<20}{'cases':>7}{'largest |dev|':>15}{'> 1e-4':>8}")
    for low, high in ((1e-9, 1e-6), (1e-6, 1e-5), (1e-5, 1e-4), (1e-4, 1e-3), (1e-3, 1e-2), (1e-2, 1e-1), (1e-1, 1.0)):
        band = (smallest > low) & (smallest <= high)
        if band.any():
            print(
                f"({low:.0e}, {high:.0e}]".ljust(20)
                + f"{band.sum():>7}{invariance[band].max():>15.1e}{(invariance[band] > 1e-4).mean():>8.0%}"
            )
    return int(outside > 0)


if __name__ == "__main__":
    sys.exit(main())
