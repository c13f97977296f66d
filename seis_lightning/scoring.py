"""Score any ``torch.nn.Module``: the probe pass, with no Trainer.

:func:`score_model` is the one-call form; :class:`SEISProbe` holds a configuration (layers,
transformations drawn once, options) and scores a model as often as asked, which is what
:class:`~seis_lightning.SEISCallback` does at each validation.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn
from torch.profiler import record_function

from seis_lightning._checks import check_options
from seis_lightning.functional import SCORES, SCORES_AND_NULLS, SEISWarning, jackknife_se
from seis_lightning.layers import Features, OutputGetter, capture, default_layers, layer_names, resolve_layers
from seis_lightning.metric import SEISMetric
from seis_lightning.probe import InputGetter, as_images, check_images, probe_images
from seis_lightning.transforms import GeometricTransform, ImageMap, parse_transforms

Scores = dict[str, dict[str, dict[str, float]]]  # transform -> layer -> score -> value
ForwardFn = Callable[[nn.Module, Tensor], Any]
LOGGED = SCORES_AND_NULLS
STANDARD_ERRORS = tuple(f"{score}_se" for score in SCORES)


@dataclass
class ProbeResult:
    """What one probe pass found.

    Attributes:
        scores: ``{transform: {layer: {score: value}}}``: the three scores, their nulls, and with the
            jackknife their standard errors ``<score>_se``; a random family's scores are the mean over
            its draws.
        draws: ``{transform: {layer: [per-draw scores]}}``.
        layers: the scored layers in forward order.
        reasons: ``{layer: why}`` for layers whose scores are NaN because their output could not be
            read (all scores NaN), next to the metric's own ``reasons``.
        warnings: ``(layer, message)`` pairs of the SEIS warnings raised while computing.
    """

    scores: Scores
    draws: dict[str, dict[str, list[dict[str, float]]]]
    layers: list[str]
    reasons: dict[str, str] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)


class SEISProbe:
    """A SEIS configuration that scores models: layers, transformations (drawn once) and options.

    Args:
        layers: module names or patterns (``*`` within one name level, ``**`` across levels); ``None``:
            the model's ``seis_layers`` attribute, else its top-level blocks that output a new feature map.
        transforms: :class:`~seis_lightning.transforms.GeometricTransform` objects or short forms
            (``"random_affine"``, ``"rotate:30"``, ``"hflip"``...), or sweeps ``"rotate:0:60:20"``, one
            transformation per magnitude (see :func:`~seis_lightning.transforms.parse_transforms`).
            Default: the paper's random affine.
        batch_size: probe images per forward pass (at least 2, for the null pairing).
        keep: share of variance kept by the SVD denoising, in (0, 1].
        max_positions: larger maps are average-pooled to at most this many positions.
        seed: seed of the generator that draws random transformations (once, here).
        layout: ``"channels_first"`` or ``"channels_last"``, for all layers or per layer. ``None``: the
            model's ``seis_layout``, else what the model declares the timm way (``output_fmt = "NHWC"``
            for 4-D maps, ``num_prefix_tokens`` for ``[N, T, D]`` tokens), else channels first.
        num_prefix_tokens: leading class/register tokens dropped from ``[N, T, D]`` outputs, for all
            layers or per layer; ``None``: ``seis_num_prefix_tokens`` or timm's ``num_prefix_tokens``, else 0.
        output_getter: takes a layer's raw output (tuple, dict, ``ModelOutput``) to its feature map;
            one callable or a mapping per layer.
        forward_fn: ``forward_fn(model, images)`` runs the model; default ``model(images)``.
        precision: ``"float64"``, ``"float32"`` or ``"auto"`` Gram products (``SEIS_SPEC.md``, "Precision").
        jackknife_groups: 0 (off) or the number of delete-a-group jackknife groups (at least 2), which
            adds ``<score>_se`` to the scores.

    Raises:
        ValueError: for an option out of range or an unknown transformation.
    """

    def __init__(
        self,
        layers: Sequence[str] | str | None = None,
        transforms: Sequence[GeometricTransform | str] | GeometricTransform | str | None = None,
        *,
        batch_size: int = 64,
        keep: float = 0.99,
        max_positions: int = 1024,
        seed: int = 0,
        layout: str | Mapping[str, str] | None = None,
        num_prefix_tokens: int | Mapping[str, int] | None = None,
        output_getter: OutputGetter | Mapping[str, OutputGetter] | None = None,
        forward_fn: ForwardFn | None = None,
        precision: str = "auto",
        jackknife_groups: int = 0,
    ) -> None:
        check_options(
            batch_size=batch_size,
            keep=keep,
            max_positions=max_positions,
            layout=layout,
            num_prefix_tokens=num_prefix_tokens,
            precision=precision,
            jackknife_groups=jackknife_groups,
        )
        for name, value in (("output_getter", output_getter), ("forward_fn", forward_fn)):
            if (
                value is not None
                and not callable(value)
                and not (name == "output_getter" and isinstance(value, Mapping))
            ):
                raise ValueError(f"Expected `{name}` to be None or a callable, but got {value!r}.")
        self.layers = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
        if self.layers is not None and not self.layers:
            raise ValueError("Expected `layers` to name at least one module, or None for the default layers.")
        self.transforms = parse_transforms(transforms)  # a sweep "rotate:0:60:20" gives one per magnitude
        names = [t.name for t in self.transforms]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Expected at least one transformation with distinct names, but got {names}.")
        self.batch_size = batch_size
        self.keep = float(keep)
        self.max_positions = max_positions
        self.seed = seed
        self.layout = layout
        self.num_prefix_tokens = num_prefix_tokens
        self.output_getter = output_getter
        self.forward_fn = forward_fn
        self.precision = precision
        self.jackknife_groups = jackknife_groups
        generator = torch.Generator().manual_seed(seed)
        # Each draw of each transformation: (transform name, fixed map), sampled once.
        self.draws: list[tuple[str, ImageMap]] = [(t.name, g) for t in self.transforms for g in t.draw(generator)]

    def score(
        self,
        model: nn.Module,
        images: Tensor,
        *,
        rank: int = 0,
        world_size: int = 1,
        forward_fn: ForwardFn | None = None,
    ) -> ProbeResult:
        """One probe pass over ``images`` ``[N, C, H, W]``; the model is left as it was.

        Runs in eval mode under ``torch.no_grad()`` with the RNG streams saved and restored and every
        module's train/eval mode put back; hooks exist only during the pass. Under ``world_size > 1``
        each rank scores its share of the probe chunks, every rank runs the same number of forward
        passes (a rank with fewer chunks repeats one and discards its statistics, so models whose
        forward is a collective cannot deadlock), and the metrics sum the statistics across ranks.

        Raises:
            ValueError: for images that are not float ``[N, C, H, W]`` or a transformation that changes
                their shape.
        """
        images = check_images(images, "the probe images")
        forward = forward_fn or self.forward_fn or _call
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else images.device
        dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
        num_chunks = max(math.ceil(len(images) / self.batch_size), world_size)
        if device.type == "cuda" and not images.is_pinned():
            images = images.pin_memory()  # chunks below are views: copies to the GPU need no host sync
        chunks = images.tensor_split(num_chunks)[rank::world_size]
        passes = [(chunk, True) for chunk in chunks]
        passes += [(chunks[-1], False)] * (math.ceil(num_chunks / world_size) - len(chunks))
        auto = self.layers is None and getattr(model, "seis_layers", None) is None
        layers = default_layers(model) if self.layers is None else resolve_layers(model, self.layers)
        metrics: dict[str, SEISMetric] = {}
        reasons: dict[str, str] = {}
        order: dict[str, None] = {}
        modes = {module: module.training for module in model.modules()}
        try:
            with isolate_rng(include_cuda=True), torch.no_grad():
                model.eval()
                with capture(model, layers, output_getter=self.output_getter, new_maps_only=auto) as features:
                    for chunk, counted in passes:
                        x = chunk.to(device=device, dtype=dtype, non_blocking=True)
                        with record_function("seis.forward"):
                            a = self._forward(model, forward, x, features)
                            order.update(dict.fromkeys(features.order))  # forward order, unreadable layers too
                            bs = [
                                self._forward(model, forward, self._transformed(name, g, x), features)
                                for name, g in self.draws
                            ]
                        if not counted:
                            continue
                        for name in layers:
                            if name in reasons or (auto and name not in a and name not in a.errors):
                                continue  # default layers: a block that gives no new map is not one
                            problem = self._problem(name, a, bs)
                            if problem:
                                reasons[name] = problem
                                continue
                            if name not in metrics:
                                metrics[name] = self._metric(model, name, a[name]).to(device)
                            try:
                                with record_function("seis.statistics"):
                                    metrics[name].update(a[name], [b[name] for b in bs])
                            except ValueError as error:
                                reasons[name] = str(error)
        finally:
            for module, mode in modes.items():
                module.train(mode)
        if world_size > 1:
            _agree_across_ranks(metrics, layers, reasons, device)
        scored = [name for name in order if name in layers]
        scored += [name for name in layers if name not in order and (name in reasons or not auto)]
        with record_function("seis.compute"):
            return self._compute(metrics, scored, reasons)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _forward(model: nn.Module, forward: ForwardFn, x: Tensor, features: Features) -> Features:
        """One forward pass: the readable outputs, and in ``errors`` why the others cannot be read."""
        features.clear()
        forward(model, x)
        outputs = features.copy()
        for name, output in features.items():
            if output.ndim == 0 or output.shape[0] != x.shape[0]:
                del outputs[name]
                outputs.errors[name] = (
                    f"its output has shape {list(output.shape)}, whose first axis is not the batch of {x.shape[0]}"
                    " images"
                )
        return outputs

    @staticmethod
    def _transformed(name: str, image_map: ImageMap, x: Tensor) -> Tensor:
        tx = image_map(x)
        if tx.shape != x.shape:
            raise ValueError(
                f"Transformation {name!r} changed the image shape from {list(x.shape)} to {list(tx.shape)};"
                " SEIS compares activations of same-size images."
            )
        return tx

    def _problem(self, name: str, a: Features, bs: list[Features]) -> str | None:
        """Why layer ``name`` cannot be scored from this chunk, or ``None``."""
        for (transform, _), outputs in zip([("probe images", None), *self.draws], [a, *bs]):
            if name in outputs.errors:
                return outputs.errors[name]
            if name not in outputs:
                what = "the probe images" if transform == "probe images" else f"the images transformed by {transform!r}"
                return f"it did not run in the forward pass of {what}"
        for (transform, _), b in zip(self.draws, bs):
            if b[name].shape != a[name].shape:
                return (
                    f"it gives maps of shape {list(a[name].shape)} for the probe images but {list(b[name].shape)} for"
                    f" the images transformed by {transform!r}; SEIS compares maps of the same shape, so choose a"
                    " layer whose output shape does not depend on the image content"
                )
        return None

    def _metric(self, model: nn.Module, layer: str, output: Tensor) -> SEISMetric:
        layout, num_prefix_tokens = _declared_layout(model, layer, output, self.layout, self.num_prefix_tokens)
        return SEISMetric(
            num_transforms=len(self.draws),
            keep=self.keep,
            max_positions=self.max_positions,
            layout=layout,
            num_prefix_tokens=num_prefix_tokens,
            precision=self.precision,
            jackknife_groups=self.jackknife_groups,
        )

    def _compute(self, metrics: dict[str, SEISMetric], layers: list[str], reasons: dict[str, str]) -> ProbeResult:
        names = LOGGED + (STANDARD_ERRORS if self.jackknife_groups else ())
        result = ProbeResult({t.name: {} for t in self.transforms}, {t.name: {} for t in self.transforms}, layers)
        for layer in layers:
            if layer not in metrics:
                why = reasons.get(layer, "it produced no output in the probe pass")
                result.reasons[layer] = f"SEIS layer {layer!r} was not scored: {why}."
                for transform in result.scores:
                    result.scores[transform][layer] = {name: math.nan for name in names}
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SEISWarning)
                per_draw = metrics[layer].compute()
            result.warnings += [(layer, str(w.message)) for w in caught if issubclass(w.category, SEISWarning)]
            replicates: dict[str, dict[str, list[Tensor]]] = {}
            for (transform, _), one in zip(self.draws, per_draw):
                result.draws[transform].setdefault(layer, []).append({name: one[name] for name in LOGGED})
                for score in SCORES if self.jackknife_groups else ():
                    replicates.setdefault(transform, {}).setdefault(score, []).append(one["jackknife"][score])
            for transform, draws in result.draws.items():
                values = {name: sum(d[name] for d in draws[layer]) / len(draws[layer]) for name in LOGGED}
                for score, per_draw_replicates in replicates.get(transform, {}).items():
                    # the standard error of the family's mean: the jackknife of the draw-averaged replicates
                    values[f"{score}_se"] = jackknife_se(torch.stack(per_draw_replicates).mean(0))
                result.scores[transform][layer] = values
        return result


def _agree_across_ranks(
    metrics: dict[str, SEISMetric], layers: list[str], reasons: dict[str, str], device: torch.device
) -> None:
    """Keep only the layers that every rank can score: computing a metric is a collective (its states
    are summed over the ranks), so a layer that failed on one rank and is computed on another would
    leave the ranks' collectives mismatched, or waiting for ever."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    ready = torch.tensor([name in metrics for name in layers], dtype=torch.int32, device=device)
    dist.all_reduce(ready, op=dist.ReduceOp.MIN)
    for name, everywhere in zip(layers, ready.tolist()):
        if not everywhere and name in metrics:
            del metrics[name]
            reasons[name] = "another process could not score it (its warning says why)"


