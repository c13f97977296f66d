"""BlurPool against max pooling, layer by layer: does blurring before subsampling shrink the aliasing gap?

    python -m scripts.blurpool_aliasing               # 2 recipes x 3 seeds: train (or load), score, table, figure
    python -m scripts.blurpool_aliasing --table-only  # the table and figure again from the runs CSV
    python -m scripts.blurpool_aliasing --fresh       # every run trained and scored again (`make figures-full`)

Zhang 2019 ("Making convolutional networks shift-invariant again") blurs each max pooling (max at stride 1, then
a binomial blur at stride 2) and finds the network's outputs follow small shifts more consistently. Here that is
read per layer with SEIS's aliasing gap (spec, "Transformations", "Aliasing gap"): a layer of total stride ``s``
follows a shift of ``s`` pixels exactly (its map moves one position) but not one of ``s / 2`` unless it blurs,
so ``gap = mean e(multiples of s) - mean e(odd half-multiples of s)`` measures aliasing.

The recipes ``digits_cnn_maxpool`` and ``digits_cnn_blurpool`` (the same CNN, data and training but for
``model.downsample``) are each trained with seeds 0, 1, 2 (``seed_everything``: weights and batch order; the data
split and the probe images stay fixed), on one torch thread, without logger or checkpoints; the weights are kept
under ``logs/blurpool_aliasing/`` and loaded when there. Each model is scored with
:func:`~seis_lightning.score_model` on the 359 validation digits, under the recipes' shift sweep (``shift:0:6:0.5``,
horizontal, pixels) with their ``jackknife_groups``. The shifts are of the [0, 1] images, normalised inside
``forward_fn``: a shift fills with zeros, which is then the digits' background (shifting the normalised images
would bring in a grey border). Each layer's stride is input width over map width (``layer_stride``). The gap of a
layer uses the sweep's shifts up to its last odd half-multiple of ``s`` (5.5 px for ``s = 1``, 5 for ``s = 2``,
6 for ``s = 4``), where the multiples and half-multiples have the same mean shift, so a steady fall of
equivariance with the shift does not bias it; its per-run SE comes from the per-shift jackknife SEs as if
independent (``aliasing_gap``'s ``se``; an upper side).

The verdict per layer is :func:`~seis_lightning.compare_runs` of the max-pool runs against the BlurPool runs, the
gap in place of a score: the difference of the means over seeds, its SE from the seeds (Welch) and the runs'
jackknife SE, and "lowered" when blurring lowers the gap beyond ``t_{0.975, df} * se``.

Runs go to ``docs/figures/blurpool_aliasing_runs.csv`` (one row per run, layer and shift; a run already there is
not repeated), the table to ``docs/figures/blurpool_aliasing.csv`` and, as Markdown, to standard output, the
figure (equivariance against the shift per layer, the stride's multiples marked) to
``docs/figures/blurpool_aliasing.png``; each file's build is recorded in ``docs/figures/MANIFEST.json``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml
from matplotlib.figure import Figure

from scripts._manifest import Build
from scripts.reproduce_figures import ROOT
from seis_lightning import score_model
from seis_lightning.compare import compare_runs
from seis_lightning.data import DigitsDataModule
from seis_lightning.functional import SEISWarning
from seis_lightning.models import DigitsCNN
from seis_lightning.sweeps import SHIFT_FAMILY, aliasing_gap, layer_stride, sweep_families
from seis_lightning.transforms import parse_transforms

KINDS = ("maxpool", "blurpool")
RUN_COLUMNS = ("downsample", "seed", "layer", "stride", "shift", "equivariance", "equivariance_se", "equivariance_null")
TABLE_COLUMNS = (
    "layer",
    "stride",
    *(f"{kind}_{c}" for kind in KINDS for c in ("gap", "seed_se", "jackknife_se", "seeds")),
    "delta",
    "se",
    "df",
    "bar",
    "verdict",
)
GAP = "aliasing_gap"  # the pseudo-transformation under which the gaps go through compare_runs


def recipe(kind: str) -> dict:
    return yaml.safe_load((ROOT / "recipes" / f"digits_cnn_{kind}.yaml").read_text())


def sweep(config: dict) -> list:
    """The recipe's shift sweep, as transforms (the other transformations of the recipe are not scored here)."""
    specs = [spec for spec in config["seis"]["transforms"] if spec.startswith(f"{SHIFT_FAMILY}:")]
    return parse_transforms(specs)


