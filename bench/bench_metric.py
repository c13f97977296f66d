"""SEISMetric against the store-everything baseline, and the statistics' precisions against their GEMM floor.

Part 1, statistics of one batch (``seis_statistics``, 64 images, K draws of a transformation), per
layer shape, in one fresh process: seconds in ``precision="float64"`` and ``"float32"`` and their
GEMM floors: the statistics' own GEMM calls (``mm``, ``addmm_``, ``baddbmm_``...), recorded once
with a ``TorchFunctionMode`` and replayed on ready operands of the same shapes, strides and dtype
(symmetric Grams by blocks and the one wide channel product of all draws included, as the
statistics make them). Until issue 28 the floor was ``2 + 6K`` whole ``torch.matmul`` products per
unfolding, more work than the statistics do (their Grams by blocks are 3/4 or 5/8 of a whole
product): shares above 1 were that, not speed. Interleaved repeats, best of each; on a CPU both
the process's CPU time (``time.process_time``: every thread's) and the wall time; on CUDA the wall
time after a synchronize. Targets (issue 13): float32 >= 1.8x faster than float64 on a CPU;
float64 >= 0.9 of its floor.

Part 2, for each layer (channels x map size) and probe-set size, two fresh processes regenerate the
same seeded activations batch by batch (``_harness.synthetic_batches``):

- metric: each batch goes straight into ``SEISMetric.update`` (``--precision``, default ``auto``);
  then ``compute``;
- baseline: every batch is kept (numpy), then the tests' float64 reference
  (``tests/reference.py``, ``reference_scores``) runs on the full unfolded matrices.

Both times include producing the activations (shown separately as "gen s"). Each side's peak
memory is its peak resident memory above the level after imports and warm-up. Targets (issue 6):
the metric is at least 20x faster at 1024 images or more, and every score and null agrees with the
baseline within 1e-6 (1e-4 for float32 products, spec "Precision").

    .venv/bin/python bench/bench_metric.py            # both parts, full grids, about 4 minutes on 2 CPU cores
    .venv/bin/python bench/bench_metric.py --quick    # about 40 s
    .venv/bin/python bench/bench_metric.py --grid 64x16x1024 512x4x2048 --statistics 64x16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator

from _harness import (
    COMPARED,
    PeakMemory,
    machine_description,
    megabytes,
    pick_device,
    run_worker,
    streamed_metric,
    synthetic_batches,
)

from seis_lightning.functional import resolve_precision

# channels x map size x probe images
FULL_GRID = ("64x16x1024", "512x4x1024", "64x32x512", "128x8x4096")
QUICK_GRID = ("64x16x256", "512x4x256")
# channels x map size, for the statistics of one batch
FULL_STATISTICS = ("64x16", "512x4", "64x32", "128x8")
QUICK_STATISTICS = ("64x16", "512x4")
SPEED_TARGET = 20.0
SPEED_TARGET_IMAGES = 1024
SCORE_TOLERANCE = {"float64": 1e-6, "float32": 1e-4}
FLOAT32_SPEED_TARGET = 1.8
FLOOR_TARGET = 0.9


class _Timed:
    """Wraps an iterator and adds up the time spent producing its items."""

    def __init__(self, items: Iterable) -> None:
        self.items = iter(items)
        self.seconds = 0.0

    def __iter__(self) -> Iterator:
        while True:
            start = time.perf_counter()
            try:
                item = next(self.items)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - start
            yield item


def _recorded_gemms(run) -> list:
    """The GEMM calls ``run()`` makes: ``(function, operands, keywords, out)`` with each tensor as its
    ``(shape, stride, dtype)``, for :func:`_replayed`."""
    import torch
    from torch.overrides import TorchFunctionMode

    gemms = {
        torch.mm, torch.matmul, torch.bmm, torch.addmm, torch.baddbmm, torch.Tensor.mm, torch.Tensor.matmul,
        torch.Tensor.__matmul__, torch.Tensor.addmm, torch.Tensor.addmm_, torch.Tensor.baddbmm, torch.Tensor.baddbmm_,
    }  # fmt: skip

    def layout(x):
        return (tuple(x.shape), x.stride(), x.dtype) if isinstance(x, torch.Tensor) else x

    calls = []

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in gemms:
                keywords = {name: value for name, value in kwargs.items() if name != "out"}
                out = kwargs.get("out")
                calls.append((func, [layout(x) for x in args], keywords, None if out is None else layout(out)))
            return func(*args, **kwargs)

    with Recorder():
        run()
    return calls


def _replayed(calls: list, device):
    """A function that makes the recorded GEMM calls again on ready operands (random, same layouts)."""
    import torch

    def ready(spec):
        if not isinstance(spec, tuple) or len(spec) != 3 or not isinstance(spec[2], torch.dtype):
            return spec
        shape, stride, dtype = spec
        storage = sum((size - 1) * step for size, step in zip(shape, stride)) + 1 if all(shape) else 0
        return torch.randn(storage, dtype=dtype, device=device).as_strided(shape, stride)

    prepared = [
        (func, [ready(x) for x in args], keywords, None if out is None else ready(out))
        for func, args, keywords, out in calls
    ]

    def replay() -> None:
        for func, args, keywords, out in prepared:
            if out is None:
                func(*args, **keywords)
            else:
                func(*args, **keywords, out=out)

    return replay


def _statistics_worker(args: argparse.Namespace) -> dict:
    """Seconds (CPU and wall) of one batch's statistics in each precision and of their GEMM floors (best of
    ``args.repeats``)."""
    import torch

    from seis_lightning.functional import seis_statistics

    device = pick_device()
    n, c, k = args.batch_size, args.channels, args.draws[0]
    a, b = next(
        synthetic_batches(seed=args.seed, num_images=n, batch_size=n, channels=c, size=args.size, device=device)
    )
    bs = [b.roll(draw, dims=-1) for draw in range(k)]
    statistics = {
        "float64": lambda: seis_statistics(a, bs, precision="float64"),
        "float32": lambda: seis_statistics(a, bs, precision="float32"),
    }
    runs = {
        **statistics,
        "floor64": _replayed(_recorded_gemms(statistics["float64"]), device),
        "floor32": _replayed(_recorded_gemms(statistics["float32"]), device),
    }

    def seconds(run) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.process_time() - start_cpu, time.perf_counter() - start_wall

    for run in runs.values():  # warm-up
        run()
    cpu, wall = dict.fromkeys(runs, float("inf")), dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):
        for name, run in runs.items():
            cpu_seconds, wall_seconds = seconds(run)
            cpu[name], wall[name] = min(cpu[name], cpu_seconds), min(wall[name], wall_seconds)
    # CUDA: the wall time is the measure (the host's CPU time only launches kernels)
    best = wall if device.type == "cuda" else cpu
    return {**best, "wall": wall, "device": str(device)}


def _worker(args: argparse.Namespace) -> dict:
    import numpy as np

    device = pick_device()

    def batches(num_images: int, channels: int, size: int) -> _Timed:
        return _Timed(
            synthetic_batches(
                seed=args.seed,
                num_images=num_images,
                batch_size=args.batch_size,
                channels=channels,
                size=size,
                device=device,
            )
        )

    if args.worker == "metric":

        def run(num_images: int, channels: int, size: int) -> tuple[dict, float]:
            produced = batches(num_images, channels, size)
            return streamed_metric(produced, device, args.precision)[1], produced.seconds

    else:
        from tests.reference import reference_scores

        def run(num_images: int, channels: int, size: int) -> tuple[dict, float]:
            produced = batches(num_images, channels, size)
            stored_a, stored_b = [], []
            for a, b in produced:
                stored_a.append(a.cpu().numpy())
                stored_b.append(b.cpu().numpy())
            all_a, all_b = np.concatenate(stored_a), np.concatenate(stored_b)
            del stored_a, stored_b
            all_a, all_b = all_a.reshape(*all_a.shape[:2], -1), all_b.reshape(*all_b.shape[:2], -1)
            return reference_scores(all_a, all_b, batch_size=args.batch_size), produced.seconds

    run(2 * args.batch_size, 8, 4)  # warm-up: threads, BLAS/LAPACK, allocator
    memory = PeakMemory()
    memory.start()
    start = time.perf_counter()
    scores, generation_seconds = run(args.images, args.channels, args.size)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "generation_seconds": generation_seconds,
        **memory.stop(),
        "scores": {name: float(scores[name]) for name in COMPARED},
        "device": str(device),
    }


def _parse_layer(spec: str) -> tuple[int, int, int]:
    try:
        channels, size, images = (int(part) for part in spec.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CHANNELSxSIZExIMAGES such as 64x16x1024, got {spec!r}") from None
    return channels, size, images


def _parse_shape(spec: str) -> tuple[int, int]:
    try:
        channels, size = (int(part) for part in spec.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CHANNELSxSIZE such as 64x16, got {spec!r}") from None
    return channels, size


def _print_header(header: str) -> None:
    print(header)
    print("-" * len(header))


def _statistics_part(args: argparse.Namespace) -> bool:
    """Print the statistics table; return whether both targets hold."""
    shapes = args.statistics or [_parse_shape(spec) for spec in (QUICK_STATISTICS if args.quick else FULL_STATISTICS)]
    draws = args.draws or ([1] if args.quick else [1, 4])
    print(
        f"seis_statistics of one batch of {args.batch_size} images, float64 and float32 products, vs their GEMM floor"
    )
    _print_header(
        f"{'layer':<14}{'draws':>6}{'f64 ms':>9}{'f32 ms':>9}{'f64/f32':>9}"
        f"{'floor64 ms':>12}{'f64 share':>11}{'floor32 ms':>12}{'f32 share':>11}{'f64 wall share':>16}"
    )
    rows = []
    for channels, size in shapes:
        for k in draws:
            common = ["--channels", str(channels), "--size", str(size), "--draws", str(k)]
            common += ["--batch-size", str(args.batch_size), "--seed", str(args.seed), "--repeats", str(args.repeats)]
            t = run_worker(__file__, ["--worker", "statistics", *common], args.threads)
            row = {
                "speedup": t["float64"] / t["float32"],
                "share64": t["floor64"] / t["float64"],
                "share32": t["floor32"] / t["float32"],
                "wall_share64": t["wall"]["floor64"] / t["wall"]["float64"],
            }
            rows.append(row)
            print(
                f"{f'{channels}ch {size}x{size}':<14}{k:>6}{1e3 * t['float64']:>9.1f}{1e3 * t['float32']:>9.1f}"
                f"{row['speedup']:>9.2f}{1e3 * t['floor64']:>12.1f}{row['share64']:>11.2f}"
                f"{1e3 * t['floor32']:>12.1f}{row['share32']:>11.2f}{row['wall_share64']:>16.2f}",
                flush=True,
            )
    print(
        "share = floor / time in CPU time (ms columns too; wall time on CUDA), wall share = the same in wall"
        " time: 1 means the statistics cost what their own GEMM calls cost."
    )
    slowest = min(row["speedup"] for row in rows)
    lowest = min(row["share64"] for row in rows)
    speed_ok, floor_ok = slowest >= FLOAT32_SPEED_TARGET, lowest >= FLOOR_TARGET
    print(
        f"{'PASS' if speed_ok else 'MISS'}  float32 >= {FLOAT32_SPEED_TARGET}x faster than float64"
        f" (lowest {slowest:.2f}x)"
    )
    print(f"{'PASS' if floor_ok else 'MISS'}  float64 >= {FLOOR_TARGET} of its GEMM floor (lowest {lowest:.2f})")
    return speed_ok and floor_ok


def _baseline_part(args: argparse.Namespace) -> bool:
    """Print the metric-vs-baseline table; return whether both targets hold."""
    grid = args.grid or [_parse_layer(spec) for spec in (QUICK_GRID if args.quick else FULL_GRID)]
    print(
        f"SEISMetric (batches of {args.batch_size}, float32 activations, precision={args.precision!r}) vs"
        " store-everything numpy float64 baseline (tests/reference.py)"
    )
    _print_header(
        f"{'layer':<14}{'N':>6}{'metric s':>10}{'baseline s':>12}{'gen s':>8}{'time x':>8}"
        f"{'metric MB':>11}{'baseline MB':>13}{'mem x':>8}{'max |diff|':>12}"
    )
    rows = []
    for channels, size, images in grid:
        common = ["--channels", str(channels), "--size", str(size), "--images", str(images)]
        common += ["--batch-size", str(args.batch_size), "--seed", str(args.seed), "--precision", args.precision]
        metric = run_worker(__file__, ["--worker", "metric", *common], args.threads)
        baseline = run_worker(__file__, ["--worker", "baseline", *common], args.threads)
        difference = max(abs(metric["scores"][name] - baseline["scores"][name]) for name in COMPARED)
        time_ratio = baseline["seconds"] / metric["seconds"]
        memory_ratio = baseline["peak_rss_delta"] / max(metric["peak_rss_delta"], 1)
        rows.append({"images": images, "time_ratio": time_ratio, "difference": difference})
        layer = f"{channels}ch {size}x{size}"
        print(
            f"{layer:<14}{images:>6}{metric['seconds']:>10.2f}{baseline['seconds']:>12.2f}"
            f"{metric['generation_seconds']:>8.2f}{time_ratio:>8.1f}"
            f"{megabytes(metric['peak_rss_delta']):>11}{megabytes(baseline['peak_rss_delta']):>13}"
            f"{memory_ratio:>8.1f}{difference:>12.1e}",
            flush=True,
        )
        if "peak_cuda_delta" in metric:
            print(f"{'':<14}metric peak CUDA memory {megabytes(metric['peak_cuda_delta'])} MB")
    print(
        "time x = baseline s / metric s (both include generating the activations, 'gen s' on the metric side);"
        " MB = peak resident memory above the level after imports; mem x = baseline MB / metric MB."
    )

    passed = True
    speed_rows = [row for row in rows if row["images"] >= SPEED_TARGET_IMAGES]
    if speed_rows:
        slowest = min(row["time_ratio"] for row in speed_rows)
        passed &= slowest >= SPEED_TARGET
        print(
            f"{'PASS' if slowest >= SPEED_TARGET else 'FAIL'}  speed: metric >= {SPEED_TARGET:.0f}x faster at"
            f" >= {SPEED_TARGET_IMAGES} images (lowest ratio {slowest:.1f}x)"
        )
    else:
        print(f"SKIP  speed: no layer with >= {SPEED_TARGET_IMAGES} images in this grid (run without --quick)")
    largest = max(row["difference"] for row in rows)
    tolerance = SCORE_TOLERANCE[resolve_precision(args.precision, pick_device())]
    passed &= largest <= tolerance
    print(
        f"{'PASS' if largest <= tolerance else 'FAIL'}  agreement: max |metric - baseline| over all scores and nulls"
        f" {largest:.1e} <= {tolerance:.0e}"
    )
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids, one draw (about 40 s)")
    parser.add_argument(
        "--grid", nargs="+", type=_parse_layer, help=f"CHANNELSxSIZExIMAGES entries (default {' '.join(FULL_GRID)})"
    )
    parser.add_argument(
        "--statistics",
        nargs="+",
        type=_parse_shape,
        help=f"CHANNELSxSIZE layer shapes of part 1 (default {' '.join(FULL_STATISTICS)})",
    )
    parser.add_argument("--draws", nargs="+", type=int, help="draws K of part 1 (default 1 4; --quick: 1)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of part 1, best kept (default 5)")
    parser.add_argument("--part", choices=("all", "statistics", "baseline"), default="all")
    parser.add_argument(
        "--precision", choices=("auto", "float64", "float32"), default="auto", help="of part 2's metric"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/LAPACK/OpenMP threads per worker (default 1)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    parser.add_argument("--worker", choices=("metric", "baseline", "statistics"), help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(_statistics_worker(args) if args.worker == "statistics" else _worker(args)))
        return 0

    print(f"machine: {machine_description()}; workers use {args.threads} thread(s)")
    passed = True
    if args.part in ("all", "statistics"):
        passed &= _statistics_part(args)
        print()
    if args.part in ("all", "baseline"):
        passed &= _baseline_part(args)
    return int(not passed and args.strict)


if __name__ == "__main__":
    sys.exit(main())
