"""Probe images: taken once from a tensor, a map-style dataset or a dataloader, and checked.

Images are spread over a map-style source (an even stride over the indices its loader's sampler
visits), so a class-sorted dataset such as torchvision's ``ImageFolder`` is probed across its
classes, not in its first one or two. An iterable source (a dataloader over an
``IterableDataset``) gives its first images.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, SubsetRandomSampler, default_collate

# int and str before Callable: LightningCLI (jsonargparse) then writes an index or key to config.yaml as itself
InputGetter = int | str | Callable[[Any], Tensor] | None
IMAGE_KEYS = ("image", "images", "img", "x", "input", "inputs", "pixel_values")


class ProbeError(ValueError):
    """Probe images cannot be taken or used as given (the message says what to change)."""


def probe_images(
    source: Tensor | Dataset | Iterable,
    num_samples: int,
    *,
    input_getter: InputGetter = None,
    collate_fn: Callable | None = None,
    batch_size: int = 64,
    what: str = "the probe data",
    max_batches: int | None = None,
) -> Tensor:
    """Up to ``num_samples`` images from ``source``, on the CPU, spread evenly over what it yields.

    A dataloader is read the way it reads itself: its sampler or batch_sampler chooses the indices (so a
    split chosen by a sampler is probed on that split only; a shuffling sampler's in sorted order), its
    collate function batches the items,
    and its dataset applies its transforms; of the indices it would visit (in its first ``max_batches``
    batches), ``num_samples`` evenly spread ones are read. A loader over an ``IterableDataset`` gives its
    first images. Collection runs inside :func:`isolated_rng`: samplers, random augmentations and the
    loader's own seed draw leave every RNG stream as it was.

    Args:
        source: images ``[N, C, H, W]``, a map-style dataset, a dataloader, or any iterable of batches.
        num_samples: how many images to take.
        input_getter: how to take the images from an item or batch (see :func:`images_of`).
        collate_fn: how to batch items of a map-style dataset (a dataloader's own by default).
        batch_size: items collated at a time.
        what: how error messages name the source.
        max_batches: read only the first ``max_batches`` batches of a dataloader (``limit_val_batches``).

    Raises:
        ProbeError: when no or only one image is found, or the images are not float ``[N, C, H, W]``.
    """
    with isolated_rng():
        if isinstance(source, Tensor):
            images = check_images(source[spread(len(source), num_samples)], what)
        elif isinstance(source, DataLoader) and is_map_style(source.dataset) and source.batch_size is not None:
            indices = _visited(source, max_batches)
            chosen = [indices[i] for i in spread(len(indices), num_samples).tolist()]
            loader = DataLoader(source.dataset, batch_size, sampler=chosen, collate_fn=collate_fn or source.collate_fn)
            images = _concatenated([images_of(batch, input_getter, what) for batch in loader])
        elif is_map_style(source):
            collate = collate_fn or default_collate
            indices = spread(len(source), num_samples).tolist()
            loader = DataLoader(source, batch_size, sampler=indices, collate_fn=collate)
            images = _concatenated([images_of(batch, input_getter, what) for batch in loader])
        else:
            parts, count = [], 0
            for batch in itertools.islice(source, max_batches):
                parts.append(images_of(batch, input_getter, what))
                count += parts[-1].shape[0]
                if count >= num_samples:
                    break
            images = _concatenated(parts)[:num_samples]
    if images.shape[0] < 2:
        raise ProbeError(
            f"SEIS found {images.shape[0]} probe image(s) in {what}; it needs at least 2 (better hundreds)."
        )
    return images.detach().cpu()


@contextmanager
def isolated_rng(include_cuda: bool = True) -> Iterator[None]:
    """Lightning's ``isolate_rng``, also when the block raises: the RNG streams (Python, NumPy, torch,
    CUDA) are put back however it ends (Lightning's own restores them on a normal exit only, and a
    loader draws its seed before its collate can fail)."""
    states = _collect_rng_states(include_cuda)
    try:
        yield
    finally:
        _set_rng_states(states)


def _visited(loader: DataLoader, max_batches: int | None) -> list:
    """The dataset indices ``loader`` visits in its first ``max_batches`` batches: in its order, or sorted
    when its sampler shuffles (the order of a random sampler means nothing, and sorted indices spread
    over a class-sorted dataset as evenly as an unshuffled loader's)."""
    indices = [index for batch in itertools.islice(loader.batch_sampler, max_batches) for index in batch]
    if isinstance(loader.sampler, (RandomSampler, SubsetRandomSampler)):
        try:
            return sorted(indices)
        except TypeError:  # indices that do not compare (keys of a custom dataset)
            return indices
    return indices


def _concatenated(parts: list[Tensor]) -> Tensor:
    if not parts:
        return torch.empty(0)
    shapes = {tuple(part.shape[1:]) for part in parts}
    if len(shapes) > 1:
        raise ProbeError(
            f"SEIS needs probe images of one size, but the batches have images of sizes {sorted(shapes)}; resize"
            " them in the dataset (e.g. `torchvision.transforms.v2.Resize`) or give `probe_data` of one size."
        )
    return torch.cat(parts)


def spread(length: int, count: int) -> Tensor:
    """``min(count, length)`` indices evenly spread over ``range(length)``, first and last included."""
    count = min(count, length)
    if count <= 1:
        return torch.arange(count)
    return torch.linspace(0, length - 1, count, dtype=torch.float64).round().long()


def is_map_style(data: Any) -> bool:
    return isinstance(data, Dataset) and hasattr(data, "__len__") and hasattr(data, "__getitem__")


def images_of(batch: Any, input_getter: InputGetter = None, what: str = "a batch") -> Tensor:
    """The image tensor of a batch: ``input_getter`` (index, key or callable), else a tensor, the
    first element of a tuple or list, or a dict's ``"image"``-like key.

    Raises:
        ProbeError: naming ``input_getter`` when the images cannot be found.
    """
    try:
        if callable(input_getter):
            images = input_getter(batch)
        elif input_getter is not None:
            images = batch[input_getter]
        elif isinstance(batch, Tensor):
            images = batch
        elif isinstance(batch, (tuple, list)):
            images = batch[0]
        elif isinstance(batch, Mapping):
            key = next((k for k in IMAGE_KEYS if k in batch), None)
            if key is None:
                raise KeyError(f"none of {IMAGE_KEYS} among the batch keys {list(batch)}")
            images = batch[key]
        else:
            raise TypeError(f"batches of type {type(batch).__name__} are not understood")
    except (KeyError, IndexError, TypeError) as error:
        raise ProbeError(
            f"SEIS could not take the images from {what} ({error}); set `input_getter` to an index, a key or a"
            " callable that returns the image tensor."
        ) from None
    return check_images(images, what)


def as_images(data: Any, what: str) -> Any:
    """``data`` as one image tensor where it is held in memory: a tensor as it is, a numpy array as a
    tensor, a list or tuple of image tensors (or arrays) ``[C, H, W]`` of one shape stacked to
    ``[N, C, H, W]`` (a list of ``[B, C, H, W]`` batches is concatenated); a dataset, dataloader or other
    iterable is returned unchanged, for :func:`probe_images`.

    Raises:
        ProbeError: for a list whose items are not image tensors, or images of different shapes.
    """
    if _is_array(data):
        return torch.as_tensor(data)
    if not isinstance(data, (list, tuple)):
        return data
    if not data or not all(isinstance(item, Tensor) or _is_array(item) for item in data):
        kinds = sorted({type(item).__name__ for item in data}) or ["nothing"]
        raise ProbeError(
            f"SEIS expected {what} as a list of image tensors [C, H, W], but the list holds {', '.join(kinds)};"
            " for (image, label) items, pass a Dataset or a DataLoader (with `input_getter` if the image is not"
            " the first element)."
        )
    items = [torch.as_tensor(item) for item in data]
    expected = list(items[0].shape)
    for index, item in enumerate(items):
        if list(item.shape) != expected and (item.ndim != 4 or list(item.shape[1:]) != expected[1:]):
            shape = "[C, H, W]" if items[0].ndim != 4 else "[B, C, H, W] batches of [C, H, W]"
            raise ProbeError(
                f"SEIS expected the images of {what} to share one shape {shape} = {expected} (the first"
                f" image's), but image {index} has shape {list(item.shape)}; resize or crop them to one size"
                " as the model sees them (e.g. `torchvision.transforms.v2.Resize`) before scoring."
            )
    return torch.cat(items) if items[0].ndim == 4 else torch.stack(items)


def _is_array(data: Any) -> bool:
    """A numpy array, told without importing numpy."""
    return type(data).__module__ == "numpy" and hasattr(data, "__array__") and hasattr(data, "shape")


def check_images(images: Any, what: str) -> Tensor:
    """``images`` if they are float ``[N, C, H, W]`` as the model sees them; a clear error otherwise.

    Three-axis images are refused, not guessed: ``[N, H, W]`` one-channel images and a single
    ``[C, H, W]`` image look alike, and the message gives the fix for each.
    """
    if not isinstance(images, Tensor):
        raise ProbeError(
            f"SEIS expected the images of {what} to be a tensor [N, C, H, W], but got {type(images).__name__};"
            " set `input_getter` to an index, a key or a callable that returns the image tensor."
        )
    if images.ndim < 3:
        raise ProbeError(
            f"SEIS expected the images of {what} as [N, C, H, W] (as the model sees them), but got shape"
            f" {list(images.shape)}; SEIS transforms images, so for feature vectors [N, D] compare"
            " f(x) with f(T x) directly with `seis_lightning.seis_scores(a, b)`."
        )
    if images.ndim == 3:
        raise ProbeError(
            f"SEIS expected the images of {what} as [N, C, H, W] (as the model sees them), but got shape"
            f" {list(images.shape)}: for one-channel images [N, H, W], add the channel axis with"
            " `images.unsqueeze(1)` (in a batch: `input_getter=lambda batch: batch[0].unsqueeze(1)`); for one"
            " image [C, H, W] of a list, stack the list with `torch.stack(images)`."
        )
    if images.dtype == torch.uint8:
        raise ProbeError(
            f"SEIS expected floating-point images in {what}, but got uint8 {list(images.shape)}; convert them as the"
            " model sees them, e.g. `torchvision.transforms.v2.ToDtype(torch.float32, scale=True)` in the dataset"
            " or `images.float() / 255`."
        )
    if not images.is_floating_point():
        raise ProbeError(
            f"SEIS expected floating-point images in {what}, but got dtype {images.dtype} and shape"
            f" {list(images.shape)}."
        )
    if images.ndim == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] > 4:
        raise ProbeError(
            f"SEIS expected images [N, C, H, W] in {what}, but got shape {list(images.shape)}, which looks"
            f" channels-last ([N, H, W, C] with C = {images.shape[-1]}); the geometric transformations act on the"
            " last two axes, so give channels-first images, e.g. `images.permute(0, 3, 1, 2)` or"
            " `input_getter=lambda batch: batch[0].permute(0, 3, 1, 2)`."
        )
    return images
