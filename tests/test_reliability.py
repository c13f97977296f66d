"""The callback never harms a training run, and every bad input gets a clear answer (issue 7)."""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from seis_lightning import SEISCallback
from seis_lightning.functional import SEISWarning
from seis_lightning.transforms import GeometricTransform
from tests.lightning_helpers import TinyCNN, digits_loaders, read_events, trainer


def fit(tmp_path, callback, model=None, max_epochs=1, val=None, **kwargs):
    train, default_val = digits_loaders()
    model = model or TinyCNN()
    trainer(tmp_path, [callback], max_epochs=max_epochs, **kwargs).fit(model, train, val or default_val)
    return model


def test_shape_changing_transformation_is_named(tmp_path):
    crop = GeometricTransform("crop", [lambda images: images[..., 2:, 2:]])
    with pytest.raises(ValueError, match=r"Transformation 'crop' changed the image shape from \[1, 16, 16\]"):
        fit(tmp_path, SEISCallback(transforms=[crop], num_samples=64, batch_size=32, strict=True))


def left_is_brighter(images):
    """Whether the left half of the images holds more ink than the right half; a horizontal flip swaps them."""
    return images[..., :8].sum() >= images[..., 8:].sum()


class ContentCrop(nn.Module):
    """The 8 left columns of the images, or 7 right ones: its output shape follows the image content."""

    def forward(self, x):
        return x[..., :8] if left_is_brighter(x) else x[..., 8:15]


class ContentDependent(TinyCNN):
    """Layer `crop` changes its output shape with the content, layer `extra` runs only for some images."""

    def __init__(self):
        super().__init__()
        self.crop = ContentCrop()
        self.extra = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        self.crop(x)
        if left_is_brighter(x):
            self.extra(x)
        return super().forward(x)


def test_layer_output_shape_change_between_x_and_tx_is_named(tmp_path):
    # The maps of the first chunk of the probe pass: 16 images (the default batch_size).
    callback = SEISCallback(layers=["crop", "conv1"], transforms="hflip", num_samples=64, strict=True)
    with pytest.raises(
        RuntimeError,
        match=r"SEIS layer 'crop' was not scored: it gives maps of shape \[16, 1, 16, [78]\] for the probe images but"
        r" \[16, 1, 16, [78]\] for the images transformed by 'hflip'; .* does not depend on the image content",
    ):
        fit(tmp_path, callback, ContentDependent())


def test_layer_that_does_not_run_for_some_images_is_named(tmp_path):
    callback = SEISCallback(layers=["extra", "conv1"], transforms="hflip", num_samples=64, strict=True)
    with pytest.raises(
        RuntimeError,
        match=r"SEIS layer 'extra' was not scored: it did not run in the forward pass of the"
        r" (probe images|images transformed by .hflip.)",
    ):
        fit(tmp_path, callback, ContentDependent())


def test_small_validation_set_warns_and_uses_what_is_there(tmp_path):
    _, val = digits_loaders(num_val=40)
    callback = SEISCallback(num_samples=512, transforms="hflip")
    with pytest.warns(UserWarning, match=r"num_samples=512 probe images but the validation data gives 40"):
        fit(tmp_path, callback, val=val)
    assert callback.probe_set.shape[0] == 40 and [h["global_step"] for h in callback.history] == [0, 6]


class PixelsData(torch.utils.data.Dataset):
    """Dict items whose image key (``"pixels"``) is none SEIS knows."""

    def __init__(self) -> None:
        self.images, self.labels = next(iter(digits_loaders()[1]))

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"pixels": self.images[i], "label": self.labels[i]}


class PixelsModel(TinyCNN):
    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.cross_entropy(self(batch["pixels"]), batch["label"]))


def one_image():
    images, labels = next(iter(digits_loaders()[1]))
    return {"val": DataLoader(TensorDataset(images[:1], labels[:1]))}


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (one_image, r"found 1 probe image\(s\) in the validation data; it needs at least 2"),
        (
            lambda: {"callback": {"probe_data": torch.zeros(8, 1, 16, 16, dtype=torch.uint8)}},
            r"floating-point images in probe_data, but got uint8 \[8, 1, 16, 16\]; convert them.*float\(\) / 255",
        ),
        (
            lambda: {"val": DataLoader(PixelsData(), batch_size=8), "model": PixelsModel()},
            r"could not take the images from the validation data \(.*batch keys \['pixels', 'label'\].*`input_getter`",
        ),
    ],
    ids=["one-image", "uint8", "unknown-key"],
)
@pytest.mark.parametrize("strict", [False, True])
def test_probe_collection_problems_warn_and_disable_unless_strict(tmp_path, setup, match, strict):
    options = setup()
    callback = SEISCallback(transforms="hflip", strict=strict, **options.pop("callback", {}))
    if strict:
        with pytest.raises(MisconfigurationException, match=match):
            fit(tmp_path, callback, **options)
        return
    with pytest.warns(UserWarning, match="SEISCallback is disabled for this run: .*" + match) as caught:
        model = fit(tmp_path, callback, **options)
    assert sum("disabled for this run" in str(w.message) for w in caught) == 1
    assert callback.disabled and callback.history == [] and callback.scores == {}
    assert model.trainer.global_step == 6 and model.trainer.state.finished  # training went on to its end


