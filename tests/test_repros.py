"""The repros of issue 20 (``../shared/repros/r*.py``) as tests of the behaviour a user expects.

Each test runs a real Trainer (or ``score_model``) on the repro's set-up and asserts what should
happen, not merely that nothing raised. The promises they check, (a)-(e), are stated in the README
("What the callback promises"); ``tests/test_setups.py`` checks them over a matrix of set-ups.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SubsetRandomSampler,
    TensorDataset,
)

from seis_lightning import SEISCallback, SEISProbe, score_model
from seis_lightning.functional import SEISWarning
from seis_lightning.pass_plan import probe_order

TAG = "seis/hflip/equivariance/conv1"


class Tiny(pl.LightningModule):
    """The repros' six-line module: conv1 -> dropout -> fc, on 1x16x16 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.conv1(x))).mean((2, 3)))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def tiny_trainer(tmp_path, callbacks, **kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return pl.Trainer(callbacks=callbacks, **{**options, **kwargs})


def loader(n=16, offset=0.0, **kwargs) -> DataLoader:
    images = torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(n)) + offset
    return DataLoader(TensorDataset(images, torch.arange(n) % 2), batch_size=8, **kwargs)


def seis(**kwargs) -> SEISCallback:
    return SEISCallback(
        **{"layers": ["conv1"], "transforms": "hflip", "num_samples": 16, "log_figures": False, **kwargs}
    )


def scored_images(callback: SEISCallback) -> list[torch.Tensor]:
    """Record the images of every scoring of ``callback`` (what its probe is given)."""
    seen: list[torch.Tensor] = []
    score = callback.probe.score

    def recording(model, images, **kwargs):
        seen.append(images.clone())
        return score(model, images, **kwargs)

    callback.probe.score = recording
    return seen


# ------------------------------------------------------------------ r01: collecting images never ends training


class VarSize(Dataset):
    """Native-resolution images: 16 or 20 rows."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.rand(1, 16 + 4 * (i % 2), 16), 0


class Raises(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 5:
            raise OSError("image 5 is unreadable")
        return torch.rand(1, 16, 16), 0


def test_r01_an_exception_while_collecting_warns_disables_and_training_goes_on(tmp_path):
    callback = seis(num_samples=6)
    fitter = tiny_trainer(tmp_path, [callback])
    with pytest.warns(UserWarning, match=r"SEISCallback is disabled for this run: .*(size|shape)") as caught:
        fitter.fit(Tiny(), loader(), DataLoader(VarSize(), batch_size=1))
    assert sum("disabled for this run" in str(w.message) for w in caught) == 1
    assert fitter.state.finished and fitter.global_step == 2  # trained to the end
    assert callback.disabled and callback.history == []


def test_r01_an_item_that_raises_warns_and_strict_raises_with_its_cause(tmp_path):
    callback = seis(probe_data=Raises())
    fitter = tiny_trainer(tmp_path, [callback])
    with pytest.warns(UserWarning, match=r"disabled for this run: .*OSError: image 5 is unreadable"):
        fitter.fit(Tiny(), loader(), loader())
    assert fitter.state.finished and fitter.global_step == 2 and callback.history == []
    strict = seis(probe_data=Raises(), strict=True)
    with pytest.raises(Exception, match="image 5 is unreadable") as raised:
        tiny_trainer(tmp_path, [strict]).fit(Tiny(), loader(), loader())
    cause = raised.value
    while cause.__cause__ is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    assert isinstance(cause, OSError)  # the cause, chained


# ------------------------------------------------------------------ r02: check_val_every_n_epoch, loaders to fit()


def test_r02_check_val_every_n_epoch_without_sanity_check_scores(tmp_path):
    callback = seis()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, [callback], max_epochs=2, check_val_every_n_epoch=2, num_sanity_val_steps=0).fit(
            Tiny(), loader(), loader()
        )
    assert not [w for w in caught if "disabled" in str(w.message)]
    assert callback.disabled is None
    assert [entry["epoch"] for entry in callback.history] == [0.0, 2.0]
    assert all(math.isfinite(e["scores"]["hflip"]["conv1"]["equivariance"]) for e in callback.history)


# ------------------------------------------------------------------ r03: the loader's own sampler picks the images


def split_data():
    x = torch.rand(48, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    x[32:] += 10  # indices 32..47 are the validation split
    return TensorDataset(x, torch.arange(48) % 2)


@pytest.mark.parametrize("how", ["sampler", "batch_sampler"])
def test_r03_a_sampler_selected_split_is_probed_on_that_split_only(tmp_path, how):
    full = split_data()
    if how == "sampler":
        val = DataLoader(full, batch_size=8, sampler=SubsetRandomSampler(range(32, 48)))
    else:
        val = DataLoader(full, batch_sampler=BatchSampler(list(range(32, 48)), batch_size=8, drop_last=False))
    callback = seis()
    tiny_trainer(tmp_path, [callback]).fit(Tiny(), loader(), val)
    probe = callback.probe_set
    assert probe.shape == (16, 1, 16, 16)
    assert bool((probe.mean((1, 2, 3)) > 5).all())  # every probe image is a validation image
    assert torch.allclose(probe.sort(0).values, full.tensors[0][32:].sort(0).values)


@pytest.mark.parametrize("limit", [1, 0.5])
def test_limit_val_batches_counts_the_loaders_own_batches(tmp_path, limit):
    """The matrix's F10: a batch_sampler (``loader.batch_size is None``) under ``limit_val_batches``."""
    full = split_data()
    val = DataLoader(full, batch_sampler=[[33, 35, 37, 39], [41, 43, 45, 47]])
    callback = seis()
    tiny_trainer(tmp_path, [callback], limit_val_batches=limit).fit(Tiny(), loader(), val)
    assert callback.disabled is None
    assert torch.equal(callback.probe_set, full.tensors[0][[33, 35, 37, 39]])  # the first batch the loader yields


