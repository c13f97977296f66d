"""``score_model`` takes what people have: a tensor, a numpy array, a list of images, a Dataset, a
DataLoader; ``num_samples`` and ``input_getter``; and its errors name the fix with options it takes."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from seis_lightning import SEISProbe, probe_images, score_model
from seis_lightning.pass_plan import probe_order
from seis_lightning.probe import ProbeError, spread
from seis_lightning.scoring import BATCH_SIZE
from seis_lightning.synthetic import digits_images, random_cnn
from tests.reference import reference_scores

LAYER = "2"  # the random CNN's first block: 32 maps of 14x14 on 28x28 digits
OPTIONS = dict(layers=[LAYER], transforms=["hflip"], precision="float64")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return digits_images(96)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return random_cnn()


@pytest.fixture(scope="module")
def tensor_scores(model, images) -> dict[str, float]:
    return score_model(model, images, **OPTIONS)["hflip"][LAYER]


class DictDataset(Dataset):
    """Items ``{"label": int, "pixels": image}``: the images under a key no default knows."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"label": index % 10, "pixels": self.images[index]}


class Stream(IterableDataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __iter__(self):
        return iter(self.images)


def test_tensor_scores_match_the_float64_reference(model, images, tensor_scores):
    ordered = images[probe_order(len(images), 0)]  # as the probe pass reads them (default seed)
    with torch.no_grad():
        a, b = model[:3](ordered), model[:3](ordered.flip(-1))
    a, b = a.flatten(2).double().numpy(), b.flatten(2).double().numpy()
    assert len(images) % BATCH_SIZE == 0
    expected = reference_scores(a, b, batch_size=BATCH_SIZE)  # 96 images: six probe chunks of 16
    for name in ("equivariance", "invariance", "channel_invariance", "equivariance_null"):
        assert tensor_scores[name] == pytest.approx(expected[name], abs=1e-9), name


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda x: x.numpy(), id="numpy"),
        pytest.param(lambda x: x.double().numpy(), id="numpy-float64"),
        pytest.param(lambda x: list(x), id="list-of-images"),
        pytest.param(lambda x: tuple(x), id="tuple-of-images"),
        pytest.param(lambda x: [x[:40], x[40:]], id="list-of-batches"),
        pytest.param(lambda x: TensorDataset(x, torch.arange(len(x))), id="dataset"),
        pytest.param(lambda x: DataLoader(TensorDataset(x), batch_size=10, shuffle=True), id="dataloader"),
        pytest.param(lambda x: DataLoader(Stream(x), batch_size=10), id="iterable-dataloader"),
        pytest.param(lambda x: (batch for batch in x.split(7)), id="generator-of-batches"),
    ],
)
def test_every_source_gives_the_tensors_scores(model, images, tensor_scores, make):
    scores = score_model(model, make(images), **OPTIONS)  # num_samples=None: all 96 (512 from a dataset)
    assert list(scores["hflip"]) == [LAYER]
    for name, value in tensor_scores.items():
        assert scores["hflip"][LAYER][name] == pytest.approx(value, abs=1e-9), name


def test_input_getter_takes_the_images_from_items(model, images, tensor_scores):
    dataset = DictDataset(images)
    scores = score_model(model, dataset, input_getter="pixels", num_samples=len(images), **OPTIONS)
    assert scores["hflip"][LAYER]["equivariance"] == pytest.approx(tensor_scores["equivariance"], abs=1e-9)
    scores = score_model(model, dataset, input_getter=lambda batch: batch["pixels"], **OPTIONS)  # 512 > 96: all
    assert scores["hflip"][LAYER]["invariance"] == pytest.approx(tensor_scores["invariance"], abs=1e-9)
    pairs = DataLoader(TensorDataset(torch.zeros(len(images)), images), batch_size=32)
    scores = score_model(model, pairs, input_getter=1, **OPTIONS)
    assert scores["hflip"][LAYER]["channel_invariance"] == pytest.approx(tensor_scores["channel_invariance"], abs=1e-9)


def test_num_samples_spreads_over_the_data_as_the_callback_does(model, images):
    indices = spread(len(images), 40)
    assert indices[:3].tolist() == [0, 2, 5] and indices[-1] == len(images) - 1
    spread_scores = score_model(model, images[indices], **OPTIONS)["hflip"][LAYER]
    first_scores = score_model(model, images[:40], **OPTIONS)["hflip"][LAYER]
    for data in (images, TensorDataset(images), DataLoader(TensorDataset(images), batch_size=8)):
        scores = score_model(model, data, num_samples=40, **OPTIONS)["hflip"][LAYER]
        assert scores["equivariance"] == pytest.approx(spread_scores["equivariance"], abs=1e-9)
        assert scores["equivariance"] != pytest.approx(first_scores["equivariance"], abs=1e-6)
    assert torch.equal(probe_images(TensorDataset(images), 40), images[indices])


