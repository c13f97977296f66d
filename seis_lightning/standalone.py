"""Score any ``torch.nn.Module`` in one call, with no Trainer: :func:`score_model` builds a
:class:`~seis_lightning.scoring.SEISProbe`, takes the probe images from whatever holds them, runs one probe pass
and warns about what it could not score."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from seis_lightning.functional import SEISWarning
from seis_lightning.options import check_options
from seis_lightning.probe import InputGetter, as_images, check_images, probe_images
from seis_lightning.results import SEISScores
from seis_lightning.scoring import SEISProbe
from seis_lightning.sweeps import sweep_summaries, sweep_summary_reasons
from seis_lightning.transforms import GeometricTransform


def score_model(
    model: nn.Module,
    data: Any,
    *,
    layers: Sequence[str] | str | None = None,
    transforms: Sequence[GeometricTransform | str] | GeometricTransform | str | None = None,
    num_samples: int | None = None,
    input_getter: InputGetter = None,
    progress: bool | None = None,
    **options: Any,
) -> SEISScores:
    """SEIS scores of ``model``'s layers on the images of ``data``, with no Trainer.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from seis_lightning import score_model
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> images = torch.rand(64, 3, 6, 6)
        >>> scores = score_model(model, images, layers=["1", "3"], transforms=["hflip"], precision="float64")
        >>> {layer: round(values["equivariance"], 3) for layer, values in scores["hflip"].items()}  # pointwise: moved
        {'1': 1.0, '3': 1.0}
        >>> scores["hflip"]["1"]["invariance"] < 0.5  # ...but not in place
        True

    Args:
        model: any module; its train/eval modes, weights, gradients and RNG streams are left as they were.
        data: the probe images as the model sees them: a tensor or numpy array ``[N, C, H, W]``, a list of
            image tensors ``[C, H, W]`` of one shape, a map-style ``Dataset``, a ``DataLoader`` or any
            iterable of batches (the images taken from each item or batch by ``input_getter``).
        layers: see :class:`SEISProbe`.
        transforms: see :class:`SEISProbe`.
        num_samples: how many probe images, spread evenly over ``data`` as
            :class:`~seis_lightning.SEISCallback` takes them (:func:`~seis_lightning.probe_images`;
            the first ones of an iterable). ``None``: every image of a tensor, array or list, and 512 (the
            callback's default) from a dataset, dataloader or iterable.
        input_getter: how to take the images from an item or batch: ``None`` (a tensor, the first element
            of a tuple or list, or a dict's ``"image"``-like key), an index, a key, or a callable.
        progress: a progress bar on stderr over the forward passes and the layers' scores: ``True``,
            ``False``, or ``None``: on a terminal only, shown from the start for a large pass and otherwise
            once the pass has lasted 2 s (:func:`~seis_lightning.progress.progress_bar`).
        options: the other options of :class:`SEISProbe` (``batch_size``, ``forward_batch_size``, ``keep``,
            ``max_positions``, ``seed``, ``layout``, ``num_prefix_tokens``, ``output_getter``, ``forward_fn``,
            ``precision``, ``jackknife_groups``, ``strides``).

    Before the long work: the layers that cannot be scored (found by the first forward pass: a module
    that runs twice, an output that is not a tensor, a layer that does not run) are named in one warning
    each with the reason, and a large pass's work is logged at INFO (forward passes, layers, Gram products
    and eigendecompositions, counted; :class:`~seis_lightning.progress.PassCost`).

    Returns:
        ``{transform: {layer: {score: value}}}``, the mapping of :attr:`SEISCallback.scores`; layers in
        forward order. A layer that cannot be read has NaN scores and a warning saying why (once: at the
        start when the first forward pass shows it). As a
        :class:`~seis_lightning.results.SEISScores`, it also carries the sweeps' half-way magnitudes
        (``.sweeps``, ``.sweep_reasons``), each layer's stride (``.strides``), the transformations scored
        (``.transforms``) and, with a ``shift`` sweep, its aliasing gap (``.aliasing``; drawn by
        :func:`~seis_lightning.plotting.aliasing_figure`).

    Raises:
        ProbeError: (a ``ValueError``) when the images cannot be taken from ``data`` or are not float
            ``[N, C, H, W]``; the message names the fix.
    """
    check_options(num_samples=num_samples)
    if input_getter is not None and not isinstance(input_getter, (int, str)) and not callable(input_getter):
        raise ValueError(f"Expected `input_getter` to be None, an index, a key or a callable, got {input_getter!r}.")
    probe = SEISProbe(layers, transforms, **options)
    what = "`data`"
    images = as_images(data, what)
    if isinstance(images, Tensor) and num_samples is None:
        images = check_images(images, what)
    else:
        count = num_samples or (len(images) if isinstance(images, Tensor) else 512)
        images = probe_images(images, count, input_getter=input_getter, what=what, batch_size=probe.batch_size)
    said: set[str] = set()

    def name_up_front(reasons: dict[str, str]) -> None:
        for layer, why in reasons.items():
            said.add(f"SEIS layer {layer!r} was not scored: {why}.")  # the result's reason, as _compute words it
            # stacklevel 6: this function, before_work and _pass of SEISProbe.score, score, score_model, the caller
            warnings.warn(f"SEIS layer {layer!r} cannot be scored (NaN scores): {why}.", SEISWarning, stacklevel=6)

    result = probe.score(model, images, progress=progress, on_unscored=name_up_front)
    for reason in [*result.reasons.values(), *result.transform_reasons.values()]:
        if reason not in said:
            warnings.warn(reason, SEISWarning, stacklevel=2)
    for layer, message in dict.fromkeys(result.warnings):
        warnings.warn(f"SEIS layer {layer!r}: {message}", SEISWarning, stacklevel=2)
    summaries = sweep_summaries("", result.scores, probe.transforms)  # keys "/sweep_<family>/..."
    reasons = sweep_summary_reasons("", result.scores, probe.transforms)
    return SEISScores(
        result.scores,
        result,
        {key.lstrip("/"): value for key, value in summaries.items()},
        {key.lstrip("/"): value for key, value in reasons.items()},
        probe.transforms,
    )
