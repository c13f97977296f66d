"""Finding layers by name and capturing their outputs, as ``torchvision``'s ``feature_extraction`` does.

- :func:`layer_names` lists the names a user can give (``named_modules()``, with ``torch.compile``'s
  ``_orig_mod`` wrappers left out, so a compiled block is named as the user knows it).
- :func:`resolve_layers` turns names and patterns into module names, with the closest names when
  one matches nothing; :func:`default_layers` gives the top-level blocks.
- :func:`capture` registers forward hooks that exist only inside its ``with`` block and yields the
  outputs ``{name: tensor}`` of one forward pass, in forward order.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

OutputGetter = Callable[[Any], Tensor]
_COMPILED = "_orig_mod"


def layer_names(model: nn.Module) -> dict[str, nn.Module]:
    """Every submodule by the dotted name a user knows it by (``torch.compile`` wrappers skipped)."""
    names: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not name or isinstance(module, _optimized_module_type()):
            continue  # the wrapper itself: its original module carries the same name below
        clean = ".".join(part for part in name.split(".") if part != _COMPILED)
        if clean:
            names.setdefault(clean, module)
    return names


def _optimized_module_type() -> type:
    from torch._dynamo.eval_frame import OptimizedModule

    return OptimizedModule


def _pattern(pattern: str) -> re.Pattern[str]:
    """``*`` matches within one level of a dotted name, ``**`` across levels, ``?`` one character."""
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    regex = "".join({"**": ".*", "*": "[^.]*", "?": "[^.]"}.get(part, re.escape(part)) for part in parts)
    return re.compile(regex + r"\Z")


def resolve_layers(model: nn.Module, patterns: Sequence[str] | str) -> list[str]:
    """Module names matching ``patterns`` (names or ``*``/``**`` patterns), in the order given.

    Raises:
        ValueError: for a pattern that matches no module, naming the closest names.
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise ValueError("Expected `layers` to name at least one module, or None for the default layers.")
    names = list(layer_names(model))
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
                f"SEIS layer {pattern!r} matches no module of {type(model).__name__}.{hint}"
                f" Names from named_modules(): {shown}"
            )
        resolved.extend(name for name in matches if name not in resolved)
    return resolved


def check_layer_keys(
    option: str, per_layer: Mapping[str, Any], layers: Sequence[str], what: str = "scored layers"
) -> None:
    """Refuse a key of the per-layer mapping ``option`` (``strides={"blocks.3": 16}``) that is not among
    ``layers`` (``what`` they are, for the message).

    Raises:
        ValueError: naming the option, the layer, the closest names and the layers there are.
    """
    layers = list(layers)
    for name in per_layer:
        if name in layers:
            continue
        close = difflib.get_close_matches(str(name), layers, n=3, cutoff=0.4)
        hint = f" Closest names: {close}." if close else ""
        shown = layers if len(layers) <= 40 else [*layers[:40], "..."]
        raise ValueError(
            f"`{option}` names layer {name!r}, which is not one of the {what}.{hint} Give it for one of them,"
            f" by its module name: {shown}."
        )


def default_layers(model: nn.Module) -> list[str]:
    """The model's ``seis_layers`` attribute, else its top-level blocks.

    The blocks are the children of the model, through wrappers with one child (a LightningModule
    holding ``self.model = resnet18()``); loss modules and metrics are not blocks, and a
    ``ModuleList``/``ModuleDict`` (a container, never called itself) stands for its entries.
    :func:`capture` with ``new_maps_only=True`` then drops blocks that do not output a new feature map
    (activations, dropout, identities, eval-mode BatchNorm), and lists in ``Features.containers`` the
    blocks whose output is a tuple or a dict, whose own blocks (:func:`blocks_of`) stand for them.
    """
    declared = getattr(_unwrap(model), "seis_layers", None)
    if declared is not None:
        return resolve_layers(model, list(declared))
    names = layer_names(model)
    prefix, children = "", _blocks(model)
    while len(children) == 1 and _blocks(children[0][1]):
        prefix += children[0][0] + "."
        children = _blocks(children[0][1])
    return [prefix + name for name, _ in children if prefix + name in names]


def blocks_of(model: nn.Module, name: str) -> list[str]:
    """The blocks of the module called ``name`` (as :func:`default_layers` finds them), by their full names."""
    return [f"{name}.{child}" for child, _ in _blocks(layer_names(model)[name])]


def _blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    blocks = []
    for name, child in _children(module):
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            blocks += [(f"{name}.{entry}", block) for entry, block in _blocks(child)]
        elif not isinstance(child, nn.modules.loss._Loss):
            blocks.append((name, child))
    return blocks


def _unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, _COMPILED, module) if isinstance(module, _optimized_module_type()) else module


