"""Figure 3 with its uncertainty: does random-affine augmentation raise invariance beyond the noise?

    python -m scripts.figure3_seeds                       # MNIST and digits, seeds 0 1 2 (about 30 min on 2 CPU cores)
    python -m scripts.figure3_seeds --datasets digits     # one pair of recipes
    python -m scripts.figure3_seeds --table-only          # the table again from the runs already in the CSV
    python -m scripts.figure3_seeds --fresh               # every run again (what `make figures-full` does)

Each pair of recipes (``mnist_cnn`` / ``mnist_cnn_augment``, ``digits_cnn`` / ``digits_cnn_augment``) is
trained once per training seed (``seed_everything``: weights, batch order, augmentation draws; the data
split and the probe images stay fixed) and scored once at the end, with the paper's random affine and
the delete-a-group jackknife (``jackknife_groups=10``). Runs are CPU-sized: MNIST on 10 000 training images
for 2 epochs, 2 000 validation images (the probe images are 512 of them); digits for 6 epochs at width 16.

The table is :func:`seis_lightning.compare_runs` (the function behind ``seis-lightning compare``) of the plain runs
against the augmented ones, per dataset, seeds pooled: per layer and score, without and with augmentation,
the mean over seeds, the spread between seeds (sample standard deviation) and the jackknife SE (mean over
seeds), then the difference of the means ``delta`` and its two standard errors: between seeds
``sqrt(sd_plain^2/n + sd_aug^2/n)`` and from the probe images ``sqrt(se_plain^2 + se_aug^2)`` (the probe
set is the same in every run, so its noise does not average out over seeds), combined as
``se = sqrt(seed_se^2 + jackknife_se^2)`` with Welch-Satterthwaite degrees of freedom ``df`` (seed terms
``n - 1``, jackknife terms ``G - 1 = 9``). The verdict is "raised" when ``delta`` exceeds
``t_{0.975, df} * se`` (``bar``), "lowered" below minus that, else "within noise" (see
:mod:`seis_lightning.compare`). Until the compare module, the bar was a fixed ``2 * se``.

Runs go to ``docs/figures/fig3_seeds_runs.csv`` (one row per run, layer and score; a run already there
is not repeated, unless ``--fresh``), the table to ``docs/figures/fig3_seeds.csv`` and, as Markdown, to standard
output; each file's build is recorded in ``docs/figures/MANIFEST.json`` (runs kept from an earlier build keep its
commit there). The MNIST runs need ``data/MNIST/raw/`` (``make real-data``).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from scripts._manifest import Build
from scripts.reproduce_figures import MNIST_MISSING, ROOT, run_recipe
from seis_lightning.compare import columns, compare_runs, comparison_figure, write_comparison_csv
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
JACKKNIFE_GROUPS = 10
COMMON = (
    "--seis.score_before_training=false",
    "--seis.every_n_epochs=1000",  # scored once, as training ends
    f"--seis.jackknife_groups={JACKKNIFE_GROUPS}",
)
RUN_COLUMNS = ("dataset", "augment", "seed", "layer", "score", "value", "null", "se")
NAMES = ("plain", "augment")
TABLE_COLUMNS = ("dataset", *columns(NAMES))


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
    """Per dataset, :func:`~seis_lightning.compare.compare_runs` of the plain runs (``plain``) against the
    augmented ones (``augment``), seeds pooled, with the runs' 10 jackknife groups; rows of :data:`TABLE_COLUMNS`."""
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        groups = [_scores([r for r in runs if (r["dataset"], r["augment"]) == (dataset, augment)]) for augment in "01"]
        compared = compare_runs(*groups, names=NAMES, jackknife_groups=JACKKNIFE_GROUPS)
        rows += [{"dataset": dataset, **row} for row in compared]
    return rows


def _scores(runs: list[dict]) -> list[dict]:
    """Rows of :data:`RUN_COLUMNS` as one ``score_model``-like result per seed."""
    by_seed: dict[str, dict] = {}
    for r in runs:
        values = by_seed.setdefault(r["seed"], {"random_affine": {}})["random_affine"].setdefault(r["layer"], {})
        values.update({r["score"]: float(r["value"]), f"{r['score']}_null": float(r["null"])})
        values[f"{r['score']}_se"] = float(r["se"])
    return list(by_seed.values())


def markdown(rows: list[dict], score: str = "invariance") -> str:
    lines = [
        "| data | layer | plain: mean ± sd (SE) | augmented: mean ± sd (SE) | delta | seed SE | jackknife SE"
        " | df | bar (t·SE) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["score"] != score:
            continue
        lines.append(
            f"| {r['dataset']} | {r['layer']} | {r['plain_mean']:.3f} ± {r['plain_sd']:.3f} ({r['plain_se']:.3f})"
            f" | {r['augment_mean']:.3f} ± {r['augment_sd']:.3f} ({r['augment_se']:.3f}) | {r['delta']:+.4f}"
            f" | {r['seed_se']:.4f} | {r['jackknife_se']:.4f} | {r['df']:.1f} | {r['bar']:.4f} | {r['verdict']} |"
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
    parser.add_argument("--fresh", action="store_true", help="forget the runs in the runs CSV: train every run")
    args = parser.parse_args(argv)
    if args.fresh and args.table_only:
        parser.error("--fresh trains every run again; --table-only trains none: give one of them")
    if "mnist" in args.datasets and not args.table_only and not (ROOT / "data" / "MNIST" / "raw").is_dir():
        raise SystemExit(f"figure3_seeds: {MNIST_MISSING}\n(or leave MNIST out: --datasets digits)")
    torch.set_num_threads(args.threads)
    build = Build(seeds=args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    runs_path = args.out / "fig3_seeds_runs.csv"
    if args.fresh:
        runs_path.unlink(missing_ok=True)
    runs = read_runs(runs_path)
    kept = bool(runs)
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
    if not args.table_only:  # --table-only leaves the runs CSV and its entry as they were
        build.record(args.out, [runs_path], seeds=sorted({int(r["seed"]) for r in runs}), reused=[runs_path] * kept)
    rows = table(runs)
    write_comparison_csv(rows, args.out / "fig3_seeds.csv", NAMES)
    figure = comparison_figure([{**r, "transform": r["dataset"]} for r in rows], NAMES)
    figure.savefig(args.out / "fig3_seeds.png", dpi=120)
    build.record(args.out, ["fig3_seeds.csv", "fig3_seeds.png"], seeds=sorted({int(r["seed"]) for r in runs}))
    for score in SCORES:
        print(f"\n{score}\n{markdown(rows, score)}")


if __name__ == "__main__":
    main()
