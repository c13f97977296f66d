"""Figure 3 with its uncertainty: does random-affine augmentation raise invariance beyond the noise?

    python -m scripts.figure3_seeds                       # MNIST and digits, seeds 0 1 2 (about 30 min on 2 CPU cores)
    python -m scripts.figure3_seeds --datasets digits     # one pair of recipes
    python -m scripts.figure3_seeds --table-only          # the table again from the runs already in the CSV

Each pair of recipes (``mnist_cnn`` / ``mnist_cnn_augment``, ``digits_cnn`` / ``digits_cnn_augment``) is
trained once per training seed (``seed_everything``: weights, batch order, augmentation draws; the data
split and the probe images stay fixed) and scored once at the end, with the paper's random affine and
the delete-a-group jackknife (``jackknife_groups=10``). Runs are CPU-sized: MNIST on 10 000 training images
for 2 epochs, 2 000 validation images (the probe images are 512 of them); digits for 6 epochs at width 16.

Per layer and score the table gives, without and with augmentation, the mean over seeds, the spread
between seeds (sample standard deviation) and the jackknife SE (mean over seeds), then the difference of
the means ``delta`` and its two standard errors: between seeds ``sqrt(sd_plain^2/n + sd_aug^2/n)`` and
from the probe images ``sqrt(se_plain^2 + se_aug^2)`` (the probe set is the same in every run, so its
noise does not average out over seeds). The verdict is "raised" when ``delta`` exceeds twice the two
combined (``sqrt(seed_se^2 + jackknife_se^2)``), "lowered" below minus twice that, else "within noise".

Runs go to ``docs/figures/fig3_seeds_runs.csv`` (one row per run, layer and score; a run already there
is not repeated), the table to ``docs/figures/fig3_seeds.csv`` and, as Markdown, to standard output.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from pathlib import Path

import torch

from scripts.reproduce_figures import ROOT, run_recipe
from seis_lightning.functional import SCORES

PAIRS = {
    "mnist": (
        "mnist_cnn",
        (
            "--data.train_size=10000",
            "--data.val_size=2000",
            "--trainer.max_epochs=2",
        ),
    ),
    "digits": ("digits_cnn", ("--trainer.max_epochs=6", "--model.width=16")),
}
COMMON = (
    "--seis.score_before_training=false",
    "--seis.every_n_epochs=1000",  # scored once, as training ends
    "--seis.jackknife_groups=10",
)
RUN_COLUMNS = ("dataset", "augment", "seed", "layer", "score", "value", "null", "se")
TABLE_COLUMNS = (
    "dataset",
    "layer",
    "score",
    "seeds",
    "plain_mean",
    "plain_sd",
    "plain_se",
    "augment_mean",
    "augment_sd",
    "augment_se",
    "delta",
    "seed_se",
    "jackknife_se",
    "verdict",
)


def read_runs(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def train(dataset: str, augment: bool, seed: int, log_dir: Path) -> list[dict]:
    """One training run scored at its end: rows of :data:`RUN_COLUMNS`."""
    recipe, overrides = PAIRS[dataset]
    name = f"{recipe}_augment" if augment else recipe
    history = run_recipe(name, f"--seed_everything={seed}", *COMMON, *overrides, log_dir=log_dir)
    scores = history[-1]["scores"]["random_affine"]
    return [
        {
            "dataset": dataset,
            "augment": int(augment),
            "seed": seed,
            "layer": layer,
            "score": score,
            "value": f"{values[score]:.6f}",
            "null": f"{values[f'{score}_null']:.6f}",
            "se": f"{values[f'{score}_se']:.6f}",
        }
        for layer, values in scores.items()
        for score in SCORES
    ]


def table(runs: list[dict]) -> list[dict]:
    """The per-layer comparison of :data:`TABLE_COLUMNS` (the module docstring defines each column)."""
    rows = []
    keys = dict.fromkeys((r["dataset"], r["layer"], r["score"]) for r in runs)
    for dataset, layer, score in keys:
        sides = {}
        for augment in ("0", "1"):
            picked = [
                r
                for r in runs
                if (r["dataset"], r["layer"], r["score"], r["augment"]) == (dataset, layer, score, augment)
            ]
            values = [float(r["value"]) for r in picked]
            errors = [float(r["se"]) for r in picked]
            sd = statistics.stdev(values) if len(values) > 1 else math.nan
            sides[augment] = (values, statistics.fmean(values) if values else math.nan, sd, _mean(errors))
        (plain, plain_mean, plain_sd, plain_se), (aug, aug_mean, aug_sd, aug_se) = sides["0"], sides["1"]
        delta = aug_mean - plain_mean
        seed_se = math.sqrt(plain_sd**2 / max(len(plain), 1) + aug_sd**2 / max(len(aug), 1))
        jackknife_se = math.sqrt(plain_se**2 + aug_se**2)
        noise = 2 * math.hypot(seed_se, jackknife_se)
        verdict = "raised" if delta > noise else "lowered" if delta < -noise else "within noise"
        if math.isnan(noise):
            verdict = "too few seeds"
        rows.append(
            dict(
                zip(
                    TABLE_COLUMNS,
                    (
                        dataset,
                        layer,
                        score,
                        f"{len(plain)}+{len(aug)}",
                        plain_mean,
                        plain_sd,
                        plain_se,
                        aug_mean,
                        aug_sd,
                        aug_se,
                        delta,
                        seed_se,
                        jackknife_se,
                        verdict,
                    ),
                )
            )
        )
    return rows


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def markdown(rows: list[dict], score: str = "invariance") -> str:
    lines = [
        "| data | layer | plain: mean ± sd (SE) | augmented: mean ± sd (SE) | delta | seed SE | jackknife SE"
        " | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["score"] != score:
            continue
        lines.append(
            f"| {r['dataset']} | {r['layer']} | {r['plain_mean']:.3f} ± {r['plain_sd']:.3f} ({r['plain_se']:.3f})"
            f" | {r['augment_mean']:.3f} ± {r['augment_sd']:.3f} ({r['augment_se']:.3f}) | {r['delta']:+.3f}"
            f" | {r['seed_se']:.3f} | {r['jackknife_se']:.3f} | {r['verdict']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "logs" / "figure3_seeds")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument("--table-only", action="store_true", help="no training: the table from the runs CSV")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs_path = args.out / "fig3_seeds_runs.csv"
    runs = read_runs(runs_path)
    for dataset in args.datasets if not args.table_only else ():
        for seed in args.seeds:
            for augment in (False, True):
                done = {(r["dataset"], r["augment"], r["seed"]) for r in runs}
                if (dataset, str(int(augment)), str(seed)) in done:
                    continue
                new = train(dataset, augment, seed, args.log_dir)
                with runs_path.open("a", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=RUN_COLUMNS)
                    if not runs:
                        writer.writeheader()
                    writer.writerows(new)
                runs = read_runs(runs_path)
    rows = table(runs)
    with (args.out / "fig3_seeds.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows([{k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
    for score in SCORES:
        print(f"\n{score}\n{markdown(rows, score)}")


if __name__ == "__main__":
    main()
