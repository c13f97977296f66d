"""SEISMetric memory as the probe set grows 16x: state bytes and peak process memory (target: flat).

For each probe-set size, a fresh process streams seeded activations of one layer (64 channels,
28x28 maps by default) in batches of 64 into ``SEISMetric`` and computes the scores. It reports the
bytes of ``metric.metric_state`` (the sums the metric keeps) and the peak resident memory of the
process above its level after imports and warm-up (it includes one batch of activations and the
work on it). Target (issue 6): largest / smallest within 10% for both.

    .venv/bin/python bench/bench_memory.py            # 256 -> 4096 images, about 3 minutes on 2 CPU cores
    .venv/bin/python bench/bench_memory.py --quick    # 64 -> 1024 images on a 14x14 layer, about 40 s
    .venv/bin/python bench/bench_memory.py --images 512 1024 8192 --channels 128 --size 14
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from _harness import (
    PeakMemory,
    machine_description,
    megabytes,
    pick_device,
    run_worker,
    streamed_metric,
    synthetic_batches,
)

FULL_IMAGES = (256, 1024, 4096)
QUICK_IMAGES = (64, 256, 1024)
TOLERANCE = 0.10
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}


def _worker(args: argparse.Namespace) -> dict:
    device = pick_device()

    def run(num_images: int, channels: int, size: int) -> Any:
        batches = synthetic_batches(
            seed=args.seed,
            num_images=num_images,
            batch_size=args.batch_size,
            channels=channels,
            size=size,
            device=device,
        )
        return streamed_metric(batches, device)[0]

    run(2 * args.batch_size, 8, 4)  # warm-up: threads, BLAS/LAPACK, allocator
    memory = PeakMemory()
    memory.start()
    start = time.perf_counter()
    metric = run(args.images[0], args.channels, args.size)
    seconds = time.perf_counter() - start
    state_bytes = sum(t.numel() * t.element_size() for t in metric.metric_state.values())
    return {"seconds": seconds, "state_bytes": state_bytes, **memory.stop(), "device": str(device)}


def _ratio_line(name: str, values: list[float]) -> bool:
    ratio = max(values) / min(values)
    passed = ratio <= 1 + TOLERANCE
    print(f"{'PASS' if passed else 'FAIL'}  {name}: largest / smallest = {ratio:.3f} (flat within {TOLERANCE:.0%})")
    return passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"probe sets {QUICK_IMAGES} on a 14x14 layer (about 40 s)")
    parser.add_argument("--images", nargs="+", type=int, help=f"probe-set sizes (default {FULL_IMAGES})")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, help="map height and width (default 28, 14 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="BLAS/LAPACK/OpenMP threads per worker (default 1)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target fails")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = args.size or (14 if args.quick else 28)

    if args.worker:
        print(json.dumps(_worker(args)))
        return 0

    sizes = args.images or (QUICK_IMAGES if args.quick else FULL_IMAGES)
    print(f"machine: {machine_description()}; workers use {args.threads} thread(s)")
    print(
        f"SEISMetric on a {args.channels}ch {args.size}x{args.size} layer, float32 activations streamed in batches"
        f" of {args.batch_size}"
    )
    header = f"{'N':>6}{'seconds':>10}{'state MB':>10}{'peak MB':>10}{'peak MB glibc':>15}{'peak RSS MB':>13}"
    print(header)
    print("-" * len(header))
    rows = []
    for images in sizes:
        common = ["--worker", "--images", str(images), "--channels", str(args.channels), "--size", str(args.size)]
        common += ["--batch-size", str(args.batch_size), "--seed", str(args.seed)]
        row = run_worker(__file__, common, args.threads, env=FIXED_MMAP_THRESHOLD)
        row["glibc"] = run_worker(__file__, common, args.threads)["peak_rss_delta"]
        rows.append(row)
        print(
            f"{images:>6}{row['seconds']:>10.2f}{megabytes(row['state_bytes']):>10}"
            f"{megabytes(row['peak_rss_delta']):>10}{megabytes(row['glibc']):>15}{megabytes(row['peak_rss']):>13}",
            flush=True,
        )
        if "peak_cuda_delta" in row:
            print(f"{'':>6}peak CUDA memory {megabytes(row['peak_cuda_delta'])} MB")
    print(
        "state MB = bytes of metric.metric_state. peak MB = peak resident memory above the level after imports"
        " and warm-up, with MALLOC_MMAP_THRESHOLD_=1 MiB (blocks of 1 MiB and more come from mmap and go back to"
        " the system when freed); peak MB glibc = the same with glibc's default, adaptive threshold, whose heap"
        " keeps freed batch buffers; peak RSS MB = the whole process (imports included, 1 MiB threshold)."
    )
    print(f"probe set grows {max(sizes) / min(sizes):.0f}x ({min(sizes)} -> {max(sizes)} images)")
    passed = _ratio_line("state bytes", [row["state_bytes"] for row in rows])
    passed &= _ratio_line("peak memory", [row["peak_rss_delta"] for row in rows])
    glibc = [row["glibc"] for row in rows]
    print(
        f"INFO  peak memory with glibc's default allocator: largest / smallest = {max(glibc) / min(glibc):.3f}"
        " (heap keeps freed batch buffers; not the metric's state)"
    )
    return int(args.strict and not passed)


if __name__ == "__main__":
    sys.exit(main())
