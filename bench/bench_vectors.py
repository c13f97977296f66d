"""Vector layers from the image side against the channel Gram sums: SEISMetric time and state bytes.

An ImageNet model's pooled features (1280) and logits (1000) at 160 probe images in batches of 32,
4 draws of a transformation (``num_transforms=4``), ``jackknife_groups`` 0 and 8, float64 on one
thread. The old route is the same metric made to keep the D×D channel Grams (as before the image
side; spec, "Streaming statistics"); the new one keeps the vectors while there are fewer images than
channels. Both run in this process, one after the other, on the same activations: the ratios are
old / new, CPU time (``time.process_time``) and state bytes (``metric_state`` after the last update);
the largest score difference between the two is printed as well.

    .venv/bin/python bench/bench_vectors.py             # about 10 CPU minutes (the old route at G = 8)
    .venv/bin/python bench/bench_vectors.py --quick     # G = 0 only
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings
from collections.abc import Iterator

import torch
from _harness import machine_description

import seis_lightning.metric as metric_module
from seis_lightning.functional import SCORES_AND_NULLS, SEISWarning
from seis_lightning.metric import SEISMetric

NUM_DRAWS = 4
BATCH_SIZE = 32


def activations(dim: int, num_images: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Vectors with a decaying spectrum and an offset (pooled-feature-like), and 4 draws: a channel
    re-encoding of a little of each plus noise."""
    generator = torch.Generator().manual_seed(dim)
    scale = 1.0 / torch.arange(1, dim + 1, dtype=torch.float32).sqrt()
    a = torch.relu(torch.randn(num_images, dim, generator=generator) * scale + 0.2)
    draws = []
    for _ in range(NUM_DRAWS):
        mixing = torch.eye(dim) + 0.1 * torch.randn(dim, dim, generator=generator) / dim**0.5
        draws.append(a @ mixing + 0.05 * torch.randn(num_images, dim, generator=generator))
    return a, draws


@contextlib.contextmanager
def gram_sums() -> Iterator[None]:
    """The metric as before the image side: every layer keeps its channel Gram sums."""
    statistics = metric_module._statistics
    metric_module._statistics = lambda *args, **kwargs: statistics(*args, **{**kwargs, "channel_rows": False})
    try:
        yield
    finally:
        metric_module._statistics = statistics


def measure(a: torch.Tensor, draws: list[torch.Tensor], groups: int) -> dict:
    metric = SEISMetric(num_transforms=NUM_DRAWS, jackknife_groups=groups, precision="float64")
    start = time.process_time()
    for i in range(0, len(a), BATCH_SIZE):
        metric.update(a[i : i + BATCH_SIZE], [b[i : i + BATCH_SIZE] for b in draws])
    middle = time.process_time()
    state = sum(t.numel() * t.element_size() for t in metric.metric_state.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        results = metric.compute()
    end = time.process_time()
    return {"update": middle - start, "compute": end - middle, "state": state, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1280, 1000])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--groups", type=int, nargs="+", default=[0, 8])
    parser.add_argument("--quick", action="store_true", help="jackknife_groups 0 only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_description())
    print(f"{args.images} images in batches of {BATCH_SIZE}, {NUM_DRAWS} draws, float64, 1 thread; CPU seconds")
    times = f"{'old s':>7} {'new s':>7} {'ratio':>6}"
    print(f"{'layer':>10} {'G':>2} | {times} | {'old MiB':>8} {'new MiB':>8} {'ratio':>6} | max |diff|")
    for dim in args.dims:
        a, draws = activations(dim, args.images)
        for groups in [0] if args.quick else args.groups:
            with gram_sums():
                old = measure(a, draws, groups)
            new = measure(a, draws, groups)
            old_time, new_time = old["update"] + old["compute"], new["update"] + new["compute"]
            diff = max(
                abs(x[name] - y[name]) for x, y in zip(old["results"], new["results"]) for name in SCORES_AND_NULLS
            )
            if groups:
                diff = max(
                    diff,
                    *(
                        abs(x[f"{name}_se"] - y[f"{name}_se"])
                        for x, y in zip(old["results"], new["results"])
                        for name in SCORES_AND_NULLS
                    ),
                )
            print(
                f"{'vector ' + str(dim):>10} {groups:>2} | {old_time:7.2f} {new_time:7.2f} {old_time / new_time:6.1f}"
                f" | {old['state'] / 2**20:8.1f} {new['state'] / 2**20:8.2f} {old['state'] / new['state']:6.1f}"
                f" | {diff:.1e}   (update {old['update']:.2f} / {new['update']:.2f},"
                f" compute {old['compute']:.2f} / {new['compute']:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