# ------------------------------------------------------------------ r05: training is bit-identical


class Stream(IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        return iter([(torch.rand(1, 16, 16, generator=g), 0) for _ in range(16)])


class Noisy(Dataset):
    """A map-style dataset whose items draw from the global RNG (random augmentation)."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return torch.rand(1, 16, 16), 0


@pytest.mark.parametrize("val", [Stream, Noisy], ids=["iterable", "random-getitem"])
def test_r05_training_is_bit_identical_with_and_without_the_callback(tmp_path, val):
    def weights(callbacks):
        pl.seed_everything(0, verbose=False)
        model = Tiny()
        tiny_trainer(tmp_path, callbacks, max_epochs=2).fit(
            model, loader(shuffle=True), DataLoader(val(), batch_size=8)
        )
        return model.fc.weight.detach().clone(), torch.get_rng_state()

    (plain, state), (probed, probed_state) = weights([]), weights([seis()])
    assert torch.equal(plain, probed) and torch.equal(state, probed_state)


class Explodes(Tiny):
    """Draws a random number and raises on a batch of 16 (a probe chunk; training and validation use 8)."""

    def forward(self, x):
        if len(x) == 16:
            torch.rand(())
            raise RuntimeError("explode")
        return super().forward(x)


@pytest.mark.parametrize("failing", ["collection", "forward"])
def test_training_stays_bit_identical_when_the_callback_fails(tmp_path, failing):
    """The matrix's F11: the RNG streams are put back also when collecting or the probe pass raises."""
    model_class, val = (Tiny, DataLoader(VarSize(), batch_size=1)) if failing == "collection" else (Explodes, loader())

    def weights(callbacks):
        pl.seed_everything(0, verbose=False)
        model = model_class()
        tiny_trainer(tmp_path, callbacks, max_epochs=2).fit(model, loader(shuffle=True), val)
        return model.fc.weight.detach().clone(), torch.get_rng_state()

    callback = seis(num_samples=6 if failing == "collection" else 16, batch_size=16)
    with pytest.warns(UserWarning, match="disabled for this run" if failing == "collection" else "explode"):
        (probed, probed_state) = weights([callback])
    (plain, state) = weights([])
    assert torch.equal(plain, probed) and torch.equal(state, probed_state)


# ------------------------------------------------------------------ r08: validate/test score the loader of that call


def test_r08_test_after_fit_scores_the_test_loader(tmp_path):
    callback = seis()
    seen = scored_images(callback)
    fitter, model = tiny_trainer(tmp_path, [callback]), Tiny()
    val, test = loader(), loader(offset=5.0)
    fitter.fit(model, loader(), val)
    fitter.test(model, test, verbose=False)
    assert [e["stage"] for e in callback.evaluations] == ["test"]
    assert float(seen[-1].mean()) > 5  # the test images
    assert torch.allclose(seen[-1].sort(0).values, test.dataset.tensors[0].sort(0).values)
    assert all(float(images.mean()) < 1 for images in seen[:-1])  # fit: the validation images


def test_r08_validate_on_another_loader_scores_that_loader_and_the_same_loader_reuses_its_images(tmp_path):
    callback = seis()
    seen = scored_images(callback)
    fitter, model, val = tiny_trainer(tmp_path, [callback]), Tiny(), loader()
    fitter.fit(model, loader(), val)
    fitter.validate(model, loader(offset=5.0), verbose=False)
    assert float(seen[-1].mean()) > 5
    fitter.validate(model, val, verbose=False)
    assert torch.equal(seen[-1], seen[0])  # the fit's validation images, reused for the same loader


# ------------------------------------------------------------------ r09: a failing layer loses only itself


class Bool(nn.Module):
    def forward(self, x):
        return x > 0.5


class DynCrop(nn.Module):
    """The map size depends on the batch content: 8x8 for bright batches, 4x4 otherwise."""

    def forward(self, x):
        k = 8 if x.mean() > 0.5 else 4
        return x[:, :, :k, :k]


class BoolCropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 1)
        self.bool = Bool()
        self.crop = DynCrop()

    def forward(self, x):
        self.bool(x)
        return self.stem(x), self.crop(x)


