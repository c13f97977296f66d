"""Every recipe parses and runs one fake-data batch with the SEIS callback; the CLI's extra commands."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import yaml

from seis_lightning.cli import SEISLightningCLI, main
from seis_lightning.functional import SCORES
from seis_lightning.recipes import list_recipes, resolve_config, resolve_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
NAMES = [path.stem for path in RECIPES]
SMALL = {"ResNet18Classifier", "FCNSegmenter", "UNetSegmenter", "MultiTaskUNet"}  # take a narrow encoder


def test_all_recipes_are_there():
    assert (
        sorted(
            [
                "digits_cnn",
                "digits_cnn_augment",
                "digits_cnn_blurpool",
                "digits_cnn_maxpool",
                "mnist_cnn",
                "mnist_cnn_augment",
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


def test_shipped_recipes_are_the_recipes_folder_with_their_paper_results():
    recipes = list_recipes()
    assert [recipe.name for recipe in recipes] == NAMES
    assert [recipe.path.read_bytes() for recipe in recipes] == [path.read_bytes() for path in RECIPES]
    beyond = {"cifar100_vit", "cifar100_mixer"}  # the paper's analysis on token models, not one of its results
    beyond |= {"digits_cnn_maxpool", "digits_cnn_blurpool"}  # Zhang 2019's BlurPool, read per layer
    assert {recipe.name for recipe in recipes if recipe.paper_result is None} == beyond
    for recipe in recipes:
        if recipe.paper_result is not None:
            assert re.search(r"\bFigure [234]\b", recipe.paper_result), recipe.name
    digits = recipes[NAMES.index("digits_cnn")]
    assert digits.paper_result == (
        "the depth-wise pattern of Figure 2: in a trained CNN, equivariance falls with depth while invariance rises,"
        " and the pattern settles early in training."
    )
    assert digits.description.startswith("the main job (`make demo`)") and "Paper result" not in digits.description


def test_a_recipe_name_resolves_to_its_file_and_anything_else_is_left_alone(tmp_path, monkeypatch):
    digits = RECIPES[NAMES.index("digits_cnn")]
    assert resolve_recipe("digits_cnn") == resolve_recipe("digits_cnn.yaml") == digits
    assert resolve_config("digits_cnn") == str(digits)
    assert resolve_config(str(digits)) == str(digits)
    assert resolve_config("{trainer: {max_epochs: 1}}") == "{trainer: {max_epochs: 1}}"  # inline YAML
    assert resolve_config("my/own.yaml") == "my/own.yaml"  # a path: LightningCLI says if it is missing
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits_cnn").write_text("seed_everything: 1\n")
    assert resolve_config("digits_cnn") == "digits_cnn"  # an existing file wins over the shipped recipe


def test_an_unknown_recipe_name_lists_the_closest_and_the_known_ones():
    with pytest.raises(ValueError, match="Did you mean digits_cnn, mnist_cnn, digits_cnn_maxpool") as error:
        resolve_recipe("digit_cnn")
    assert all(name in str(error.value) for name in NAMES) and "seis-lightning recipes" in str(error.value)
    for command in (["fit", "--config", "digit_cnn"], ["analyze", "--checkpoint", "x.ckpt", "--config=digit_cnn"]):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert str(exit_info.value.code).startswith("seis-lightning: error: --config digit_cnn: no such file")


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
@pytest.mark.parametrize("config", [["--config", "digits_cnn"], ["-c", "digits_cnn.yaml"], ["--config=digits_cnn"]])
def test_subcommands_take_a_recipe_name(command, config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, *config, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "seis_lightning.models.DigitsCNN"
    assert printed["trainer"]["logger"]["init_args"]["save_dir"] == "logs"  # relative to where it runs


def test_recipes_command_prints_each_recipe_what_it_is_for_and_what_our_runs_found(capsys):
    main(["recipes"])
    out = capsys.readouterr().out
    rows = [line.split(maxsplit=1) for line in out.splitlines()[1:] if line and not line.startswith(" ")]
    assert [row[0] for row in rows[: len(NAMES)]] == NAMES
    assert all(row[1].startswith("for: ") for row in rows[: len(NAMES)])
    assert "Figure 4 on PASCAL VOC, segmentation with a U-Net decoder." in out
    flat = " ".join(out.split())
    assert "cifar100_vit for: the depth-wise analysis of the paper's Figure 2 applied to a small ViT" in flat
    assert "geometry? paper: (beyond the paper) ours: not run for the README (needs CIFAR-100)." in flat
    assert "seis-lightning fit --config NAME" in out and str(RECIPES[0].parent) in out


# What the README's "What the scores say" reports for the results that do not (fully) reproduce.
OUR_RUNS = {
    "digits_cnn": "reproduces (README, What the scores say, Figure 2).",
    "digits_cnn_augment": "at the pooled features and logits only: invariance rises by about 0.02 there, beyond the"
    " spread between 3 seeds and the jackknife SE; the conv maps do not move beyond the noise (README, What the scores"
    " say, Figure 3).",
    "shapes_seg_unet": "does not reproduce: read against its null, the U-Net decoder's equivariance does not"
    " recover; the decoders differ in invariance instead (README, What the scores say, Figure 4).",
}


def test_every_recipe_says_what_it_is_for_and_what_our_runs_found():
    recipes = {recipe.name: recipe for recipe in list_recipes()}
    for name in NAMES:
        recipe = recipes[name]
        assert recipe.our_runs, name
        assert "Paper result" not in recipe.description and "Our runs" not in recipe.description, name
    for name, found in OUR_RUNS.items():
        assert recipes[name].our_runs == found
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert "**Figure 3, augmentation, over seeds and probe noise: on real MNIST it holds at the pooled" in readme
    assert "pool 0.936 ± 0.007 (0.002) → 0.960 ± 0.005 (0.001)" in readme  # the digits, 3 seeds each (fresh, 0.4)
    assert "the paper's claim that skip connections bring equivariance back does not show" in readme
    assert recipes["digits_cnn_augment"].paper_result.endswith("equivariance and invariance at the deeper layers.")


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
    assert [(h["epoch"], h["global_step"]) for h in history] == [(0, 0), (1, cli.trainer.global_step)]
    layers = list(history[-1]["scores"]["random_affine"])
    assert layers and set(layers) <= set(dict(cli.model.named_modules()))
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
    # One epoch of 3 batches: the table says how far the checkpoint was trained, not the Trainer's 0 epochs,
    # as the fit said it (epochs trained, the step of its rows).
    assert f"SEIS scores of {checkpoint.name} after 1 epoch(s), step 2 (global_step 3;" in out
    assert "after 0 epoch(s)" not in out
    # The checkpoint's weights are scored: the same as the trained model's last scores.
    last = trained.seis.scores["random_affine"]["conv2"]["equivariance"]
    assert f"{last:.3f}" in out


def test_analyze_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "--checkpoint", str(tmp_path / "nope.ckpt"), "--config", str(RECIPES[0])])
    assert "nope.ckpt is not a file" in capsys.readouterr().err
