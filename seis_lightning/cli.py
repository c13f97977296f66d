"""``seis-lightning``: LightningCLI with a ``seis:`` section for the SEIS callback.

Subcommands (:data:`SUBCOMMANDS`): ``fit``, ``validate``, ``test``, ``predict`` (LightningCLI's, with
``--config``, ``--print_config`` and overrides such as ``--trainer.max_epochs=3``), ``recipes`` (the
shipped recipes), ``synthetic`` (the paper's synthetic validation), ``analyze`` (score a trained
checkpoint without training) and ``compare`` (two groups of runs, per layer). Torch and Lightning load
only for the subcommands that use them (:mod:`seis_lightning._lightning_cli`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from seis_lightning.recipes import format_recipe_table, list_recipes, resolve_config

# Loaded on first use (PEP 562), with torch and Lightning: `--help` and `recipes` answer without them.
_LIGHTNING = ("SEISTrainer", "SEISLightningCLI", "analyze", "last_checkpoint", "tensorboard")

SUBCOMMANDS = {
    "fit": "train a model with the SEIS callback, e.g. `--config digits_cnn` (a recipe name or a YAML path)",
    "validate": "score a model on the validation data; with --ckpt_path a checkpoint, labelled with its epoch and step",
    "test": "the same on the test data",
    "predict": "LightningCLI's predict (SEIS does not score predictions)",
    "recipes": "list the shipped recipes: what each is for, the paper's result, what our runs found",
    "synthetic": "the paper's synthetic validation (Figure 1): known moves of random CNN maps, scored",
    "analyze": "score a trained checkpoint (RUN_DIR: a fit's folder) and write its depth-wise curves as PNG files",
    "compare": "compare two groups of runs (seeds pooled) per layer: delta, its SE, and a verdict by Welch's t",
}
DESCRIPTION = "SEIS equivariance and invariance scores of a model's layers, while it trains or after."


def usage() -> str:
    """The top-level help: every subcommand with its one-line purpose."""
    column = max(map(len, SUBCOMMANDS)) + 4
    rows = [f"  {name:<{column}}{purpose}" for name, purpose in SUBCOMMANDS.items()]
    return "\n".join(
        [
            f"usage: seis-lightning {{{','.join(SUBCOMMANDS)}}} ...",
            "",
            DESCRIPTION,
            "",
            "subcommands:",
            *rows,
            "",
            "`seis-lightning SUBCOMMAND --help` gives a subcommand's options (fit, validate, test and predict take",
            "--config, --print_config, --trainer.*, --model.*, --data.* and the callback's --seis.*).",
        ]
    )


def compare(argv: list[str]) -> list[dict]:
    """``seis-lightning compare RUN... --vs RUN...``: :func:`~seis_lightning.compare.compare_runs` on the terminal,
    with ``--out`` a CSV and a figure."""
    from seis_lightning.compare import (
        compare_runs,
        comparison_figure,
        format_comparison,
        load_runs,
        write_comparison_csv,
    )

    parser = argparse.ArgumentParser(
        prog="seis-lightning compare",
        description="Compare two groups of runs per transformation, layer and score, seeds pooled: each side's"
        " mean, delta = B - A, its SE from the seeds (Welch) and the jackknife (<score>_se, where logged), and"
        " a verdict: raised / lowered when |delta| > t_{(1+level)/2, df} * SE (Welch-Satterthwaite df), else"
        " within noise. A run is a log folder with seis_scores.csv, a folder above such folders, or the file.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_A", help="the baseline runs (group A)")
    parser.add_argument("--vs", nargs="+", type=Path, required=True, metavar="RUN_B", help="the runs compared (B)")
    parser.add_argument("--names", nargs=2, default=("a", "b"), metavar=("A", "B"), help="the groups' names")
    parser.add_argument("--stage", default=None, help="read only this stage's scorings (fit, validate, test)")
    parser.add_argument("--epoch", type=float, default=None, help="the scoring at this epoch (default: the last)")
    parser.add_argument("--step", type=int, default=None, help="the scoring at this global step (default: the last)")
    parser.add_argument("--level", type=float, default=0.95, help="two-sided confidence level (default 0.95)")
    parser.add_argument(
        "--jackknife-groups",
        type=int,
        default=None,
        metavar="G",
        help="the runs' --seis.jackknife_groups: their SEs get G-1 degrees of freedom, and a side with one seed"
        " falls back to them (default: SEs taken as exact, one seed is not enough)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for compare.csv and compare.png")
    args = parser.parse_args(argv)
    names = tuple(args.names)
    options = {"stage": args.stage, "epoch": args.epoch, "step": args.step}
    try:
        groups = [load_runs(group, **options) for group in (args.runs, args.vs)]
        for name, runs in zip(names, groups):
            print(f"{name}:", *(f"  {label}" for label, _ in runs), sep="\n")
        scores = [[run for _, run in runs] for runs in groups]
        rows = compare_runs(*scores, names=names, level=args.level, jackknife_groups=args.jackknife_groups)
    except ValueError as error:
        parser.error(str(error))
    print(format_comparison(rows, names))
    if args.out is not None:
        write_comparison_csv(rows, args.out / "compare.csv", names)
        comparison_figure(rows, names, args.level).savefig(args.out / "compare.png", dpi=120)
        print(f"\ntable: {args.out / 'compare.csv'}\nfigure: {args.out / 'compare.png'}")
    return rows


def _resolve_recipe_names(args: list[str]) -> list[str]:
    """``--config NAME`` (``-c NAME``, ``--config=NAME``) of a shipped recipe as its path; other values unchanged."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        if arg in ("--config", "-c") and i + 1 < len(resolved):
            resolved[i + 1] = resolve_config(resolved[i + 1])
        elif arg.startswith("--config="):
            resolved[i] = "--config=" + resolve_config(arg.removeprefix("--config="))
    return resolved


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``seis-lightning`` console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args in ([], ["-h"], ["--help"]):
        print(usage())
        return
    if args[:1] == ["synthetic"]:
        from seis_lightning.synthetic import main as synthetic

        synthetic(args[1:])
        return
    if args[:1] == ["recipes"]:
        if {"-h", "--help"} & set(args):
            print(f"usage: seis-lightning recipes\n\n{SUBCOMMANDS['recipes'].capitalize()}.")
            return
        print(format_recipe_table(list_recipes()))
        return
    if args[:1] == ["compare"]:
        compare(args[1:])
        return
    try:
        resolved = _resolve_recipe_names(args)
    except ValueError as error:
        sys.exit(f"seis-lightning: error: {error}")
    from seis_lightning._lightning_cli import SEISLightningCLI, analyze

    if args[:1] == ["analyze"]:
        analyze(resolved[1:])
        return
    if argv is None:
        sys.argv[1:] = resolved  # LightningCLI reads sys.argv itself, and warns when given args besides
    SEISLightningCLI(args=None if argv is None else resolved, parser_kwargs={"description": DESCRIPTION})


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING:
        return getattr(importlib.import_module("seis_lightning._lightning_cli"), name)
    raise AttributeError(f"module 'seis_lightning.cli' has no attribute {name!r}")


if __name__ == "__main__":
    main()
