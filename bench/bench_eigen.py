"""The eigen/CCA step of one layer (``seis_from_statistics``, float64), before and after issue 28's levers.

One layer of C channels and S positions, 64 images, K draws (default 4), statistics built once; then
``seis_from_statistics`` twice per repeat, interleaved: with the package's CCA, and with a private copy
of the CCA as it was before (LAPACK's SVD with vectors for every canonical correlation analysis, the
channel unfolding's vectors and alignments included). CPU time of the process (``time.process_time``)
on one thread, best of ``--repeats``; the wall time beside it. Two kinds of maps: ``smooth`` (the
harness's box-filtered maps, a decaying spectrum: about 0.6 S retained directions) and ``flat`` (white
maps: about 0.97 S retained, as on the layer issue 28 measured, 988 of 1024). Every score, null and
canonical correlation of the two must agree within 1e-9.

    .venv/bin/python bench/bench_eigen.py                    # 256, 576, 1024 positions; about 2 minutes
    .venv/bin/python bench/bench_eigen.py --positions 1024 --repeats 1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
import warnings

import torch
from _harness import machine_description, synthetic_batches
from torch import Tensor

from seis_lightning import scores
from seis_lightning.functional import SCORES_AND_NULLS, seis_from_statistics, seis_statistics

TOLERANCE = 1e-9
SPEED_TARGET = 3.0  # issue 28, at 1024 positions and 4 draws


def _old_svd(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The SVD as it was: LAPACK's default first, the eigh route of ``m mᵀ`` only where it fails."""
    try:
        u, sigma, vt = torch.linalg.svd(m, full_matrices=False)
        return u, sigma, vt.mT
    except torch.linalg.LinAlgError:
        r = min(m.shape)
        eigenvalues, eigenvectors = torch.linalg.eigh(m @ m.mT)
        u = eigenvectors.flip(1)[:, :r]
        sigma = eigenvalues.flip(0)[:r].clamp_min(0).sqrt()
        return u, sigma, m.mT @ u / torch.where(sigma > 0, sigma, 1.0)


def _old_cca(whitener_x: Tensor, cross: Tensor, whitener_y: Tensor, tie_tolerance: float, overlap=None):
    """The CCA as it was: vectors and alignments for every unfolding (``overlap`` ignored)."""
    m = whitener_x.mT @ cross @ whitener_y
    u, rho, z = _old_svd(m)
    for start, stop in scores._tied_blocks(rho, tie_tolerance):
        if not rho[start] > tie_tolerance:
            continue
        q, r = torch.linalg.qr(u[:, start:stop].mT)
        signs = torch.where(r.diagonal() < 0, -1.0, 1.0).to(q.dtype)
        u_block = u[:, start:stop] @ (q * signs)
        u = torch.cat([u[:, :start], u_block, u[:, stop:]], dim=1)
        z = torch.cat([z[:, :start], m.mT @ u_block / rho[start:stop], z[:, stop:]], dim=1)
    w, v = whitener_x @ u, whitener_y @ z
    cosine = (w * v).sum(0).abs() / (w.norm(dim=0) * v.norm(dim=0))
    return rho.clamp(0, 1), cosine.nan_to_num(0.0).clamp(0, 1)


@contextlib.contextmanager
def _old_path():
    saved = scores._cca
    scores._cca = _old_cca
    try:
        yield
    finally:
        scores._cca = saved


def _statistics(kind: str, positions: int, channels: int, draws: int, seed: int) -> dict:
    size = math.isqrt(positions)
    if kind == "smooth":
        a, b = next(
            synthetic_batches(
                seed=seed, num_images=64, batch_size=64, channels=channels, size=size, device=torch.device("cpu")
            )
        )
        bs = [b.roll(k, dims=-1) for k in range(draws)]
    else:
        generator = torch.Generator().manual_seed(seed)
        a = torch.randn(64, channels, size, size, generator=generator)
        bs = [a.roll(k + 1, dims=-1) + 0.3 * torch.randn(a.shape, generator=generator) for k in range(draws)]
    return seis_statistics(a, bs, precision="float64")


def _deviation(old: list[dict], new: list[dict]) -> float:
    worst = 0.0
    for before, after in zip(old, new):
        for name in SCORES_AND_NULLS:
            if not (math.isnan(before[name]) and math.isnan(after[name])):
                worst = max(worst, abs(before[name] - after[name]))
        for name in ("spatial_rho", "channel_rho", "spatial_rho_null", "channel_rho_null"):
            worst = max(worst, float((before[name] - after[name]).abs().max()))
        assert (before["spatial_kx"], before["spatial_ky"]) == (after["spatial_kx"], after["spatial_ky"])
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", nargs="+", type=int, default=[256, 576, 1024], help="square numbers")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--kinds", nargs="+", choices=("smooth", "flat"), default=["smooth", "flat"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # sample-sufficiency warnings of small probe sets
    print(f"machine: {machine_description()}; 1 thread; {args.channels} channels, 64 images, {args.draws} draws")
    header = (
        f"{'maps':<8}{'S':>6}{'kx':>6}{'ky':>6}{'old cpu s':>11}{'new cpu s':>11}{'cpu x':>7}"
        f"{'old wall s':>12}{'new wall s':>12}{'max |diff|':>12}"
    )
    print(header)
    print("-" * len(header))
    passed = True
    for positions in args.positions:
        for kind in args.kinds:
            stats = _statistics(kind, positions, args.channels, args.draws, args.seed)
            cpu, wall, results = {"old": math.inf, "new": math.inf}, {"old": math.inf, "new": math.inf}, {}
            for _ in range(args.repeats):
                for path in ("old", "new"):
                    with _old_path() if path == "old" else contextlib.nullcontext():
                        start_cpu, start_wall = time.process_time(), time.perf_counter()
                        results[path] = seis_from_statistics(stats, precision="float64")
                        cpu[path] = min(cpu[path], time.process_time() - start_cpu)
                        wall[path] = min(wall[path], time.perf_counter() - start_wall)
            deviation = _deviation(results["old"], results["new"])
            ratio = cpu["old"] / cpu["new"]
            passed &= deviation <= TOLERANCE
            if positions >= 1024 and args.draws >= 4:
                passed &= ratio >= SPEED_TARGET
            first = results["new"][0]
            print(
                f"{kind:<8}{positions:>6}{first['spatial_kx']:>6}{first['spatial_ky']:>6}{cpu['old']:>11.2f}"
                f"{cpu['new']:>11.2f}{ratio:>7.2f}{wall['old']:>12.2f}{wall['new']:>12.2f}{deviation:>12.1e}",
                flush=True,
            )
    print(
        f"cpu x = old / new CPU time (target >= {SPEED_TARGET}x at 1024 positions, {args.draws} draws);"
        f" max |diff| over scores, nulls and canonical correlations (<= {TOLERANCE:.0e})"
    )
    return int(not passed and args.strict)


if __name__ == "__main__":
    sys.exit(main())
