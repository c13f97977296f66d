"""Geometric transformations for SEIS probes, built on ``torchvision.transforms.v2.functional``.

A transformation is one geometric map applied identically to every probe image (spec,
"Transformations"): equivariance asks for one spatial map shared by all images. A random family,
such as the paper's random affine, is represented by ``num_draws`` fixed draws sampled once from
the caller's ``torch.Generator``; the global RNG streams are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF  # noqa: N812
from torch import Tensor

ImageMap = Callable[[Tensor], Tensor]
# The paper's random affine: rotation ±25°, shift ±10 % of the size, scale 0.9-1.1 (probe draws and augmentation).
PAPER_AFFINE = {"degrees": 25.0, "translate": (0.1, 0.1), "scale": (0.9, 1.1)}


@dataclass(frozen=True)
class Affine:
    """One fixed affine map of images ``[..., H, W]``: rotation (degrees), translation (fraction of the size), scale."""

    angle: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    shear: float = 0.0

    def __call__(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        shift = [round(self.translate[0] * width), round(self.translate[1] * height)]
        return TF.affine(
            images,
            angle=self.angle,
            translate=shift,
            scale=self.scale,
            shear=[self.shear, 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
        )


@dataclass(frozen=True)
class Flip:
    """A fixed mirror image: ``"horizontal"`` (left-right) or ``"vertical"``."""

    axis: str = "horizontal"

    def __call__(self, images: Tensor) -> Tensor:
        return TF.horizontal_flip(images) if self.axis == "horizontal" else TF.vertical_flip(images)


class GeometricTransform:
    """A named geometric transformation: one fixed map, or a random family of ``num_draws`` maps.

    Args:
        name: the name in logged tags, ``seis/<name>/<score>/<layer>``.
        maps: the fixed maps (for a deterministic transformation, a single one).
    """

    def __init__(self, name: str, maps: Sequence[ImageMap] = ()) -> None:
        if not name or "/" in name:
            raise ValueError(f"Expected a non-empty transformation name without '/', but got {name!r}.")
        self.name = name
        self._maps = list(maps)

    @property
    def num_draws(self) -> int:
        return len(self._maps)

    def draw(self, generator: torch.Generator) -> list[ImageMap]:
        """The fixed maps that represent this transformation (random families sample them here)."""
        return list(self._maps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, maps={self._maps!r})"


class RandomAffine(GeometricTransform):
    """The paper's random affine family, as ``num_draws`` fixed draws (default 4).

    Parameters follow ``torchvision.transforms.v2.RandomAffine``: an angle uniform in
    ``[-degrees, degrees]``, a translation uniform in ``[-t, t]`` of the width and height, and a
    scale uniform in ``scale``.

    Args:
        degrees: largest rotation, in degrees.
        translate: largest horizontal and vertical shift, as fractions of the image size.
        scale: range of the scale factor.
        num_draws: how many fixed maps represent the family.
        name: the name in logged tags.
    """

    def __init__(
        self,
        degrees: float = PAPER_AFFINE["degrees"],
        translate: tuple[float, float] = PAPER_AFFINE["translate"],
        scale: tuple[float, float] = PAPER_AFFINE["scale"],
        num_draws: int = 4,
        name: str = "random_affine",
    ) -> None:
        super().__init__(name)
        if degrees < 0:
            raise ValueError(f"Expected `degrees` >= 0, but got {degrees}.")
        if not all(0 <= t <= 1 for t in translate):
            raise ValueError(f"Expected `translate` fractions in [0, 1], but got {translate}.")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"Expected `scale` as (low, high) with 0 < low <= high, but got {scale}.")
        if num_draws < 1:
            raise ValueError(f"Expected `num_draws` >= 1, but got {num_draws}.")
        self.degrees, self.translate, self.scale, self._num_draws = degrees, tuple(translate), tuple(scale), num_draws

    @property
    def num_draws(self) -> int:
        return self._num_draws

    def draw(self, generator: torch.Generator) -> list[ImageMap]:
        u = torch.rand(self._num_draws, 4, generator=generator, dtype=torch.float64).tolist()
        return [
            Affine(
                angle=self.degrees * (2 * r[0] - 1),
                translate=(self.translate[0] * (2 * r[1] - 1), self.translate[1] * (2 * r[2] - 1)),
                scale=self.scale[0] + (self.scale[1] - self.scale[0]) * r[3],
            )
            for r in u
        ]


def rotate(angle: float) -> GeometricTransform:
    """Rotation by ``angle`` degrees (counter-clockwise), named ``rotate<angle>``."""
    return GeometricTransform(f"rotate{_number(angle)}", [Affine(angle=angle)])


def translate(x: float = 0.1, y: float = 0.0) -> GeometricTransform:
    """Shift by fractions ``x`` of the width and ``y`` of the height, named ``translate<x>_<y>``."""
    return GeometricTransform(f"translate{_number(x)}_{_number(y)}", [Affine(translate=(x, y))])


def scale(factor: float) -> GeometricTransform:
    """Zoom by ``factor`` about the centre, named ``scale<factor>``."""
    if factor <= 0:
        raise ValueError(f"Expected a positive scale factor, but got {factor}.")
    return GeometricTransform(f"scale{_number(factor)}", [Affine(scale=factor)])


def flip(axis: str = "horizontal") -> GeometricTransform:
    """Mirror image, named ``hflip`` or ``vflip``."""
    if axis not in ("horizontal", "vertical"):
        raise ValueError(f"Expected `axis` to be 'horizontal' or 'vertical', but got {axis!r}.")
    return GeometricTransform(f"{axis[0]}flip", [Flip(axis)])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


TRANSFORM_SPECS = "random_affine, rotate:<degrees>, translate:<x>[,<y>], scale:<factor>, hflip, vflip"


def parse_transform(spec: str | GeometricTransform) -> GeometricTransform:
    """A transformation from its short form, e.g. ``"random_affine"``, ``"rotate:30"``, ``"hflip"``.

    Raises:
        ValueError: for an unknown name or malformed arguments, listing the accepted forms.
    """
    if isinstance(spec, GeometricTransform):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"Expected a transformation name or a GeometricTransform, but got {type(spec).__name__}.")
    name, _, args = spec.partition(":")
    makers: dict[str, Callable[..., GeometricTransform]] = {
        "random_affine": RandomAffine,
        "rotate": rotate,
        "translate": translate,
        "scale": scale,
        "hflip": lambda: flip("horizontal"),
        "vflip": lambda: flip("vertical"),
    }
    if name not in makers:
        raise ValueError(f"Unknown transformation {spec!r}; expected one of: {TRANSFORM_SPECS}.")
    try:
        values = [float(v) for v in args.split(",")] if args else []
        if any(not math.isfinite(v) for v in values):
            raise ValueError
        return makers[name](*values)
    except (TypeError, ValueError) as error:
        detail = f": {error}" if str(error) else ""
        raise ValueError(f"Malformed transformation {spec!r}{detail}; expected one of: {TRANSFORM_SPECS}.") from None
