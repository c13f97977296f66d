"""Score any ``torch.nn.Module``: the probe pass, with no Trainer.

:func:`score_model` is the one-call form; :class:`SEISProbe` holds a configuration (layers,
transformations drawn once, options) and scores a model as often as asked, which is what
:class:`~seis_lightning.SEISCallback` does at each validation.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from seis_lightning.forward import ForwardFn, ForwardRun, MapReduction, call_model, frozen, in_context
from seis_lightning.functional import SCORES, SEISWarning, family_se
from seis_lightning.layers import (
    Features,
    OutputGetter,
    blocks_of,
    capture,
    check_layer_keys,
    default_layers,
    resolve_layers,
)
from seis_lightning.metric import SEISMetric
from seis_lightning.options import SEISOptions, check_options
from seis_lightning.pass_plan import Chunk, agree_across_ranks, pass_plan, probe_order
from seis_lightning.probe import InputGetter, as_images, check_images, probe_images
from seis_lightning.results import LOGGED, STANDARD_ERRORS, ProbeResult, SEISScores, unscored_with_reasons
from seis_lightning.sweeps import Stride, aliasing_gaps, layer_stride, sweep_summaries, sweep_summary_reasons
from seis_lightning.transforms import GeometricTransform, ImageMap, parse_transforms

log = logging.getLogger("seis_lightning")


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
        max_positions: larger maps keep a fixed random subset of this many positions (spec, "Large maps").
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
        jackknife_groups: 0 (off) or the number of groups of probe images (at least 2) for the delete-half
            jackknife's standard errors ``<score>_se`` (spec, "Uncertainty").
        strides: ``{layer: total stride}`` in input pixels per map position, declared where input width over
            map width does not give it (unpadded convolutions, odd sizes, tokens ``[N, T, D]``, pooled
            vectors), e.g. ``{"blocks.3": 16}``; a declared stride replaces the computed one. For the
            aliasing gap of a ``shift`` sweep (spec, "Aliasing gap"); the scores do not use it.

    Raises:
        ValueError: for an option out of range, an unknown transformation, or (at scoring) a declared
            stride of a layer that is not scored.
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
        strides: Mapping[str, int | float] | None = None,
    ) -> None:
        check_options(batch_size=batch_size, layout=layout, num_prefix_tokens=num_prefix_tokens, strides=strides)
        # The numerics options, validated once; layout and prefix tokens may vary per layer (_metric).
        self.options = SEISOptions(
            keep=float(keep) if isinstance(keep, int) and not isinstance(keep, bool) else keep,
            max_positions=max_positions,
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
        self.seed = seed
        self.layout = layout
        self.num_prefix_tokens = num_prefix_tokens
        self.output_getter = output_getter
        self.forward_fn = forward_fn
        self.strides = dict(strides or {})
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
        forward_context: Callable[[], AbstractContextManager] | None = None,
    ) -> ProbeResult:
        """One probe pass over ``images`` ``[N, C, H, W]``; the model is left as it was.

        Runs inside :func:`frozen` (eval mode, ``torch.no_grad()``, RNG streams isolated, train/eval
        modes put back); hooks exist only during the pass. Under ``world_size > 1`` each rank scores
        its share of the probe chunks (:func:`pass_plan`), every rank runs the same number of forward
        passes (a rank with fewer chunks repeats one and discards its statistics, so models whose
        forward is a collective cannot deadlock), and the metrics sum the statistics across ranks.

        A layer that cannot be scored (its output unreadable, of another shape for transformed images
        or in a later chunk, its statistics failing) and a transformation that changes the image shape
        lose only themselves: NaN scores, and the reason in ``reasons`` / ``transform_reasons``.

        Args:
            model: the module to score.
            images: the probe images.
            rank: this process's rank, with ``world_size`` processes scoring the same images together.
            world_size: the number of processes.
            forward_fn: overrides the probe's ``forward_fn`` for this pass.
            forward_context: a context manager factory every forward pass runs in (a Trainer's precision
                plugin's ``forward_context``, for autocast).

        Raises:
            ValueError: for images that are not float ``[N, C, H, W]``, or when every transformation
                changes their shape.
            RuntimeError: when the model's forward pass fails on the probe images (naming ``forward_fn``).
        """
        images = check_images(images, "the probe images")
        images = images[probe_order(len(images), self.seed)]  # null partners that do not follow the data's order
        forward = in_context(forward_fn or self.forward_fn or call_model, forward_context)
        default_forward = forward_fn is None and self.forward_fn is None
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else images.device
        dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
        if device.type == "cuda" and not images.is_pinned():
            images = images.pin_memory()  # chunks below are views: copies to the GPU need no host sync
        plan = pass_plan(len(images), self.batch_size, rank, world_size)

        def chunk_of(chunk: Chunk) -> Tensor:
            return images[chunk.start : chunk.stop].to(device=device, dtype=dtype, non_blocking=True)

        with frozen(model):
            failed = self._failing_transforms(chunk_of(plan[0]))
            active = self._without(failed)
            run = ForwardRun(model, forward, default_forward)
            layers = self._layers(model, run, chunk_of(plan[0]))
            check_layer_keys("strides", self.strides, layers.names)
            reduce = MapReduction(model, self.layout, self.num_prefix_tokens, self.options.max_positions)
            metrics, reasons = active._pass(model, run, layers, plan, chunk_of, device, reduce)
        if world_size > 1:
            agree_across_ranks(metrics, layers.names, reasons, device)
        scored = [name for name in run.order if name in layers.names]
        scored += [name for name in layers.names if name not in run.order and (name in reasons or not layers.auto)]
        if layers.auto:
            self._announce(model, scored, [name for name in layers.names if name not in scored])
        with record_function("seis.compute"):
            result = active._compute_each(metrics, scored, reasons, isolate=world_size == 1)
        declared = {layer: Stride(stride, "") for layer, stride in self.strides.items()}
        computed = {layer: layer_stride(images.shape[-2:], reduce.map_sizes.get(layer)) for layer in scored}
        result.strides = {layer: declared.get(layer, computed[layer]) for layer in scored}
        result.aliasing = aliasing_gaps(
            result.scores, active.transforms, {k: v.stride for k, v in result.strides.items()}
        )
        return self._with_failed_transforms(unscored_with_reasons(result), failed)

    # ------------------------------------------------------------------ the pass, in parts

    def _pass(
        self,
        model: nn.Module,
        run: ForwardRun,
        layers: _Layers,
        plan: list[Chunk],
        chunk_of: Callable[[Chunk], Tensor],
        device: torch.device,
        reduce: MapReduction,
    ) -> tuple[dict[str, SEISMetric], dict[str, str]]:
        """Every chunk of the plan through the model and its transformations; per-layer statistics.

        Each transformation's pass is added to the statistics as soon as it has run and then dropped: only
        the reduced maps of the probe images and of one transformation are held at a time."""
        metrics: dict[str, SEISMetric] = {}
        reasons: dict[str, str] = {}
        shapes: dict[str, tuple[Chunk, list[int]]] = {}

        def fail(name: str, problem: str | None) -> None:
            if problem is not None:
                reasons[name] = problem
                metrics.pop(name, None)  # never partial scores reported as complete

        with capture(
            model, layers.names, output_getter=self.output_getter, new_maps_only=layers.auto, reduce=reduce
        ) as features:
            for chunk in plan:
                x = chunk_of(chunk)
                reduce.batch = len(x)
                with record_function("seis.forward"):
                    a = run(x, features)
                # default layers: a block that gives no new map is not one
                live = [name for name in layers.names if not layers.auto or name in a or name in a.errors]
                live = [name for name in live if name not in reasons] if chunk.counted else []
                for name in live:
                    fail(name, self._problem(name, a, "the probe images") or _shape_change(name, a, chunk, shapes))
                for draw, (transform, image_map) in enumerate(self.draws):
                    with record_function("seis.forward"):
                        b = run(self._transformed(transform, image_map, x), features)
                    for name in [name for name in live if name not in reasons]:
                        problem = self._problem(name, b, f"the images transformed by {transform!r}", a)
                        if problem is None:
                            problem = self._update(name, a, b, draw, chunk, metrics, device, reduce.pooled[name])
                        fail(name, problem)
                    del b
        return metrics, reasons

    def _update(
        self,
        name: str,
        a: Features,
        b: Features,
        draw: int,
        chunk: Chunk,
        metrics: dict[str, SEISMetric],
        device: torch.device,
        pooled: bool,
    ) -> str | None:
        """Add one chunk's statistics for transformation ``draw`` (maps ``[N, C, S]``, reduced in the hook) to
        layer ``name``'s metric; why it failed, or ``None``."""
        try:
            if name not in metrics:
                metrics[name] = SEISMetric(num_transforms=len(self.draws), options=self.options).to(device)
            with record_function("seis.statistics"):
                metrics[name].update(a[name], b[name], offset=chunk.start, draw=draw)
            metrics[name].pooled |= pooled
        except Exception as error:  # this layer's statistics only: the others go on
            images = f"probe images {chunk.start}-{chunk.stop - 1}"
            return f"its statistics failed on {images} ({type(error).__name__}: {error})"
        return None

    def _compute_each(
        self, metrics: dict[str, SEISMetric], layers: list[str], reasons: dict[str, str], isolate: bool
    ) -> ProbeResult:
        """:meth:`_compute` layer by layer, so that one layer whose computation fails loses only itself
        (in one process: across processes computing is a collective that every rank must reach)."""
        if not isolate:
            return self._compute(metrics, layers, reasons)
        result = ProbeResult({t.name: {} for t in self.transforms}, {t.name: {} for t in self.transforms}, layers)
        for layer in layers:
            try:
                one = self._compute({k: v for k, v in metrics.items() if k == layer}, [layer], reasons)
            except Exception as error:
                reasons[layer] = f"computing its scores failed ({type(error).__name__}: {error})"
                one = self._compute({}, [layer], reasons)
            for transform in result.scores:
                result.scores[transform].update(one.scores[transform])
                result.draws[transform].update(one.draws[transform])
            result.reasons.update(one.reasons)
            result.warnings += one.warnings
        return result

    def _failing_transforms(self, x: Tensor) -> dict[str, str]:
        """The transformations that cannot be applied to images like ``x``, and why.

        Raises:
            Exception: the first transformation's error, when every transformation fails.
        """
        errors: dict[str, Exception] = {}
        for name, image_map in self.draws:
            if name not in errors:
                try:
                    self._transformed(name, image_map, x)
                except Exception as error:
                    errors[name] = error
        if len(errors) == len(self.transforms):
            raise next(iter(errors.values()))
        return {
            name: str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
            for name, error in errors.items()
        }

    def _without(self, failed: Mapping[str, str]) -> SEISProbe:
        """This probe, without the transformations in ``failed`` (itself when there are none)."""
        if not failed:
            return self
        active = copy.copy(self)
        active.transforms = [t for t in self.transforms if t.name not in failed]
        active.draws = [(name, g) for name, g in self.draws if name not in failed]
        return active

    def _with_failed_transforms(self, result: ProbeResult, failed: Mapping[str, str]) -> ProbeResult:
        """``result`` with NaN scores for the transformations in ``failed``, in the order given."""
        if not failed:
            return result
        names = LOGGED + (STANDARD_ERRORS if self.options.jackknife_groups else ())
        nan = {layer: {name: math.nan for name in names} for layer in result.layers}
        result.scores = {t.name: result.scores.get(t.name, nan) for t in self.transforms}
        result.draws = {t.name: result.draws.get(t.name, {}) for t in self.transforms}
        result.transform_reasons = {
            name: f"SEIS transformation {name!r} was not scored: {why}" for name, why in failed.items()
        }
        return result

    def _layers(self, model: nn.Module, run: ForwardRun, x: Tensor) -> _Layers:
        """The layers to capture: the names given, or the default layers, with the blocks whose output is
        a tuple or a dict replaced by their own blocks (found by one forward pass of ``x``)."""
        if self.layers is not None or getattr(model, "seis_layers", None) is not None:
            names = default_layers(model) if self.layers is None else resolve_layers(model, self.layers)
            return _Layers(names, auto=False)
        cached = getattr(self, "_opened", None)
        if cached is not None and cached[0] == id(model):  # found at an earlier pass of this model
            return _Layers(cached[1], auto=True)
        names = default_layers(model)
        for _ in range(8):  # a few levels of nesting
            with capture(model, names, output_getter=self.output_getter, new_maps_only=True) as features:
                run(x, features, record=False)
            opened = {name: blocks_of(model, name) for name in features.containers}
            if not any(opened.values()):
                break
            names = [block for name in names for block in (opened.get(name) or [name])]
        self._opened = (id(model), names)
        return _Layers(names, auto=True)

    def _announce(self, model: nn.Module, scored: list[str], left: list[str]) -> None:
        message = f"SEIS default layers of {type(model).__name__}: {scored}"
        if left:
            message += f" (blocks left out, as they gave no new feature map: {left})"
        if message != getattr(self, "_announced", None):
            self._announced = message
            log.info(message + "; pass `layers` to choose others.")

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _transformed(name: str, image_map: ImageMap, x: Tensor) -> Tensor:
        tx = image_map(x)
        if tx.shape != x.shape:
            raise ValueError(
                f"Transformation {name!r} changed the image shape from {list(x.shape)} to {list(tx.shape)};"
                " SEIS compares activations of same-size images."
            )
        return tx

    @staticmethod
    def _problem(name: str, outputs: Features, what: str, a: Features | None = None) -> str | None:
        """Why layer ``name`` cannot be scored from the pass of ``what`` (its ``outputs``; for a transformation,
        ``a`` the pass of the probe images), or ``None``."""
        if name in outputs.errors:
            return outputs.errors[name]
        if name not in outputs:
            return f"it did not run in the forward pass of {what}"
        if a is not None and outputs.shapes[name] != a.shapes[name]:
            return (
                f"it gives maps of shape {a.shapes[name]} for the probe images but {outputs.shapes[name]} for"
                f" {what}; SEIS compares maps of the same shape, so choose a layer whose output shape does not"
                " depend on the image content"
            )
        return None

    def _compute(self, metrics: dict[str, SEISMetric], layers: list[str], reasons: dict[str, str]) -> ProbeResult:
        names = LOGGED + (STANDARD_ERRORS if self.options.jackknife_groups else ())
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
                for score in SCORES if self.options.jackknife_groups else ():
                    replicates.setdefault(transform, {}).setdefault(score, []).append(one["jackknife"][score])
            for transform, draws in result.draws.items():
                values = {name: sum(d[name] for d in draws[layer]) / len(draws[layer]) for name in LOGGED}
                for score, per_draw_replicates in replicates.get(transform, {}).items():
                    values[f"{score}_se"] = family_se(per_draw_replicates)
                result.scores[transform][layer] = values
        return result


@dataclass
class _Layers:
    names: list[str]
    auto: bool  # default layers: blocks that give no new map are left out


def _shape_change(name: str, a: Features, chunk: Chunk, shapes: dict[str, tuple[Chunk, list[int]]]) -> str | None:
    """Why layer ``name``'s maps cannot be summed with earlier chunks' (their shape changed), or ``None``."""
    shape = a.shapes[name]
    first, first_shape = shapes.setdefault(name, (chunk, shape))
    if first_shape[1:] == shape[1:]:
        return None
    return (
        f"its maps changed shape between probe batches, from {first_shape} (images {first.start}-{first.stop - 1})"
        f" to {shape} (images {chunk.start}-{chunk.stop - 1}); SEIS sums statistics over maps of one shape, so"
        " choose a layer whose output shape does not depend on the image content"
    )


def score_model(
    model: nn.Module,
    data: Any,
    *,
    layers: Sequence[str] | str | None = None,
    transforms: Sequence[GeometricTransform | str] | GeometricTransform | str | None = None,
    num_samples: int | None = None,
    input_getter: InputGetter = None,
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
        options: the other options of :class:`SEISProbe` (``batch_size``, ``keep``, ``max_positions``,
            ``seed``, ``layout``, ``num_prefix_tokens``, ``output_getter``, ``forward_fn``, ``precision``,
            ``jackknife_groups``, ``strides``).

    Returns:
        ``{transform: {layer: {score: value}}}``, the mapping of :attr:`SEISCallback.scores`; layers in
        forward order. A layer that cannot be read has NaN scores and a warning saying why. As a
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
    result = probe.score(model, images)
    for reason in [*result.reasons.values(), *result.transform_reasons.values()]:
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