def _children(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from torchmetrics import Metric, MetricCollection

    for name, child in _unwrap(module).named_children():
        if not isinstance(child, (Metric, MetricCollection)):
            yield name, _unwrap(child)


class Features(dict):
    """Outputs of the captured layers for one forward pass, ``{name: tensor}`` in forward order.

    ``errors`` holds, per layer, why its output could not be read (e.g. a tuple without
    ``output_getter``, a module that ran twice); such a layer is absent from the mapping. ``order``
    lists both kinds of layer in the order they ran. ``containers`` lists the layers whose output was
    a tuple or dict while capturing new maps only (see :func:`default_layers`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.errors: dict[str, str] = {}
        self.order: list[str] = []
        self.containers: list[str] = []
        self.calls: dict[str, int] = {}
        self.shapes: dict[str, list[int]] = {}  # each output's shape as the layer returned it

    def __setitem__(self, name: str, output: Tensor) -> None:
        super().__setitem__(name, output)
        self.order.append(name)

    def fail(self, name: str, reason: str) -> None:
        """Record why layer ``name`` could not be read in this pass."""
        if name not in self.order:
            self.order.append(name)
        self.errors[name] = reason

    def clear(self) -> None:
        super().clear()
        self.errors.clear()
        self.order.clear()
        self.containers.clear()
        self.calls.clear()
        self.shapes.clear()

    def copy(self) -> Features:
        """A snapshot of this pass (outputs, errors and order), kept when the next pass clears this one."""
        snapshot = Features()
        snapshot.update(self)
        snapshot.errors.update(self.errors)
        snapshot.order.extend(self.order)
        snapshot.containers.extend(self.containers)
        snapshot.shapes.update(self.shapes)
        return snapshot


def _fixed_affine(module: nn.Module) -> bool:
    """A BatchNorm in eval mode with running statistics: a fixed affine map of each channel of its input,
    no new feature map."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.training and module.track_running_stats


def _getter_of(output_getter: OutputGetter | Mapping[str, OutputGetter] | None, name: str) -> OutputGetter | None:
    if isinstance(output_getter, Mapping):
        return output_getter.get(name)
    return output_getter


def _describe(output: Any) -> str:
    kind = type(output).__name__
    if isinstance(output, Mapping):
        return f"{kind} with keys {list(output)}"
    if isinstance(output, (tuple, list)):
        return f"{kind} of {[type(item).__name__ for item in output]}"
    return kind


@contextmanager
def capture(
    model: nn.Module,
    layers: Sequence[str],
    *,
    output_getter: OutputGetter | Mapping[str, OutputGetter] | None = None,
    new_maps_only: bool = False,
    reduce: Callable[[str, Tensor], Tensor] | None = None,
) -> Iterator[Features]:
    """Capture the outputs of ``layers`` while the block runs; no hook survives it.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from seis_lightning.layers import capture
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
        >>> with capture(model, ["0", "2"]) as features:
        ...     _ = model(torch.zeros(2, 1, 5, 5))
        >>> {name: list(value.shape) for name, value in features.items()}
        {'0': [2, 4, 3, 3], '2': [2, 36]}

    Args:
        model: the module whose submodules are hooked.
        layers: names from :func:`layer_names` (see :func:`resolve_layers` for patterns).
        output_getter: for layers whose output is not a tensor (tuples, dicts, Hugging Face
            ``ModelOutput``): a callable taking the raw output and returning the feature map, or a
            mapping per layer.
        new_maps_only: skip outputs that are not a new feature map (fewer than 2 axes, or a module that
            keeps its input's shape and is parameter-free (activations, dropout) or an eval-mode BatchNorm,
            a fixed affine map of each channel).
        reduce: ``reduce(name, output)`` runs inside the hook, before any later operation of the
            forward pass can touch the output (an in-place ``ReLU(inplace=True)`` after the layer
            overwrites the tensor the layer returned), and what it returns is kept instead of the
            output: a reduced copy, which also keeps full-size maps from outliving the pass. A
            ``ValueError`` it raises (its message: why) or any other exception is that layer's error.
            ``None``: the outputs are cloned.

    Yields:
        :class:`Features`, filled by every forward pass inside the block (call ``clear()``
        between passes). Outputs are detached copies, as the layer returned them (``shapes``: their
        shapes before ``reduce``).

        A layer that runs more than once in one forward pass (a shared module) has no output and an
        error saying so: its maps would mix two depths.

    Raises:
        ValueError: for an unknown layer name.
    """
    modules = layer_names(model)
    unknown = [name for name in layers if name not in modules]
    if unknown:
        resolve_layers(model, unknown)  # raises with the closest names
    features = Features()

    def hook_for(name: str) -> Callable:
        getter = _getter_of(output_getter, name)

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            calls = features.calls[name] = features.calls.get(name, 0) + 1
            if calls > 1:
                dict.pop(features, name, None)
                features.fail(
                    name,
                    f"it ran {calls} times in one forward pass (a shared module); SEIS needs one map per image,"
                    " so choose a module that runs once, e.g. one that wraps the shared calls",
                )
                return
            if getter is not None:
                try:
                    output = getter(output)
                except Exception as error:  # a user's getter: report it for this layer only
                    features.fail(name, f"`output_getter` failed on its output ({type(error).__name__}: {error})")
                    return
            if not isinstance(output, Tensor):
                if new_maps_only and isinstance(output, (tuple, list, Mapping)):
                    features.containers.append(name)
                if not new_maps_only:
                    features.fail(
                        name,
                        f"{type(module).__name__} returned a {_describe(output)}, not a tensor; pass"
                        " `output_getter` (e.g. `lambda out: out[0]` or `lambda out: out.last_hidden_state`,"
                        " or a mapping per layer) to take the feature map from it",
                    )
                return
            if new_maps_only:
                keeps_shape = bool(args) and isinstance(args[0], Tensor) and args[0].shape == output.shape
                if output.ndim < 2 or (
                    keeps_shape and (next(module.parameters(), None) is None or _fixed_affine(module))
                ):
                    return
            output = output.detach()
            if reduce is None:
                features[name] = output.clone()
            else:
                try:
                    features[name] = reduce(name, output)
                except Exception as error:  # this layer only: the forward pass goes on
                    why = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
                    features.fail(name, why)
                    return
            features.shapes[name] = list(output.shape)

        return hook

    handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
    try:
        # Compiled graphs do not run hooks added after compilation: run them eagerly while capturing.
        with torch.compiler.set_stance("force_eager"):
            yield features
    finally:
        for handle in handles:
            handle.remove()
