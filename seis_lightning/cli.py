"""``seis-lightning``: LightningCLI with a ``seis:`` section for the SEIS callback.

Subcommands (:data:`SUBCOMMANDS`): ``fit``, ``validate``, ``test``, ``predict`` (LightningCLI's, with
``--config``, ``--print_config`` and overrides such as ``--trainer.max_epochs=3``), ``recipes`` (the
shipped recipes), ``synthetic`` (the paper's synthetic validation), ``analyze`` (score a trained
checkpoint without training) and ``compare`` (two groups of runs, per layer).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from seis_lightning.callback import SEISCallback
from seis_lightning.plotting import depth_figure, format_score_table
from seis_lightning.recipes import format_recipe_table, list_recipes, resolve_config

SUBCOMMANDS = {
    "fit": "train a model with the SEIS callback, e.g. `--config digits_cnn` (a recipe name or a YAML path)",
    "validate": "score a model on the validation data; with --ckpt_path a checkpoint, labelled with its epoch and step",
    "test": "the same on the test data",
    "predict": "LightningCLI's predict (SEIS does not score predictions)",
    "recipes": "list the shipped recipes: what each is for, the paper's result, what our runs found",
    "synthetic": "the paper's synthetic validation (Figure 1): known moves of random CNN maps, scored",
    "analyze": "score a trained checkpoint on a recipe's data and write its depth-wise curves as PNG files",
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


class SEISTrainer(Trainer):
    """Lightning's ``Trainer``, with ``limit_*_batches`` typed integer first for the command line.

    Lightning types them ``float | int | None``, and jsonargparse takes the first type that fits, so
    ``--trainer.limit_val_batches=1`` became 1.0, 100 % of the batches instead of one, and a saved
    ``config.yaml`` wrote ``1.0``. Typed ``int | float`` (LightningCLI reads the types of
    ``trainer_class``), an integer stays an integer; the default 1.0, all the batches, is passed on
    as Lightning's ``None``, which means the same.
    """

    def __init__(
        self,
        *,
        limit_train_batches: int | float = 1.0,
        limit_val_batches: int | float = 1.0,
        limit_test_batches: int | float = 1.0,
        limit_predict_batches: int | float = 1.0,
        **kwargs,
    ) -> None:
        limits = {
            "limit_train_batches": limit_train_batches,
            "limit_val_batches": limit_val_batches,
            "limit_test_batches": limit_test_batches,
            "limit_predict_batches": limit_predict_batches,
        }
        limits = {name: None if isinstance(value, float) and value == 1.0 else value for name, value in limits.items()}
        super().__init__(**limits, **kwargs)


class SEISLightningCLI(LightningCLI):
    """LightningCLI whose every run carries a :class:`SEISCallback`, configured under ``seis:``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("trainer_class", SEISTrainer)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"description": DESCRIPTION})
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(SEISCallback, "seis")

    def after_fit(self) -> None:
        self.report()

    def after_validate(self) -> None:
        self.report(self._checkpoint_label())

    def after_test(self) -> None:
        self.report(self._checkpoint_label())

    def _checkpoint_label(self) -> str | None:
        """``of NAME (epoch E, step S)`` for a run of ``--ckpt_path`` (whose progress the callback took)."""
        if not self.trainer.ckpt_path or not self.seis.evaluations:
            return None
        latest = self.seis.evaluations[-1]
        return f"of {Path(self.trainer.ckpt_path).name} (epoch {latest['epoch']:g}, step {latest['global_step']})"

    @property
    def seis(self) -> SEISCallback:
        return next(c for c in self.trainer.callbacks if isinstance(c, SEISCallback))

    def report(self, when: str | None = None) -> None:
        """Print the latest scores per layer and how to watch them in TensorBoard (rank zero only).

        ``when``: what the scores are of (default: the epochs and step the Trainer has run).
        """
        if not self.trainer.is_global_zero or not self.seis.scores:
            return
        if when is None:
            latest = max(self.seis.history + self.seis.evaluations, key=lambda entry: entry["order"])
            when = f"after {latest['epoch']:g} epoch(s), step {latest['global_step']}"
        print(f"\nSEIS scores {when} (nulls in brackets):")
        print(format_score_table(self.seis.scores))
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                command = f"{tensorboard()} --logdir {logger.save_dir}"
                print(f"\nWatch the curves with:\n  {command}\n(run: {logger.log_dir})")


def tensorboard() -> str:
    """How to start TensorBoard from this shell: ``tensorboard`` when it is this environment's on the PATH,
    else its path in this environment (``.venv/bin/tensorboard`` after ``make demo``, without activating)."""
    own = Path(sys.prefix) / "bin" / "tensorboard"
    found = shutil.which("tensorboard")
    if not own.exists() or (found is not None and Path(found).resolve() == own.resolve()):
        return "tensorboard"
    return str(own.relative_to(Path.cwd()) if own.is_relative_to(Path.cwd()) else own)


def analyze(argv: list[str]) -> dict:
    """``seis-lightning analyze --checkpoint PATH --config RECIPE``: score a checkpoint without training."""
    parser = argparse.ArgumentParser(
        prog="seis-lightning analyze",
        description="Score a trained checkpoint on a recipe's validation data; writes the depth-wise curves as"
        " PNG files and to TensorBoard. Other options (--config, --seis.*, --data.*) are the recipe's.",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a Lightning .ckpt of the recipe's model")
    parser.add_argument("--output", type=Path, default=None, help="folder for the PNGs (default: the run's folder)")
    args, rest = parser.parse_known_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint} is not a file")
    cli = SEISLightningCLI(args=rest, run=False)
    checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    cli.model.load_state_dict(checkpoint["state_dict"])
    cli.seis.score_before_training = False
    cli.trainer.validate(cli.model, datamodule=cli.datamodule)
    # The Trainer has not trained: the checkpoint says how far its model was trained.
    trained = f"epoch {checkpoint.get('epoch', '?')}, step {checkpoint.get('global_step', '?')}"
    cli.report(when=f"of {args.checkpoint.name} ({trained})")
    output = args.output or Path(cli.trainer.log_dir or ".")
    output.mkdir(parents=True, exist_ok=True)
    for transform, by_layer in cli.seis.scores.items():
        title = f"{transform}: {args.checkpoint.name} (epoch {checkpoint.get('epoch', '?')})"
        path = output / f"seis_{transform}_depth.png"
        depth_figure(by_layer, title).savefig(path, dpi=120)
        print(f"depth-wise curves: {path}")
    return cli.seis.scores


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
    if args[:1] == ["analyze"]:
        analyze(resolved[1:])
        return
    if argv is None:
        sys.argv[1:] = resolved  # LightningCLI reads sys.argv itself, and warns when given args besides
    SEISLightningCLI(args=None if argv is None else resolved)


if __name__ == "__main__":
    main()
