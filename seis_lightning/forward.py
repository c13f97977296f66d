"""The forward passes of a probe pass: the model frozen as a pass needs it (:func:`frozen`), each pass
run and its captured outputs read (:class:`ForwardRun`), and what the capture hooks keep of an output
(:class:`MapReduction`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from seis_lightning.functional import seis_maps
from seis_lightning.layers import Features
from seis_lightning.layouts import declared_layout
from seis_lightning.probe import isolated_rng

ForwardFn = Callable[[nn.Module, Tensor], Any]


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
        self.layouts: dict[str, tuple[str, int]] = {}
        self.pooled: dict[str, bool] = {}
        self.map_sizes: dict[str, tuple[int, int] | None] = {}

    def __call__(self, name: str, output: Tensor) -> Tensor:
        if output.ndim == 0 or output.shape[0] != self.batch:
            raise ValueError(
                f"its output has shape {list(output.shape)}, whose first axis is not the batch of {self.batch} images"
            )
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
    why the others cannot be read; ``order`` collects the layers in the order they ran."""

    def __init__(self, model: nn.Module, forward: ForwardFn, default_forward: bool) -> None:
        self.model, self.forward, self.default_forward = model, forward, default_forward
        self.order: dict[str, None] = {}

    def __call__(self, x: Tensor, features: Features, record: bool = True) -> Features:
        features.clear()
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
        outputs = features.copy()
        if record:
            self.order.update(dict.fromkeys(features.order))  # forward order, unreadable layers too
        return outputs


def in_context(forward: ForwardFn, context: Callable[[], AbstractContextManager] | None) -> ForwardFn:
    if context is None:
        return forward

    def forward_in_context(model: nn.Module, images: Tensor) -> Any:
        with context():
            return forward(model, images)

    return forward_in_context


def call_model(model: nn.Module, images: Tensor) -> Any:
    return model(images)
