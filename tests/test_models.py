"""Models: output shapes, default SEIS layers, losses, and one fast_dev_run fit each on fake data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from lightning.pytorch import Trainer, seed_everything

from seis_lightning.data import CIFAR100DataModule, DigitsDataModule, ShapesDataModule, VOCSegmentationDataModule
from seis_lightning.models import (
    MODELS,
    DigitsCNN,
    FCNSegmenter,
    MultiTaskUNet,
    ResNet18Classifier,
    SmallMixer,
    SmallViT,
    UNetSegmenter,
)

# model, its small arguments, input shape [C, H, W], output shapes, data module on fake data, logged metrics
CASES = {
    "digits_cnn": (
        DigitsCNN,
        {},
        (1, 28, 28),
        [(10,)],
        lambda: DigitsDataModule(fake=True, batch_size=4),
        ["val_acc"],
    ),
    "resnet18": (
        ResNet18Classifier,
        {"num_classes": 100},
        (3, 32, 32),
        [(100,)],
        lambda: CIFAR100DataModule(fake=True, batch_size=4),
        ["val_acc"],
    ),
    "fcn": (
        FCNSegmenter,
        {"num_classes": 5},
        (3, 32, 32),
        [(5, 32, 32)],
        lambda: ShapesDataModule(task="segmentation", num_train=16, num_val=8, batch_size=4),
        ["val_miou", "val_pixel_acc"],
    ),
    "unet": (
        UNetSegmenter,
        {"num_classes": 21},
        (3, 32, 32),
        [(21, 32, 32)],
        lambda: VOCSegmentationDataModule(fake=True, image_size=32, batch_size=4),
        ["val_miou", "val_pixel_acc"],
    ),
    "multitask_unet": (
        MultiTaskUNet,
        {"num_classes": 4, "num_seg_classes": 5},
        (3, 32, 32),
        [(4,), (5, 32, 32)],
        lambda: ShapesDataModule(task="multitask", num_train=16, num_val=8, batch_size=4),
        ["val_acc", "val_miou", "val_pixel_acc"],
    ),
    "vit": (
        SmallViT,
        {"num_classes": 100, "depth": 4},
        (3, 32, 32),
        [(100,)],
        lambda: CIFAR100DataModule(fake=True, batch_size=4),
        ["val_acc"],
    ),
    "mixer": (
        SmallMixer,
        {"num_classes": 100, "depth": 4},
        (3, 32, 32),
        [(100,)],
        lambda: CIFAR100DataModule(fake=True, batch_size=4),
        ["val_acc"],
    ),
}


def test_registry_lists_every_model():
    assert {name: cls for name, (cls, *_) in CASES.items()} == MODELS


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_seis_layers(name):
    cls, kwargs, input_shape, output_shapes, *_ = CASES[name]
    torch.manual_seed(0)
    model = cls(**kwargs).eval()
    modules = dict(model.named_modules())
    assert model.seis_layers and all(layer in modules for layer in model.seis_layers)
    captured = {}
    handles = [
        modules[layer].register_forward_hook(lambda module, args, output, layer=layer: captured.update({layer: output}))
        for layer in model.seis_layers
    ]
    try:
        with torch.no_grad():
            output = model(torch.randn(3, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    outputs = output if isinstance(output, tuple) else (output,)
    assert [tuple(item.shape) for item in outputs] == [(3, *shape) for shape in output_shapes]
    assert list(captured) == model.seis_layers  # every layer runs, in depth order (heads after the encoder)
    for layer, activation in captured.items():
        assert type(activation) is torch.Tensor and activation.shape[0] == 3 and activation.ndim >= 2, layer


def test_token_models_declare_their_layout():
    vit, mixer = SmallViT(depth=2), SmallMixer(depth=2)
    assert vit.seis_layers == ["blocks.0", "blocks.1"] and mixer.seis_layers == ["blocks.0", "blocks.1"]
    assert (vit.seis_layout, vit.seis_num_prefix_tokens) == ("channels_last", 1)
    assert (mixer.seis_layout, mixer.seis_num_prefix_tokens) == ("channels_last", 0)
    tokens = vit.blocks[0](torch.randn(2, 65, 128))
    assert tokens.shape == (2, 65, 128)


def test_default_seis_layers():
    assert DigitsCNN().seis_layers == ["conv1", "conv2", "conv3", "pool", "fc"]
    encoder = ["encoder.stem", "encoder.layer1", "encoder.layer2", "encoder.layer3", "encoder.layer4"]
    assert ResNet18Classifier().seis_layers == [*encoder, "pool", "fc"]
    assert FCNSegmenter().seis_layers[5:] == [
        "decoder.block1",
        "decoder.block2",
        "decoder.classifier",
        "decoder.upsample",
    ]
    assert UNetSegmenter().seis_layers == [*encoder, "decoder.up1", "decoder.up2", "decoder.up3", "decoder.classifier"]


def test_hyperparameters_rebuild_the_model():
    model = SmallViT(num_classes=10, depth=2, lr=0.01, optimizer="sgd")
    assert model.hparams.depth == 2 and model.hparams.lr == 0.01
    rebuilt = SmallViT(**model.hparams)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    optimizer = rebuilt.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.01
    assert isinstance(DigitsCNN().configure_optimizers(), torch.optim.Adam)
    with pytest.raises(ValueError, match="optimizer"):
        DigitsCNN(optimizer="lbfgs")
    segmenter = UNetSegmenter(num_classes=5, lr=0.1)  # hyperparameters saved by the shared segmenter __init__
    assert dict(segmenter.hparams) == {
        "num_classes": 5,
        "in_channels": 3,
        "width": 64,
        "lr": 0.1,
        "optimizer": "adam",
        "weight_decay": 0.0,
    }


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_multitask_loss_is_the_sum_of_both_cross_entropies():
    torch.manual_seed(0)
    model = MultiTaskUNet(num_classes=5, num_seg_classes=6).eval()
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))
    masks = torch.randint(0, 6, (4, 32, 32))
    masks[:, :8] = 255
    with torch.no_grad():
        loss = model.validation_step((images, labels, masks), 0)
        logits, pixel_logits = model(images)
    kept = masks != 255
    pixel_loss = F.cross_entropy(pixel_logits.permute(0, 2, 3, 1)[kept].double(), masks[kept])
    expected = F.cross_entropy(logits.double(), labels) + pixel_loss
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_fast_dev_run(name):
    cls, kwargs, _, _, make_datamodule, metrics = CASES[name]
    seed_everything(0)
    model = cls(**kwargs)
    trainer = Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=make_datamodule())
    logged = trainer.callback_metrics
    for key in ["train_loss", "val_loss", *metrics]:
        assert key in logged and torch.isfinite(logged[key]), key
    for key in metrics:
        assert 0 <= logged[key] <= 1
