"""The probe pass: :class:`SEISProbe` holds a configuration (layers, transformations drawn once, options) and
scores a model as often as asked, which is what :class:`~seis_lightning.SEISCallback` does at each validation
and :func:`~seis_lightning.standalone.score_model` does once.

Its parts live where their job is: the frozen model and forward passes in parts (:mod:`~seis_lightning.forward`),
chunks and rank agreement (:mod:`~seis_lightning.pass_plan`), the checks as it goes
(:mod:`~seis_lightning.pass_checks`), the statistics (:mod:`~seis_lightning.metric`), the scores from them
(:mod:`~seis_lightning.layer_scores`), the work counted and the progress bar (:mod:`~seis_lightning.progress`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from seis_lightning.forward import (
    ForwardFn,
    ForwardRun,
    MapReduction,
    call_model,
    forward_parts,
    frozen,
    in_context,
)
from seis_lightning.layer_scores import Family, compute_each, with_failed_transforms
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
from seis_lightning.pass_checks import failing_transforms, layer_problem, shape_change, transformed
from seis_lightning.pass_plan import Chunk, agree_across_ranks, max_chunk_size, pass_plan, probe_order
from seis_lightning.probe import check_images
from seis_lightning.progress import PassCost, advance, half_samples, progress_bar
from seis_lightning.results import ProbeResult, unscored_with_reasons
from seis_lightning.sweeps import Stride, aliasing_gaps, layer_stride
from seis_lightning.transforms import GeometricTransform, ImageMap, parse_transforms

log = logging.getLogger("seis_lightning")

# Probe images per chunk of a probe pass, by default. A chunk's reduced maps of the probe images stay
# for all its forward passes, and its statistics are taken in float64 at once, so the chunk, not the
# image size, sets the pass's peak above its sums: 16 instead of 64 lowered ResNet-18's at 224 px from
# about 1.4x to 1.2x a training epoch's, in the same CPU time (`bench/bench_probe_cost.py`).
BATCH_SIZE = 16


class SEISProbe:
    """A SEIS configuration that scores models: layers, transformations (drawn once) and options.

    Args:
        layers: module names or patterns (``*`` within one name level, ``**`` across levels); ``None``:
            the model's ``seis_layers`` attribute, else its top-level blocks that output a new feature map.
        transforms: :class:`~seis_lightning.transforms.GeometricTransform` objects or short forms
            (``"random_affine"``, ``"rotate:30"``, ``"hflip"``...), or sweeps ``"rotate:0:60:20"``, one
            transformation per magnitude (see :func:`~seis_lightning.transforms.parse_transforms`).
            Default: the paper's random affine.
        batch_size: probe images per chunk of the probe pass (at least 2; :data:`BATCH_SIZE`): the null
            pairs images within a chunk, and each chunk's statistics are added as one. It sets the pass's
            peak memory; the scores do not depend on it, the null only within its noise.
        forward_batch_size: images per forward pass; ``None``: as many as keep the largest captured
            output under 32 MiB (:data:`~seis_lightning.forward.FORWARD_BYTES`), at most ``batch_size``.
            The scores do not depend on it (the model runs in eval mode).
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
        batch_size: int = BATCH_SIZE,
        forward_batch_size: int | None = None,
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
        check_options(
            batch_size=batch_size,
            forward_batch_size=forward_batch_size,
            layout=layout,
            num_prefix_tokens=num_prefix_tokens,
            strides=strides,
        )
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
        self.forward_batch_size = forward_batch_size
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
        progress: bool | None = False,
        on_unscored: Callable[[dict[str, str]], None] | None = None,
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
            progress: a progress bar on stderr over the forward passes and the layers' scores: ``True``,
                ``False``, or ``None``: on a terminal only, for a large pass or one that lasts
                (:func:`~seis_lightning.progress.progress_bar`); on rank zero only.
            on_unscored: called once, after the first forward pass of the probe images and before the
                others, with ``{layer: why}`` for the layers that already cannot be scored (run twice,
                an output that is not a tensor, not run); not called when there are none.

        Before the passes, a large pass's work is logged at INFO (:class:`~seis_lightning.progress.PassCost`:
        forward passes, layers, Gram products and eigendecompositions, counted).

        Raises:
            ValueError: for images that are not float ``[N, C, H, W]``, or when every transformation
                changes their shape.
            RuntimeError: when the model's forward pass fails on the probe images (naming ``forward_fn``).
        """
        images = check_images(images, "the probe images")
        order = probe_order(len(images), self.seed)  # null partners that do not follow the data's order
        forward = in_context(forward_fn or self.forward_fn or call_model, forward_context)
        default_forward = forward_fn is None and self.forward_fn is None
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else images.device
        dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
        plan = pass_plan(len(images), self.batch_size, rank, world_size)

        def chunk_of(chunk: Chunk) -> Tensor:  # the chunk's images in probe order: no reordered copy of them all
            x = images.index_select(0, order[chunk.start : chunk.stop].to(images.device))
            if device.type == "cuda" and x.device.type == "cpu":
                x = x.pin_memory()  # copied to the GPU without a host sync
            return x.to(device=device, dtype=dtype, non_blocking=True)

        with frozen(model):
            first = chunk_of(plan[0])[:2]  # what the model does with images like these: two tell it
            failed = failing_transforms(self.draws, self.transforms, first)
            active = self._without(failed)
            reduce = MapReduction(model, self.layout, self.num_prefix_tokens, self.options.max_positions)
            run = ForwardRun(model, forward, default_forward, reduce)
            layers = self._layers(model, run, first)
            check_layer_keys("strides", self.strides, layers.names)
            largest_chunk = max_chunk_size(len(images), self.batch_size, world_size)
            progress = progress if rank == 0 else False

            def before_work(cost: PassCost, unscored: dict[str, str]) -> None:
                if rank == 0:
                    self._log_cost(cost, unscored)
                if on_unscored is not None and unscored:
                    on_unscored(unscored)

            metrics, reasons, cost = active._pass(
                model,
                run,
                layers,
                plan,
                chunk_of,
                first,
                device,
                reduce,
                largest_chunk,
                progress=progress,
                before_work=before_work,
            )
        if world_size > 1:
            agree_across_ranks(metrics, layers.names, reasons, device)
        scored = [name for name in run.order if name in layers.names]
        scored += [name for name in layers.names if name not in run.order and (name in reasons or not layers.auto)]
        if layers.auto:
            self._announce(model, scored, [name for name in layers.names if name not in scored])
        bar = progress_bar(progress, len(scored), "SEIS scores", "layer", large=cost.large)
        try:
            with record_function("seis.compute"):
                family = Family(active.transforms, active.draws, self.options.jackknife_groups)
                result = compute_each(metrics, scored, reasons, family, isolate=world_size == 1, bar=bar)
        finally:
            if bar is not None:
                bar.close()
        declared = {layer: Stride(stride, "") for layer, stride in self.strides.items()}
        computed = {layer: layer_stride(images.shape[-2:], reduce.map_sizes.get(layer)) for layer in scored}
        result.strides = {layer: declared.get(layer, computed[layer]) for layer in scored}
        result.aliasing = aliasing_gaps(
            result.scores, active.transforms, {k: v.stride for k, v in result.strides.items()}
        )
        return with_failed_transforms(
            unscored_with_reasons(result), self.transforms, failed, self.options.jackknife_groups
        )

    # ------------------------------------------------------------------ the pass, in parts

    def _pass(
        self,
        model: nn.Module,
        run: ForwardRun,
        layers: _Layers,
        plan: list[Chunk],
        chunk_of: Callable[[Chunk], Tensor],
        first: Tensor,
        device: torch.device,
        reduce: MapReduction,
        largest_chunk: int,
        progress: bool | None = False,
        before_work: Callable[[PassCost, dict[str, str]], None] | None = None,
    ) -> tuple[dict[str, SEISMetric], dict[str, str], PassCost]:
        """Every chunk of the plan through the model and its transformations; per-layer statistics, and the
        pass's work, counted after the first forward pass and handed to ``before_work`` with the layers that
        already cannot be scored (``{layer: why}``), before the other passes.

        Each transformation's pass is added to the statistics as soon as it has run and then dropped: only
        the reduced maps of the probe images and of one transformation are held at a time. Each pass runs
        in parts (:func:`~seis_lightning.forward.forward_parts`), sized by the largest output in a forward
        pass of ``first`` (two probe images; the one that found the default layers, where one did) unless
        ``forward_batch_size`` says the size."""
        metrics: dict[str, SEISMetric] = {}
        reasons: dict[str, str] = {}
        shapes: dict[str, tuple[Chunk, list[int]]] = {}
        cost, bar = PassCost(0, len(plan), len(self.draws), {}), None

        def fail(name: str, problem: str | None) -> None:
            if problem is not None:
                reasons[name] = problem
                metrics.pop(name, None)  # never partial scores reported as complete

        try:
            with capture(
                model, layers.names, output_getter=self.output_getter, new_maps_only=layers.auto, reduce=reduce
            ) as features:
                if self.forward_batch_size is None and not reduce.largest:
                    with record_function("seis.forward"):
                        run(first, features, record=False)
                run.parts = forward_parts(reduce.largest, largest_chunk, self.forward_batch_size)
                for index, chunk in enumerate(plan):
                    x = chunk_of(chunk)
                    with record_function("seis.forward"):
                        a = run(x, features)
                    # default layers: a block that gives no new map is not one
                    live = [name for name in layers.names if not layers.auto or name in a or name in a.errors]
                    live = [name for name in live if name not in reasons] if chunk.counted else []
                    for name in live:
                        fail(name, layer_problem(name, a, "the probe images") or shape_change(name, a, chunk, shapes))
                    if index == 0:
                        cost = self._cost(plan, a, [name for name in live if name not in reasons])
                        if before_work is not None:
                            before_work(cost, dict(reasons))
                        bar = progress_bar(progress, cost.forward_passes, "SEIS forward passes", "pass", cost.large)
                    advance(bar, f"batch {index + 1}/{len(plan)}, probe images")
                    for draw, (transform, image_map) in enumerate(self.draws):
                        with record_function("seis.forward"):
                            b = run(transformed(transform, image_map, x), features)
                        for name in [name for name in live if name not in reasons]:
                            problem = layer_problem(name, b, f"the images transformed by {transform!r}", a)
                            if problem is None:
                                problem = self._update(name, a, b, draw, chunk, metrics, device, reduce.pooled[name])
                            fail(name, problem)
                        del b
                        advance(bar, f"batch {index + 1}/{len(plan)}, {transform}")
        finally:
            if bar is not None:
                bar.close()
        return metrics, reasons, cost

    def _cost(self, plan: list[Chunk], a: Features, names: list[str]) -> PassCost:
        """The pass's work, counted from the first chunk's maps ``[N, C, S]`` of the layers ``names``."""
        return PassCost(
            images=sum(chunk.stop - chunk.start for chunk in plan if chunk.counted),
            chunks=len(plan),
            draws=len(self.draws),
            sizes={name: (int(a[name].shape[1]), int(a[name].shape[2])) for name in names},
            replicates=1 + half_samples(self.options.jackknife_groups),
        )

    def _log_cost(self, cost: PassCost, unscored: Mapping[str, str]) -> None:
        """A large pass's work at INFO, once per message (a callback's passes repeat it)."""
        message = str(cost) + (f" Layers that cannot be scored (NaN): {sorted(unscored)}." if unscored else "")
        if cost.large and message != getattr(self, "_estimated", None):
            self._estimated = message
            log.info(message)

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

    def _without(self, failed: Mapping[str, str]) -> SEISProbe:
        """This probe, without the transformations in ``failed`` (itself when there are none)."""
        if not failed:
            return self
        active = copy.copy(self)
        active.transforms = [t for t in self.transforms if t.name not in failed]
        active.draws = [(name, g) for name, g in self.draws if name not in failed]
        return active

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
            with capture(
                model, names, output_getter=self.output_getter, new_maps_only=True, reduce=run.reduce
            ) as features:
                run(x, features, record=False)  # measures the largest output (run.reduce), for the parts
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


@dataclass
class _Layers:
    names: list[str]
    auto: bool  # default layers: blocks that give no new map are left out
