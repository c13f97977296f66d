"""``SEISCallback``: score chosen layers at validation epoch end and draw depth-wise curves."""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.seed import isolate_rng
from torch import Tensor, nn
from torch.profiler import record_function
from torch.utils.data import DataLoader, Dataset, default_collate

from seis_lightning.functional import LAYOUTS, SCORES, SEISWarning
from seis_lightning.metric import SEISMetric
from seis_lightning.plotting import custom_scalars_layout, depth_figure, heatmap_figure
from seis_lightning.transforms import GeometricTransform, ImageMap, RandomAffine, parse_transform

InputGetter = Callable[[Any], Tensor] | int | str | None
Scores = dict[str, dict[str, dict[str, float]]]  # transform -> layer -> score -> value
LOGGED = (*SCORES, *(f"{score}_null" for score in SCORES))
_IMAGE_KEYS = ("image", "images", "img", "x", "input", "inputs", "pixel_values")


class SEISCallback(Callback):
    """Score how chosen layers respond to geometric transformations, at validation epoch end.

    For every layer and transformation, the activations of a fixed probe set of validation images
    are compared with those of the transformed images (SEIS, arXiv 2602.04054; ``SEIS_SPEC.md``):
    ``equivariance`` (geometry kept, possibly moved), ``invariance`` (the layer no longer sees the
    transformation) and ``channel_invariance`` (same content per position, channels re-encoded),
    each next to its null baseline. Scores go to every logger as
    ``seis/<transform>/<score>/<layer>`` and ``seis/<transform>/<score>_null/<layer>`` with
    step = epochs trained (0 = before training); with a ``TensorBoardLogger`` also a depth-wise
    curve per epoch, layer x epoch heatmaps and a custom-scalars layout.

    The probe pass runs in eval mode under ``torch.no_grad()`` with the global RNG streams saved and
    restored, its forward hooks removed in a ``finally``: weights, gradients, train/eval modes and
    the training's random numbers are untouched.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> from seis_lightning import SEISCallback
        >>> seis = SEISCallback(layers=["conv1", "conv2"], transforms=["random_affine", "rotate:30"])
        >>> trainer = Trainer(callbacks=[seis], logger=False, enable_progress_bar=False)

    Args:
        layers: module names from ``named_modules()`` or patterns (``*`` within one name level,
            ``**`` across levels: ``"layer*"``, ``"encoder.*.conv2"``). ``None``: the module's
            ``seis_layers`` attribute if it has one, else its top-level blocks that output a new
            feature map, in forward order.
        transforms: transformations, each a :class:`~seis_lightning.transforms.GeometricTransform`
            or a short form (``"random_affine"``, ``"rotate:30"``, ``"translate:0.1,0"``,
            ``"scale:1.2"``, ``"hflip"``, ``"vflip"``). Default: the paper's random affine.
        num_samples: probe images, taken once from the start of the validation set and kept.
        batch_size: probe images per forward pass (at least 2, for the null pairing).
        every_n_epochs: score every n-th validation epoch (and always the last one).
        keep: share of variance kept by the SVD denoising, in (0, 1].
        max_positions: larger maps are average-pooled to at most this many positions.
        seed: seed of the callback's own generator, which draws random transformations once.
        input_getter: how to take the image tensor from a batch: ``None`` (a tensor, the first
            element of a tuple/list, or a dict's ``"image"``-like key), an index, a key, or a
            callable.
        probe_data: images ``[N, C, H, W]`` or a dataset to take them from, instead of the
            validation set.
        score_before_training: also score the untrained model at fit start (step 0).
        layout: ``"channels_first"`` or ``"channels_last"`` (tokens ``[N, T, D]``), for all layers
            or per layer; ``None``: the module's ``seis_layout`` attribute, else channels first.
        num_prefix_tokens: leading class/register tokens to drop, for all layers or per layer;
            ``None``: the module's ``seis_num_prefix_tokens`` attribute, else 0.
        strict: raise when the probe pass fails instead of warning and letting training go on.
        log_figures: draw figures and heatmaps to TensorBoard.

    Raises:
        ValueError: for an argument out of range, an unknown transformation, or (at setup) a layer
            name that matches no module, listing the closest names.
        MisconfigurationException: when no probe images can be found.
    """

    def __init__(
        self,
        layers: Sequence[str] | str | None = None,
        transforms: Sequence[GeometricTransform | str] | GeometricTransform | str | None = None,
        num_samples: int = 512,
        batch_size: int = 64,
        every_n_epochs: int = 1,
        keep: float = 0.99,
        max_positions: int = 1024,
        seed: int = 0,
        input_getter: InputGetter = None,
        probe_data: Tensor | Dataset | None = None,
        score_before_training: bool = True,
        layout: str | Mapping[str, str] | None = None,
        num_prefix_tokens: int | Mapping[str, int] | None = None,
        strict: bool = False,
        log_figures: bool = True,
    ) -> None:
        for name, value, low in (("num_samples", num_samples, 2), ("batch_size", batch_size, 2)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"Expected `{name}` to be an integer >= {low}, but got {value!r}.")
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"Expected `every_n_epochs` to be a positive integer, but got {every_n_epochs!r}.")
        if not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            raise ValueError(f"Expected `keep` in (0, 1], but got {keep!r}.")
        if not isinstance(max_positions, int) or max_positions < 1:
            raise ValueError(f"Expected `max_positions` to be a positive integer, but got {max_positions!r}.")
        if isinstance(layout, str) and layout not in LAYOUTS:
            raise ValueError(f"Expected `layout` to be one of {LAYOUTS} or a mapping per layer, but got {layout!r}.")
        if input_getter is not None and not isinstance(input_getter, (int, str)) and not callable(input_getter):
            raise ValueError(
                f"Expected `input_getter` to be None, an index, a key or a callable, got {input_getter!r}."
            )
        self.layers = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
        if self.layers is not None and not self.layers:
            raise ValueError("Expected `layers` to name at least one module, or None for the default layers.")
        if transforms is None:
            transforms = [RandomAffine()]
        elif isinstance(transforms, (str, GeometricTransform)):
            transforms = [transforms]
        self.transforms = [parse_transform(t) for t in transforms]
        names = [t.name for t in self.transforms]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Expected at least one transformation with distinct names, but got {names}.")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.every_n_epochs = every_n_epochs
        self.keep = float(keep)
        self.max_positions = max_positions
        self.seed = seed
        self.input_getter = input_getter
        self.probe_data = probe_data
        self.score_before_training = score_before_training
        self.layout = layout
        self.num_prefix_tokens = num_prefix_tokens
        self.strict = strict
        self.log_figures = log_figures
        generator = torch.Generator().manual_seed(seed)
        # Each draw of each transformation: (transform name, fixed map), sampled once.
        self._maps: list[tuple[str, ImageMap]] = [(t.name, g) for t in self.transforms for g in t.draw(generator)]
        self._probe: Tensor | None = None
        self._resolved: list[str] | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._layout_written = False
        self._warned: set[tuple[str, str]] = set()
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.layers is not None:
            self._resolved = _resolve_layers(pl_module, self.layers)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._probe is None:
            self._probe = self._collect_probe(trainer)
        if self.score_before_training and not self.history:
            self._run(trainer, pl_module, step=0)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            epochs = trainer.current_epoch + 1
            last = trainer.max_epochs is not None and epochs >= trainer.max_epochs
            if epochs % self.every_n_epochs and not last:
                return
        else:
            epochs = trainer.current_epoch
        self._run(trainer, pl_module, step=epochs)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "layers": self._resolved}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    # ------------------------------------------------------------------ results

    @property
    def scores(self) -> Scores:
        """The latest scores, ``{transform: {layer: {score: value}}}`` (empty before the first pass)."""
        return self.history[-1]["scores"] if self.history else {}

    # ------------------------------------------------------------------ the probe pass

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        if self._probe is None:
            self._probe = self._collect_probe(trainer)
        try:
            scores, draws = self.score(trainer, pl_module, step)
        except Exception as error:
            if self.strict:
                raise
            rank_zero_warn(
                f"SEISCallback: the probe pass at step {step} failed and was skipped; training goes on"
                f" (set strict=True to raise). {type(error).__name__}: {error}"
            )
            return
        self.history = [h for h in self.history if h["step"] != step]
        self.history.append({"step": step, "scores": scores, "draws": draws})
        self.history.sort(key=lambda h: h["step"])
        self._log(trainer, step, scores)

    def score(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int = 0) -> tuple[Scores, dict]:
        """Run one probe pass and return ``(scores, per-draw scores)``; the model is left as it was."""
        assert self._probe is not None
        modules = dict(pl_module.named_modules())
        auto = self._resolved is None and getattr(pl_module, "seis_layers", None) is None
        if self._resolved is None:
            self._resolved = (
                _resolve_layers(pl_module, list(pl_module.seis_layers)) if not auto else _candidate_layers(pl_module)
            )
        layers = self._resolved
        device = pl_module.device
        parameter = next(pl_module.parameters(), None)
        dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
        modes = {module: module.training for module in pl_module.modules()}
        captured: dict[str, Tensor] = {}
        order: list[str] = []
        metrics: dict[str, SEISMetric] = {}
        draw_names = [transform for transform, _ in self._maps]
        if device.type == "cuda" and not self._probe.is_pinned():
            self._probe = self._probe.pin_memory()  # chunks below are views: copies to the GPU need no host sync
        chunks = self._probe.tensor_split(max(math.ceil(len(self._probe) / self.batch_size), trainer.world_size))
        try:
            with isolate_rng(include_cuda=True), torch.no_grad():
                pl_module.eval()
                for name in layers:
                    self._handles.append(
                        modules[name].register_forward_hook(_capture_hook(name, captured, order, auto))
                    )
                for chunk in chunks[trainer.global_rank :: trainer.world_size]:
                    x = chunk.to(device=device, dtype=dtype, non_blocking=True)
                    with record_function("seis.forward"):
                        a = self._forward(trainer, pl_module, x, captured, layers)
                        bs = []
                        for transform, image_map in self._maps:
                            tx = image_map(x)
                            if tx.shape != x.shape:
                                raise ValueError(
                                    f"Transformation {transform!r} changed the image shape from {list(x.shape)}"
                                    f" to {list(tx.shape)}; SEIS compares activations of same-size images."
                                )
                            bs.append(self._forward(trainer, pl_module, tx, captured, layers))
                    if auto and not metrics:
                        layers = [name for name in dict.fromkeys(order) if name in a]
                        self._resolved = layers
                    for name in layers:
                        if name not in metrics:
                            metrics[name] = self._metric(pl_module, name).to(device)
                        transformed = _transformed_maps(name, a, bs, draw_names)
                        try:
                            with record_function("seis.statistics"):
                                metrics[name].update(a[name], transformed)
                        except ValueError as error:
                            raise ValueError(f"SEIS layer {name!r}: {error}") from None
                if order and not auto:
                    depth = {name: i for i, name in enumerate(dict.fromkeys(order))}
                    self._resolved = sorted(layers, key=lambda n: depth.get(n, len(depth)))
        finally:
            self._remove_hooks()
            for module, mode in modes.items():
                module.train(mode)
        with record_function("seis.compute"):
            return self._compute(metrics, step)

    def _metric(self, pl_module: pl.LightningModule, layer: str) -> SEISMetric:
        return SEISMetric(
            num_transforms=len(self._maps),
            keep=self.keep,
            max_positions=self.max_positions,
            layout=_per_layer(self.layout, getattr(pl_module, "seis_layout", None), layer, "channels_first"),
            num_prefix_tokens=_per_layer(
                self.num_prefix_tokens, getattr(pl_module, "seis_num_prefix_tokens", None), layer, 0
            ),
        )

    def _forward(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        x: Tensor,
        captured: dict[str, Tensor],
        layers: Sequence[str],
    ) -> dict[str, Tensor]:
        captured.clear()
        precision = trainer.precision_plugin
        with precision.forward_context():
            pl_module(precision.convert_input(x))
        missing = [name for name in layers if name not in captured]
        if missing and len(missing) == len(layers):
            raise RuntimeError(f"SEIS layers {missing} did not run in the model's forward pass.")
        for name, output in captured.items():
            if output.shape[0] != x.shape[0]:
                raise ValueError(
                    f"SEIS layer {name!r} output has shape {list(output.shape)}, whose first axis is not the"
                    f" batch of {x.shape[0]} images."
                )
        return dict(captured)

    def _compute(self, metrics: dict[str, SEISMetric], step: int) -> tuple[Scores, dict]:
        scores: Scores = {t.name: {} for t in self.transforms}
        draws: dict[str, dict[str, list[dict[str, float]]]] = {t.name: {} for t in self.transforms}
        for layer, metric in metrics.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", SEISWarning)
                results = metric.compute()
            for message in {str(w.message) for w in caught if issubclass(w.category, SEISWarning)}:
                if (layer, message) not in self._warned:  # once per layer and message, not every epoch
                    self._warned.add((layer, message))
                    rank_zero_warn(f"SEIS layer {layer!r}, after {step} epoch(s): {message}", category=SEISWarning)
            for (transform, _), result in zip(self._maps, results):
                draws[transform].setdefault(layer, []).append({name: result[name] for name in LOGGED})
            for transform, per_draw in draws.items():
                scores[transform][layer] = {
                    name: sum(d[name] for d in per_draw[layer]) / len(per_draw[layer]) for name in LOGGED
                }
        return scores, draws

    def _remove_hooks(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    # ------------------------------------------------------------------ probe images

    def _collect_probe(self, trainer: pl.Trainer) -> Tensor:
        source: Any = self.probe_data
        collate: Callable = default_collate
        if source is None:
            loader = _validation_loader(trainer)
            if loader is None:
                raise MisconfigurationException(
                    "SEISCallback needs probe images, but the Trainer has no validation dataloader (or"
                    " `limit_val_batches=0`). Pass `val_dataloaders` to `Trainer.fit`, use a datamodule with"
                    " `val_dataloader()`, or give `SEISCallback(probe_data=images_or_dataset)`."
                )
            source, collate = (loader.dataset, loader.collate_fn) if _is_map_style(loader.dataset) else (loader, None)
        with isolate_rng(include_cuda=True):
            images = self._take_images(source, collate)
        if images.shape[0] < 2:
            raise MisconfigurationException(
                f"SEISCallback found {images.shape[0]} probe image(s); it needs at least 2 (and better hundreds)."
            )
        if images.shape[0] < self.num_samples:
            rank_zero_warn(
                f"SEISCallback asked for num_samples={self.num_samples} probe images but the validation data"
                f" holds {images.shape[0]}; using those."
            )
        return images

    def _take_images(self, source: Any, collate: Callable | None) -> Tensor:
        if isinstance(source, Tensor):
            return _check_images(source[: self.num_samples], "probe_data")
        if collate is not None or _is_map_style(source):
            collate = collate or default_collate
            count = min(self.num_samples, len(source))
            parts = [
                self._images_of(collate([source[i] for i in range(start, min(start + self.batch_size, count))]))
                for start in range(0, count, self.batch_size)
            ]
        else:
            parts, count = [], 0
            for batch in source:
                parts.append(self._images_of(batch))
                count += parts[-1].shape[0]
                if count >= self.num_samples:
                    break
        if not parts:
            raise MisconfigurationException("SEISCallback found no probe images: the validation data is empty.")
        return torch.cat(parts)[: self.num_samples].cpu()

    def _images_of(self, batch: Any) -> Tensor:
        getter = self.input_getter
        try:
            if callable(getter):
                images = getter(batch)
            elif getter is not None:
                images = batch[getter]
            elif isinstance(batch, Tensor):
                images = batch
            elif isinstance(batch, (tuple, list)):
                images = batch[0]
            elif isinstance(batch, Mapping):
                key = next((k for k in _IMAGE_KEYS if k in batch), None)
                if key is None:
                    raise KeyError(f"none of {_IMAGE_KEYS} among the batch keys {list(batch)}")
                images = batch[key]
            else:
                raise TypeError(f"batches of type {type(batch).__name__} are not understood")
        except (KeyError, IndexError, TypeError) as error:
            raise MisconfigurationException(
                f"SEISCallback could not take the images from a validation batch ({error}); set `input_getter`"
                " to an index, a key or a callable that returns the image tensor."
            ) from None
        return _check_images(images, "the images of a validation batch")

    # ------------------------------------------------------------------ logging

    def _log(self, trainer: pl.Trainer, step: int, scores: Scores) -> None:
        flat = {
            f"seis/{transform}/{name}/{layer}": value
            for transform, by_layer in scores.items()
            for layer, values in by_layer.items()
            for name, value in values.items()
        }
        trainer.callback_metrics.update({key: torch.tensor(value) for key, value in flat.items()})
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=step)
        if self.log_figures:
            self._log_figures(trainer, step, scores)

    @rank_zero_only
    def _log_figures(self, trainer: pl.Trainer, step: int, scores: Scores) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                continue
            writer = logger.experiment
            if not self._layout_written:
                writer.add_custom_scalars(custom_scalars_layout([t.name for t in self.transforms]))
                self._layout_written = True
            for transform, by_layer in scores.items():
                writer.add_figure(f"seis/{transform}/depth", depth_figure(by_layer, f"{transform}, step {step}"), step)
                history = [(h["step"], h["scores"][transform]) for h in self.history if transform in h["scores"]]
                for score in SCORES:
                    figure = heatmap_figure(history, score, f"{score} ({transform})")
                    writer.add_figure(f"seis/{transform}/heatmap/{score}", figure, step)


