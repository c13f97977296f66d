"""The forward passes of a probe pass: the model frozen as a pass needs it (:func:`frozen`), each pass
run and its captured outputs read (:class:`ForwardRun`), in parts small enough that the forward's
activations stay within a budget (:func:`forward_parts`), and what the capture hooks keep of an output
(:class:`MapReduction`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from seis_lightning.functional import seis_maps
from seis_lightning.layers import Features
from seis_lightning.layouts import declared_layout
from seis_lightning.pass_checks import COMPARES_ONE_SHAPE
from seis_lightning.probe import isolated_rng

ForwardFn = Callable[[nn.Module, Tensor], Any]

# A forward pass runs on at most as many images as keep the largest captured output of the model under
# this many bytes (spec, "A layer's output, as it left the layer"): the activations of a forward pass,
# not the probe's batch, set a probe pass's peak memory, and they grow with the image size.
FORWARD_BYTES = 32 * 2**20


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """The model as a probe pass needs it: eval mode, no gradients, the RNG streams (Python, NumPy,
    torch, CUDA) saved and restored; every module's train/eval mode put back afterwards, also when the
    pass raises."""
    modes = {module: module.training for module in model.modules()}
    try:
        with isolated_rng(include_cuda=True), torch.no_grad():
            model.eval()
            yield
    finally:
        for module, mode in modes.items():
            module.train(mode)


class MapReduction:
    """What the capture hooks keep of each layer's output: its maps ``[N, C, S]`` reduced to the position
    cap (:func:`~seis_lightning.functional.seis_maps`), a new tensor taken before any later in-place
    operation of the forward pass can change the output, and small enough that no pass's full-size maps
    outlive it. ``pooled`` says per layer whether the maps were reduced, ``map_sizes`` the height and
    width of its maps before (``None`` for vectors, tokens and other than two spatial axes); ``batch`` is
    the number of images of the current forward pass."""

    def __init__(self, model: nn.Module, layout: Any, num_prefix_tokens: Any, max_positions: int) -> None:
        self.model, self.max_positions = model, max_positions
        self.layout, self.num_prefix_tokens = layout, num_prefix_tokens
        self.batch = 0
        self.largest = 0.0  # bytes per image of the largest output seen
        self.layouts: dict[str, tuple[str, int]] = {}
        self.pooled: dict[str, bool] = {}
        self.map_sizes: dict[str, tuple[int, int] | None] = {}

    def __call__(self, name: str, output: Tensor) -> Tensor:
        if output.ndim == 0 or output.shape[0] != self.batch:
            raise ValueError(
                f"its output has shape {list(output.shape)}, whose first axis is not the batch of {self.batch} images"
            )
        self.largest = max(self.largest, output.numel() * output.element_size() / max(self.batch, 1))
        if not output.is_floating_point():
            raise ValueError(
                f"its output has dtype {output.dtype}, not floating point; SEIS compares real-valued maps"
                " (pass `output_getter=lambda out: out.float()` to score it as numbers)"
            )
        if name not in self.layouts:
            self.layouts[name] = declared_layout(self.model, name, output, self.layout, self.num_prefix_tokens)
        layout, num_prefix_tokens = self.layouts[name]
        if name not in self.map_sizes:
            spatial = output.shape[1:-1] if layout == "channels_last" else output.shape[2:]
            self.map_sizes[name] = tuple(spatial) if output.ndim == 4 else None
        with torch.autocast(output.device.type, enabled=False):
            maps, pooled = seis_maps(output, layout, num_prefix_tokens, self.max_positions, dtype=None)
        self.pooled[name] = self.pooled.get(name, False) or pooled
        if maps.untyped_storage().data_ptr() == output.untyped_storage().data_ptr():
            maps = maps.clone(memory_format=torch.contiguous_format)  # a view of the output: copy it now
        return maps


class ForwardRun:
    """Forward passes of one probe pass: the readable outputs of the captured layers, and in ``errors``
    why the others cannot be read; ``order`` collects the layers in the order they ran.

    ``parts``: each call runs the model on its images in this many parts (:func:`forward_parts`) and
    joins the captured maps, image by image as one pass would give them; a part left empty (a chunk
    with fewer images than parts) runs one image and drops it, so that every process runs as many
    forward passes (models whose forward is a collective). ``reduce``: the capture's reduction, told
    each part's batch size."""

    def __init__(
        self, model: nn.Module, forward: ForwardFn, default_forward: bool, reduce: MapReduction | None = None
    ) -> None:
        self.model, self.forward, self.default_forward = model, forward, default_forward
        self.reduce = reduce
        self.parts = 1
        self.order: dict[str, None] = {}

    def __call__(self, x: Tensor, features: Features, record: bool = True) -> Features:
        pieces = []
        for part in torch.tensor_split(x, self.parts) if self.parts > 1 else (x,):
            if len(part):
                pieces.append(self._one(part, features))
            else:
                self._one(x[:1], features)  # keeps the processes' forward passes in step; dropped
        outputs = pieces[0] if len(pieces) == 1 else _joined(pieces)
        if record:
            self.order.update(dict.fromkeys(outputs.order))  # forward order, unreadable layers too
        return outputs

    def _one(self, x: Tensor, features: Features) -> Features:
        features.clear()
        if self.reduce is not None:
            self.reduce.batch = len(x)
        try:
            self.forward(self.model, x)
        except Exception as error:
            how = (
                "If the model takes something other than one image tensor (a dict, a list of images, several"
                " inputs), pass `forward_fn=lambda model, images: model(...)` saying how to call it."
                if self.default_forward
                else "Check `forward_fn`."
            )
            raise RuntimeError(
                f"SEIS: the model's forward pass failed on probe images {list(x.shape)}"
                f" ({type(error).__name__}: {error}). {how}"
            ) from error
        return features.copy()


