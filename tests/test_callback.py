"""``SEISCallback`` in real ``Trainer.fit`` runs, read back through TensorBoard's event reader."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from seis_lightning import HistoryEntry, SEISCallback, SEISMetric
from seis_lightning.functional import SCORES, SEISWarning
from seis_lightning.pass_plan import probe_order
from seis_lightning.transforms import Affine, GeometricTransform
from tests.lightning_helpers import TinyCNN, digits_loaders, read_events, trainer

LAYERS = ["conv1", "conv2", "pool", "fc"]


def expected_scores(model: TinyCNN, callback: SEISCallback) -> dict:
    """Scores recomputed by hand from the callback's probe set and draws, with forward hooks and SEISMetric."""
    model.eval()
    draws = callback.probe.draws
    expected: dict = {}
    with torch.no_grad():
        for layer in LAYERS:
            out: dict[str, torch.Tensor] = {}
            handle = getattr(model, layer).register_forward_hook(lambda m, i, o, out=out: out.__setitem__("x", o))

            def layer_output(images: torch.Tensor, out=out) -> torch.Tensor:
                model(images)
                return out["x"]

            metric = SEISMetric(num_transforms=len(draws))
            ordered = callback.probe_set[
                probe_order(len(callback.probe_set), callback.probe.seed)
            ]  # as the pass reads them
            for x in ordered.split(32):
                metric.update(layer_output(x), [layer_output(image_map(x)) for _, image_map in draws])
            handle.remove()
            per_transform: dict[str, list] = {}
            for (name, _), result in zip(draws, metric.compute()):
                per_transform.setdefault(name, []).append(result)
            for name, results in per_transform.items():
                expected.setdefault(name, {})[layer] = {
                    score: sum(r[score] for r in results) / len(results)
                    for score in (*SCORES, *(f"{s}_null" for s in SCORES))
                }
    return expected


def test_scores_reach_tensorboard(tmp_path):
    train, val = digits_loaders()
    callback = SEISCallback(num_samples=96, batch_size=32, transforms=["random_affine", "rotate:30"])
    model = TinyCNN()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        trainer(tmp_path, [callback], max_epochs=2).fit(model, train, val)

    assert list(callback.scores["rotate30"]) == LAYERS  # the top-level blocks that output a new map, in forward order
    # The probe images are spread evenly over the validation set, here all of its 96 images.
    assert torch.equal(callback.probe_set, torch.cat([batch[0] for batch in val]))
    events = read_events(tmp_path / "tb" / "version_0")
    tags = events.Tags()
    for transform in ("random_affine", "rotate30"):
        for score in SCORES:
            for layer in LAYERS:
                for suffix in ("", "_null"):
                    tag = f"seis/{transform}/{score}{suffix}/{layer}"
                    assert [e.step for e in events.Scalars(tag)] == [0, 5, 11], tag  # Lightning's logging step
    expected = expected_scores(model, callback)
    for transform, by_layer in expected.items():
        for layer, values in by_layer.items():
            for score, value in values.items():
                logged = events.Scalars(f"seis/{transform}/{score}/{layer}")[-1].value
                assert logged == pytest.approx(value, abs=1e-5), (transform, layer, score)
                assert callback.scores[transform][layer][score] == pytest.approx(value, abs=1e-9)
    images = tags["images"]
    for transform in ("random_affine", "rotate30"):
        assert [e.step for e in events.Images(f"seis/{transform}/depth")] == [0, 5, 11]
        for score in SCORES:
            heatmaps = events.Images(f"seis/{transform}/heatmap/{score}")
            assert (
                len(heatmaps) == 3 and heatmaps[-1].width > 100 and heatmaps[-1].encoded_image_string[:4] == b"\x89PNG"
            )
    assert len(images) == 2 * 4
    # Four fixed draws of the random affine are kept per layer; the logged score is their mean.
    assert [(h["stage"], h["epoch"], h["global_step"]) for h in callback.history] == [
        ("fit", 0.0, 0),
        ("fit", 1.0, 6),
        ("fit", 2.0, 12),
    ]
    assert callback.history[-1]["scores"] == callback.scores and callback.evaluations == []
    for order, entry in enumerate(callback.history):  # HistoryEntry's keys, no more, no fewer
        assert set(entry) == set(HistoryEntry.__annotations__)
        assert entry["order"] == order and entry["step"] == [0, 5, 11][order]
        assert entry["reasons"] == {} and entry["transform_reasons"] == {}
    assert len(callback.history[-1]["draws"]["random_affine"]["conv1"]) == 4
    assert (
        callback.history[-1]["draws"]["random_affine"]["conv1"][0]
        != callback.history[-1]["draws"]["random_affine"]["conv1"][1]
    )


