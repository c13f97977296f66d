"""Transformations: callable on a batch, a repr of public attributes only, and errors that name the fix."""

from __future__ import annotations

import re

import pytest
import torch

from seis_lightning import SEISCallback, score_model
from seis_lightning.transforms import (
    Affine,
    Flip,
    GeometricTransform,
    RandomAffine,
    flip,
    parse_transform,
    rotate,
    scale,
    translate,
)
from tests.conftest import digits_images

TRANSFORMS = [rotate(30), rotate(0), translate(0.2, 0.1), scale(1.25), flip("horizontal"), flip("vertical")]
TRANSFORMS += [RandomAffine(num_draws=3), GeometricTransform("mirror", [Flip("horizontal"), Flip("vertical")])]


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
    fields = eval(shown, {type(transform).__name__: lambda **kw: kw, "Affine": Affine, "Flip": Flip})
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