# ---------------------------------------------------------------------- layer selection


def _pattern(pattern: str) -> re.Pattern[str]:
    """``*`` matches within one level of a dotted name, ``**`` across levels."""
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    regex = "".join({"**": ".*", "*": "[^.]*", "?": "[^.]"}.get(part, re.escape(part)) for part in parts)
    return re.compile(regex + r"\Z")


def _resolve_layers(module: nn.Module, patterns: Sequence[str]) -> list[str]:
    names = [name for name, _ in module.named_modules() if name]
    resolved: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"Expected layer names as strings, but got {pattern!r}.")
        matches = [name for name in names if _pattern(pattern).match(name)]
        if not matches:
            close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.4)
            hint = f" Closest names: {close}." if close else ""
            shown = names if len(names) <= 40 else [*names[:40], "..."]
            raise ValueError(
                f"SEIS layer {pattern!r} matches no module of {type(module).__name__}.{hint}"
                f" Names from named_modules(): {shown}"
            )
        resolved.extend(name for name in matches if name not in resolved)
    return resolved


def _candidate_layers(module: nn.Module) -> list[str]:
    """Top-level blocks (through single-child wrappers), excluding metrics."""
    prefix, current = "", module
    children = [(n, c) for n, c in current.named_children() if not _is_metric(c)]
    while len(children) == 1 and list(children[0][1].children()):
        prefix += children[0][0] + "."
        current = children[0][1]
        children = [(n, c) for n, c in current.named_children() if not _is_metric(c)]
    return [prefix + name for name, _ in children]


