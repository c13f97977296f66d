"""How a probe pass goes through the probe images: in which order (:func:`probe_order`), in which chunks
on which process (:func:`pass_plan`), and which layers every process could score (:func:`agree_across_ranks`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from seis_lightning.metric import SEISMetric


@dataclass(frozen=True)
class Chunk:
    """One forward pass of a probe pass: images ``[start, stop)`` of the whole probe set (counted across
    processes: ``start`` is the offset of the chunk's first image, which fixes its jackknife group).
    ``counted=False``: a repeat that keeps the ranks in step and whose statistics are dropped."""

    start: int
    stop: int
    counted: bool = True


def probe_order(num_images: int, seed: int) -> Tensor:
    """The order in which a probe pass reads the probe images: a permutation drawn from ``seed``.

    The null pairs each image with the transformed image before it in its chunk (spec, "Null
    baseline"); in the data's own order that partner is often of the same class (an ``ImageFolder``,
    a CSV sorted by label) and the null is inflated. In this order partners are drawn at random, the
    same on every rank and every run for the same ``seed``, whatever order the images came in. Image
    ``n`` of this order is in jackknife group ``n mod G``.
    """
    return torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))


def pass_plan(num_images: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[Chunk]:
    """This rank's chunks of ``num_images`` probe images: ``max(ceil(N / batch_size), world_size)``
    near-equal chunks dealt out in turn, and repeats so that every rank runs as many passes."""
    num_chunks = max(math.ceil(num_images / batch_size), world_size)
    size, extra = divmod(num_images, num_chunks)
    bounds = [0]
    for index in range(num_chunks):
        bounds.append(bounds[-1] + size + (index < extra))
    chunks = [Chunk(bounds[i], bounds[i + 1]) for i in range(rank, num_chunks, world_size)]
    repeats = math.ceil(num_chunks / world_size) - len(chunks)
    return chunks + [Chunk(chunks[-1].start, chunks[-1].stop, counted=False)] * repeats


def max_chunk_size(num_images: int, batch_size: int, world_size: int = 1) -> int:
    """The most images in one chunk of :func:`pass_plan`, on any rank."""
    return math.ceil(num_images / max(math.ceil(num_images / batch_size), world_size))


def agree_across_ranks(
    metrics: dict[str, SEISMetric], layers: list[str], reasons: dict[str, str], device: torch.device
) -> None:
    """Keep only the layers that every rank can score: computing a metric is a collective (its states
    are summed over the ranks), so a layer that failed on one rank and is computed on another would
    leave the ranks' collectives mismatched, or waiting for ever."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    ready = torch.tensor([name in metrics for name in layers], dtype=torch.int32, device=device)
    dist.all_reduce(ready, op=dist.ReduceOp.MIN)
    for name, everywhere in zip(layers, ready.tolist()):
        if not everywhere and name in metrics:
            del metrics[name]
            reasons[name] = "another process could not score it (its warning says why)"
