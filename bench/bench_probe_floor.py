"""Where a probe pass's time goes, part by part, against the floor of the work the spec asks for (issue 28).

One probe pass at the callback's defaults (``score_model``, ResNet-18 at 224 px, 64 images, one thread), its CPU
time split into three parts by timing the library's own calls:

- ``forward``: the forward passes (``ForwardRun``: the probe images and each draw, in parts, maps reduced in
  the hooks);
- ``statistics``: ``SEISMetric.update`` (the Gram products and map sums);
- ``eigen/CCA``: ``SEISMetric.compute`` (whiteners, canonical correlations, alignments);
- ``other``: the rest of the pass (transforming the images, checks, the result).

Beside each part, its floor on this CPU: for the statistics, the Gram products the spec names (spatial
``Σ AᵀA`` once, and per draw ``Σ BᵀB``, ``Σ AᵀB`` and the null's, each ``[N·C, S]ᵀ[N·C, S]``; channel alike with
``[N·S, C]``), the symmetric ones at half price, at the rate of one bare float64 ``torch.mm`` of the layer's
shape; for eigen/CCA, bare ``torch.linalg.eigh`` of the sizes the spec decomposes (per layer and unfolding,
A's covariance once and B's per draw; per draw the CCA's ``MMᵀ`` of the smaller of the retained ``kx``, ``ky``,
score and null), with the layers' own ``kx`` and ``ky``. The forward passes are their own floor. The training
epoch is ``bench_probe_cost.py``'s, in its own process.

    .venv/bin/python bench/bench_probe_floor.py              # about 2 minutes
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time

import torch
from _probe_setup import IMAGES_AND_MODEL

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = (
    r"""
import json, sys, time, warnings
import torch, torchvision
torch.set_num_threads(1); warnings.filterwarnings("ignore")
from seis_lightning import SEISMetric, score_model
from seis_lightning.forward import ForwardRun
name, images, size, weights = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "none"
"""
    + IMAGES_AND_MODEL
    + r"""
spent = {"forward": 0.0, "statistics": 0.0, "eigen/CCA": 0.0}
shapes, ranks = {}, {}

def timed(part, method, record=None):
    def wrapper(self, *args, **kwargs):
        start = time.process_time()
        try:
            out = method(self, *args, **kwargs)
        finally:
            spent[part] += time.process_time() - start
        if record is not None:
            record(self, args, kwargs, out)
        return out
    return wrapper

def shape_of(metric, args, kwargs, out):
    if kwargs.get("draw") in (None, 0):  # a chunk's maps come once per draw: count its images once
        n, c, s = args[0].shape
        shapes.setdefault(id(metric), {"chunks": [], "c": c, "s": s})["chunks"].append(n)

def ranks_of(metric, args, kwargs, out):
    keys = ("spatial_kx", "spatial_ky", "channel_kx", "channel_ky")
    ranks[id(metric)] = [[int(r.get(key, 0)) for key in keys] for r in out]

