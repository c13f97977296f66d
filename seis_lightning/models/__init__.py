"""LightningModules for the SEIS experiments; each lists its default SEIS layers, in depth order, in ``seis_layers``."""

from seis_lightning.models.base import TaskModule
from seis_lightning.models.cnn import DigitsCNN
from seis_lightning.models.mixer import SmallMixer
from seis_lightning.models.multitask import MultiTaskUNet
from seis_lightning.models.resnet import ResNet18Classifier, ResNet18Encoder
from seis_lightning.models.segmentation import FCNSegmenter, UNetSegmenter
from seis_lightning.models.vit import SmallViT

MODELS: dict[str, type[TaskModule]] = {
    "digits_cnn": DigitsCNN,
    "resnet18": ResNet18Classifier,
    "fcn": FCNSegmenter,
    "unet": UNetSegmenter,
    "multitask_unet": MultiTaskUNet,
    "vit": SmallViT,
    "mixer": SmallMixer,
}

__all__ = [
    "MODELS",
    "DigitsCNN",
    "FCNSegmenter",
    "MultiTaskUNet",
    "ResNet18Classifier",
    "ResNet18Encoder",
    "SmallMixer",
    "SmallViT",
    "TaskModule",
    "UNetSegmenter",
]