def trained_model(
    kind: str, seed: int, weights_dir: Path, fresh: bool = False
) -> tuple[DigitsCNN, DigitsDataModule, float]:
    """The recipe's model trained with ``seed`` (loaded from ``weights_dir`` when there, unless ``fresh``), its data
    and its validation accuracy (at the end of training, or measured again on loaded weights)."""
    config = recipe(kind)
    datamodule = DigitsDataModule(**config["data"]["init_args"])
    datamodule.setup("fit")
    pl.seed_everything(seed, verbose=False)
    model = DigitsCNN(**config["model"]["init_args"])
    path = weights_dir / f"digits_cnn_{kind}_seed{seed}.pt"
    loaded = path.exists() and not fresh
    if loaded:
        model.load_state_dict(torch.load(path))
    trainer = pl.Trainer(
        max_epochs=config["trainer"]["max_epochs"],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if loaded:
            trainer.validate(model, datamodule, verbose=False)
        else:
            trainer.fit(model, datamodule)
    accuracy = round(float(trainer.callback_metrics["val_acc"]), 4)
    print(f"digits_cnn_{kind} seed {seed}: val_acc {accuracy:.4f}", flush=True)
    if not loaded:
        weights_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return model.eval(), datamodule, accuracy


def score_run(kind: str, seed: int, weights_dir: Path, fresh: bool = False) -> tuple[list[dict], float]:
    """One trained model's equivariance along the shift sweep, per layer (rows of :data:`RUN_COLUMNS`), and its
    validation accuracy."""
    config = recipe(kind)
    model, datamodule, accuracy = trained_model(kind, seed, weights_dir, fresh)
    images = datamodule.val_set.images  # [0, 1]; the normalisation is applied in forward_fn
    normalize = datamodule.val_set.transform
    mean, std = float(normalize.mean[0]), float(normalize.std[0])
    layers = config["seis"]["layers"]
    transforms = sweep(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        scores = score_model(
            model,
            images,
            layers=layers,
            transforms=transforms,
            forward_fn=lambda network, batch: network((batch - mean) / std),
            jackknife_groups=config["seis"]["jackknife_groups"],
            batch_size=config["seis"]["batch_size"],
        )
    strides = map_strides(model, images[:1], layers)
    rows = []
    for magnitude, name in sweep_families(transforms)[SHIFT_FAMILY]:
        for layer in layers:
            values = scores[name][layer]
            rows.append(
                {
                    "downsample": kind,
                    "seed": seed,
                    "layer": layer,
                    "stride": "" if strides[layer] is None else strides[layer],
                    "shift": f"{magnitude:g}",
                    **{key: f"{values[key]:.6f}" for key in RUN_COLUMNS[5:]},
                }
            )
    return rows, accuracy


def map_strides(model: torch.nn.Module, image: torch.Tensor, layers: list[str]) -> dict[str, int | None]:
    """``{layer: total stride}`` from the input width over each layer's map width (``None``: no spatial map)."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())

    def keep_shape(layer: str):
        def hook(_module, _inputs, output) -> None:
            shapes[layer] = tuple(output.shape)

        return hook

    handles = [modules[layer].register_forward_hook(keep_shape(layer)) for layer in layers]
    try:
        with torch.no_grad():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    return {
        layer: layer_stride(tuple(image.shape[-2:]), tuple(shape[-2:]) if len(shape) == 4 else None).stride
        for layer, shape in shapes.items()
    }


def run_gap(rows: list[dict]) -> tuple[float, float]:
    """``(gap, SE)`` of one run's layer (rows in shift order) over its balanced window: the shifts up to the
    sweep's last odd half-multiple of the stride."""
    stride = float(rows[0]["stride"])
    shifts = [float(r["shift"]) for r in rows]
    halves = [d for d in shifts if abs(d / stride - 0.5 - round(d / stride - 0.5)) < 1e-6]
    window = [k for k, d in enumerate(shifts) if d <= max(halves)]
    gap = aliasing_gap(
        [shifts[k] for k in window],
        [float(rows[k]["equivariance"]) for k in window],
        stride,
        se=[float(rows[k]["equivariance_se"]) for k in window],
    )
    return gap.gap, gap.se


def table(runs: list[dict], jackknife_groups: int) -> list[dict]:
    """Per layer with a stride: each side's gap (mean over seeds), its SE between seeds and the mean per-run SE,
    and :func:`~seis_lightning.compare_runs`'s difference and verdict (max pool against BlurPool)."""
    groups: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    strides = {}
    for kind in KINDS:
        for seed in dict.fromkeys(r["seed"] for r in runs if r["downsample"] == kind):
            result: dict[str, dict[str, float]] = {}
            for layer in dict.fromkeys(r["layer"] for r in runs):
                rows = [r for r in runs if (r["downsample"], r["seed"], r["layer"]) == (kind, seed, layer)]
                if not rows or not rows[0]["stride"]:
                    continue
                strides[layer] = int(rows[0]["stride"])
                gap, se = run_gap(rows)
                result[layer] = {"equivariance": gap, "equivariance_se": se}
            groups[kind].append({GAP: result})
    compared = compare_runs(*(groups[kind] for kind in KINDS), names=KINDS, jackknife_groups=jackknife_groups)
    out = []
    for row in compared:
        entry = {"layer": row["layer"], "stride": strides[row["layer"]]}
        for kind in KINDS:
            seeds = row[f"{kind}_seeds"]
            entry |= {
                f"{kind}_gap": row[f"{kind}_mean"],
                f"{kind}_seed_se": row[f"{kind}_sd"] / math.sqrt(seeds),
                f"{kind}_jackknife_se": row[f"{kind}_se"],
                f"{kind}_seeds": seeds,
            }
        out.append(entry | {key: row[key] for key in ("delta", "se", "df", "bar", "verdict")})
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "| layer (stride) | max pool: gap ± SE (run SE) | BlurPool: gap ± SE (run SE) | delta | bar (t·SE) | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sides = [
            f"{r[f'{kind}_gap']:.3f} ± {r[f'{kind}_seed_se']:.3f} ({r[f'{kind}_jackknife_se']:.3f})" for kind in KINDS
        ]
        lines.append(
            f"| {r['layer']} ({r['stride']}) | {sides[0]} | {sides[1]} | {r['delta']:+.3f} | {r['bar']:.3f}"
            f" | {r['verdict']} |"
        )
    return "\n".join(lines)


def figure(runs: list[dict]) -> Figure:
    """Equivariance against the shift, one panel per layer with a stride, max pool and BlurPool (mean over seeds,
    SE between seeds as error bars), the stride's multiples as dotted lines."""
    layers = list(dict.fromkeys(r["layer"] for r in runs if r["stride"]))
    fig = Figure(figsize=(3.2 * len(layers), 3.2), layout="constrained")
    panels = fig.subplots(1, len(layers), sharey=True, squeeze=False)[0]
    for axes, layer in zip(panels, layers):
        stride = int(next(r["stride"] for r in runs if r["layer"] == layer))
        shifts = sorted({float(r["shift"]) for r in runs if r["layer"] == layer})
        for kind, colour in zip(KINDS, ("tab:red", "tab:blue")):
            means, errors = [], []
            for shift in shifts:
                values = [
                    float(r["equivariance"])
                    for r in runs
                    if (r["downsample"], r["layer"]) == (kind, layer) and float(r["shift"]) == shift
                ]
                means.append(statistics.fmean(values))
                errors.append(statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)
            axes.errorbar(shifts, means, yerr=errors, marker="o", markersize=3, capsize=2, color=colour, label=kind)
        for multiple in range(stride, int(max(shifts)) + 1, stride):
            axes.axvline(multiple, color="grey", linestyle=":", linewidth=1)
        axes.set_title(f"{layer} (stride {stride})")
        axes.set_xlabel("shift (pixels)")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("equivariance")
    panels[0].legend()
    return fig


def read_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--weights", type=Path, default=ROOT / "logs" / "blurpool_aliasing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--table-only", action="store_true", help="no training or scoring: from the runs CSV")
    parser.add_argument("--fresh", action="store_true", help="forget the runs CSV and the kept weights: redo all")
    args = parser.parse_args(argv)
    if args.fresh and args.table_only:
        parser.error("--fresh redoes every run; --table-only none: give one of them")
    torch.set_num_threads(args.threads)
    build = Build(seeds=args.seeds)
    start = time.process_time()
    args.out.mkdir(parents=True, exist_ok=True)
    runs_path = args.out / "blurpool_aliasing_runs.csv"
    if args.fresh:
        runs_path.unlink(missing_ok=True)
    runs = read_runs(runs_path)
    kept = bool(runs)
    accuracies: dict[str, float] = {}  # validation accuracy of each run scored here (kept runs: in their entry)
    for seed in args.seeds if not args.table_only else ():
        for kind in KINDS:
            if (kind, str(seed)) in {(r["downsample"], r["seed"]) for r in runs}:
                continue
            new, accuracies[f"digits_cnn_{kind} seed {seed}"] = score_run(kind, seed, args.weights, args.fresh)
            with runs_path.open("a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=RUN_COLUMNS)
                if not runs:
                    writer.writeheader()
                writer.writerows(new)
            runs = read_runs(runs_path)
            print(f"{kind} seed {seed} scored; CPU {time.process_time() - start:.0f} s", flush=True)
    seeds = sorted({int(r["seed"]) for r in runs})
    if not args.table_only:  # --table-only leaves the runs CSV and its entry as they were
        measured = {"val_acc": accuracies} if accuracies else None
        build.record(args.out, [runs_path], seeds=seeds, reused=[runs_path] * kept, measured=measured)
    rows = table(runs, recipe(KINDS[0])["seis"]["jackknife_groups"])
    with (args.out / "blurpool_aliasing.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows([{k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
    figure(runs).savefig(args.out / "blurpool_aliasing.png", dpi=120)
    build.record(args.out, ["blurpool_aliasing.csv", "blurpool_aliasing.png"], seeds=seeds)
    print(markdown(rows))
    print(f"CPU time {time.process_time() - start:.0f} s ({args.threads} torch thread(s))")


if __name__ == "__main__":
    main()
