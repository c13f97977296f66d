"""Cost of the jackknife: SEISMetric state bytes and time with ``jackknife_groups=8`` against off.

Layers shaped like the digits recipe's (32 channels 14x14 and 7x7, vectors of 32 and 10), 320
probe images in batches of 64, 4 draws of a transformation (``num_transforms=4``), as the callback
scores them. ``update`` is the statistics of all batches, ``compute`` the eigendecompositions and
scores (with the jackknife, one set for the total and one per half-sample: 33 at G = 8). Median of
``--repeats`` runs, one thread.

    .venv/bin/python bench/bench_jackknife.py            # about 1 minute on 2 CPU cores
    .venv/bin/python bench/bench_jackknife.py --groups 4 --images 640
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F  # noqa: N812
from _harness import machine_description, pick_device

from seis_lightning.functional import SEISWarning
from seis_lightning.metric import SEISMetric

LAYERS = {"32ch 14x14": (32, 14), "32ch 7x7": (32, 7), "vector 32": (32, 0), "vector 10": (10, 0)}
NUM_DRAWS = 4


def activations(channels: int, size: int, num_images: int, device: torch.device) -> tuple[torch.Tensor, list]:
    """Rectified smooth maps (or vectors) and 4 'draws': shifted copies plus noise."""
    generator = torch.Generator().manual_seed(0)
    shape = (num_images, channels, size, size) if size else (num_images, channels)
    a = torch.randn(shape, generator=generator)
    if size:
        a = F.avg_pool2d(a, 3, stride=1, padding=1, count_include_pad=False)
    a = torch.relu(a + 0.1)
    draws = [a.roll(k + 1, dims=-1) + 0.1 * torch.randn(shape, generator=generator) for k in range(NUM_DRAWS)]
    return a.to(device), [b.to(device) for b in draws]


def measure(a: torch.Tensor, draws: list, groups: int, batch_size: int, device: torch.device) -> dict[str, float]:
    metric = SEISMetric(num_transforms=NUM_DRAWS, jackknife_groups=groups).to(device)
    start = time.perf_counter()
    for i in range(0, len(a), batch_size):
        metric.update(a[i : i + batch_size], [b[i : i + batch_size] for b in draws])
    if device.type == "cuda":
        torch.cuda.synchronize()
    middle = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        metric.compute()
    end = time.perf_counter()
    state = sum(t.numel() * t.element_size() for t in metric.metric_state.values())
    return {"update": middle - start, "compute": end - middle, "state": state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device()
    print(f"machine: {machine_description()}; {args.threads} thread(s)")
    print(f"{args.images} images, batches of {args.batch_size}, {NUM_DRAWS} draws, G = {args.groups} vs off\n")
    header = (
        f"{'layer':<12}{'state KB off':>13}{'G':>9}{'mem x':>7}"
        f"{'update s off':>14}{'G':>8}{'x':>6}{'compute s off':>15}{'G':>8}{'x':>6}{'total x':>9}"
    )
    print(header)
    print("-" * len(header))
    totals = {"off": [0.0, 0.0, 0], "on": [0.0, 0.0, 0]}
    for name, (channels, size) in LAYERS.items():
        a, draws = activations(channels, size, args.images, device)
        measure(a[: args.batch_size], [b[: args.batch_size] for b in draws], args.groups, args.batch_size, device)
        runs = {
            key: [measure(a, draws, groups, args.batch_size, device) for _ in range(args.repeats)]
            for key, groups in (("off", 0), ("on", args.groups))
        }
        row = {
            key: {part: statistics.median(r[part] for r in rs) for part in ("update", "compute", "state")}
            for key, rs in runs.items()
        }
        for key in row:
            totals[key][0] += row[key]["update"]
            totals[key][1] += row[key]["compute"]
            totals[key][2] += row[key]["state"]
        off, on = row["off"], row["on"]
        print(
            f"{name:<12}{off['state'] / 1e3:>13.1f}{on['state'] / 1e3:>9.1f}{on['state'] / off['state']:>7.1f}"
            f"{off['update']:>14.4f}{on['update']:>8.4f}{on['update'] / off['update']:>6.1f}"
            f"{off['compute']:>15.4f}{on['compute']:>8.4f}{on['compute'] / off['compute']:>6.1f}"
            f"{(on['update'] + on['compute']) / (off['update'] + off['compute']):>9.1f}"
        )
    (u0, c0, s0), (u1, c1, s1) = totals["off"], totals["on"]
    print(
        f"{'all 4':<12}{s0 / 1e3:>13.1f}{s1 / 1e3:>9.1f}{s1 / s0:>7.1f}{u0:>14.4f}{u1:>8.4f}{u1 / u0:>6.1f}"
        f"{c0:>15.4f}{c1:>8.4f}{c1 / c0:>6.1f}{(u1 + c1) / (u0 + c0):>9.1f}"
    )


if __name__ == "__main__":
    main()
