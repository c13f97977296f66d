"""SEISMetric (streaming sums, batches of 64) against the store-everything baseline on the same activations.

For each layer (channels x map size) and probe-set size, two fresh processes regenerate the same
seeded activations batch by batch (``_harness.synthetic_batches``):

- metric: each batch goes straight into ``SEISMetric.update``; then ``compute``;
- baseline: every batch is kept (numpy), then ``baseline.baseline_scores`` runs on the full
  unfolded matrices.

Both times include producing the activations (shown separately as "gen s"). Each side's peak
memory is its peak resident memory above the level after imports and warm-up. Targets (issue 6):
the metric is at least 20x faster at 1024 images or more, and every score and null agrees with the
baseline within 1e-6.

    .venv/bin/python bench/bench_metric.py            # full grid, about 2 minutes on 2 CPU cores
    .venv/bin/python bench/bench_metric.py --quick    # about 25 s
    .venv/bin/python bench/bench_metric.py --grid 64x16x1024 512x4x2048
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

# channels x map size x probe images
FULL_GRID = ("64x16x1024", "512x4x1024", "64x32x512", "128x8x4096")
QUICK_GRID = ("64x16x256", "512x4x256")
SPEED_TARGET = 20.0
SPEED_TARGET_IMAGES = 1024
SCORE_TOLERANCE = 1e-6


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
            return streamed_metric(produced, device)[1], produced.seconds

    else:
        from baseline import baseline_scores

        def run(num_images: int, channels: int, size: int) -> tuple[dict, float]:
            produced = batches(num_images, channels, size)
            stored_a, stored_b = [], []
            for a, b in produced:
                stored_a.append(a.cpu().numpy())
                stored_b.append(b.cpu().numpy())
            all_a, all_b = np.concatenate(stored_a), np.concatenate(stored_b)
            del stored_a, stored_b
            return baseline_scores(all_a, all_b, batch_size=args.batch_size), produced.seconds

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"small grid {' '.join(QUICK_GRID)} (about 25 s)")
    parser.add_argument(
        "--grid", nargs="+", type=_parse_layer, help=f"CHANNELSxSIZExIMAGES entries (default {' '.join(FULL_GRID)})"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/LAPACK/OpenMP threads per worker (default 1)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    parser.add_argument("--worker", choices=("metric", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(_worker(args)))
        return 0

    grid = args.grid or [_parse_layer(spec) for spec in (QUICK_GRID if args.quick else FULL_GRID)]
    print(f"machine: {machine_description()}; workers use {args.threads} thread(s)")
    print(f"SEISMetric (batches of {args.batch_size}, float32 activations) vs store-everything numpy float64 baseline")
    header = (
        f"{'layer':<14}{'N':>6}{'metric s':>10}{'baseline s':>12}{'gen s':>8}{'time x':>8}"
        f"{'metric MB':>11}{'baseline MB':>13}{'mem x':>8}{'max |diff|':>12}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for channels, size, images in grid:
        common = ["--channels", str(channels), "--size", str(size), "--images", str(images)]
        common += ["--batch-size", str(args.batch_size), "--seed", str(args.seed)]
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

    failed = False
    speed_rows = [row for row in rows if row["images"] >= SPEED_TARGET_IMAGES]
    if speed_rows:
        slowest = min(row["time_ratio"] for row in speed_rows)
        passed = slowest >= SPEED_TARGET
        failed |= not passed
        print(
            f"{'PASS' if passed else 'FAIL'}  speed: metric >= {SPEED_TARGET:.0f}x faster at >= {SPEED_TARGET_IMAGES}"
            f" images (lowest ratio {slowest:.1f}x)"
        )
    else:
        print(f"SKIP  speed: no layer with >= {SPEED_TARGET_IMAGES} images in this grid (run without --quick)")
    largest = max(row["difference"] for row in rows)
    passed = largest <= SCORE_TOLERANCE
    failed |= not passed
    print(
        f"{'PASS' if passed else 'FAIL'}  agreement: max |metric - baseline| over all scores and nulls"
        f" {largest:.1e} <= {SCORE_TOLERANCE:.0e}"
    )
    return int(failed and args.strict)


if __name__ == "__main__":
    sys.exit(main())
