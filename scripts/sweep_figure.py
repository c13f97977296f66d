"""The magnitude-sweep figure of the digits recipe: each score against the rotation angle, one line per layer.

    python -m scripts.sweep_figure                           # digits_cnn, rotate:0:90:15
    python -m scripts.sweep_figure --trainer.max_epochs=4    # recipe overrides pass through

Trains ``digits_cnn`` as ``seis-lightning fit --config digits_cnn --seis.transforms='[rotate:0:90:15]'
--seis.score_before_training=false`` does (the callback draws the same figures into TensorBoard, under
``seis/sweep_rotate/<score>``), and writes the final scoring's figures as
``docs/figures/sweep_digits_rotate_<score>.png`` with the numbers (and each layer's half-way angle, see
:mod:`seis_lightning.sweeps`) in ``docs/figures/sweep_digits_rotate.csv``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from scripts._manifest import Build
from scripts.reproduce_figures import ROOT, run_recipe
from seis_lightning.functional import SCORES
from seis_lightning.plotting import sweep_figures
from seis_lightning.sweeps import sweep_summaries
from seis_lightning.transforms import parse_transforms

SWEEP = "rotate:0:90:15"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--threads", type=int, default=2)
    args, overrides = parser.parse_known_args(argv)  # the rest: recipe overrides, e.g. --trainer.max_epochs=4
    torch.set_num_threads(args.threads)
    build = Build(seeds={"seed_everything": 0})  # the recipe's
    options = [f"--seis.transforms=[{SWEEP}]", "--seis.score_before_training=false", "--seis.every_n_epochs=1000"]
    metrics: dict = {}
    history = run_recipe("digits_cnn", *options, *overrides, log_dir=ROOT / "logs" / "sweep", metrics=metrics)
    scores, transforms = history[-1]["scores"], parse_transforms(SWEEP)
    args.out.mkdir(parents=True, exist_ok=True)
    when = f"digits_cnn after {history[-1]['epoch']:g} epochs"
    written = []
    for tag, figure in sweep_figures("seis", scores, transforms, when).items():
        written.append(args.out / f"sweep_digits_rotate_{tag.rsplit('/', 1)[1]}.png")
        figure.savefig(written[-1], dpi=100)
    halfway = sweep_summaries("seis", scores, transforms)
    with (args.out / "sweep_digits_rotate.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["angle", "layer", "score", "value", "null", "equivariance_halfway"])
        for transform in transforms:
            for layer, values in scores[transform.name].items():
                half = halfway[f"seis/sweep_rotate/equivariance_halfway/{layer}"]
                for score in SCORES:
                    numbers = (values[score], values[f"{score}_null"], half)
                    writer.writerow([f"{transform.magnitude:g}", layer, score, *(f"{v:.6f}" for v in numbers)])
    build.record(args.out, [*written, "sweep_digits_rotate.csv"], measured=metrics)
    for layer in scores[transforms[0].name]:
        curve = " ".join(f"{scores[t.name][layer]['invariance']:.2f}" for t in transforms)
        half = halfway[f"seis/sweep_rotate/equivariance_halfway/{layer}"]
        print(f"{layer:<6} invariance over {SWEEP}: {curve}   equivariance half-way angle: {half:.1f}")


if __name__ == "__main__":
    main()
