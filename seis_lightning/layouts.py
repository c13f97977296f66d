"""The layout of a layer's output: channels first or last, and leading class/register tokens, as the
options say or as the model declares them (``seis_*`` attributes, timm's ``output_fmt`` and
``num_prefix_tokens``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from seis_lightning.layers import layer_names


def declared_layout(
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

    chosen_layout = per_layer(layout, layer) or per_layer(declared("seis_layout"), layer)
    tokens = per_layer(num_prefix_tokens, layer)
    if tokens is None:
        tokens = per_layer(declared("seis_num_prefix_tokens"), layer)
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


def per_layer(option: Any, layer: str) -> Any:
    if isinstance(option, Mapping):
        return option.get(layer)
    return option