MESSAGES = [
    pytest.param(
        lambda x: x[:, 0],
        "SEIS expected the images of `data` as [N, C, H, W] (as the model sees them), but got shape [96, 28, 28]:"
        " for one-channel images [N, H, W], add the channel axis with `images.unsqueeze(1)` (in a batch:"
        " `input_getter=lambda batch: batch[0].unsqueeze(1)`); for one image [C, H, W] of a list, stack the list"
        " with `torch.stack(images)`.",
        id="grayscale-NHW",
    ),
    pytest.param(
        lambda x: x.flatten(1),
        "SEIS expected the images of `data` as [N, C, H, W] (as the model sees them), but got shape [96, 784];"
        " SEIS transforms images, so for feature vectors [N, D] compare f(x) with f(T x) directly with"
        " `seis_lightning.seis_scores(a, b)`.",
        id="vectors-ND",
    ),
    pytest.param(
        lambda x: [x[0], x[1], torch.rand(1, 32, 32)],
        "SEIS expected the images of `data` to share one shape [C, H, W] = [1, 28, 28] (the first image's), but"
        " image 2 has shape [1, 32, 32]; resize or crop them to one size as the model sees them (e.g."
        " `torchvision.transforms.v2.Resize`) before scoring.",
        id="list-of-sizes",
    ),
    pytest.param(
        lambda x: [(x[0], 0), (x[1], 1)],
        "SEIS expected `data` as a list of image tensors [C, H, W], but the list holds tuple; for (image, label)"
        " items, pass a Dataset or a DataLoader (with `input_getter` if the image is not the first element).",
        id="list-of-pairs",
    ),
    pytest.param(
        lambda x: DictDataset(x),
        "SEIS could not take the images from `data` (\"none of ('image', 'images', 'img', 'x', 'input', 'inputs',"
        " 'pixel_values') among the batch keys ['label', 'pixels']\"); set `input_getter` to an index, a key or a"
        " callable that returns the image tensor.",
        id="dataset-unknown-key",
    ),
    pytest.param(
        lambda x: (x * 255).to(torch.uint8).numpy(),
        "SEIS expected floating-point images in `data`, but got uint8 [96, 1, 28, 28]; convert them as the model"
        " sees them, e.g. `torchvision.transforms.v2.ToDtype(torch.float32, scale=True)` in the dataset or"
        " `images.float() / 255`.",
        id="uint8-numpy",
    ),
]


@pytest.mark.parametrize(("make", "message"), MESSAGES)
def test_errors_name_the_shape_and_the_fix(model, images, make, message):
    with pytest.raises(ProbeError) as error:
        score_model(model, make(images), **OPTIONS)
    assert str(error.value) == message


@pytest.mark.parametrize(("make", "message"), MESSAGES)
def test_errors_advise_only_options_score_model_takes(model, images, make, message):
    taken = set(inspect.signature(score_model).parameters) | set(inspect.signature(SEISProbe).parameters)
    advised = set(re.findall(r"`(\w+)`", message)) | set(re.findall(r"`(\w+)=", message))
    advised -= {"data"}  # the argument itself
    assert advised <= taken, advised - taken
    for option in advised:  # and score_model does take it
        score_model(model, images, **OPTIONS, **{option: None})


def test_a_list_of_images_given_to_probe_images_names_the_stack_fix():
    with pytest.raises(ProbeError, match=re.escape("stack the list with `torch.stack(images)`")):
        probe_images([torch.rand(1, 16, 16) for _ in range(8)], 8)
    assert probe_images(torch.stack([torch.rand(1, 16, 16) for _ in range(8)]), 8).shape == (8, 1, 16, 16)


def test_bad_num_samples_and_input_getter_are_refused(model, images):
    with pytest.raises(ValueError, match=re.escape("Expected `num_samples` to be an integer >= 2, but got 1.")):
        score_model(model, images, num_samples=1)
    with pytest.raises(ValueError, match="Expected `input_getter` to be None, an index, a key or a callable"):
        score_model(model, images, input_getter=1.5)


def test_numpy_float64_images_are_read_in_the_models_dtype(model, images):
    array = images.double().numpy()
    assert isinstance(array, np.ndarray)
    scores = score_model(model, array, layers=[LAYER], transforms=["hflip"])  # the model is float32
    assert 0.0 < scores["hflip"][LAYER]["equivariance"] <= 1.0
