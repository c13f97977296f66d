"""Calibration of the standard errors: mean SE against the real spread of each score over independent probe sets.

SEIS_SPEC.md, "Uncertainty": valid means that, over independent probe sets from one source, the mean
``<score>_se`` is within a factor 2 of the real standard deviation of ``<score>``. Three regimes of
``--sets`` independent probe sets of ``--images`` images each, ``jackknife_groups=--groups``:

- **smooth**: random maps (6 channels, 5x5, plus a map common to all images) against the maps
  rolled by one position, times 0.8, plus noise of 0.4 (``r30_jackknife_invariance.py``).
- **near-tied**: the same maps against their horizontal flip plus noise of 0.05: the canonical
  correlations come in near-tied pairs, where invariance is ill-conditioned.
- **real**: a small random CNN's second block (``random_cnn()[:3]``: 32 maps of 6x6) on random subsets
  of scikit-learn's 1797 digits (12x12), against the same CNN on the digits rotated by 15° and
  shifted by a pixel.

For each regime and score: the real standard deviation across sets, and the mean SE and its ratio to
that for the old delete-a-group jackknife (the G leave-one-group-out totals,
``sqrt((G-1)/G · Σ_g (s_(g) - mean s_(g))²)``, computed here from the same grouped statistics) and for
the package's SE (the delete-half jackknife). One thread, float64; CPU time per regime.

    .venv/bin/python bench/bench_calibration.py              # 100 sets a regime: about 35 CPU seconds
    .venv/bin/python bench/bench_calibration.py --sets 30 --groups 4
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF  # noqa: N812
from _harness import machine_description
from torch import Tensor

from seis_lightning.functional import SCORES, STATISTICS, SEISWarning, seis_from_statistics, seis_statistics
from seis_lightning.scores import HALF_SAMPLES
from seis_lightning.synthetic import digits_images, random_cnn

Regime = Callable[[int, int], tuple[Tensor, Tensor]]


def _maps(seed: int, num_images: int) -> Tensor:
    common = torch.randn(1, 6, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_images, 6, 5, 5, generator=generator, dtype=torch.float64) + 0.5 * common


def smooth(seed: int, num_images: int) -> tuple[Tensor, Tensor]:
    a = _maps(1000 + seed, num_images)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(5000 + seed), dtype=torch.float64)
    return a, 0.8 * a.roll(1, -1) + 0.4 * noise


def near_tied(seed: int, num_images: int) -> tuple[Tensor, Tensor]:
    a = _maps(2000 + seed, num_images)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(6000 + seed), dtype=torch.float64)
    return a, a.flip(-1) + 0.05 * noise


class Real:
    """Random subsets of the digits through a small random CNN's second block."""

    def __init__(self) -> None:
        self.images = digits_images(1797, size=12)
        self.block = random_cnn()[:3]

    def __call__(self, seed: int, num_images: int) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(3000 + seed)
        x = self.images[torch.randperm(len(self.images), generator=generator)[:num_images]]
        tx = TF.affine(x, angle=15.0, translate=[1, 0], scale=1.0, shear=[0.0])
        with torch.no_grad():
            return self.block(x).double(), self.block(tx).double()


def old_jackknife_se(stats: dict, groups: int) -> list[float]:
    """The delete-a-group jackknife SE of each score, from grouped statistics (the SE before this change)."""
    total = {name: stats[name].sum(0) for name in STATISTICS}
    shifts = {"shift_a": stats["shift_a"], "shift_b": stats["shift_b"]}
    left_out = []
    for g in range(groups):
        result = seis_from_statistics({**{name: total[name] - stats[name][g] for name in STATISTICS}, **shifts})
        left_out.append([result[score] for score in SCORES])
    values = np.array(left_out)
    return list(np.sqrt((groups - 1) / groups * ((values - values.mean(0)) ** 2).sum(0)))


def one_regime(regime: Regime, sets: int, num_images: int, groups: int) -> dict[str, np.ndarray | float]:
    values, old, new = [], [], []
    start = time.process_time()
    for seed in range(sets):
        a, b = regime(seed, num_images)
        stats = seis_statistics(a, b, jackknife_groups=groups, precision="float64")
        result = seis_from_statistics(stats, precision="float64")
        values.append([result[score] for score in SCORES])
        new.append([result[f"{score}_se"] for score in SCORES])
        old.append(old_jackknife_se(stats, groups))
    values, old, new = map(np.array, (values, old, new))
    return {"values": values, "old": old, "new": new, "cpu": time.process_time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=100, help="independent probe sets per regime (default 100)")
    parser.add_argument("--images", type=int, default=64, help="images per probe set (default 64)")
    parser.add_argument("--groups", type=int, default=8, help="jackknife_groups (default 8)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", SEISWarning)
    kept = -(-args.groups // 2)
    replicates = min(HALF_SAMPLES, math.comb(args.groups, kept))
    print(f"machine: {machine_description()}; 1 thread")
    print(
        f"{args.sets} probe sets of {args.images} images a regime, G = {args.groups}: old = delete-a-group"
        f" jackknife ({args.groups + 1} score sets), new = delete-half jackknife ({replicates} half-samples"
        f" of {kept} groups, {replicates + 1} score sets)\n"
    )
    header = f"{'regime':<10}{'score':<20}{'mean':>7}{'real sd':>9}{'old SE':>9}{'old x':>7}{'new SE':>9}{'new x':>7}"
    print(header)
    print("-" * len(header))
    worst = {"old": [], "new": []}
    total_cpu = 0.0
    for name, regime in (("smooth", smooth), ("near-tied", near_tied), ("real", Real())):
        out = one_regime(regime, args.sets, args.images, args.groups)
        total_cpu += out["cpu"]
        spread = out["values"].std(0, ddof=1)
        for i, score in enumerate(SCORES):
            ratios = {key: out[key][:, i].mean() / spread[i] for key in ("old", "new")}
            for key, ratio in ratios.items():
                worst[key].append(ratio)
            old, new = out["old"][:, i].mean(), out["new"][:, i].mean()
            print(
                f"{name:<10}{score:<20}{out['values'][:, i].mean():>7.3f}{spread[i]:>9.4f}"
                f"{old:>9.4f}{ratios['old']:>7.2f}{new:>9.4f}{ratios['new']:>7.2f}"
            )
        print(f"{'':<10}CPU {out['cpu']:.1f} s")
    print()
    for key in ("old", "new"):
        inside = sum(0.5 <= r <= 2 for r in worst[key])
        low, high = min(worst[key]), max(worst[key])
        print(f"{key}: {inside}/{len(worst[key])} cells within [0.5, 2]; ratios {low:.2f}-{high:.2f}")
    print(f"CPU time, all regimes: {total_cpu:.1f} s")


if __name__ == "__main__":
    main()
