"""Lightning data modules: bundled digits, MNIST, procedural shapes, CIFAR-100 and Pascal VOC 2012."""

from seis_lightning.data.cifar import CIFAR100DataModule
from seis_lightning.data.digits import DigitsDataModule
from seis_lightning.data.mnist import MNISTDataModule
from seis_lightning.data.shapes import ShapesDataModule
from seis_lightning.data.voc import VOCSegmentationDataModule

__all__ = ["CIFAR100DataModule", "DigitsDataModule", "MNISTDataModule", "ShapesDataModule", "VOCSegmentationDataModule"]
