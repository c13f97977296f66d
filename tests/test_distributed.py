"""``SEISProbe.score`` over two processes (gloo, CPU) (issue 16, section 4).

The model's forward is a collective (``all_reduce``, as FSDP's and DeepSpeed ZeRO-3's gathers are):
a rank that ran fewer forward passes than the other would leave it waiting for ever. Five probe
chunks over two ranks give one rank three and the other two; that rank repeats a chunk and discards
its statistics, so the scores still equal one process's.
"""

from __future__ import annotations

import inspect
import math
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from seis_lightning import SEISMetric, SEISProbe
from seis_lightning.results import LOGGED

EXACT = {"precision": "float64"} if "precision" in inspect.signature(SEISMetric).parameters else {}
OPTIONS = dict(layers=["conv", "head"], transforms=["hflip", "rotate:30"], batch_size=8, **EXACT)
NUM_IMAGES = 40  # 5 chunks of 8: 3 on rank 0, 2 on rank 1


class AllReduceModel(nn.Module):
    """A conv net whose forward all-reduces a buffer, as sharded models gather their weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.head = nn.Linear(6, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if dist.is_available() and dist.is_initialized():
            scale = torch.ones(1)
            dist.all_reduce(scale)  # every rank must call this the same number of times
            x = x * (scale / dist.get_world_size())
        return self.head(torch.relu(self.conv(x)).mean((-2, -1)))


def _data() -> tuple[AllReduceModel, torch.Tensor]:
    torch.manual_seed(0)
    return AllReduceModel(), torch.rand(NUM_IMAGES, 1, 12, 12, generator=torch.Generator().manual_seed(1))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, setup, options: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model, images = setup(rank)
        result = SEISProbe(**options).score(model, images, rank=rank, world_size=world_size)
        saved = {"scores": result.scores, "reasons": result.reasons, "calls": getattr(model, "calls", None)}
        torch.save(saved, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def two_ranks(setup, options: dict, tmp_path, seconds: float = 90) -> list[dict]:
    """``SEISProbe(**options).score`` on ``setup(rank)`` in two gloo processes; fails if they wait for ever."""
    out = str(tmp_path / "scores")
    args = (2, _free_port(), setup, options, out)
    context = mp.start_processes(_worker, args=args, nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + seconds
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):  # raises if a worker fails
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the probe pass did not finish on both ranks in {seconds:g} s (a rank waited in a collective)")
    return [torch.load(f"{out}.{rank}") for rank in range(2)]


def _all_reduce_setup(rank: int) -> tuple[AllReduceModel, torch.Tensor]:
    return _data()


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_uneven_chunks_over_two_ranks_finish_and_equal_one_process(tmp_path):
    ranks = two_ranks(_all_reduce_setup, OPTIONS, tmp_path)

    model, images = _data()
    single = SEISProbe(**OPTIONS).score(model, images)
    passes_per_chunk = 1 + len(SEISProbe(**OPTIONS).draws)
    # a first pass of 2 images sizes the forward parts, then every chunk's passes
    assert model.calls == 1 + 5 * passes_per_chunk
    # 3 chunks each: rank 1 repeats one of its 2.
    assert [rank["calls"] for rank in ranks] == [1 + 3 * passes_per_chunk] * 2
    for rank in ranks:
        for transform, layers in single.scores.items():
            for layer, scores in layers.items():
                assert math.isfinite(scores["equivariance"])
                for name in LOGGED:
                    got = rank["scores"][transform][layer][name]
                    assert got == pytest.approx(scores[name], abs=1e-9 if EXACT else 1e-6, nan_ok=True), (layer, name)


class TupleOnOneRank(nn.Module):
    """A layer that returns a tuple on rank 1 only, as a module that changes its output type by configuration."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.as_tuple = False

    def forward(self, x):
        y = self.conv(x)
        return (y,) if self.as_tuple else y


class SplitModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = TupleOnOneRank()
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        y = self.block(x)
        y = y[0] if isinstance(y, tuple) else y
        return self.head(torch.relu(y).mean((-2, -1)))


SPLIT_OPTIONS = dict(layers=["block", "head"], transforms=["hflip"], batch_size=8, **EXACT)


def _split_data() -> tuple[SplitModel, torch.Tensor]:
    torch.manual_seed(0)
    return SplitModel(), torch.rand(32, 1, 12, 12, generator=torch.Generator().manual_seed(1))


def _split_setup(rank: int) -> tuple[SplitModel, torch.Tensor]:
    model, images = _split_data()
    model.block.as_tuple = rank == 1  # rank 1 cannot read "block" without an output_getter
    return model, images


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_a_layer_that_fails_on_one_rank_is_dropped_on_every_rank(tmp_path):
    """Its metric's sum over ranks would pair with the next layer's on the other rank: both ranks drop it."""
    ranks = two_ranks(_split_setup, SPLIT_OPTIONS, tmp_path)
    model, images = _split_data()
    single = SEISProbe(**SPLIT_OPTIONS).score(model, images)
    assert "another process could not score it" in ranks[0]["reasons"]["block"]
    assert "output_getter" in ranks[1]["reasons"]["block"]
    for rank in ranks:
        assert all(math.isnan(value) for value in rank["scores"]["hflip"]["block"].values())
        for name in LOGGED:
            expected = single.scores["hflip"]["head"][name]
            assert rank["scores"]["hflip"]["head"][name] == pytest.approx(expected, abs=1e-9, nan_ok=True), name


JACKKNIFE_OPTIONS = dict(
    OPTIONS, transforms=["hflip"], jackknife_groups=3
)  # chunks start at 0, 8, ..., 32: not multiples of 3


@pytest.mark.distributed
@pytest.mark.timeout(120)
def test_jackknife_groups_count_across_ranks_so_two_processes_give_one_process_se(tmp_path):
    """Image n of the whole probe set is in group n mod G on either rank (spec, "Uncertainty").

    Counted per rank, rank 1's chunks (images 8-15, 24-31) started again at group 0, and the standard
    errors differed from one process's by up to 4x.
    """
    ranks = two_ranks(_all_reduce_setup, JACKKNIFE_OPTIONS, tmp_path)
    model, images = _data()
    single = SEISProbe(**JACKKNIFE_OPTIONS).score(model, images)
    for rank in ranks:
        for transform, layers in single.scores.items():
            for layer, scores in layers.items():
                for name in ("equivariance_se", "invariance_se", "channel_invariance_se"):
                    assert math.isfinite(scores[name]) and scores[name] > 0, (layer, name)
                    got = rank["scores"][transform][layer][name]
                    assert got == pytest.approx(scores[name], abs=1e-9), (transform, layer, name)