def test_custom_scalars_layout_is_written(tmp_path):
    train, val = digits_loaders()
    callback = SEISCallback(layers=["conv*"], num_samples=64, transforms="hflip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        trainer(tmp_path, [callback], max_epochs=1).fit(TinyCNN(), train, val)
    from tensorboard.plugins.custom_scalar import metadata

    events = read_events(tmp_path / "tb" / "version_0")
    layout_tag = metadata.CONFIG_SUMMARY_TAG
    assert layout_tag in events.Tags()["tensors"]
    from tensorboard.plugins.custom_scalar import layout_pb2

    layout = layout_pb2.Layout.FromString(events.Tensors(layout_tag)[0].tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    assert charts["equivariance"] == [r"seis/hflip/equivariance/.*"]  # the layers, told apart by their tags
    for layer in ("conv1", "conv2"):  # each layer against its null, two lines a chart
        assert charts[f"invariance {layer} vs null"] == [
            f"seis/hflip/invariance/{layer}",
            f"seis/hflip/invariance_null/{layer}",
        ]
    assert len(charts) == 3 + 3 * 2
    assert list(callback.scores["hflip"]) == ["conv1", "conv2"]


class BatchOrder(pl.Callback):
    """Records the labels of every training batch, in the order the dataloader gives them."""

    def __init__(self) -> None:
        self.labels: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.labels.append(batch[1].tolist())


def fit_weights(tmp_path, with_callback: bool):
    pl.seed_everything(7, workers=True)
    train, val = digits_loaders()
    model = TinyCNN()
    order = BatchOrder()
    callbacks = [SEISCallback(num_samples=64, transforms=["random_affine", "vflip"])] if with_callback else []
    fitter = trainer(tmp_path / str(with_callback), [order, *callbacks], max_epochs=2, deterministic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        fitter.fit(model, train, val)
    loss = read_events(tmp_path / str(with_callback) / "tb" / "version_0").Scalars("train_loss")
    after = torch.rand(3)  # the global RNG stream after training
    return model, fitter.optimizers[0].state_dict(), [e.value for e in loss], after, order.labels


def test_callback_leaves_training_bit_identical(tmp_path):
    model_a, optim_a, loss_a, rng_a, order_a = fit_weights(tmp_path, with_callback=False)
    model_b, optim_b, loss_b, rng_b, order_b = fit_weights(tmp_path, with_callback=True)
    assert order_a == order_b and len(order_a) == 12 and order_a[0] != order_a[6]  # shuffled, in the same order
    for (name, p), q in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(p, q), name
    for state_a, state_b in zip(optim_a["state"].values(), optim_b["state"].values()):
        for key in state_a:
            assert torch.equal(torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key])), key
    assert loss_a == loss_b and len(loss_a) == 12
    assert torch.equal(rng_a, rng_b)
    assert not model_b.training or model_a.training == model_b.training


def no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def failing_transform() -> GeometricTransform:
    def explode(images):
        raise RuntimeError("boom inside the probe pass")

    return GeometricTransform("explode", [Affine(angle=10), explode])


def test_probe_failure_warns_and_training_goes_on(tmp_path):
    train, val = digits_loaders()
    model = TinyCNN()
    model.conv1.weight.requires_grad_(False)
    with pytest.warns(SEISWarning, match=r"probe pass \(fit, step 0\) failed.*boom inside the probe pass"):
        trainer(tmp_path, [SEISCallback(num_samples=64, transforms=[failing_transform()])], max_epochs=1).fit(
            model, train, val
        )
    assert no_hooks(model)
    assert model.training and not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad


def test_strict_probe_failure_raises_and_leaves_no_hooks(tmp_path):
    train, val = digits_loaders()
    model = TinyCNN()
    with pytest.raises(RuntimeError, match="boom inside the probe pass"):
        trainer(tmp_path, [SEISCallback(num_samples=64, transforms=[failing_transform()], strict=True)]).fit(
            model, train, val
        )
    assert no_hooks(model)


def test_resume_continues_the_history(tmp_path):
    train, val = digits_loaders()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = SEISCallback(layers=["conv1", "fc"], num_samples=64, transforms="rotate:15")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        trainer(tmp_path, [first, checkpoint], max_epochs=2, enable_checkpointing=True).fit(TinyCNN(), train, val)
        assert [h["global_step"] for h in first.history] == [0, 6, 12]
        second = SEISCallback(layers=["conv1", "fc"], num_samples=64, transforms="rotate:15")
        logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb", version=1)
        trainer(tmp_path, [second], max_epochs=4, logger=logger).fit(
            TinyCNN(), train, val, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
        )
    assert [(h["epoch"], h["global_step"]) for h in second.history] == [(0, 0), (1, 6), (2, 12), (3, 18), (4, 24)]
    assert second.history[:3] == first.history
    events = read_events(tmp_path / "tb" / "version_1")
    assert [e.step for e in events.Scalars("seis/rotate15/equivariance/conv1")] == [17, 23]
    assert len(events.Images("seis/rotate15/heatmap/equivariance")) == 2


def test_unknown_layer_lists_close_names(tmp_path):
    train, val = digits_loaders()
    expected = (
        r"SEIS layer 'conv3' matches no module of TinyCNN\. Closest names: \['conv2', 'conv1'\]\."
        r" Names from named_modules\(\): \['conv1', 'conv2', 'dropout', 'pool', 'fc'\]"
    )
    with pytest.raises(ValueError, match=expected):
        trainer(tmp_path, [SEISCallback(layers=["conv3"])]).fit(TinyCNN(), train, val)


def test_no_validation_data_explains_how_to_give_probes(tmp_path):
    train, _ = digits_loaders()
    model = TinyCNN()
    match = r"no validation dataloader \(or `limit_val_batches=0`, or the model has no `validation_step`.*probe_data"
    for kwargs in ({}, {"limit_val_batches": 0}):
        callback = SEISCallback(num_samples=64)
        with pytest.warns(UserWarning, match="SEISCallback is disabled for this run: .*" + match):
            fitter = trainer(tmp_path, [callback], max_epochs=1, **kwargs)
            fitter.fit(model, train)
        assert fitter.global_step == 6 and callback.history == []  # training went on without SEIS
        with pytest.raises(MisconfigurationException, match=match):
            trainer(tmp_path, [SEISCallback(num_samples=64, strict=True)], max_epochs=1, **kwargs).fit(model, train)
    # A probe tensor given directly needs no validation data.
    callback = SEISCallback(num_samples=64, probe_data=next(iter(train))[0], transforms="hflip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        trainer(tmp_path, [callback], max_epochs=1, limit_val_batches=0).fit(model, train)
    assert [(h["epoch"], h["global_step"]) for h in callback.history] == [(0, 0), (1, 6)]


class TupleOutput(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x), x.mean()


class TupleNet(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.pair = TupleOutput()

    def forward(self, x):
        self.pair(x)
        return super().forward(x)


def test_non_tensor_layer_output_is_rejected_by_name(tmp_path):
    train, val = digits_loaders()
    with pytest.raises(
        RuntimeError,
        match=r"SEIS layer 'pair' was not scored: TupleOutput returned a tuple of \['Tensor', 'Tensor'\]"
        r".*`output_getter`",
    ):
        trainer(tmp_path, [SEISCallback(layers=["pair"], num_samples=64, strict=True)]).fit(TupleNet(), train, val)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, r"`num_samples` to be an integer >= 2"),
        ({"batch_size": 1}, r"`batch_size` to be an integer >= 2"),
        ({"keep": 1.5}, r"`keep` to be a number in \(0, 1\]"),
        ({"keep": 0}, r"`keep` to be a number in \(0, 1\]"),
        ({"every_n_epochs": 0}, "`every_n_epochs` to be a positive integer"),
        ({"transforms": ["rotate:abc"]}, "Malformed transformation 'rotate:abc'"),
        ({"transforms": ["spin"]}, "Unknown transformation 'spin'; expected one of: random_affine, rotate"),
        ({"transforms": ["hflip", "hflip"]}, "distinct names"),
        ({"layers": []}, "at least one module"),
        ({"layout": "NHWC"}, "`layout` to be one of"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SEISCallback(**kwargs)


def test_dict_batches_and_glob_patterns(tmp_path):
    images, labels = next(iter(digits_loaders(num_val=64)[1]))

    class DictData(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            return {"image": images[i % len(images)], "label": labels[i % len(labels)]}

    callback = SEISCallback(layers=["conv?", "f*"], num_samples=48, transforms="translate:0.1,0.1")
    loader = torch.utils.data.DataLoader(DictData(), batch_size=16)

    class DictModel(TinyCNN):
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.cross_entropy(self(batch["image"]), batch["label"]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        trainer(tmp_path, [callback], max_epochs=1, limit_train_batches=2).fit(DictModel(), digits_loaders()[0], loader)
    assert list(callback.scores["translate0.1_0.1"]) == ["conv1", "conv2", "fc"]
    # 48 images spread evenly over the 64 items (first and last included), taken by their "image" key.
    indices = torch.linspace(0, 63, 48).round().long()
    assert torch.equal(callback.probe_set, images[indices % len(images)])


@pytest.mark.distributed
def test_two_processes_score_like_one(tmp_path):
    """The probe set is split across 2 CPU processes; the synced scores equal one process's."""
    _, val = digits_loaders(num_val=96)
    torch.manual_seed(0)
    model = TinyCNN()

    def validate(path, **kwargs):
        callback = SEISCallback(num_samples=96, batch_size=16, transforms=["random_affine", "hflip"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer(path, [callback], **kwargs).validate(model, val)
        events = read_events(path / "tb" / "version_0")
        tags = [t for t in events.Tags()["scalars"] if t.startswith("seis_validate/") and "/time/" not in t]
        return {tag: events.Scalars(tag)[-1].value for tag in tags}

    single = validate(tmp_path / "one")
    ddp = validate(tmp_path / "two", strategy="ddp_spawn", devices=2)
    assert len(single) == 2 * 4 * 6 and set(ddp) == set(single)
    for tag, value in single.items():
        assert ddp[tag] == pytest.approx(value, abs=1e-6), tag