def test_r09_a_layer_that_fails_reports_its_true_reason_and_loses_only_itself():
    torch.manual_seed(0)
    x = torch.cat([torch.rand(16, 1, 16, 16) * 0.4 + 0.5, torch.rand(32, 1, 16, 16) * 0.4])
    x = x[probe_order(len(x), 0).argsort()]  # so that the pass, reading in probe order, meets the bright 16 first
    probe = SEISProbe(["stem", "bool", "crop"], ["hflip"], batch_size=16, precision="float64")
    result = probe.score(BoolCropNet(), x)
    assert set(result.reasons) == {"bool", "crop"}
    assert "bool" in result.reasons["bool"] and "needs at least 2 images" not in result.reasons["bool"]
    assert "[16, 1, 8, 8]" in result.reasons["crop"] and "[16, 1, 4, 4]" in result.reasons["crop"]
    for layer in ("bool", "crop"):  # no partial scores reported as complete
        assert all(math.isnan(v) for v in result.scores["hflip"][layer].values())
    assert math.isfinite(result.scores["hflip"]["stem"]["equivariance"])  # the other layer is scored


class NaNForFlipped(nn.Module):
    """NaN for horizontally flipped images only (a first column brighter than the last)."""

    def forward(self, x):
        return torch.where(x[..., :1] > x[..., -1:], torch.nan, x)


def test_r09_a_layer_that_is_nan_in_one_draw_loses_only_itself():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), NaNForFlipped(), nn.Conv2d(2, 2, 1))
    images = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    images[..., -1] += 2  # the last column is the brighter: flipped images give NaN in layer 1
    with pytest.warns(SEISWarning, match=r"'1'.*NaN or Inf values"):
        scores = score_model(model, images, layers=["0", "1"], transforms=["hflip", "vflip"], precision="float64")
    assert math.isnan(scores["hflip"]["1"]["equivariance"])
    assert all(math.isfinite(scores[t]["0"][s]) for t in ("hflip", "vflip") for s in ("equivariance", "invariance"))


def test_r09_a_transformation_that_fails_loses_only_itself():
    from seis_lightning.transforms import GeometricTransform

    crop = GeometricTransform("crop", [lambda x: x[..., 1:, :]])
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1))
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    result = SEISProbe(["0", "1"], [crop, "hflip"], precision="float64").score(model, images)
    assert all(math.isfinite(v["equivariance"]) for v in result.scores["hflip"].values())
    assert all(math.isnan(v["equivariance"]) for v in result.scores["crop"].values())
    assert "from [1, 8, 8] to [1, 7, 8]" in result.transform_reasons["crop"] and not result.reasons


# ------------------------------------------------------------------ r10: default layers


class Wrapped(pl.LightningModule):
    def __init__(self, criterion: bool):
        super().__init__()
        torch.manual_seed(0)
        import torchvision

        self.model = torchvision.models.resnet18(num_classes=4)
        if criterion:
            self.criterion = nn.CrossEntropyLoss()

    def forward(self, x):
        return self.model(x)


