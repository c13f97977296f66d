"""What the probe pass checks as it goes, each answer a reason that names the fix: a transformation that changes the
image shape (it loses only itself), and a layer whose output is missing, unreadable, or of another shape for the
transformed images or in a later chunk (it loses only itself: NaN scores and the reason)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from seis_lightning.layers import Features
from seis_lightning.pass_plan import Chunk
from seis_lightning.transforms import GeometricTransform, ImageMap

# How every reason for maps whose shape changes ends: what SEIS needs, and the fix.
COMPARES_ONE_SHAPE = (
    "SEIS compares maps of the same shape, so choose a layer whose output shape does not depend on the image content"
)


def transformed(name: str, image_map: ImageMap, x: Tensor) -> Tensor:
    """``image_map(x)``, the draw of transformation ``name``.

    Raises:
        ValueError: when it changed the image shape.
    """
    tx = image_map(x)
    if tx.shape != x.shape:
        raise ValueError(
            f"Transformation {name!r} changed the image shape from {list(x.shape[1:])} to {list(tx.shape[1:])};"
            " SEIS compares activations of same-size images."
        )
    return tx


def failing_transforms(
    draws: Sequence[tuple[str, ImageMap]], transforms: Sequence[GeometricTransform], x: Tensor
) -> dict[str, str]:
    """The transformations (of ``transforms``, drawn as ``draws``) that cannot be applied to images like ``x``,
    and why.

    Raises:
        Exception: the first transformation's error, when every transformation fails.
    """
    errors: dict[str, Exception] = {}
    for name, image_map in draws:
        if name not in errors:
            try:
                transformed(name, image_map, x)
            except Exception as error:
                errors[name] = error
    if len(errors) == len(transforms):
        raise next(iter(errors.values()))
    return {
        name: str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
        for name, error in errors.items()
    }


def layer_problem(name: str, outputs: Features, what: str, a: Features | None = None) -> str | None:
    """Why layer ``name`` cannot be scored from the pass of ``what`` (its ``outputs``; for a transformation,
    ``a`` the pass of the probe images), or ``None``."""
    if name in outputs.errors:
        return outputs.errors[name]
    if name not in outputs:
        return f"it did not run in the forward pass of {what}"
    if a is not None and outputs.shapes[name] != a.shapes[name]:
        return (
            f"it gives maps of shape {a.shapes[name]} for the probe images but {outputs.shapes[name]} for"
            f" {what}; {COMPARES_ONE_SHAPE}"
        )
    return None


def shape_change(name: str, a: Features, chunk: Chunk, shapes: dict[str, tuple[Chunk, list[int]]]) -> str | None:
    """Why layer ``name``'s maps cannot be summed with earlier chunks' (their shape changed), or ``None``."""
    shape = a.shapes[name]
    first, first_shape = shapes.setdefault(name, (chunk, shape))
    if first_shape[1:] == shape[1:]:
        return None
    return (
        f"its maps changed shape between probe batches, from {first_shape} (images {first.start}-{first.stop - 1})"
        f" to {shape} (images {chunk.start}-{chunk.stop - 1}); {COMPARES_ONE_SHAPE}"
    )
