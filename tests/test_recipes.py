"""Every recipe parses and runs one fake-data batch with the SEIS callback; the CLI's extra commands."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from seis_lightning.cli import SEISLightningCLI, main
from seis_lightning.functional import SCORES

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
NAMES = [path.stem for path in RECIPES]
SMALL = {"ResNet18Classifier", "FCNSegmenter", "UNetSegmenter", "MultiTaskUNet"}  # take a narrow encoder


def test_all_recipes_are_there():
    assert (
        sorted(
            [
                "digits_cnn",
                "digits_cnn_augment",
                "shapes_seg_fcn",
                "shapes_seg_unet",
                "shapes_mtl_unet",
                "cifar100_resnet18",
                "cifar100_resnet18_augment",
                "voc_seg_fcn",
                "voc_seg_unet",
                "voc_mtl_unet",
                "cifar100_vit",
                "cifar100_mixer",
            ]
        )
        == NAMES
    )
    for path in RECIPES:
        header = path.read_text().splitlines()[0]
        assert header.startswith(f"# {path.stem}: ") and "Figure" in path.read_text().split("seed_everything")[0]
        assert yaml.safe_load(path.read_text())["trainer"]["logger"]["init_args"]["save_dir"] == "logs"


@pytest.mark.parametrize("path", RECIPES, ids=NAMES)
def test_recipe_prints_its_config(path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"].startswith("seis_lightning.models.")
    assert config["data"]["class_path"].startswith("seis_lightning.data.")
    assert config["seis"]["transforms"] and config["seis"]["num_samples"] >= 64


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=NAMES)
def test_recipe_runs_one_fake_batch_with_the_callback(path, tmp_path):
    model = yaml.safe_load(path.read_text())["model"]["class_path"].rsplit(".", 1)[1]
    args = [
        "fit",
        "--config",
        str(path),
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.accelerator=cpu",
        "--data.fake=true",
        "--data.batch_size=4",
        "--seis.num_samples=8",
        "--seis.batch_size=4",
        "--seis.max_positions=64",  # wiring, not numbers: keep the eigendecompositions small
        *(["--model.width=8"] if model in SMALL else []),
        *(["--data.image_size=32"] if "voc" in path.stem else []),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = SEISLightningCLI(args=args)
    history = cli.seis.history
    assert [h["step"] for h in history] == [0, 1]
    layers = list(history[-1]["scores"]["random_affine"])
    assert layers == list(cli.seis._resolved) and set(layers) <= set(dict(cli.model.named_modules()))
    for values in history[-1]["scores"]["random_affine"].values():
        assert set(SCORES) <= set(values)
    assert any((tmp_path / path.stem).rglob("events.out.tfevents.*"))


def test_fit_prints_the_table_and_the_tensorboard_command(tmp_path, capsys):
    run_digits(tmp_path)
    out = capsys.readouterr().out
    assert "SEIS scores after 1 epoch(s)" in out
    assert "random_affine  conv1" in out and "random_affine  fc" in out
    assert f"tensorboard --logdir {tmp_path}" in out


def run_digits(tmp_path, *extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SEISLightningCLI(
            args=[
                "fit",
                "--config",
                str(RECIPES[NAMES.index("digits_cnn")]),
                f"--trainer.logger.init_args.save_dir={tmp_path}",
                "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=3",
                "--trainer.enable_progress_bar=false",
                "--seis.num_samples=64",
                *extra,
            ]
        )


def test_analyze_scores_a_checkpoint_without_training(tmp_path, capsys):
    trained = run_digits(tmp_path, f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_checkpointing=true")
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                "analyze",
                "--checkpoint",
                str(checkpoint),
                "--output",
                str(tmp_path / "analysis"),
                "--config",
                str(RECIPES[NAMES.index("digits_cnn")]),
                f"--trainer.logger.init_args.save_dir={tmp_path / 'analyze_logs'}",
                "--trainer.enable_progress_bar=false",
                "--seis.num_samples=64",
            ]
        )
    out = capsys.readouterr().out
    assert (tmp_path / "analysis" / "seis_random_affine_depth.png").read_bytes()[:4] == b"\x89PNG"
    assert "random_affine  conv1" in out
    # The checkpoint's weights are scored: the same as the trained model's last scores.
    last = trained.seis.scores["random_affine"]["conv2"]["equivariance"]
    assert f"{last:.3f}" in out


def test_analyze_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "--checkpoint", str(tmp_path / "nope.ckpt"), "--config", str(RECIPES[0])])
    assert "nope.ckpt is not a file" in capsys.readouterr().err