ForwardRun.__call__ = timed("forward", ForwardRun.__call__)
SEISMetric.update = timed("statistics", SEISMetric.update, shape_of)
SEISMetric.compute = timed("eigen/CCA", SEISMetric.compute, ranks_of)
start = time.process_time()
score_model(model, x)
total = time.process_time() - start
layers = [{**shapes[key], "ranks": ranks[key]} for key in shapes if key in ranks]
assert layers and len(layers) == len(shapes), (len(layers), len(shapes))
print(json.dumps({"total": total, "spent": spent, "layers": layers}))
"""
)


@functools.cache
def bare_rate(rows: int, columns: int) -> float:
    """Float64 flops per CPU second of one bare ``xᵀy``, ``x`` and ``y`` [rows, columns] (once per shape)."""
    x, y = torch.randn(2, rows, columns, dtype=torch.float64)
    torch.mm(x.mT, y)
    repeats, start = 0, time.process_time()
    while repeats < 2 or time.process_time() - start < 0.3:
        torch.mm(x.mT, y)
        repeats += 1
    return 2 * rows * columns * columns * repeats / (time.process_time() - start)


@functools.cache
def bare_eigh(size: int) -> float:
    """CPU seconds of one float64 ``torch.linalg.eigh`` of a symmetric positive definite ``size × size`` (once per
    size)."""
    if size < 1:
        return 0.0
    g = torch.randn(size, 2 * size, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    c = g @ g.mT
    torch.linalg.eigh(c)
    repeats, start = 0, time.process_time()
    while repeats < 2 or time.process_time() - start < 0.3:
        torch.linalg.eigh(c)
        repeats += 1
    return (time.process_time() - start) / repeats


def floors(layers: list[dict]) -> tuple[float, float]:
    """The statistics' and eigen/CCA's floors (CPU seconds) of the layers' maps ``[N, C, S]`` (N over all
    chunks) and ranks."""
    torch.set_num_threads(1)
    statistics = eigen = 0.0
    for layer in layers:
        c, s = layer["c"], layer["s"]  # the maps as the metric got them, reduced to the position cap
        n = sum(layer["chunks"])  # images, over the chunks
        draws = len(layer["ranks"])
        products = 0.5 + draws * (0.5 + 2)  # A's Gram, and per draw B's (half price: symmetric) and two cross
        # The products over all the images at once, at the rate of that one shape: the floor does not depend
        # on how the pass cuts the images into chunks.
        for rows, columns in ((n * c, s), (n * s, c)):
            statistics += products * 2 * rows * columns * columns / bare_rate(rows, columns)
        channels = min(c, n) if s == 1 else c  # vectors: from the image side when there are fewer images
        spatial = s if s > 1 else 0  # one position: nothing to decompose
        eigen += bare_eigh(spatial) + bare_eigh(channels)  # A's whiteners, once
        for skx, sky, ckx, cky in layer["ranks"]:
            eigen += bare_eigh(spatial) + bare_eigh(channels)  # B's whiteners
            eigen += 2 * bare_eigh(min(skx, sky)) + 2 * bare_eigh(min(ckx, cky))  # score and null
    return statistics, eigen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="a torchvision.models constructor")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    command = [sys.executable, "-c", CHILD, args.model, str(args.images), str(args.size)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=os.path.dirname(HERE))
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    cost = [sys.executable, os.path.join(HERE, "bench_probe_cost.py"), "--only", "train", "--model", args.model]
    cost += ["--images", str(args.images), "--size", str(args.size)]
    train = json.loads(subprocess.run(cost, capture_output=True, text=True, check=True).stdout.strip())["cpu_s"]
    statistics, eigen = floors(probe["layers"])
    spent = probe["spent"]
    other = probe["total"] - sum(spent.values())
    rows = [
        ("forward", spent["forward"], spent["forward"]),
        ("statistics", spent["statistics"], statistics),
        ("eigen/CCA", spent["eigen/CCA"], eigen),
        ("other", other, 0.0),
    ]
    print(f"{args.model}, {args.images} images of {args.size} px, defaults, 1 thread; training epoch {train:.1f} CPU s")
    print(f"{'part':12}{'CPU s':>8}{'floor s':>9}{'/ floor':>9}")
    for part, measured, floor in rows:
        ratio = f"{measured / floor:9.2f}" if floor else f"{'':9}"
        print(f"{part:12}{measured:8.1f}{floor:9.1f}{ratio}")
    floor_total = sum(floor for _, _, floor in rows)
    print(
        f"probe / training epoch: {probe['total'] / train:.2f}x; the floor of the same work:"
        f" {floor_total / train:.2f}x (target, issue 28: <= 2.5x)"
    )
    print(
        json.dumps(
            {"args": vars(args), "train_cpu_s": train, **probe, "floors": {"statistics": statistics, "eigen": eigen}}
        )
    )


if __name__ == "__main__":
    main()
