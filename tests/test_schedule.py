"""When ``SEISCallback`` scores and where it logs, in the Lightning setups of issue 16 (section 3).

Every run trains ``TinyCNN`` on 192 digits in 6 batches per epoch, so ``global_step`` is 6 per epoch.
"""

from __future__ import annotations

import csv
import itertools
import warnings
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from seis_lightning import SEISCallback
from seis_lightning.functional import SEISWarning
from tests.lightning_helpers import TinyCNN, digits_loaders, read_events, trainer

TAG = "seis/hflip/equivariance/conv1"


def seis(**kwargs) -> SEISCallback:
    options = dict(layers=["conv1"], transforms="hflip", num_samples=32, log_figures=False)
    return SEISCallback(**{**options, **kwargs})


def fit(tmp_path, callbacks, model=None, max_epochs=2, val=True, ckpt_path=None, **kwargs) -> pl.Trainer:
    train, val_loader = digits_loaders()
    fitter = trainer(tmp_path, callbacks, max_epochs=max_epochs, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        fitter.fit(model or TinyCNN(), train, val_loader if val else None, ckpt_path=ckpt_path)
    return fitter


def when(callback: SEISCallback) -> list[tuple[float, int]]:
    return [(round(entry["epoch"], 6), entry["global_step"]) for entry in callback.history]


def test_scalars_at_global_step_line_up_with_csv_loss_rows(tmp_path):
    callback = seis()
    fit(tmp_path, [callback], logger=CSVLogger(tmp_path, name="csv", version=0))
    assert when(callback) == [(0, 0), (1, 6), (2, 12)]
    with open(tmp_path / "csv" / "version_0" / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    seis_rows = [row for row in rows if row.get(TAG)]
    # Lightning logs a validation's metrics at the step of the batch before it (global_step - 1), and
    # so does SEIS: its scalars share the validation rows' steps (the step-0 baseline precedes training).
    assert [int(row["step"]) for row in seis_rows] == [0, 5, 11]
    assert [entry["step"] for entry in callback.history] == [0, 5, 11]
    for row, entry in zip(seis_rows, callback.history):
        assert float(row[TAG]) == pytest.approx(entry["scores"]["hflip"]["conv1"]["equivariance"], abs=1e-6)
    train_steps = {int(row["step"]) for row in rows if row.get("train_loss")}
    assert train_steps == set(range(12)) and {0, 6} <= train_steps
    assert [int(row["step"]) for row in rows if row.get("val_loss")] == [5, 11]


def test_mid_epoch_validation_is_scored_each_time_at_its_own_step(tmp_path):
    callback = seis()
    fit(tmp_path, [callback], val_check_interval=0.5)
    assert when(callback) == [(0, 0), (0.5, 3), (1, 6), (1.5, 9), (2, 12)]
    steps = [e.step for e in read_events(tmp_path / "tb" / "version_0").Scalars(TAG)]
    assert steps == [0, 2, 5, 8, 11] == [entry["step"] for entry in callback.history]
    assert steps[1:] == [e.step for e in read_events(tmp_path / "tb" / "version_0").Scalars("val_loss")]


class ConstantValidation(TinyCNN):
    """Logs a constant validation metric, so that EarlyStopping(patience=2) stops after epoch 3."""

    def validation_step(self, batch, batch_idx):
        self.log("constant", 1.0)


@pytest.mark.parametrize(
    ("every_n_epochs", "kwargs", "expected"),
    [
        (2, {"max_epochs": 3}, [(0, 0), (2, 12), (3, 18)]),
        (2, {"max_epochs": 3, "max_steps": 9}, [(0, 0), (1.5, 9)]),
        (1, {"max_epochs": 3, "max_steps": 9}, [(0, 0), (1, 6), (1.5, 9)]),
        (2, {"max_epochs": 3, "max_time": {"seconds": 3}}, [(0, 0), (0.5, 3)]),
        (2, {"max_epochs": 6, "early_stopping": True}, [(0, 0), (2, 12), (3, 18)]),
        (1, {"max_epochs": 6, "early_stopping": True}, [(0, 0), (1, 6), (2, 12), (3, 18)]),
    ],
    ids=["max_epochs", "max_steps", "max_steps-each", "max_time", "early_stopping", "early_stopping-each"],
)
def test_every_n_epochs_and_the_final_model_scored_once(tmp_path, monkeypatch, every_n_epochs, kwargs, expected):
    clock = itertools.count()  # max_time: the Timer's clock moves 1 s each time it is read, so it stops after 3 batches
    monkeypatch.setattr(timer, "time", SimpleNamespace(monotonic=lambda: float(next(clock))))
    callback = seis(every_n_epochs=every_n_epochs)
    callbacks: list = [callback]
    model = None
    if kwargs.pop("early_stopping", False):
        callbacks.append(EarlyStopping(monitor="constant", patience=2))
        model = ConstantValidation()
    fitter = fit(tmp_path, callbacks, model=model, **kwargs)
    assert fitter.global_step == expected[-1][1]  # the run ended where the setup says
    assert when(callback) == expected
    steps = [e.step for e in read_events(tmp_path / "tb" / "version_0").Scalars(TAG)]
    # once each (no duplicate at the final step), at Lightning's logging step: a validation's is global_step - 1
    assert steps == [entry["step"] for entry in callback.history]
    assert all(entry["step"] in (entry["global_step"], entry["global_step"] - 1) for entry in callback.history)


def test_validate_and_test_keep_the_training_history(tmp_path):
    callback = seis()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    model = TinyCNN()
    fitter = fit(tmp_path, [callback, checkpoint], model=model, enable_checkpointing=True)
    history = list(callback.history)
    trained = history[-1]["scores"]["hflip"]["conv1"]
    _, val = digits_loaders()
    fitter.validate(model, val, verbose=False)
    fitter.test(model, val, verbose=False)
    assert callback.history == history and when(callback) == [(0, 0), (1, 6), (2, 12)]
    assert [(e["stage"], e["global_step"]) for e in callback.evaluations] == [("validate", 12), ("test", 12)]
    for entry in callback.evaluations:  # the trained model on the same probe set
        assert entry["scores"]["hflip"]["conv1"] == pytest.approx(trained, abs=1e-9)
    assert callback.scores is callback.evaluations[-1]["scores"]
    events = read_events(tmp_path / "tb" / "version_0")
    assert [e.step for e in events.Scalars(TAG)] == [0, 5, 11]
    for stage in ("validate", "test"):
        (event,) = events.Scalars(f"seis_{stage}/hflip/equivariance/conv1")
        assert event.step == 12 and event.value == pytest.approx(trained["equivariance"], abs=1e-6)

    # A fresh Trainer validating the first epoch's checkpoint: its weights are scored, the history stays whole.
    after_one_epoch = history[1]["scores"]["hflip"]["conv1"]
    logger = TensorBoardLogger(tmp_path, name="tb", version=1)
    fresh = trainer(tmp_path, [callback], logger=logger)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        fresh.validate(TinyCNN(), val, ckpt_path=str(tmp_path / "ckpt" / "epoch=0.ckpt"), verbose=False)
    assert callback.history == history
    # this Trainer's evaluations, labelled with the checkpoint's progress (epoch 1 ended at step 6)
    assert [(e["stage"], e["global_step"]) for e in callback.evaluations] == [("validate", 6)]
    assert callback.scores["hflip"]["conv1"] == pytest.approx(after_one_epoch, abs=1e-9)
    assert after_one_epoch["equivariance"] != trained["equivariance"]
    (event,) = read_events(tmp_path / "tb" / "version_1").Scalars("seis_validate/hflip/equivariance/conv1")
    assert event.value == pytest.approx(after_one_epoch["equivariance"], abs=1e-6)


def test_test_in_a_fresh_trainer_scores_the_test_data(tmp_path):
    callback = seis()
    _, loader = digits_loaders()
    model = TinyCNN()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        trainer(tmp_path, [callback]).test(model, loader, verbose=False)
    images = torch.cat([batch[0] for batch in loader])
    assert torch.equal(callback.probe_set, images[torch.linspace(0, 95, 32).round().long()])  # spread over the set
    assert callback.history == [] and [e["stage"] for e in callback.evaluations] == ["test"]
    (event,) = read_events(tmp_path / "tb" / "version_0").Scalars("seis_test/hflip/equivariance/conv1")
    assert event.value == pytest.approx(callback.scores["hflip"]["conv1"]["equivariance"], abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "bound"),
    [({"fast_dev_run": True}, 32), ({"limit_val_batches": 2, "limit_train_batches": 2}, 2 * 32)],
    ids=["fast_dev_run", "limit_val_batches"],
)
def test_fast_dev_run_and_limit_val_batches_bound_the_probe_set(tmp_path, kwargs, bound):
    callback = seis(num_samples=512)
    with pytest.warns(UserWarning, match=f"num_samples=512 probe images but the validation data gives {bound}"):
        fit(tmp_path, [callback], max_epochs=1, **kwargs)
    assert callback.probe_set.shape == (bound, 1, 16, 16)  # validation's batches x batch size, not 512
    assert len(callback.history) == 2 and torch.isfinite(torch.tensor(callback.history[-1]["global_step"]))


class NoValidationStep(TinyCNN):
    validation_step = pl.LightningModule.validation_step  # Lightning then skips validation


def test_model_without_validation_step_is_scored_at_epoch_ends(tmp_path):
    images = next(iter(digits_loaders()[1]))[0]
    callback = seis(probe_data=images, every_n_epochs=2)
    fit(tmp_path, [callback], model=NoValidationStep(), max_epochs=3)
    assert when(callback) == [(0, 0), (2, 12), (3, 18)]
    assert torch.equal(callback.probe_set, images)

    callback = seis()
    with pytest.warns(UserWarning, match=r"disabled for this run.*no `validation_step`.*SEISCallback\(probe_data="):
        fitter = fit(tmp_path / "without", [callback], model=NoValidationStep(), max_epochs=1)
    assert fitter.global_step == 6 and callback.history == []


def test_two_callbacks_checkpoint_and_resume(tmp_path):
    def pair():
        return seis(), seis(layers=["conv2", "fc"], transforms="rotate:30")

    first, second = pair()
    assert first.state_key != second.state_key
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit(tmp_path, [first, second, checkpoint], max_epochs=1, enable_checkpointing=True)
    assert when(first) == when(second) == [(0, 0), (1, 6)]
    assert list(first.scores) == ["hflip"] and list(second.scores["rotate30"]) == ["conv2", "fc"]
    events = read_events(tmp_path / "tb" / "version_0")
    assert [e.step for e in events.Scalars(TAG)] == [0, 5]
    assert [e.step for e in events.Scalars("seis/rotate30/invariance/fc")] == [0, 5]
    states = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"]
    assert states[first.state_key]["history"] == first.history
    assert states[second.state_key]["history"] == second.history

    resumed = pair()
    last = str(tmp_path / "ckpt" / "last.ckpt")
    logger = TensorBoardLogger(tmp_path, name="tb", version=1)
    fit(tmp_path, list(resumed), max_epochs=2, ckpt_path=last, logger=logger)
    for before, after in zip((first, second), resumed):
        assert after.history[:2] == before.history and when(after) == [(0, 0), (1, 6), (2, 12)]

    # One instance in a second Trainer: a fresh history, not appended to the first one.
    fit(tmp_path, [first], max_epochs=1, logger=TensorBoardLogger(tmp_path, name="tb", version=2))
    assert when(first) == [(0, 0), (1, 6)]

    # Resuming with another configuration (same layers and transforms, another `keep`): a warning, a fresh history.
    changed = seis(keep=0.9)
    assert changed.state_key == first.state_key
    with pytest.warns(UserWarning, match=r"made with .*'keep': 0\.99.*configured with .*'keep': 0\.9\b.*fresh history"):
        fit(tmp_path, [changed], max_epochs=2, ckpt_path=last, logger=TensorBoardLogger(tmp_path, name="tb", version=3))
    assert when(changed) == [(1, 6), (2, 12)]  # the resumed model first, never the old history's entries

    # Other transformations: another state_key, so Lightning names the checkpoint's unclaimed state.
    other = seis(transforms="vflip")
    with pytest.warns(UserWarning, match=r"Please add the following callbacks: \[.*'transforms': \['hflip'\]"):
        fit(tmp_path, [other], max_epochs=2, ckpt_path=last, logger=TensorBoardLogger(tmp_path, name="tb", version=4))
    assert when(other) == [(1, 6), (2, 12)]


def test_warnings_once_per_layer_and_kind(tmp_path):
    callback = seis(layers=["conv2", "fc"], num_samples=8, batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, [callback], max_epochs=3).fit(TinyCNN(), *digits_loaders())
    assert len(callback.history) == 4
    sufficiency = [str(w.message) for w in caught if "fewer than 10 per dimension" in str(w.message)]
    assert sorted(message.split("'")[1] for message in sufficiency) == ["conv2", "fc"]  # once per layer
