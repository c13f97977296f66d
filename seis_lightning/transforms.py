"""Geometric transformations for SEIS probes, built on ``torchvision.transforms.v2.functional``.

A transformation is one geometric map applied identically to every probe image (spec,
"Transformations"): equivariance asks for one spatial map shared by all images. A random family,
such as the paper's random affine, is represented by ``num_draws`` fixed draws sampled once from
the caller's ``torch.Generator``; the global RNG streams are never touched.

A magnitude sweep, ``"<name>:<start>:<stop>:<step>"`` (``rotate``, ``translate``, ``scale``, ``shift``), is one
transformation per magnitude, each named as its single form (``"rotate:0:60:20"``: ``rotate0``,
``rotate20``, ``rotate40``, ``rotate60``); transformations that share a ``family`` make up its curve.

Shifts (``shift`` in pixels, ``translate`` in fractions of the size) are applied exactly as asked, at any
fraction of a pixel: the band-limited shift of the image on a zero background (spec, "Shifts in pixels").
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
    """One fixed affine map of images ``[..., H, W]``: rotation (degrees), translation (fraction of the size,
    rounded to whole pixels as in ``torchvision``'s ``RandomAffine``; an exact shift is :class:`Shift`), scale."""

    angle: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    shear: float = 0.0

    def __call__(self, images: Tensor) -> Tensor:
        if self == Affine():
            return images.clone()  # magnitude 0: exactly the images, not a resampling of them
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
class Shift:
    """One fixed shift of images ``[..., H, W]`` by ``dx`` (right) and ``dy`` (down), in pixels or fractions.

    Exact at any fraction of a pixel (spec, "Shifts in pixels"): each axis is the Whittaker-Shannon
    (band-limited, sinc) interpolation of the image on a zero background, sampled ``d`` pixels over,
    ``out[j] = sum_n x[n] sinc(j - d - n)``; a whole number of pixels (to 1e-9, the rounding of a fraction
    times the size) is the zero-filled translation itself and 0 is the identity.

    Example:
        >>> import torch
        >>> Shift(1.0)(torch.tensor([[1.0, 2.0, 3.0]])).tolist()  # one pixel right, a zero coming in
        [[0.0, 1.0, 2.0]]
        >>> [round(v, 4) for v in Shift(0.5)(torch.tensor([[0.0, 1.0, 0.0, 0.0]]))[0].tolist()]
        [-0.2122, 0.6366, 0.6366, -0.2122]

    Args:
        dx: the horizontal shift, positive to the right.
        dy: the vertical shift, positive downwards.
        unit: ``"pixels"`` of the input, or ``"fraction"`` of the width (``dx``) and height (``dy``).
    """

    dx: float = 0.0
    dy: float = 0.0
    unit: str = "pixels"

    def __post_init__(self) -> None:
        if self.unit not in ("pixels", "fraction"):
            raise ValueError(f"Expected `unit` 'pixels' or 'fraction', but got {self.unit!r}.")

    def __call__(self, images: Tensor) -> Tensor:
        if self.dx == 0 and self.dy == 0:
            return images.clone()  # exactly the images, not a resampling of them
        height, width = images.shape[-2:]
        dx, dy = (self.dx * width, self.dy * height) if self.unit == "fraction" else (self.dx, self.dy)
        return _shift_axis(_shift_axis(images, dx, -1), dy, -2)


def _shift_axis(images: Tensor, pixels: float, dim: int) -> Tensor:
    """``images`` shifted by ``pixels`` along ``dim`` (-1 or -2), zeros coming in (see :class:`Shift`)."""
    size = images.shape[dim]
    if abs(pixels - round(pixels)) < 1e-9:  # whole pixels (a fraction times the size, to its rounding)
        pixels = round(pixels)
    if pixels == 0:
        return images
    if isinstance(pixels, int):  # the sinc at whole pixels is a translation: copy, no rounding, NaNs kept local
        step = pixels
        moved = torch.zeros_like(images)
        if abs(step) < size:
            kept = images.narrow(dim, max(-step, 0), size - abs(step))
            moved.narrow(dim, max(step, 0), size - abs(step)).copy_(kept)
        return moved
    # sinc(k - d) for k = j - n: sin(pi (k - d)) = -(-1)^k sin(pi d), with d reduced mod 2 for an exact sine
    k = torch.arange(size, dtype=torch.float64)[:, None] - torch.arange(size, dtype=torch.float64)
    sine = math.sin(math.pi * (pixels - 2 * math.floor(pixels / 2)))
    kernel = -(1 - 2 * (k.remainder(2))) * sine / (math.pi * (k - pixels))  # [j, n]
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    kernel = kernel.to(device=images.device, dtype=work.dtype)
    moved = work @ kernel.T if dim == -1 else kernel @ work
    return moved.to(images.dtype)


@dataclass(frozen=True)
class Flip:
    """A fixed mirror image: ``"horizontal"`` (left-right) or ``"vertical"``."""

    axis: str = "horizontal"

    def __call__(self, images: Tensor) -> Tensor:
        return TF.horizontal_flip(images) if self.axis == "horizontal" else TF.vertical_flip(images)


class GeometricTransform:
    """A named geometric transformation: one fixed map, or a random family of ``num_draws`` maps.

    Calling it on a batch ``[..., H, W]`` applies one map to every image: the fixed map, or for a
    family one draw picked with ``generator`` (torch's default generator when ``None``).

    Example:
        >>> import torch
        >>> T = GeometricTransform("mirror", [torch.fliplr])
        >>> T(torch.arange(4.0).reshape(1, 2, 2)).tolist()
        [[[2.0, 3.0], [0.0, 1.0]]]

    Args:
        name: the name in logged tags, ``seis/<name>/<score>/<layer>``.
        maps: the fixed maps (for a deterministic transformation, a single one), each a callable
            from images ``[..., H, W]`` to images of the same shape.
        family: what the transformation is one magnitude of (``"rotate"``), for sweeps; ``None``: none.
        magnitude: its magnitude within ``family`` (degrees, fraction of the width, scale factor).
    """

    def __init__(
        self,
        name: str,
        maps: Sequence[ImageMap] = (),
        *,
        family: str | None = None,
        magnitude: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"Expected a non-empty transformation name without '/', but got {name!r}.")
        if not all(callable(m) for m in maps):
            raise ValueError(f"Expected the maps of {name!r} to be callables on images, but got {list(maps)!r}.")
        if (family is None) != (magnitude is None):
            raise ValueError(f"Expected both `family` and `magnitude` or neither, but got {family!r}, {magnitude!r}.")
        self.name = name
        self.family = family
        self.magnitude = None if magnitude is None else float(magnitude)
        self._maps = tuple(maps)

    @property
    def maps(self) -> tuple[ImageMap, ...]:
        """The fixed maps (empty for a random family, whose maps :meth:`draw` samples)."""
        return self._maps

    @property
    def num_draws(self) -> int:
        return len(self._maps)

    def draw(self, generator: torch.Generator | None) -> list[ImageMap]:
        """The fixed maps that represent this transformation (random families sample them here)."""
        return list(self._maps)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``images`` ``[..., H, W]`` under one map of this transformation, the same for every image."""
        maps = self.draw(generator)
        if not maps:
            raise ValueError(f"Transformation {self.name!r} has no maps to apply.")
        pick = 0 if len(maps) == 1 else int(torch.randint(len(maps), (1,), generator=generator))
        return maps[pick](images)

    def __repr__(self) -> str:
        sweep = "" if self.family is None else f", family={self.family!r}, magnitude={self.magnitude!r}"
        return f"{type(self).__name__}(name={self.name!r}, maps={self._maps!r}{sweep})"


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

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``images`` ``[..., H, W]`` under one affine map drawn with ``generator``, the same for every image."""
        return self._draw(1, generator)[0](images)

    def draw(self, generator: torch.Generator | None) -> list[ImageMap]:
        return self._draw(self._num_draws, generator)

    def _draw(self, num_draws: int, generator: torch.Generator | None) -> list[ImageMap]:
        u = torch.rand(num_draws, 4, generator=generator, dtype=torch.float64).tolist()
        return [
            Affine(
                angle=self.degrees * (2 * r[0] - 1),
                translate=(self.translate[0] * (2 * r[1] - 1), self.translate[1] * (2 * r[2] - 1)),
                scale=self.scale[0] + (self.scale[1] - self.scale[0]) * r[3],
            )
            for r in u
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(degrees={self.degrees!r}, translate={self.translate!r}, scale={self.scale!r},"
            f" num_draws={self.num_draws!r}, name={self.name!r})"
        )


def rotate(angle: float) -> GeometricTransform:
    """Rotation by ``angle`` degrees, clockwise on the image as displayed (``torchvision`` affine's convention), named
    ``rotate<angle>``."""
    return GeometricTransform(f"rotate{_number(angle)}", [Affine(angle=angle)], family="rotate", magnitude=angle)


def translate(x: float = 0.1, y: float = 0.0) -> GeometricTransform:
    """Shift by fractions ``x`` of the width and ``y`` of the height, exactly (``x * width`` pixels, not rounded:
    :class:`Shift`), named ``translate<x>_<y>``; its sweep is of ``x`` (``y = 0``)."""
    name, family = f"translate{_number(x)}_{_number(y)}", "translate" if y == 0 else None
    maps = [Shift(x, y, unit="fraction")]
    return GeometricTransform(name, maps, family=family, magnitude=x if family else None)


def shift(dx: float = 1.0, dy: float = 0.0) -> GeometricTransform:
    """Shift by ``dx`` pixels right and ``dy`` pixels down, exactly at any fraction (:class:`Shift`), named
    ``shift<dx>_<dy>``; its sweep ``shift:<start>:<stop>:<step>`` is of ``dx`` in pixels (``dy = 0``).

    Example:
        >>> t = shift(1.5)
        >>> t.name, t.family, t.magnitude
        ('shift1.5_0', 'shift', 1.5)
    """
    name, family = f"shift{_number(dx)}_{_number(dy)}", "shift" if dy == 0 else None
    return GeometricTransform(name, [Shift(dx, dy)], family=family, magnitude=dx if family else None)


def scale(factor: float) -> GeometricTransform:
    """Zoom by ``factor`` about the centre, named ``scale<factor>``."""
    if factor <= 0:
        raise ValueError(f"Expected a positive scale factor, but got {factor}.")
    return GeometricTransform(f"scale{_number(factor)}", [Affine(scale=factor)], family="scale", magnitude=factor)


def flip(axis: str = "horizontal") -> GeometricTransform:
    """Mirror image, named ``hflip`` or ``vflip``."""
    if axis not in ("horizontal", "vertical"):
        raise ValueError(f"Expected `axis` to be 'horizontal' or 'vertical', but got {axis!r}.")
    return GeometricTransform(f"{axis[0]}flip", [Flip(axis)])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


TRANSFORM_SPECS = (
    "random_affine, rotate:<degrees>, translate:<x>[,<y>] (fractions of the size), shift:<dx>[,<dy>] (pixels),"
    " scale:<factor>, hflip, vflip, or a sweep <rotate|translate|scale|shift>:<start>:<stop>:<step>"
)
SWEEPS: dict[str, Callable[[float], GeometricTransform]] = {
    "rotate": rotate,
    "translate": translate,
    "scale": scale,
    "shift": shift,
}
MAX_SWEEP = 100  # magnitudes in one sweep: more is a typo (a step of 0.01 for 1), and as many probe passes


def parse_transform(spec: str | GeometricTransform) -> GeometricTransform:
    """A transformation from its short form, e.g. ``"random_affine"``, ``"rotate:30"``, ``"hflip"``.

    Raises:
        ValueError: for an unknown name or malformed arguments, listing the accepted forms; for a
            callable, naming the fix (``GeometricTransform(name, [fn])``).
    """
    if isinstance(spec, GeometricTransform):
        return spec
    if callable(spec):
        raise ValueError(
            f"Expected a transformation name or a GeometricTransform, but got the callable {spec!r}. Give it a name"
            " for the logged tags: GeometricTransform('my_map', [fn]) (from seis_lightning.transforms), where fn"
            " maps images [N, C, H, W] to images of the same shape."
        )
    if not isinstance(spec, str):
        raise ValueError(
            f"Expected a transformation name or a GeometricTransform, but got {type(spec).__name__} {spec!r};"
            f" the names are: {TRANSFORM_SPECS}."
        )
    name, _, args = spec.partition(":")
    makers: dict[str, Callable[..., GeometricTransform]] = {
        "random_affine": RandomAffine,
        **SWEEPS,
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
        hint = " (a sweep gives several: use parse_transforms)" if args.count(":") == 2 else ""
        raise ValueError(
            f"Malformed transformation {spec!r}{detail}{hint}; expected one of: {TRANSFORM_SPECS}."
        ) from None


def parse_transforms(
    specs: Sequence[str | GeometricTransform] | str | GeometricTransform | None,
) -> list[GeometricTransform]:
    """Transformations from short forms, a sweep ``"<name>:<start>:<stop>:<step>"`` giving one per magnitude.

    ``None`` gives the paper's random affine.

    Example:
        >>> [t.name for t in parse_transforms(["hflip", "rotate:0:60:20"])]
        ['hflip', 'rotate0', 'rotate20', 'rotate40', 'rotate60']
        >>> [t.name for t in parse_transforms("translate:0:0.3:0.1")]
        ['translate0_0', 'translate0.1_0', 'translate0.2_0', 'translate0.3_0']

    Raises:
        ValueError: see :func:`parse_transform`; for a sweep with ``step <= 0``, ``stop < start`` or more
            than 100 magnitudes.
    """
    if specs is None:
        return [RandomAffine()]
    if isinstance(specs, (str, GeometricTransform)) or callable(specs):
        specs = [specs]
    transforms: list[GeometricTransform] = []
    for spec in specs:
        is_sweep = isinstance(spec, str) and spec.count(":") == 3
        transforms += _sweep(spec) if is_sweep else [parse_transform(spec)]
    return transforms


def sweep_magnitudes(start: float, stop: float, step: float) -> list[float]:
    """``start, start + step, ...`` up to ``stop`` (included when a whole number of steps away, to 1e-9)."""
    count = math.floor((stop - start) / step + 1e-9) + 1
    return [round(start + k * step, 10) + 0.0 for k in range(count)]


def _sweep(spec: str) -> list[GeometricTransform]:
    name, *args = spec.split(":")
    if name not in SWEEPS:
        raise ValueError(
            f"Unknown sweep {spec!r}: sweeps are of {', '.join(SWEEPS)}; expected one of: {TRANSFORM_SPECS}."
        )
    try:
        start, stop, step = (float(v) for v in args)
    except ValueError:
        raise ValueError(f"Malformed sweep {spec!r}; expected <name>:<start>:<stop>:<step> with numbers.") from None
    if not all(math.isfinite(v) for v in (start, stop, step)) or step <= 0 or stop < start:
        raise ValueError(f"Malformed sweep {spec!r}; expected finite numbers with step > 0 and stop >= start.")
    magnitudes = sweep_magnitudes(start, stop, step)
    if len(magnitudes) > MAX_SWEEP:
        raise ValueError(
            f"Sweep {spec!r} has {len(magnitudes)} magnitudes (at most {MAX_SWEEP}, each a probe pass);"
            " take a larger step."
        )
    try:
        return [SWEEPS[name](magnitude) for magnitude in magnitudes]
    except ValueError as error:
        raise ValueError(f"Malformed sweep {spec!r}: {error}") from None
