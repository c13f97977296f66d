"""The worked example of the README's "Is a difference real?": the digits recipe with the jackknife on.

    python -m scripts.difference_example            # as `seis-lightning fit --config recipes/digits_cnn.yaml
                                                    #   --seis.jackknife_groups=8`, into docs/figures/

Trains ``digits_cnn`` (12 epochs, seed 0) scoring every epoch with 8 jackknife groups and writes, per scoring
(epochs trained, global step), layer and score, the value, its delete-half jackknife SE and its null under the
random affine to ``docs/figures/difference_example.csv`` (the rows of the run's ``seis_scores.csv`` that the README
quotes), recorded in ``docs/figures/MANIFEST.json``. TensorBoard logs go to ``logs/difference_example/``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from scripts._manifest import Build
from scripts.reproduce_figures import ROOT, run_recipe
from seis_lightning.functional import SCORES

COLUMNS = ("epochs_trained", "global_step", "layer", "score", "value", "se", "null")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--threads", type=int, default=2)
    args, overrides = parser.parse_known_args(argv)  # the rest: recipe overrides, e.g. --trainer.max_epochs=2
    torch.set_num_threads(args.threads)
    build = Build(seeds={"seed_everything": 0})  # the recipe's
    metrics: dict = {}
    log_dir = ROOT / "logs" / "difference_example"
    history = run_recipe("digits_cnn", "--seis.jackknife_groups=8", *overrides, log_dir=log_dir, metrics=metrics)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "difference_example.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for entry in history:
            for layer, values in entry["scores"]["random_affine"].items():
                for score in SCORES:
                    numbers = (values[score], values[f"{score}_se"], values[f"{score}_null"])
                    writer.writerow(
                        [f"{entry['epoch']:g}", entry["global_step"], layer, score, *(f"{v:.6f}" for v in numbers)]
                    )
    build.record(args.out, [path], measured=metrics)
    print(f"{path}: {len(history)} scorings")


if __name__ == "__main__":
    main()
