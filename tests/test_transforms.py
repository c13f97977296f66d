"""Transformations: callable on a batch, a repr of public attributes only, and errors that name the fix."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision.transforms.v2.functional as TF  # noqa: N812

from seis_lightning import SEISCallback, score_model
from seis_lightning.transforms import (
    Affine,
    Flip,
    GeometricTransform,
    RandomAffine,
    Shift,
    flip,
    parse_transform,
    rotate,
    scale,
    shift,
    translate,
)
from tests.conftest import digits_images

TRANSFORMS = [rotate(30), rotate(0), translate(0.2, 0.1), scale(1.25), flip("horizontal"), flip("vertical")]
TRANSFORMS += [RandomAffine(num_draws=3), GeometricTransform("mirror", [Flip("horizontal"), Flip("vertical")])]
TRANSFORMS += [shift(1.5, -0.5), shift(2)]


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 2, 12, 12, generator=torch.Generator().manual_seed(0))


def test_fixed_transformations_are_their_map_on_a_batch(images):
    torch.testing.assert_close(flip("horizontal")(images), images.flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(flip("vertical")(images), images.flip(-2), rtol=0, atol=0)
    # 90° about the centre of an even grid lands on pixel centres; clockwise as displayed (torchvision's affine)
    torch.testing.assert_close(rotate(90)(images), images.rot90(-1, dims=(-2, -1)), rtol=0, atol=1e-5)
    assert torch.equal(rotate(0)(images), images)  # magnitude 0 is exactly the identity
    assert torch.equal(translate(0, 0)(images), images) and torch.equal(scale(1)(images), images)
    shifted = translate(0.25)(images)  # 3 pixels to the right, zeros coming in
    torch.testing.assert_close(shifted[..., 3:], images[..., :-3], rtol=0, atol=1e-5)
    assert shifted[..., :3].abs().max() == 0


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.name)
def test_every_image_gets_the_same_map(transform, images):
    together = transform(images, generator=torch.Generator().manual_seed(7))
    for k in range(len(images)):
        alone = transform(images[k : k + 1], generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(together[k : k + 1], alone, rtol=0, atol=1e-6)
    assert together.shape == images.shape


def test_random_family_draws_from_the_generator_given_else_torch_s_default(images):
    family = RandomAffine()
    first, again = (family(images, torch.Generator().manual_seed(3)) for _ in range(2))
    other = family(images, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.allclose(first, other)
    # one draw is the first of the probe's draws from the same generator
    probe_map = family.draw(torch.Generator().manual_seed(3))[0]
    torch.testing.assert_close(first, probe_map(images), rtol=0, atol=0)
    torch.manual_seed(5)
    from_default = family(images)
    torch.manual_seed(5)
    assert torch.equal(from_default, family(images))


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.name)
def test_repr_names_public_attributes_with_their_values(transform):
    """Each ``key=value`` of the repr is an attribute of the object holding that value."""
    shown = repr(transform)
    assert shown.startswith(f"{type(transform).__name__}(") and "_maps" not in shown
    keys = re.findall(r"(?:\(|, )(\w+)=", shown.split("maps=")[0] + shown.split("maps=(")[-1].split(")")[-1])
    fields = eval(shown, {type(transform).__name__: lambda **kw: kw, "Affine": Affine, "Flip": Flip, "Shift": Shift})
    assert set(keys) <= set(fields)
    for key, value in fields.items():
        assert not key.startswith("_")
        assert getattr(transform, key) == value, key


def test_maps_are_public():
    assert rotate(30).maps == (Affine(angle=30),)
    assert RandomAffine().maps == () and RandomAffine().num_draws == 4


CALLABLE_FIX = "GeometricTransform('my_map', [fn])"


@pytest.mark.parametrize(
    "make",
    [
        lambda t: SEISCallback(transforms=t),
        lambda t: score_model(torch.nn.Conv2d(1, 4, 3), digits_images(8, size=12), transforms=t),
        lambda t: parse_transform(t[0]),
    ],
    ids=["SEISCallback", "score_model", "parse_transform"],
)
def test_a_callable_transform_gets_the_fix(make):
    with pytest.raises(ValueError) as error:
        make([lambda x: x.flip(-1)])
    assert CALLABLE_FIX in str(error.value) and "seis_lightning.transforms" in str(error.value)


def test_the_fix_works():
    images, model = digits_images(32, size=12), torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))
    named = score_model(model, images, layers="0", transforms=[GeometricTransform("my_map", [lambda x: x.flip(-1)])])
    assert named["my_map"] == score_model(model, images, layers="0", transforms=["hflip"])["hflip"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("", [torch.fliplr]), "non-empty transformation name"),
        (("a/b", [torch.fliplr]), "without '/'"),
        (("mirror", [3]), "callables on images"),
    ],
)
def test_geometric_transform_checks_its_arguments(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GeometricTransform(*arguments)


# Shifts in pixels (spec, "Transformations", "Shifts in pixels"): the band-limited (Whittaker-Shannon) shift of
# the image on a zero background, exact at integers and at 0.
def _impulse(column: int = 10, width: int = 28, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    x = torch.zeros(1, 1, 28, width, dtype=dtype)
    x[..., 14, column] = 1.0
    return x


def _centroid(row: torch.Tensor) -> float:
    return float((row * torch.arange(row.shape[-1], dtype=row.dtype)).sum() / row.sum())


@pytest.mark.parametrize("pixels", [0.5, 1.5, 2.5, -0.5, -2.5, 1.25])
def test_a_shift_moves_an_impulse_by_the_pixels_asked(pixels):
    """An impulse at column 10 becomes the sinc about 10 + pixels (to 1e-12); at half-integers its centroid over
    the even-width row is 10 + pixels to 1e-9 (the sinc's alternating tails cancel in pairs)."""
    moved = shift(pixels)(_impulse())
    row = moved[0, 0, 14]
    torch.testing.assert_close(
        row, torch.sinc(torch.arange(28.0, dtype=torch.float64) - 10 - pixels), rtol=0, atol=1e-12
    )
    if (2 * pixels) % 2 == 1:
        assert _centroid(row) == pytest.approx(10 + pixels, abs=1e-9)
    assert moved[0, 0, torch.arange(28) != 14].abs().max() == 0  # a horizontal shift leaves the other rows alone


def test_a_vertical_shift_moves_rows():
    moved = shift(0, 1.5)(_impulse())
    assert _centroid(moved[0, 0, :, 10]) == pytest.approx(14 + 1.5, abs=1e-9)
    torch.testing.assert_close(shift(0.5, 1.5)(_impulse()), shift(0, 1.5)(shift(0.5)(_impulse())), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("dx", "dy"), [(1, 0), (2, 0), (3, 0), (-2, 1), (0, -3), (5, 4), (30, 0)])
def test_integer_shifts_are_zero_filled_translations(dx, dy, images):
    expected = torch.zeros_like(images)
    height, width = images.shape[-2:]
    rows, columns = slice(max(dy, 0), height + min(dy, 0)), slice(max(dx, 0), width + min(dx, 0))
    if dx < width and dy < height:
        expected[..., rows, columns] = images[..., max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)]
    torch.testing.assert_close(shift(dx, dy)(images), expected, rtol=0, atol=1e-6)
    # the same fill as the project's other maps (torchvision's affine: zeros coming in)
    affine = TF.affine(images, angle=0.0, translate=[dx, dy], scale=1.0, shear=[0.0, 0.0])
    torch.testing.assert_close(shift(dx, dy)(images), affine, rtol=0, atol=1e-5)