def _joined(pieces: list[Features]) -> Features:
    """The captured outputs of consecutive parts of one chunk as one forward pass of the chunk gives them:
    maps concatenated along the images; a layer unreadable in any part is unreadable."""
    joined = Features()
    for piece in pieces:
        for name in piece.order:
            if name not in joined.order:
                joined.order.append(name)
        joined.containers.extend(name for name in piece.containers if name not in joined.containers)
        for name, why in piece.errors.items():
            joined.errors.setdefault(name, why)
    for name in joined.order:
        if name in joined.errors:
            continue
        shapes = [piece.shapes.get(name) for piece in pieces]
        if any(name not in piece for piece in pieces):
            joined.errors[name] = "it did not run in the forward pass of every part of the probe images"
        elif len({tuple(shape[1:]) for shape in shapes}) > 1:
            joined.errors[name] = (
                f"it gives maps of shapes {sorted({tuple(shape) for shape in shapes})} for different probe images;"
                f" {COMPARES_ONE_SHAPE}"
            )
        else:
            dict.__setitem__(joined, name, torch.cat([piece[name] for piece in pieces]))
            joined.shapes[name] = [sum(shape[0] for shape in shapes), *shapes[0][1:]]
    return joined


def forward_parts(largest: float, batch_size: int, forward_batch_size: int | None) -> int:
    """In how many parts a chunk of ``batch_size`` probe images goes through the model: parts of at most
    ``forward_batch_size`` images; ``None``: as many images as keep the largest captured output (``largest``
    bytes per image) under :data:`FORWARD_BYTES`."""
    if forward_batch_size is None:
        forward_batch_size = max(1, int(FORWARD_BYTES // max(largest, 1.0)))
    return math.ceil(batch_size / min(forward_batch_size, batch_size))


def in_context(forward: ForwardFn, context: Callable[[], AbstractContextManager] | None) -> ForwardFn:
    if context is None:
        return forward

    def forward_in_context(model: nn.Module, images: Tensor) -> Any:
        with context():
            return forward(model, images)

    return forward_in_context


def call_model(model: nn.Module, images: Tensor) -> Any:
    return model(images)