def test_probe_of_another_dtype_and_device_is_moved_to_the_model(tmp_path):
    probe = next(iter(digits_loaders()[1]))[0].double()
    callback = SEISCallback(probe_data=probe, transforms="hflip", layers=["conv1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        fit(tmp_path, callback)
    assert not math.isnan(callback.scores["hflip"]["conv1"]["equivariance"])


class EvalNaN(nn.Module):
    def forward(self, x):
        return x * float("nan") if not self.training else x


class NaNInEval(TinyCNN):
    """Layer `bad` gives NaN maps in eval mode only: the probe pass sees them, training does not."""

    def __init__(self):
        super().__init__()
        self.bad = EvalNaN()

    def forward(self, x):
        return super().forward(x) + self.bad(x).mean().nan_to_num()


def test_nan_activations_give_nan_scores_and_a_named_warning(tmp_path):
    callback = SEISCallback(layers=["conv1", "bad"], transforms="hflip", num_samples=64)
    with pytest.warns(
        SEISWarning, match=r"SEIS layer 'bad' was not scored: the activations hold NaN or Inf values \(hflip\)"
    ):
        fit(tmp_path, callback, NaNInEval(), max_epochs=2)
    assert [h["global_step"] for h in callback.history] == [0, 6, 12]  # training went on
    assert math.isnan(callback.scores["hflip"]["bad"]["equivariance"])
    assert not math.isnan(callback.scores["hflip"]["conv1"]["equivariance"])


class DeadLayer(TinyCNN):
    def __init__(self):
        super().__init__()
        self.dead = nn.Conv2d(1, 4, 3)
        nn.init.zeros_(self.dead.weight)
        nn.init.zeros_(self.dead.bias)

    def forward(self, x):
        self.dead(x)
        return super().forward(x)


def test_dead_layer_is_nan_with_a_reason(tmp_path):
    callback = SEISCallback(layers=["dead", "conv1"], transforms="hflip", num_samples=64)
    with pytest.warns(SEISWarning, match=r"'dead'.*do not vary across images \(a dead or constant layer\)"):
        fit(tmp_path, callback, DeadLayer())
    assert math.isnan(callback.scores["hflip"]["dead"]["invariance"])


def test_wide_layer_with_few_probe_rows_warns_about_sample_sufficiency(tmp_path):
    callback = SEISCallback(layers=["fc"], transforms="hflip", num_samples=8, batch_size=4)
    with pytest.warns(SEISWarning, match="fewer than 10 per dimension"):
        fit(tmp_path, callback)


class BigMaps(TinyCNN):
    def __init__(self):
        super().__init__()
        self.up = nn.Upsample(scale_factor=3)

    def forward(self, x):
        self.up(self.conv1(x))  # 48x48 maps: above the 32x32 cap
        return super().forward(x)


def test_huge_maps_are_pooled_to_the_cap(tmp_path):
    callback = SEISCallback(layers=["up"], transforms="rotate:20", num_samples=64, max_positions=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        fit(tmp_path, callback, BigMaps())
    assert 0 < callback.scores["rotate20"]["up"]["equivariance"] <= 1


def test_bf16_autocast_scores_close_to_fp32(tmp_path):
    scores = {}
    for precision in ("32-true", "bf16-mixed"):
        callback = SEISCallback(layers=["conv1", "conv2"], transforms="rotate:30", num_samples=96, batch_size=32)
        torch.manual_seed(0)
        model = TinyCNN()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer(tmp_path / precision, [callback], precision=precision).validate(model, digits_loaders()[1])
        scores[precision] = callback.scores["rotate30"]
    for layer in ("conv1", "conv2"):
        assert scores["bf16-mixed"][layer]["equivariance"] == pytest.approx(
            scores["32-true"][layer]["equivariance"], abs=0.02
        )


class Crash(Callback):
    """Kills the first run in the middle of its third epoch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 2 and batch_idx == 2:
            raise RuntimeError("killed mid-epoch")


def test_killed_run_resumes_without_duplicates_or_gaps(tmp_path):
    train, val = digits_loaders()
    every_step = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    first = SEISCallback(layers=["conv1"], transforms="hflip", num_samples=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter = trainer(tmp_path, [first, every_step, Crash()], max_epochs=4, enable_checkpointing=True)
        with pytest.raises(RuntimeError, match="killed mid-epoch"):
            fitter.fit(TinyCNN(), train, val)
    assert [h["global_step"] for h in first.history] == [0, 6, 12]
    second = SEISCallback(layers=["conv1"], transforms="hflip", num_samples=64)
    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb", version=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(tmp_path, [second], max_epochs=4, logger=logger).fit(
            TinyCNN(), train, val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
        )
    assert [(h["epoch"], h["global_step"]) for h in second.history] == [(0, 0), (1, 6), (2, 12), (3, 18), (4, 24)]
    assert second.history[:3] == first.history
    events = read_events(tmp_path / "tb" / "version_1")
    assert [e.step for e in events.Scalars("seis/hflip/equivariance/conv1")] == [17, 23]


def test_requires_grad_and_modes_are_restored(tmp_path):
    model = TinyCNN()
    model.conv1.requires_grad_(False)
    model.fc.eval()  # a frozen submodule kept in eval mode by the user

    class Check(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            self.modes = {name: m.training for name, m in pl_module.named_modules()}

    check = Check()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, val = digits_loaders()
        trainer(tmp_path, [SEISCallback(transforms="hflip", num_samples=64), check], max_epochs=1).fit(
            model, train, val
        )
    assert check.modes["fc"] is False and check.modes["conv2"] is True
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad
    assert all(p.grad is None for p in model.conv1.parameters())
