"""The Lightning side of ``seis-lightning``: the Trainer and LightningCLI with a ``seis:`` section, and
``analyze``. :mod:`seis_lightning.cli` loads this module only for a subcommand that needs it, so that
``--help`` and ``recipes`` answer without importing torch and Lightning."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from seis_lightning.callback import SEISCallback
from seis_lightning.plotting import depth_figure, format_score_table, progress_label


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
        super().__init__(LightningModule, LightningDataModule, *args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(SEISCallback, "seis")

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """The Trainer with one :class:`SEISCallback`: the ``seis:`` section's, or one given in
        ``trainer.callbacks`` when ``seis:`` is left at its defaults (two would probe the same model and
        log the same tags).

        Raises:
            MisconfigurationException: ``trainer.callbacks`` holds a SEISCallback and ``seis:`` is set too.
        """
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        given = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        if any(isinstance(callback, SEISCallback) for callback in (given if isinstance(given, list) else [given])):
            defaults = self._parser(self.subcommand).get_defaults().get("seis")
            if self._get(self.config, "seis") != defaults:
                raise MisconfigurationException(
                    "seis-lightning: the config has a SEISCallback in `trainer.callbacks` and a `seis:` section"
                    " (the CLI's own callback): two probes would score the same model, log the same tags and"
                    " write conflicting rows to seis_scores.csv. Keep one: move the callback's arguments under"
                    " `seis:` and remove it from `trainer.callbacks`, or remove the `seis:` section."
                )
            rank_zero_warn(
                "seis-lightning: using the SEISCallback in `trainer.callbacks`; the CLI's own (`seis:`, left at"
                " its defaults) is not added."
            )
            extra = [callback for callback in extra if not isinstance(callback, SEISCallback)]
        return self._instantiate_trainer({**self._get(self.config_init, "trainer", default={}), **kwargs}, extra)

    def after_fit(self) -> None:
        self.report()

    def after_validate(self) -> None:
        self.report()

    def after_test(self) -> None:
        self.report()

    @property
    def seis(self) -> SEISCallback:
        return next(c for c in self.trainer.callbacks if isinstance(c, SEISCallback))

    def report(self) -> None:
        """Print the latest scores per layer, what model they are of, and how to watch them in TensorBoard
        (rank zero only). The model is named as everywhere else (:func:`progress_label`): epochs trained
        and the step of its TensorBoard and CSV rows; a ``--ckpt_path`` run's scores take the checkpoint's."""
        if not self.trainer.is_global_zero or not self.seis.scores:
            return
        latest = max(self.seis.history + self.seis.evaluations, key=lambda entry: entry["order"])
        of = f" of {Path(self.trainer.ckpt_path).name}" if latest["stage"] != "fit" and self.trainer.ckpt_path else ""
        print(
            f"\nSEIS scores{of} after {latest['epoch']:g} epoch(s), step {latest['step']}"
            f" (global_step {latest['global_step']}; nulls in brackets):"
        )
        print(format_score_table(self.seis.scores))
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # TensorBoard keeps 10 images a tag unless told: every scoring's figure, up to 100
                command = f"{tensorboard()} --logdir {logger.save_dir} --samples_per_plugin images=100"
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
    """``seis-lightning analyze RUN_DIR`` (or ``--checkpoint PATH --config RECIPE``): score a checkpoint
    without training."""
    parser = argparse.ArgumentParser(
        prog="seis-lightning analyze",
        usage="seis-lightning analyze [RUN_DIR] [--checkpoint CHECKPOINT] [--output OUTPUT] [--config ...]",
        description="Score a trained checkpoint on a recipe's validation data; writes the depth-wise curves as"
        " PNG files and to TensorBoard. RUN_DIR, a fit's run folder, gives its config.yaml and its last"
        " checkpoint. Other options (--config, --seis.*, --data.*) are the recipe's.",
    )
    parser.add_argument("--checkpoint", type=Path, help="a Lightning .ckpt of the recipe's model")
    parser.add_argument("--output", type=Path, default=None, help="folder for the PNGs (default: the run's folder)")
    # RUN_DIR only first: an option's value (`--config PATH`) is not a run folder
    run_dir = Path(argv[0]) if argv and not argv[0].startswith("-") else None
    args, rest = parser.parse_known_args(argv[1:] if run_dir else argv)
    args.run_dir = run_dir
    if args.run_dir is not None:
        if not (args.run_dir / "config.yaml").is_file():
            parser.error(f"{args.run_dir} is not a run folder of `seis-lightning fit`: it has no config.yaml")
        if not any(arg == "--config" or arg.startswith("--config=") or arg == "-c" for arg in rest):
            config = yaml.safe_load((args.run_dir / "config.yaml").read_text())
            # the sections, without the fit subcommand's own options (ckpt_path, weights_only)
            kept = {key: value for key, value in config.items() if isinstance(value, dict) or key.startswith("seed")}
            rest = ["--config", yaml.safe_dump(kept), *rest]
        args.checkpoint = args.checkpoint or last_checkpoint(args.run_dir)
        if args.checkpoint is None:
            parser.error(f"{args.run_dir} holds no checkpoint (*.ckpt); give one with --checkpoint")
    if args.checkpoint is None:
        parser.error("give a run folder (RUN_DIR) or --checkpoint")
    if not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint} is not a file")
    cli = SEISLightningCLI(args=rest, run=False)
    cli.seis.score_before_training = False
    # Through ckpt_path: the scores are labelled with the checkpoint's progress, as its fit labelled them.
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=args.checkpoint, verbose=False)
    cli.report()
    latest = cli.seis.evaluations[-1]
    output = args.output or Path(cli.trainer.log_dir or ".")
    output.mkdir(parents=True, exist_ok=True)
    for transform, by_layer in cli.seis.scores.items():
        path = output / f"seis_{transform}_depth.png"
        depth_figure(by_layer, f"{transform}: {args.checkpoint.name}, {progress_label(latest)}").savefig(path, dpi=120)
        print(f"depth-wise curves: {path}")
    return cli.seis.scores


def last_checkpoint(run_dir: Path) -> Path | None:
    """A run folder's last checkpoint: ``last.ckpt`` if saved, else the one written last."""
    found = sorted(run_dir.rglob("*.ckpt"), key=lambda path: (path.name == "last.ckpt", path.stat().st_mtime))
    return found[-1] if found else None
