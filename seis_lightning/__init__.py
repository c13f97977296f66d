"""seis-lightning: SEIS equivariance and invariance scores for PyTorch Lightning."""

from importlib.metadata import version as _version

from seis_lightning.callback import SEISCallback
from seis_lightning.functional import (
    SEISWarning,
    jackknife_se,
    seis_combine_statistics,
    seis_from_statistics,
    seis_maps,
    seis_scores,
    seis_statistics,
)
from seis_lightning.layers import capture, layer_names, resolve_layers
from seis_lightning.metric import SEISMetric
from seis_lightning.probe import probe_images
from seis_lightning.scoring import ProbeResult, SEISProbe, score_model
from seis_lightning.transforms import GeometricTransform, RandomAffine, flip, parse_transform, rotate, scale, translate

__version__ = _version("seis-lightning")  # the one version is pyproject.toml's

__all__ = [
    "GeometricTransform",
    "ProbeResult",
    "RandomAffine",
    "SEISCallback",
    "SEISMetric",
    "SEISProbe",
    "SEISWarning",
    "capture",
    "flip",
    "jackknife_se",
    "layer_names",
    "parse_transform",
    "probe_images",
    "resolve_layers",
    "rotate",
    "scale",
    "score_model",
    "seis_combine_statistics",
    "seis_from_statistics",
    "seis_maps",
    "seis_scores",
    "seis_statistics",
    "translate",
]
