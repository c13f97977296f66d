"""seis-lightning: SEIS equivariance and invariance scores for PyTorch Lightning."""

from seis_lightning.callback import SEISCallback
from seis_lightning.functional import (
    SEISWarning,
    seis_combine_statistics,
    seis_from_statistics,
    seis_maps,
    seis_scores,
    seis_statistics,
)
from seis_lightning.metric import SEISMetric
from seis_lightning.transforms import GeometricTransform, RandomAffine, flip, parse_transform, rotate, scale, translate

__all__ = [
    "GeometricTransform",
    "RandomAffine",
    "SEISCallback",
    "SEISMetric",
    "SEISWarning",
    "flip",
    "parse_transform",
    "rotate",
    "scale",
    "seis_combine_statistics",
    "seis_from_statistics",
    "seis_maps",
    "seis_scores",
    "seis_statistics",
    "translate",
]