def test_r10_default_layers_descend_into_a_wrapped_model_and_say_which(caplog):
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        plain = list(score_model(Wrapped(False), images, transforms=["hflip"])["hflip"])
        with caplog.at_level(logging.INFO, logger="seis_lightning"):
            with_loss = list(score_model(Wrapped(True), images, transforms=["hflip"])["hflip"])
    assert with_loss == plain
    assert {"model.conv1", "model.layer1", "model.layer4", "model.fc"} <= set(with_loss)
    chosen = [r.getMessage() for r in caplog.records if "default layers" in r.getMessage()]
    assert len(chosen) == 1 and "model.layer4" in chosen[0]


class ListBody(nn.Module):
    """A stem, a ModuleList body and a block whose output is a tuple."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1) for _ in range(2)])
        self.pair = Pair()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.stem(x)
        for block in self.body:
            x = torch.relu(block(x))
        x, _ = self.pair(x)
        return self.head(x.mean((2, 3)))


class Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return y, y.mean()


def test_r10_default_layers_descend_into_module_lists_and_tuple_output_blocks():
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = score_model(ListBody(), images, transforms=["hflip"], precision="float64")["hflip"]
    assert list(scores) == ["stem", "body.0", "body.1", "pair.conv", "head"]
    assert all(math.isfinite(values["equivariance"]) for values in scores.values())


# ------------------------------------------------------------------ r11: a module called twice


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.shared(self.shared(self.stem(x))).mean((2, 3)))


@pytest.mark.parametrize("layers", [["stem", "head", "shared"], None], ids=["named", "default"])
def test_r11_a_module_called_twice_loses_only_itself(layers):
    images = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.warns(SEISWarning, match=r"'shared'.*ran 2 times in one forward pass"):
        scores = score_model(Shared(), images, layers=layers, transforms=["hflip"], precision="float64")["hflip"]
    assert list(scores) == ["stem", "shared", "head"]
    assert math.isnan(scores["shared"]["equivariance"])
    assert math.isfinite(scores["stem"]["equivariance"]) and math.isfinite(scores["head"]["invariance"])


# ------------------------------------------------------------------ r13: no validation: the epoch metrics' rows


class NoVal(Tiny):
    validation_step = None

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss


def test_r13_without_validation_scores_land_on_the_epoch_metrics_rows(tmp_path):
    callback = seis(probe_data=torch.rand(16, 1, 16, 16))
    logger = CSVLogger(tmp_path, name="csv", version=0)
    tiny_trainer(tmp_path, [callback], max_epochs=2, logger=logger).fit(NoVal(), loader())
    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    epoch_rows = [r["step"] for r in rows if r.get("loss")]
    seis_rows = [r["step"] for r in rows if r.get(TAG)]
    assert epoch_rows == ["1", "3"]
    assert seis_rows == ["0", *epoch_rows]  # step 0, then each epoch's row


# ------------------------------------------------------------------ r14: several validation loaders


def test_r14_several_validation_loaders_probe_the_chosen_one_and_say_so(tmp_path):
    callback = seis(num_samples=64)
    with pytest.warns(UserWarning, match=r"2 validation dataloaders.*dataloader_idx=0"):
        tiny_trainer(tmp_path, [callback]).fit(Tiny(), loader(), [loader(8), loader(40)])
    assert len(callback.probe_set) == 8
    second = seis(num_samples=64, dataloader_idx=1)
    tiny_trainer(tmp_path, [second]).fit(Tiny(), loader(), [loader(8), loader(40)])
    assert len(second.probe_set) == 40


def test_r14_a_dataloader_idx_beyond_the_loaders_is_named(tmp_path):
    callback = seis(dataloader_idx=3)
    with pytest.warns(UserWarning, match=r"dataloader_idx=3.*2 validation dataloaders"):
        tiny_trainer(tmp_path, [callback]).fit(Tiny(), loader(), [loader(8), loader(40)])
    assert callback.disabled


# ------------------------------------------------------------------ r15: messages name the fix


class ListIn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, images):
        return self.conv(torch.stack(images))


def test_r15_a_list_input_model_is_told_about_forward_fn():
    with pytest.raises(Exception, match=r"forward_fn") as raised:
        score_model(ListIn(), torch.rand(8, 3, 16, 16), layers=["conv"])
    assert "stack()" in str(raised.value)  # with the model's own error
    scores = score_model(
        ListIn(),
        torch.rand(8, 3, 16, 16),
        layers=["conv"],
        transforms=["hflip"],
        forward_fn=lambda model, images: model(list(images)),
    )
    assert math.isfinite(scores["hflip"]["conv"]["equivariance"])


# ------------------------------------------------------------------ r16: state_key ignores the order of layers


def test_r16_the_same_layers_in_another_order_resume_the_history(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    first = seis(layers=["conv1", "fc"])
    tiny_trainer(tmp_path, [first, checkpoint], enable_checkpointing=True).fit(Tiny(), loader(), loader())
    second = seis(layers=["fc", "conv1"])
    assert second.state_key == first.state_key
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, [second], max_epochs=2).fit(
            Tiny(), loader(), loader(), ckpt_path=str(tmp_path / "ck" / "last.ckpt")
        )
    assert not [str(w.message) for w in caught if "SEISCallback" in str(w.message)]  # nor "a fresh history"
    assert [entry["epoch"] for entry in second.history] == [0.0, 1.0, 2.0]
    assert second.probe.layers == ["fc", "conv1"]  # the order given is kept


# ------------------------------------------------------------------ a callback that fails at every scoring


def test_a_callback_that_fails_at_every_scoring_disables_itself_once(tmp_path):
    def broken(model, images):
        raise RuntimeError("broken forward")

    callback = seis(forward_fn=broken)
    fitter = tiny_trainer(tmp_path, [callback], max_epochs=5)
    with pytest.warns(UserWarning) as caught:
        fitter.fit(Tiny(), loader(), loader())
    messages = [str(w.message) for w in caught if "SEIS" in str(w.message)]
    assert fitter.state.finished and fitter.current_epoch == 5
    assert callback.disabled and "3 scorings in a row" in callback.disabled and "broken forward" in callback.disabled
    assert sum("disabled" in m for m in messages) == 1
    assert callback.history == []


# ------------------------------------------------------------------ promise (e): the reason, everywhere, once


class Poison(nn.Module):
    def forward(self, x):
        return torch.full_like(x, torch.nan)


class Faulty(Tiny):
    """Tiny with a module called twice and a layer of NaN maps beside the path to the logits."""

    def __init__(self):
        super().__init__()
        self.twice = nn.Conv2d(4, 4, 1)
        self.poison = Poison()

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        self.twice(self.twice(h))
        self.poison(h)
        return self.fc(self.drop(h).mean((2, 3)))


def test_a_faulty_layer_or_transformation_costs_only_itself_with_its_reason_everywhere_once(tmp_path):
    from seis_lightning.trainer_io import CSV_NAME
    from seis_lightning.transforms import GeometricTransform

    crop = GeometricTransform("crop", [lambda x: x[..., 1:, 1:]])
    callback = seis(layers=["conv1", "twice", "poison"], transforms=["hflip", crop])
    logger = CSVLogger(tmp_path, name="csv", version=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, [callback], max_epochs=2, logger=logger).fit(Faulty(), loader(), loader())
    said = [str(w.message) for w in caught]
    for fault in ("'twice'", "'poison'", "'crop'"):
        assert sum(fault in message for message in said) == 1, fault
    assert len(callback.history) == 3
    for entry in callback.history:
        assert "ran 2 times" in entry["reasons"]["twice"] and "NaN" in entry["reasons"]["poison"]
        assert "changed the image shape" in entry["transform_reasons"]["crop"]
        assert math.isfinite(entry["scores"]["hflip"]["conv1"]["equivariance"])
        assert all(math.isnan(v["invariance"]) for v in entry["scores"]["crop"].values())
    with open(tmp_path / "csv" / "version_0" / CSV_NAME) as file:
        rows = list(csv.DictReader(file))
    assert all("ran 2 times" in r["reason"] for r in rows if r["layer"] == "twice" and r["transform"] == "hflip")
    assert all("'crop'" in r["reason"] for r in rows if r["transform"] == "crop")
    assert all(r["reason"] == "" for r in rows if r["layer"] == "conv1" and r["transform"] == "hflip")


def test_a_resumed_fit_with_a_fresh_history_scores_the_resumed_model_on_its_last_row(tmp_path):
    """The matrix's F8: the resumed model's point is on a row Lightning logged (its last step), not one after."""
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    tiny_trainer(tmp_path, [seis(), checkpoint], enable_checkpointing=True).fit(Tiny(), loader(), loader())
    changed = seis(keep=0.9)  # another configuration: a fresh history
    logger = CSVLogger(tmp_path, name="csv", version=0)
    with pytest.warns(UserWarning, match="fresh history"):
        tiny_trainer(tmp_path, [changed], max_epochs=2, logger=logger).fit(
            Tiny(), loader(), loader(), ckpt_path=str(tmp_path / "ck" / "last.ckpt")
        )
    assert [(e["global_step"], e["step"]) for e in changed.history] == [(2, 1), (4, 3)]


# ------------------------------------------------------------------ r17: warnings de-duplicated by kind, names kept


class TupleBlock(nn.Module):
    """Returns (features, aux): a tuple, which a layer cannot be scored on without ``output_getter``."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return y, y.mean()