def _call(model: nn.Module, images: Tensor) -> Any:
    return model(images)


def _declared_layout(
    model: nn.Module, layer: str, output: Tensor, layout: Any, num_prefix_tokens: Any
) -> tuple[str, int]:
    """The layout and prefix tokens of one layer: the option, else what the model declares (``seis_*``
    attributes, or timm's ``output_fmt`` / ``num_prefix_tokens`` on the layer itself or its nearest owner).

    timm's ``num_prefix_tokens`` holds from the point where the class token is added: a token layer
    whose output has as many tokens as the owner's ``patch_embed.num_patches`` (the patch embedding
    itself) has none.
    """
    ndim = output.ndim
    parts, names = layer.split("."), layer_names(model)
    owners = [model] + [names.get(".".join(parts[:depth])) for depth in range(1, len(parts) + 1)]
    owners = [owner for owner in owners if owner is not None][::-1]  # the layer, then its nearest owner first

    def declared(attribute: str) -> Any:
        return next(
            (getattr(owner, attribute) for owner in owners if getattr(owner, attribute, None) is not None), None
        )

    chosen_layout = _per_layer(layout, layer) or _per_layer(declared("seis_layout"), layer)
    tokens = _per_layer(num_prefix_tokens, layer)
    if tokens is None:
        tokens = _per_layer(declared("seis_num_prefix_tokens"), layer)
    timm_tokens = declared("num_prefix_tokens")
    output_fmt = declared("output_fmt")
    nhwc = ndim == 4 and str(getattr(output_fmt, "value", output_fmt) or "").upper() == "NHWC"  # str or timm's Format
    if chosen_layout is None and (nhwc or (ndim == 3 and timm_tokens is not None)):
        chosen_layout = "channels_last"
    if tokens is None and isinstance(timm_tokens, int):
        patches = next((getattr(o.patch_embed, "num_patches", None) for o in owners if hasattr(o, "patch_embed")), None)
        before_class_token = ndim == 3 and chosen_layout == "channels_last" and output.shape[1] == patches
        tokens = 0 if before_class_token else timm_tokens
    return chosen_layout or "channels_first", int(tokens or 0) if ndim == 3 else 0


