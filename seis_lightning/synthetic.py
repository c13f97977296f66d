"""The paper's synthetic validation (its Figure 1) on real MNIST or the embedded digits.

Activations ``A`` of a small random CNN over MNIST test images (``--data mnist``, as the paper; the
files of :class:`~seis_lightning.data.MNISTDataModule`) or scikit-learn's bundled digits (the default,
no files needed) are compared with ``B`` made
from ``A`` directly: the identity, geometric transformations of the maps, a channel re-encoding,
independent noise and a shuffled pairing (``SEIS_SPEC.md``, "Expected behaviour").
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF  # noqa: N812
from matplotlib.figure import Figure
from torch import Tensor, nn

from seis_lightning.functional import SCORES, SCORES_AND_NULLS, seis_scores

CASES = {
    "identity": "B = A",
    "rot90": "maps rotated by 90°",
    "roll3": "maps rolled by 3 positions",
    "rotate30": "maps rotated by 30°",
    "channel_mixing": "channels mixed, Q·A (Q orthogonal)",
    "noise": "independent noise",
    "shuffled": "images shuffled (null)",
}


def digits_images(num_images: int = 512, size: int = 28, offset: int = 0) -> Tensor:
    """scikit-learn's bundled handwritten digits (no download), upsampled to ``size``, in [0, 1]."""
    from seis_lightning.data.digits import load_digits_images

    return load_digits_images(size)[0][offset : offset + num_images]


def mnist_images(num_images: int = 512, root: str = "data") -> Tensor:
    """The first ``num_images`` MNIST test images ``[N, 1, 28, 28]`` in [0, 1] (torchvision's files under
    ``<root>/MNIST/raw``; a ``FileNotFoundError`` names the missing ones)."""
    from seis_lightning.data.mnist import MNISTDataModule

    return MNISTDataModule(root=root, val_size=None)._load(train=False)[0][:num_images]


def random_cnn(seed: int = 0) -> nn.Sequential:
    """A small random CNN; its first block gives 32 maps of 14x14 on 28x28 digits."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    with torch.no_grad():
        for parameter in model.parameters():
            bound = 1 / math.sqrt(parameter.shape[1] * 9) if parameter.ndim == 4 else 0.1
            parameter.copy_(torch.empty(parameter.shape).uniform_(-bound, bound, generator=generator))
    return model.eval()


def synthetic_pairs(maps: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
    """The B of each synthetic case, made from maps ``A`` of shape ``[N, C, H, W]``."""
    n, c = maps.shape[:2]
    q, _ = torch.linalg.qr(torch.randn(c, c, generator=generator))
    return {
        "identity": maps,
        "rot90": maps.rot90(1, dims=(-2, -1)),
        "roll3": maps.roll(3, dims=-1),
        "rotate30": TF.rotate(maps, 30.0),
        "channel_mixing": torch.einsum("dc,nchw->ndhw", q, maps),
        "noise": torch.randn(maps.shape, generator=generator) * maps.std() + maps.mean(),
        "shuffled": maps[torch.randperm(n, generator=generator)],
    }


def synthetic_validation(
    num_images: int = 512, seed: int = 0, data: str = "digits", root: str = "data"
) -> dict[str, dict]:
    """SEIS scores of each synthetic case on the first block of a random CNN over ``data``'s images
    (``"digits"`` or ``"mnist"``)."""
    images = mnist_images(num_images, root) if data == "mnist" else digits_images(num_images)
    with torch.no_grad():
        maps = random_cnn(seed)[:3](images)
    generator = torch.Generator().manual_seed(seed)
    return {name: seis_scores(maps, b) for name, b in synthetic_pairs(maps, generator).items()}


def bar_chart(results: dict[str, dict], data: str = "digits") -> Figure:
    """Grouped bars: the three scores per synthetic case."""
    figure = Figure(figsize=(8, 3.6), layout="constrained")
    axes = figure.subplots()
    width = 0.27
    colours = {"equivariance": "tab:blue", "invariance": "tab:red", "channel_invariance": "tab:green"}
    for i, score in enumerate(SCORES):
        xs = [j + (i - 1) * width for j in range(len(results))]
        axes.bar(xs, [r[score] for r in results.values()], width, label=score, color=colours[score])
    axes.set_xticks(range(len(results)), list(results), rotation=20, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("score")
    images = "MNIST test images" if data == "mnist" else "digits"
    axes.set_title(f"SEIS synthetic validation: {images} through a random CNN (32 maps, 14x14)")
    axes.legend(fontsize="small")
    return figure


def main(argv: list[str] | None = None) -> dict[str, dict]:
    """``seis-lightning synthetic``: print the table and write the bar chart (and CSV)."""
    parser = argparse.ArgumentParser(prog="seis-lightning synthetic", description=__doc__)
    parser.add_argument("--num-images", type=int, default=512, help="images (default 512; digits: at most 1797)")
    parser.add_argument(
        "--data", choices=["digits", "mnist"], default="digits", help="bundled digits, or MNIST from --root"
    )
    parser.add_argument("--root", default="data", help="the MNIST data root (files in <root>/MNIST/raw)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("logs/synthetic.png"), help="bar chart PNG")
    parser.add_argument("--csv", type=Path, default=None, help="also write the numbers as CSV")
    args = parser.parse_args(argv)
    if args.data == "digits" and not 2 <= args.num_images <= 1797:
        parser.error(
            f"--num-images must be between 2 and 1797 (the digits bundled with scikit-learn), got {args.num_images}"
        )
    if args.data == "mnist" and not 2 <= args.num_images <= 10000:
        parser.error(f"--num-images must be between 2 and 10000 (the MNIST test images), got {args.num_images}")
    results = synthetic_validation(args.num_images, args.seed, args.data, args.root)
    print(f"{'case':<16}{'B':<38}" + "".join(f"{s:>20}" for s in SCORES))
    for name, result in results.items():
        print(f"{name:<16}{CASES[name]:<38}" + "".join(f"{result[s]:>20.3f}" for s in SCORES))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    bar_chart(results, args.data).savefig(args.output, dpi=120)
    print(f"bar chart: {args.output}")
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case", *SCORES_AND_NULLS])
            for name, r in results.items():
                writer.writerow([name, *(f"{r[s]:.6f}" for s in SCORES), *(f"{r[s + '_null']:.6f}" for s in SCORES)])
        print(f"numbers: {args.csv}")
    return results