class Blocks(Tiny):
    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names
        for i, name in enumerate(names):
            self.add_module(name, TupleBlock(1 if i == 0 else 4))

    def forward(self, x):
        for name in self.names:
            x, _ = getattr(self, name)(x)
        return self.fc(x.mean((2, 3)))


class Dotted(Tiny):
    """The same two blocks at ``features.3`` and ``features.6`` of a Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*[nn.Identity()] * 3, TupleBlock(1), *[nn.Identity()] * 2, TupleBlock(4))

    def forward(self, x):
        return self.fc(self.features[6](self.features[3](x)[0])[0].mean((2, 3)))


@pytest.mark.parametrize("names", [["block1", "block2"], ["features.3", "features.6"], ["blockA", "blockB"]])
def test_r17_layers_whose_names_differ_by_digits_each_get_their_warning(tmp_path, names):
    model = Dotted() if names[0].startswith("features") else Blocks(names)
    callback = seis(layers=names)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, [callback], max_epochs=2).fit(model, loader(), loader())
    said = [str(w.message) for w in caught if "was not scored" in str(w.message)]
    assert sorted(callback.history[-1]["reasons"]) == sorted(names)
    for name in names:  # each named once, not once per scoring
        assert sum(f"'{name}'" in message for message in said) == 1, (name, said)


def test_r17_warning_kind_blanks_numbers_but_not_names():
    from seis_lightning.results import warning_kind

    a = warning_kind("layer", "SEIS layer 'layer1' at step 12: 3 images, 0.25 of [64, 8]")
    assert a == warning_kind("layer", "SEIS layer 'layer1' at step 40: 7 images, 1.5e-3 of [32, 16]")
    assert a != warning_kind("layer", "SEIS layer 'layer2' at step 12: 3 images, 0.25 of [64, 8]")
    assert warning_kind("x", "features.3 fails") != warning_kind("x", "features.6 fails")


# ------------------------------------------------------------------ r23: a NaN layer's reason, short and by name


class Overflowed(Tiny):
    """conv1's maps are Inf in eval mode (what an overflowed fp16 layer looks like); fc is fed finite numbers."""

    def forward(self, x):
        h = self.conv1(x)
        if not self.training:
            h = h * float("inf")
        return self.fc(torch.nan_to_num(torch.relu(h)).mean((2, 3)))


