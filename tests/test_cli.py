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
    # labelled as the fit labelled the same weights: 2 epochs trained, on the row of step 5 (global_step 6)
    assert "SEIS scores of epoch=1-step=6.ckpt after 2 epoch(s), step 5 (global_step 6; nulls in brackets):" in out
    assert "after 0 epoch(s)" not in out, out
    assert re.search(r"^random_affine +conv1 +0\.\d{3} \(0\.\d{3}\)", out, re.MULTILINE)
    events = EventAccumulator(str(root / "digits_cnn" / command))
    events.Reload()
    for score in ("equivariance", "invariance", "channel_invariance"):
        scalars = events.Scalars(f"seis_{command}/random_affine/{score}/conv1")
        assert [event.step for event in scalars] == [5] and 0 < scalars[0].value <= 1


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


def test_one_step_and_epoch_across_the_table_tensorboard_csv_figures_and_analyze(tmp_path, capsys):
    """The demo recipe (cut short): the model the terminal calls "epoch 2, step 5" is the one at step 5 in
    TensorBoard (scalars and figures) and the CSV, and ``analyze RUN_DIR`` names its last checkpoint so."""
    import csv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                "fit",
                *tiny(tmp_path),
                "--trainer.max_epochs=2",
                "--trainer.logger.init_args.version=fit",
                "--seis.log_figures=true",
            ]
        )
    fit_out = capsys.readouterr().out
    run = tmp_path / "digits_cnn" / "fit"
    said = re.search(r"SEIS scores after (\S+) epoch\(s\), step (\d+) \(global_step (\d+);", fit_out)
    assert said and said.groups() == ("2", "5", "6"), fit_out
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("seis/random_affine/equivariance/conv1")] == [0, 2, 5]
    assert "hp_metric" not in events.Tags()["scalars"]  # the recipes turn Lightning's -1 placeholder off
    assert events.Images("seis/random_affine/depth")[-1].step == 5
    with open(run / "seis_scores.csv") as file:
        last = list(csv.DictReader(file))[-1]
    assert (last["epoch"], last["step"], last["global_step"]) == ("2.0", "5", "6")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                "analyze",
                str(run),
                f"--trainer.logger.init_args.save_dir={tmp_path / 'analyzed'}",
                f"--output={tmp_path / 'png'}",
            ]
        )
    out = capsys.readouterr().out
    assert "SEIS scores of epoch=1-step=6.ckpt after 2 epoch(s), step 5 (global_step 6; nulls in brackets):" in out
    assert (tmp_path / "png" / "seis_random_affine_depth.png").read_bytes()[:4] == b"\x89PNG"


def test_analyze_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["analyze", str(tmp_path)])
    assert f"{tmp_path} is not a run folder of `seis-lightning fit`: it has no config.yaml" in capsys.readouterr().err


def config_with_a_callback(tmp_path: Path, seis_section: bool) -> list[str]:
    recipe = yaml.safe_load(resolve_recipe("digits_cnn").read_text())
    recipe["trainer"]["callbacks"] = [
        {"class_path": "seis_lightning.SEISCallback", "init_args": {"num_samples": 16, "layers": ["conv1"]}}
    ]
    if not seis_section:
        del recipe["seis"]
    path = tmp_path / "with_callback.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return ["--config", str(path), *tiny(tmp_path)[2:], "--trainer.max_epochs=1"]


def test_a_seis_callback_in_trainer_callbacks_beside_the_seis_section_is_refused(tmp_path):
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    args = config_with_a_callback(tmp_path, seis_section=True)
    with pytest.raises(MisconfigurationException, match=r"SEISCallback in `trainer.callbacks` and a `seis:` section"):
        SEISLightningCLI(args=args, run=False)


def test_a_seis_callback_in_trainer_callbacks_alone_is_the_one_used(tmp_path):
    args = [a for a in config_with_a_callback(tmp_path, seis_section=False) if not a.startswith("--seis.")]
    with pytest.warns(UserWarning, match=r"using the SEISCallback in `trainer.callbacks`"):
        cli = SEISLightningCLI(args=args, run=False)
    probes = [c for c in cli.trainer.callbacks if type(c).__name__ == "SEISCallback"]
    assert len(probes) == 1 and probes[0].probe.layers == ["conv1"] and probes[0].num_samples == 16


@pytest.mark.parametrize("argv", [["--help"], ["recipes"]])
def test_help_and_recipes_answer_without_importing_torch_or_lightning(argv):
    """``--help`` and ``recipes`` load neither torch nor Lightning (8.5 s before, on a quiet machine); the
    time bound is generous (CPU seconds of the subprocess, about 0.1 s here) and only catches a heavy import."""
    import resource
    import subprocess

    code = (
        f"import sys; from seis_lightning.cli import main; main({argv!r}); "
        "print(sorted(m for m in ('torch', 'lightning', 'matplotlib') if m in sys.modules))"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path.cwd())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.stdout.splitlines()[-1] == "[]"
    assert "usage: seis-lightning" in done.stdout or "digits_cnn" in done.stdout
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 3.0