def _is_metric(module: nn.Module) -> bool:
    from torchmetrics import Metric, MetricCollection

    return isinstance(module, (Metric, MetricCollection))


def _capture_hook(name: str, captured: dict[str, Tensor], order: list[str], auto: bool) -> Callable:
    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        if not isinstance(output, Tensor):
            if auto:
                return
            kinds = f"{type(output).__name__}" + (
                f" of {[type(o).__name__ for o in output]}" if isinstance(output, (tuple, list)) else ""
            )
            raise TypeError(
                f"SEIS layer {name!r} ({type(module).__name__}) returned a {kinds}, not a tensor; choose a"
                f" submodule whose output is the feature map (its children: {[n for n, _ in module.named_children()]})."
            )
        if auto:
            keeps_shape = bool(args) and isinstance(args[0], Tensor) and args[0].shape == output.shape
            parameter_free = next(module.parameters(), None) is None
            if output.ndim < 2 or (parameter_free and keeps_shape):
                return  # not a new feature map: an activation, dropout or identity
        if name in captured:
            raise RuntimeError(
                f"SEIS layer {name!r} ran more than once in one forward pass; hook a module that runs once."
            )
        captured[name] = output.detach()
        order.append(name)

    return hook


def _transformed_maps(name: str, a: dict[str, Tensor], bs: list[dict[str, Tensor]], transforms: list[str]) -> list:
    """The maps of layer ``name`` for each transformation, checked against the maps of the originals."""
    if name not in a:
        raise RuntimeError(f"SEIS layer {name!r} did not run in the forward pass of the probe images.")
    for transform, b in zip(transforms, bs):
        if name not in b:
            raise RuntimeError(
                f"SEIS layer {name!r} did not run in the forward pass of the images transformed by {transform!r}."
            )
        if b[name].shape != a[name].shape:
            raise ValueError(
                f"SEIS layer {name!r} gives maps of shape {list(a[name].shape)} for the probe images but"
                f" {list(b[name].shape)} for the images transformed by {transform!r}; SEIS compares maps of the"
                " same shape, so choose a layer whose output shape does not depend on the image content."
            )
    return [b[name] for b in bs]