def test_r23_a_nan_layers_reason_names_each_cause_once_with_the_transformations_by_name(tmp_path):
    from seis_lightning.trainer_io import CSV_NAME

    callback = seis(layers=["conv1", "fc"], transforms=["rotate:30", "hflip"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, [callback]).fit(Overflowed(), loader(), loader())
    reason = callback.history[-1]["reasons"]["fc"]
    assert reason == "SEIS layer 'fc' was not scored: the activations hold NaN or Inf values (rotate30, hflip)"
    assert sum("'fc'" in str(w.message) for w in caught) == 1
    with open(tmp_path / CSV_NAME) as file:
        assert {r["reason"] for r in csv.DictReader(file) if r["layer"] == "fc"} == {reason}


def test_r23_causes_name_the_scores_they_hit_when_not_all():
    from seis_lightning.results import ProbeResult
    from seis_lightning.results import unscored_with_reasons as _unscored_with_reasons

    nan = dict.fromkeys(["equivariance", "invariance", "channel_invariance"], math.nan)
    scores = {"rotate30": {"fc": nan}, "hflip": {"fc": {**nan, "equivariance": 0.5}}}
    draws = {"rotate30": {"fc": [{}]}, "hflip": {"fc": [{}]}}
    result = ProbeResult(scores, draws, ["fc"])
    result.warnings = [
        ("fc", "SEIS scores are NaN (transformation 0): equivariance: few images; invariance: few images."),
        ("fc", "SEIS scores are NaN (transformation 1): invariance: few images; channel_invariance: constant."),
    ]
    reason = _unscored_with_reasons(result).reasons["fc"]
    assert reason == (
        "SEIS layer 'fc' was not scored: few images (rotate30, hflip; for equivariance, invariance);"
        " constant (hflip; for channel_invariance)"
    )
    assert result.warnings == []


# ------------------------------------------------------------------ r18: the final (averaged) model is scored


class TwoConv(Tiny):
    """conv1 -> conv2 -> fc without dropout or BatchNorm (StochasticWeightAveraging swaps weights at train end)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, stride=2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3)))


def test_r18_stochastic_weight_averaging_the_final_averaged_model_is_scored(tmp_path):
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    options = dict(layers=["conv1", "conv2"], transforms="rotate:30", num_samples=16)
    callback = seis(**options)
    model = TwoConv()
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=1)
    tiny_trainer(tmp_path, [callback, swa], max_epochs=3).fit(model, loader(), loader())
    final = score_model(model, loader(), **options)["rotate30"]
    last = callback.history[-1]
    assert (last["epoch"], last["global_step"]) == (3.0, 6)
    for layer in ("conv1", "conv2"):
        assert last["scores"]["rotate30"][layer]["equivariance"] == pytest.approx(final[layer]["equivariance"], 1e-9)
    before = callback.history[-2]["scores"]["rotate30"]["conv2"]["equivariance"]  # the last epoch's own weights
    assert before != pytest.approx(final["conv2"]["equivariance"], abs=1e-6)


def test_r18_without_a_change_after_training_the_final_model_is_scored_once(tmp_path):
    callback = seis()
    tiny_trainer(tmp_path, [callback], max_epochs=2).fit(Tiny(), loader(), loader())
    assert [e["global_step"] for e in callback.history] == [0, 2, 4]


# ------------------------------------------------------------------ r19: a checkpoint's scores labelled as the fit's


@pytest.mark.parametrize("same_callback", [True, False], ids=["its-history", "loop-progress"])
def test_r19_validate_ckpt_path_labels_the_scores_as_the_fit_did(tmp_path, same_callback):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", filename="{epoch}", save_top_k=-1)
    fitted = seis()
    trainer = tiny_trainer(tmp_path, [fitted, checkpoint], max_epochs=2, enable_checkpointing=True)
    trainer.fit(Tiny(), loader(), loader())
    for name, entry in [("epoch=0.ckpt", fitted.history[1]), ("epoch=1.ckpt", fitted.history[2])]:
        fresh = seis() if same_callback else seis(keep=0.9)  # another configuration: no history of its own
        tiny_trainer(tmp_path, [fresh]).validate(Tiny(), loader(), ckpt_path=tmp_path / "ck" / name, verbose=False)
        scored = fresh.evaluations[0]
        assert (scored["epoch"], scored["global_step"], scored["step"]) == (
            entry["epoch"],
            entry["global_step"],
            entry["step"],
        )


def test_r19_checkpoint_progress_counts_a_mid_epoch_checkpoint_in_epochs_trained():
    from seis_lightning.trainer_io import checkpoint_progress

    batches = {"total": {"processed": 6}, "current": {"processed": 2}, "is_last_batch": False}
    loops = {"epoch_progress": {"current": {"ready": 2}}, "epoch_loop.batch_progress": batches}
    saved = {"epoch": 1, "global_step": 6, "loops": {"fit_loop": {**loops, "epoch_loop.state_dict": {}}}}
    assert checkpoint_progress(saved, "SEISCallback{}") == (1.5, 6, 5)  # 2 of an epoch's 4 batches


# ------------------------------------------------------------------ r20: monitoring a SEIS score


KEY = "seis/hflip/equivariance/conv1"


class Monitored(pl.Callback):
    """What a monitor reads at each validation's end."""

    def __init__(self) -> None:
        self.read: list[float | None] = []

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            value = trainer.callback_metrics.get(KEY)
            self.read.append(None if value is None else float(value))


def test_r20_skipped_validations_leave_no_stale_score_and_aligned_checkpoints_rank_fresh_ones(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping

    callback, monitored = seis(every_n_epochs=2, score_before_training=False), Monitored()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", monitor=KEY, mode="max", every_n_epochs=2, save_top_k=-1)
    stopping = EarlyStopping(monitor=KEY, mode="max", strict=False, patience=5)
    fitter = tiny_trainer(
        tmp_path, [callback, monitored, checkpoint, stopping], max_epochs=4, enable_checkpointing=True
    )
    fitter.fit(Tiny(), loader(), loader())
    fresh = [e["scores"]["hflip"]["conv1"]["equivariance"] for e in callback.history]
    assert [e["epoch"] for e in callback.history] == [2.0, 4.0]
    assert monitored.read == [None, pytest.approx(fresh[0]), None, pytest.approx(fresh[1])]
    ranked = sorted((path.rsplit("/", 1)[-1], float(v)) for path, v in checkpoint.best_k_models.items())
    assert ranked == [
        ("epoch=1-step=4.ckpt", pytest.approx(fresh[0])),
        ("epoch=3-step=8.ckpt", pytest.approx(fresh[1])),
    ]
    assert fitter.current_epoch == 4  # no "metric not available" at the unscored validations


@pytest.mark.parametrize(
    ("monitor", "fix"),
    [
        ("checkpoint", r"Set ModelCheckpoint\(every_n_epochs=2, ...\)"),
        ("stopping", r"Set EarlyStopping\(strict=False, ...\)"),
        ("steps", r"Save at validations"),
    ],
)
def test_r20_a_monitor_that_would_read_unscored_validations_is_refused_before_training(tmp_path, monitor, fix):
    from lightning.pytorch.callbacks import EarlyStopping

    monitors = {
        "checkpoint": ModelCheckpoint(dirpath=tmp_path, monitor=KEY),
        "stopping": EarlyStopping(monitor=KEY),
        "steps": ModelCheckpoint(dirpath=tmp_path, monitor=KEY, every_n_train_steps=1),
    }
    model = Tiny()
    before = [p.clone() for p in model.parameters()]
    fitter = tiny_trainer(tmp_path, [seis(every_n_epochs=2), monitors[monitor]], enable_checkpointing=True)
    with pytest.raises(Exception, match=rf"monitor='{KEY}'.*{fix}"):
        fitter.fit(model, loader(), loader())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # refused before training


# ------------------------------------------------------------------ r21: seis_scores.csv holds one run's rows


def csv_steps(path) -> list[int]:
    with open(path) as file:
        return [int(r["step"]) for r in csv.DictReader(file) if r["score"] == "equivariance"]


def test_r21_a_reused_folder_or_logger_version_holds_one_runs_rows(tmp_path):
    from seis_lightning.trainer_io import CSV_NAME

    for _ in range(2):
        tiny_trainer(tmp_path / "plain", [seis()]).fit(Tiny(), loader(), loader())
        logger = CSVLogger(tmp_path, name="csv", version=0)
        tiny_trainer(tmp_path, [seis()], logger=logger).fit(Tiny(), loader(), loader())
    assert csv_steps(tmp_path / "plain" / CSV_NAME) == [0, 1]
    assert csv_steps(tmp_path / "csv" / "version_0" / CSV_NAME) == [0, 1]


def test_r21_a_run_keeps_its_fit_and_validate_rows_and_a_resumed_fit_its_history(tmp_path):
    from seis_lightning.trainer_io import CSV_NAME

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    fitter = tiny_trainer(tmp_path, [seis(), checkpoint], enable_checkpointing=True)
    fitter.fit(Tiny(), loader(), loader())
    fitter.validate(dataloaders=loader(), verbose=False)
    with open(tmp_path / CSV_NAME) as file:
        assert [r["stage"] for r in csv.DictReader(file) if r["score"] == "equivariance"] == ["fit", "fit", "validate"]
    resumed = tiny_trainer(tmp_path, [seis()], max_epochs=2)
    resumed.fit(Tiny(), loader(), loader(), ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert csv_steps(tmp_path / CSV_NAME) == [0, 1, 3]


@pytest.mark.parametrize("strict", [True, False])
def test_r20_a_monitor_beside_a_probe_budget_is_refused_unless_it_tolerates_skips(tmp_path, strict):
    from lightning.pytorch.callbacks import EarlyStopping

    stopping = EarlyStopping(monitor=KEY, mode="max", strict=strict)
    fitter = tiny_trainer(tmp_path, [seis(max_overhead=1e-9), stopping], max_epochs=2)
    if strict:
        with pytest.raises(Exception, match=r"skips scorings to stay within its budget.*strict=False"):
            fitter.fit(Tiny(), loader(), loader())
    else:  # every scoring after the baseline skipped: EarlyStopping checks none, training runs its course
        fitter.fit(Tiny(), loader(), loader())
        assert fitter.current_epoch == 2
