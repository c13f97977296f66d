"""The ``seis-lightning`` command as a new user meets it: the help lists every subcommand, a checkpoint's
scores are labelled with its epoch and step, and a saved config (``--seis.input_getter`` included) re-runs."""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seis_lightning.cli import SUBCOMMANDS, SEISLightningCLI, main, tensorboard
from seis_lightning.recipes import resolve_recipe

ALL = ["fit", "validate", "test", "predict", "recipes", "synthetic", "analyze", "compare"]


def tiny(tmp_path: Path) -> list[str]:
    """The digits recipe, cut to a few batches and 16 probe images, logging under ``tmp_path``."""
    return [
        "--config",
        str(resolve_recipe("digits_cnn")),
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.accelerator=cpu",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--model.width=4",
        "--data.batch_size=16",
        "--seis.num_samples=16",
        "--seis.batch_size=8",
        "--seis.log_figures=false",
    ]


@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_help_lists_every_subcommand_with_its_purpose(argv, capsys):
    main(argv)
    out = capsys.readouterr().out
    assert (
        out.splitlines()[0] == "usage: seis-lightning {fit,validate,test,predict,recipes,synthetic,analyze,compare} ..."
    )
    assert list(SUBCOMMANDS) == ALL
    for name in ALL:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert len(line.split()) >= 4, line  # a one-line purpose follows the name
    assert "validate     score a model on the validation data; with --ckpt_path a checkpoint" in out


@pytest.mark.parametrize("name", ALL)
def test_every_subcommand_has_its_own_help(name, capsys):
    with pytest.raises(SystemExit) if name not in ("recipes",) else warnings.catch_warnings():
        main([name, "--help"])
    out = capsys.readouterr().out
    assert out.startswith(
        f"usage: seis-lightning {name}" if name in ("recipes", "synthetic", "analyze", "compare") else "usage:"
    )
    if name in ("fit", "validate", "test"):
        assert "--seis.input_getter" in out and "--ckpt_path" in out


@pytest.mark.parametrize("value", [0, "image"])
def test_input_getter_is_written_to_the_config_and_read_back(value, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", "digits_cnn", f"--seis.input_getter={value}", "--print_config"])
    saved = capsys.readouterr().out
    assert "Unable to serialize" not in saved
    assert yaml.safe_load(saved)["seis"]["input_getter"] == value
    path = tmp_path / "saved.yaml"
    path.write_text(saved)
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path), "--print_config"])
    read_back = yaml.safe_load(capsys.readouterr().out)["seis"]["input_getter"]
    assert read_back == value and type(read_back) is type(value)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A two-epoch tiny fit with ``--seis.input_getter=0``: its folder, checkpoint and saved config."""
    root = tmp_path_factory.mktemp("runs")
    args = ["fit", *tiny(root), "--trainer.max_epochs=2", "--trainer.logger.init_args.version=fit"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = SEISLightningCLI(args=[*args, "--seis.input_getter=0"])
    assert cli.seis.disabled is None and [entry["global_step"] for entry in cli.seis.history] == [0, 3, 6]
    run = Path(cli.trainer.log_dir)
    return root, next((run / "checkpoints").glob("*.ckpt")), run / "config.yaml"


@pytest.mark.parametrize("command", ["validate", "test"])
def test_a_checkpoints_scores_are_labelled_with_its_epoch_and_step(command, trained, capsys):
    root, checkpoint, config = trained
    assert checkpoint.name == "epoch=1-step=6.ckpt"
    assert yaml.safe_load(config.read_text())["seis"]["input_getter"] == 0
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the fit's saved config.yaml re-runs as it is (r07: its input_getter is the index 0, not a message)
        main(
            [
                command,
                "--config",
                str(config),
                f"--trainer.logger.init_args.version={command}",
                f"--ckpt_path={checkpoint}",
            ]
        )
    out = capsys.readouterr().out
    assert "SEIS scores of epoch=1-step=6.ckpt (epoch 1, step 6) (nulls in brackets):" in out
    assert "after 0 epoch(s)" not in out, out
    assert re.search(r"^random_affine +conv1 +0\.\d{3} \(0\.\d{3}\)", out, re.MULTILINE)
    events = EventAccumulator(str(root / "digits_cnn" / command))
    events.Reload()
    for score in ("equivariance", "invariance", "channel_invariance"):
        scalars = events.Scalars(f"seis_{command}/random_affine/{score}/conv1")
        assert [event.step for event in scalars] == [6] and 0 < scalars[0].value <= 1


def test_the_printed_tensorboard_command_runs_without_activating_the_venv(monkeypatch, tmp_path):
    own = Path(sys.prefix) / "bin" / "tensorboard"
    monkeypatch.setenv("PATH", str(tmp_path))  # a plain shell: the venv's bin is not on the PATH
    monkeypatch.chdir(Path(sys.prefix).parent)
    assert tensorboard() == f"{Path(sys.prefix).name}/bin/tensorboard"  # e.g. .venv/bin/tensorboard
    monkeypatch.chdir(tmp_path)
    assert tensorboard() == str(own) and os.access(own, os.X_OK)
    monkeypatch.setenv("PATH", str(own.parent))  # an activated venv
    assert tensorboard() == "tensorboard"


@pytest.mark.parametrize(("given", "expected"), [("1", 1), ("4", 4), ("0.25", 0.25), ("1.0", 1.0), (None, 1.0)])
def test_limit_batches_integers_stay_batch_counts(given, expected):
    """``--trainer.limit_val_batches=1`` is one batch, not 100 % (Lightning types it ``float | int``,
    which jsonargparse read as 1.0); the default, 1.0, is all of them."""
    args = ["--config", str(resolve_recipe("digits_cnn"))] + (
        [] if given is None else [f"--trainer.limit_val_batches={given}"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = SEISLightningCLI(args=args, run=False)
    value = cli.trainer.limit_val_batches
    assert value == expected and type(value) is type(expected)
    assert cli.trainer.limit_test_batches == 1.0 and isinstance(cli.trainer.limit_test_batches, float)


def test_a_saved_config_keeps_batch_counts_as_integers(trained):
    _, _, config = trained
    saved = yaml.safe_load(config.read_text())["trainer"]
    assert (saved["limit_train_batches"], saved["limit_val_batches"], saved["limit_test_batches"]) == (3, 1, 1)
    assert all(type(saved[name]) is int for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches"))