def _per_layer(option: Any, layer: str) -> Any:
    if isinstance(option, Mapping):
        return option.get(layer)
    return option


def score_model(
    model: nn.Module,
    data: Any,
    *,
    layers: Sequence[str] | str | None = None,
    transforms: Sequence[GeometricTransform | str] | GeometricTransform | str | None = None,
    num_samples: int | None = None,
    input_getter: InputGetter = None,
    **options: Any,
) -> Scores:
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
        options: the other options of :class:`SEISProbe` (``batch_size``, ``keep``, ``max_positions``,
            ``seed``, ``layout``, ``num_prefix_tokens``, ``output_getter``, ``forward_fn``, ``precision``,
            ``jackknife_groups``).

    Returns:
        ``{transform: {layer: {score: value}}}``, the mapping of :attr:`SEISCallback.scores`; layers in
        forward order. A layer that cannot be read has NaN scores and a warning saying why.

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
    result = probe.score(model, images)
    for reason in result.reasons.values():
        warnings.warn(reason, SEISWarning, stacklevel=2)
    for layer, message in dict.fromkeys(result.warnings):
        warnings.warn(f"SEIS layer {layer!r}: {message}", SEISWarning, stacklevel=2)
    return result.scores


def warning_kind(layer: str, message: str) -> tuple[str, str]:
    """A key for de-duplicating warnings by layer and kind: the message with its numbers blanked."""
    return layer, re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", message)
