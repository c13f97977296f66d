"""seis-lightning: SEIS equivariance and invariance scores for PyTorch Lightning."""

from seis_lightning.functional import (
    SEISWarning,
    seis_combine_statistics,
    seis_from_statistics,
    seis_maps,
    seis_scores,
    seis_statistics,
)
from seis_lightning.metric import SEISMetric

__all__ = [
    "SEISMetric",
    "SEISWarning",
    "seis_combine_statistics",
    "seis_from_statistics",
    "seis_maps",
    "seis_scores",
    "seis_statistics",
]