def _per_layer(option: Any, model_default: Any, layer: str, default: Any) -> Any:
    for value in (option, model_default):
        if isinstance(value, Mapping):
            if layer in value:
                return value[layer]
        elif value is not None:
            return value
    return default


# ---------------------------------------------------------------------- probe images


def _validation_loader(trainer: pl.Trainer) -> DataLoader | None:
    loaders = trainer.val_dataloaders
    if loaders is None and trainer.datamodule is not None:
        try:
            loaders = trainer.datamodule.val_dataloader()
        except (NotImplementedError, AttributeError, MisconfigurationException):
            loaders = None
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    return loaders


def _is_map_style(data: Any) -> bool:
    return isinstance(data, Dataset) and hasattr(data, "__len__") and hasattr(data, "__getitem__")


def _check_images(images: Any, what: str) -> Tensor:
    if not isinstance(images, Tensor):
        raise MisconfigurationException(
            f"SEISCallback expected {what} to be a tensor [N, C, H, W], but got {type(images).__name__};"
            " set `input_getter` to take the image tensor from the batch."
        )
    if images.ndim < 3 or not images.is_floating_point():
        raise MisconfigurationException(
            f"SEISCallback expected {what} as floating-point images [N, C, H, W] (as the model sees them),"
            f" but got shape {list(images.shape)} and dtype {images.dtype}."
        )
    return images