def test_shift_zero_is_exactly_the_identity_and_dtypes_are_kept(images):
    assert torch.equal(shift(0)(images), images) and torch.equal(shift(0, 0)(images.double()), images.double())
    moved32, moved64 = shift(0.5, -1.5)(images), shift(0.5, -1.5)(images.double())
    assert moved32.dtype == torch.float32 and moved64.dtype == torch.float64
    torch.testing.assert_close(moved32.double(), moved64, rtol=0, atol=1e-6)


def test_r26_translate_applies_the_fraction_of_the_width_asked_not_whole_pixels():
    """r26: translate:<px/28>,0 on a 28-pixel impulse moved it by 0, 1, 2, 2, 3 px for 0.5, 1, 1.5, 2.5, 3."""
    for pixels in (0.5, 1.0, 1.5, 2.5, 3.0):
        transform = parse_transform(f"translate:{pixels / 28},0")
        moved = transform(_impulse(dtype=torch.float32))
        assert _centroid(moved[0, 0, 14].double()) - 10 == pytest.approx(pixels, abs=1e-4), transform.name
        assert (transform.name, transform.family) == (f"translate{pixels / 28:g}_0", "translate")
        assert transform.magnitude == pytest.approx(pixels / 28, abs=1e-15)
    torch.testing.assert_close(translate(0.5 / 28)(_impulse()), shift(0.5)(_impulse()), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("spec", "name", "maps", "sweep"),
    [
        ("shift:1.5", "shift1.5_0", (Shift(1.5, 0.0),), ("shift", 1.5)),
        ("shift:-2,0.5", "shift-2_0.5", (Shift(-2.0, 0.5),), (None, None)),
        ("shift:0,0", "shift0_0", (Shift(),), ("shift", 0.0)),
        ("translate:0.1,0.2", "translate0.1_0.2", (Shift(0.1, 0.2, unit="fraction"),), (None, None)),
    ],
)
def test_shift_specs(spec, name, maps, sweep):
    transform = parse_transform(spec)
    assert (transform.name, transform.maps, (transform.family, transform.magnitude)) == (name, maps, sweep)


def test_shift_checks_its_unit():
    with pytest.raises(ValueError, match="Expected `unit` 'pixels' or 'fraction', but got 'px'"):
        Shift(1.0, unit="px")
