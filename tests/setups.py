"""The setups of the invariant matrix (``tests/test_setups.py``): data sources, schedules and entry
points a Lightning user varies, one run of a cell, and the five promises of ``SEISCallback``
checked on what the run leaves behind (weights, optimizer state, logged rows, RNG streams,
the images the model saw while the callback scored it, warnings, errors).

Every image carries its identity: image ``i`` is zero-mean noise plus ``i / 64``, so ``ids(x)``
reads which item an image (or its flip) is, whatever batch it arrives in.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SubsetRandomSampler

import seis_lightning
from seis_lightning import SEISCallback
from seis_lightning.transforms import GeometricTransform
from tests.lightning_helpers import TinyCNN

PACKAGE = os.path.dirname(seis_lightning.__file__) + os.sep
GOOD_LAYERS = ["conv1", "conv2", "fc"]
FAULTS = ("twice", "poison", "crop")  # a layer run twice, a layer whose maps are NaN, a transform that crops
SEEN: list[tuple[str, list[int]]] = []  # (trainer.state.fn, ids) of every image the callback fed the model


# ---------------------------------------------------------------------------------------------- data


def image(i: int, size: int = 12) -> torch.Tensor:
    noise = torch.rand(1, size, size, generator=torch.Generator().manual_seed(i))
    return noise - noise.mean() + i / 64


def ids(x: torch.Tensor) -> list[int]:
    return torch.round(x.double().mean(tuple(range(1, x.ndim))) * 64).long().tolist()


class Items(Dataset):
    """Map-style items ``(x, y)``, ``{"image", "label"}`` or ``(x, y, meta)``; optionally a random flip
    drawn in ``__getitem__``, sizes that vary, or items that raise."""

    def __init__(self, indices, kind="tuple", random_flip=False, varsize=False, broken=()) -> None:
        self.indices, self.kind, self.broken = list(indices), kind, set(broken)
        self.random_flip, self.varsize = random_flip, varsize

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Any:
        i = self.indices[k]
        if i in self.broken:
            raise RuntimeError(f"item {i} is broken")
        x = image(i, 12 + 4 * (i % 2) if self.varsize else 12)
        if self.random_flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        if self.kind == "dict":
            return {"image": x, "label": i % 10}
        if self.kind == "meta":
            return x, i % 10, {"name": f"item{i}"}
        return x, i % 10


class Stream(IterableDataset):
    def __init__(self, indices) -> None:
        self.indices = list(indices)

    def __iter__(self):
        return iter([(image(i), i % 10) for i in self.indices])


@dataclass
class Source:
    val: Any  # a loader, or a list of loaders
    allowed: set[int]  # the ids the (first) probed loader yields
    flips: bool = False  # its items may come flipped
    batches: list[list[int]] | None = None  # the probed loader's batches of ids, in order; None: its sampler shuffles
    trainer: dict = field(default_factory=dict)
    callback: dict = field(default_factory=dict)


def in_batches(indices, size: int = 8) -> list[list[int]]:
    indices = list(indices)
    return [indices[k : k + size] for k in range(0, len(indices), size)]


def source(name: str) -> Source:
    def loader(dataset, **kwargs):
        return DataLoader(dataset, **({"batch_size": 8} | kwargs))

    ordered = in_batches(range(16))

    full = Items(range(48))  # 32..47 are the validation split, chosen by the loader's sampler
    if name == "map":
        return Source(loader(Items(range(16))), set(range(16)), batches=ordered)
    if name == "sampler":
        return Source(loader(full, sampler=SubsetRandomSampler(range(32, 48))), set(range(32, 48)))
    if name == "batch_sampler":
        batches = [[33, 35, 37, 39], [41, 43, 45, 47]]
        return Source(DataLoader(full, batch_sampler=batches), {i for b in batches for i in b}, batches=batches)
    if name == "iterable":
        return Source(loader(Stream(range(16))), set(range(16)), batches=ordered)
    if name == "random_getitem":
        return Source(loader(Items(range(16), random_flip=True)), set(range(16)), flips=True, batches=ordered)
    if name == "dict":
        return Source(loader(Items(range(16), kind="dict")), set(range(16)), batches=ordered)
    if name == "meta":
        return Source(loader(Items(range(16), kind="meta")), set(range(16)), batches=ordered)
    if name == "varsize":
        return Source(
            loader(Items(range(8), varsize=True), batch_size=1), set(range(8)), batches=in_batches(range(8), 1)
        )
    if name == "raising":  # items 16..19 raise; validation reads only the first 2 batches
        return Source(
            loader(Items(range(20), broken=range(16, 20))),
            set(range(16)),
            trainer={"limit_val_batches": 2, "limit_test_batches": 2},
            batches=in_batches(range(20)),
        )
    if name == "multi":
        return Source([loader(Items(range(16))), loader(Items(range(16, 32)))], set(range(16)), batches=ordered)
    if name == "multi_idx1":  # the second of two loaders, chosen with dataloader_idx
        loaders = [loader(Items(range(16))), loader(Items(range(16, 32)))]
        return Source(loaders, set(range(16, 32)), callback={"dataloader_idx": 1}, batches=in_batches(range(16, 32)))
    raise KeyError(name)


OTHER = set(range(64, 80))  # the loader given to test()/validate() after fit
OTHER_BATCHES = in_batches(range(64, 80))


def other_loader() -> DataLoader:
    return DataLoader(Items(range(64, 80)), batch_size=8)


def train_loader() -> DataLoader:
    return DataLoader(Items(range(100, 116)), batch_size=8, shuffle=True)


# ---------------------------------------------------------------------------------------------- model


def _from_callback() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(PACKAGE):
            return True
        frame = frame.f_back
    return False


class Poison(nn.Module):
    def forward(self, x):
        return x * math.nan


class Net(TinyCNN):
    """``TinyCNN`` on any batch kind, with two side branches SEIS cannot score (their outputs are
    unused, so training is the same with or without them): ``twice`` runs twice, ``poison`` is NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.twice = nn.ReLU()
        self.poison = Poison()
        self.explode = False  # the "explode" run: a forward that draws a random number and raises, under SEIS only

    def forward(self, x):
        if self._trainer is not None and _from_callback():
            SEEN.append((self.trainer.state.fn.value, ids(x)))
            if self.explode:
                torch.rand(())  # as an MC-dropout model would, before it fails
                raise RuntimeError("the forward pass exploded")
        h = torch.relu(self.conv1(x))
        self.twice(self.twice(h))
        self.poison(h)
        h = self.dropout(torch.relu(self.conv2(h)))
        return self.fc(self.pool(h).flatten(1))

    @staticmethod
    def xy(batch):
        return (batch["image"], batch["label"]) if isinstance(batch, dict) else (batch[0], batch[1])

    def training_step(self, batch, batch_idx):
        x, y = self.xy(batch)
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = self.xy(batch)
        self.log("val_loss", nn.functional.cross_entropy(self(x), y), batch_size=len(x))

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        x, y = self.xy(batch)
        self.log("test_loss", nn.functional.cross_entropy(self(x), y), batch_size=len(x))


class NoValNet(Net):
    validation_step = pl.LightningModule.validation_step  # Lightning skips validation


def crop() -> GeometricTransform:
    return GeometricTransform("crop", [lambda x: x[..., 1:, 1:]])


# ---------------------------------------------------------------------------------------------- cells

SCHEDULES: dict[str, dict] = {
    "default": {},
    "vci_float": {"val_check_interval": 0.5},
    "vci_int": {"val_check_interval": 1},
    "every2": {"check_val_every_n_epoch": 2, "num_sanity_val_steps": 0, "max_epochs": 3},
    "lvb_int": {"limit_val_batches": 1},
    "lvb_float": {"limit_val_batches": 0.5},
    "accumulate": {"accumulate_grad_batches": 2},
    "max_steps": {"max_steps": 3},
    "fast_dev_run": {"fast_dev_run": True},
    "noval": {},  # a model without validation_step; probe_data is the source's loader
}
SOURCES = ("map", "sampler", "batch_sampler", "iterable", "random_getitem", "dict", "meta", "varsize", "raising")
SOURCES += ("multi", "multi_idx1")
ENTRIES = ("fit", "validate", "test", "fit_test", "fit_validate", "resume", "resume_reorder")
FIT_ENTRIES = ("fit", "fit_test", "fit_validate", "resume", "resume_reorder")


@dataclass(frozen=True)
class Cell:
    source: str = "map"
    schedule: str = "default"
    entry: str = "fit"

    @property
    def id(self) -> str:
        return f"{self.source}-{self.schedule}-{self.entry}"


def compatible(cell: Cell) -> bool:
    """Setups Lightning itself accepts (and that mean something)."""
    if cell.schedule == "noval":
        return cell.entry in ("fit", "fit_test", "resume") and not cell.source.startswith("multi")
    evaluation_only = cell.entry not in FIT_ENTRIES  # only validation limits act on validate/test
    if evaluation_only and cell.schedule not in ("default", "lvb_int", "lvb_float", "fast_dev_run"):
        return False
    if cell.schedule == "fast_dev_run" and cell.entry.startswith("resume"):
        return False
    if cell.source == "raising" and (cell.schedule.startswith("lvb") or cell.schedule == "fast_dev_run"):
        return False  # the source sets its own validation limit
    # Lightning cannot take a fraction of a loader without a length
    return not (cell.source == "iterable" and cell.schedule == "lvb_float")


def promises(cell: Cell) -> tuple[str, ...]:
    """The promises each cell checks. Under fast_dev_run Lightning logs nothing, so (b) is "b-unlogged": the
    callback logs and writes nothing either, and scores at the steps where validation runs. Images of several
    sizes cannot be stacked into a probe set, so the callback steps aside before any layer is reached: (b) is
    "b-unlogged" (no point anywhere) and (e) is "e-aside" (the faulty run steps aside once, for that cause, and
    its unscorable layers cost nothing more); "a-failing" needs a forward pass, which never comes."""
    if cell.source == "varsize":
        return ("a", "b-unlogged", "c", "d", "e-aside")
    if cell.schedule == "fast_dev_run":
        return ("a", "a-failing", "b-unlogged", "c", "d", "e")
    return ("a", "a-failing", "b", "c", "d", "e")


# ---------------------------------------------------------------------------------------------- one run


@dataclass
class Phase:
    stage: str  # "fit", "validate" or "test"
    log_dir: str  # phases of one Trainer share it, and its rows: the phase's own rows follow the previous phase's
    metrics: list | None  # Lightning's metrics.csv rows so far (None without a logger)
    scores: list | None  # seis_scores.csv rows so far


@dataclass
class Run:
    error: BaseException | None = None
    model: dict | None = None
    optimizer: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    rng: tuple = ()
    global_step: int = -1
    phases: list = field(default_factory=list)  # a Phase after each Trainer call
    callbacks: list = field(default_factory=list)  # the SEISCallback of each Trainer
    warnings: list = field(default_factory=list)
    seen: list = field(default_factory=list)
    rank: int = 0  # warnings come from rank 0 only
    root: str = ""  # the run's folder: its logs, checkpoints and anything the callback wrote


class Recorder(pl.Callback):
    def __init__(self, run: Run) -> None:
        self.run = run

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.run.losses.append(outputs["loss"].detach().clone())


def seis_callback(variant: str, cell: Cell, src: Source, phase: int) -> SEISCallback:
    clean = variant in ("clean", "explode")
    layers = GOOD_LAYERS if clean else ["conv1", "twice", "poison", "conv2", "fc"]
    if cell.entry == "resume_reorder" and phase == 1:
        layers = layers[::-1]
    transforms = ["hflip"] if clean else ["hflip", crop()]
    probe_data = src.val if cell.schedule == "noval" else None
    options = dict(num_samples=16, batch_size=8, log_figures=False, strict=variant == "strict", **src.callback)
    return SEISCallback(layers=layers, transforms=transforms, probe_data=probe_data, **options)


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def execute(cell: Cell, variant: str, root: Path, devices: int = 1) -> Run:
    """One run of ``cell``: ``variant`` is "none" (no callback), "clean", "faulty" (unscorable layers and
    transform next to good ones), "strict" (faulty, strict=True) or "explode" (clean, on a model whose
    forward raises whenever the callback runs it). ``devices=2``: this process is one
    rank of a DDP run launched outside Lightning (see :func:`ddp_runs`).

    One intra-op thread: on these tiny tensors a second one only spins (ten times the CPU time on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _execute(cell, variant, root, devices)
    finally:
        torch.set_num_threads(threads)


def _execute(cell: Cell, variant: str, root: Path, devices: int) -> Run:
    run = Run(root=str(root / variant))
    SEEN.clear()
    pl.seed_everything(0, verbose=False)
    src = source(cell.source)
    model_type = NoValNet if cell.schedule == "noval" else Net

    def model_type_of_run() -> Net:
        net = model_type()
        net.explode = variant == "explode"
        return net

    model = model_type_of_run()
    val = None if cell.schedule == "noval" else src.val
    checkpoints = root / variant / "ckpt"

    def trainer(phase: int, **extra) -> pl.Trainer:
        callbacks: list = [Recorder(run)]
        if variant != "none":
            run.callbacks.append(seis_callback(variant, cell, src, phase))
            callbacks.append(run.callbacks[-1])
        options = dict(max_epochs=2, log_every_n_steps=1, enable_checkpointing=False)
        options.update(src.trainer)
        options.update(SCHEDULES[cell.schedule])
        options.update(extra)
        if options.pop("checkpoint", False):
            callbacks.append(ModelCheckpoint(dirpath=checkpoints, save_last=True))
            options["enable_checkpointing"] = True
        logger = CSVLogger(root, name=variant, version=phase)
        if devices > 1:
            options["strategy"] = "ddp"
        return pl.Trainer(
            accelerator="cpu",
            devices=devices,
            logger=logger,
            callbacks=callbacks,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=root / variant,
            **options,
        )

    def snapshot(fitter: pl.Trainer, stage: str) -> None:
        log_dir = Path(fitter.logger.log_dir) if fitter.logger is not None and fitter.logger.log_dir else None
        metrics = _rows(log_dir / "metrics.csv") if log_dir else None
        scores = _rows(log_dir / "seis_scores.csv") if log_dir else None
        run.phases.append(Phase(stage, str(log_dir), metrics, scores))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if cell.entry.startswith("resume"):
                first = trainer(0, max_epochs=1, checkpoint=True)
                first.fit(model, train_loader(), val)
                snapshot(first, "fit")
                model = model_type_of_run()
                fitter = trainer(1)
                fitter.fit(model, train_loader(), val, ckpt_path=str(checkpoints / "last.ckpt"))
                snapshot(fitter, "fit")
            else:
                fitter = trainer(0)
                if cell.entry == "validate":
                    fitter.validate(model, val, verbose=False)
                    snapshot(fitter, "validate")
                elif cell.entry == "test":
                    fitter.test(model, val, verbose=False)
                    snapshot(fitter, "test")
                else:
                    fitter.fit(model, train_loader(), val)
                    snapshot(fitter, "fit")
                    if cell.entry == "fit_test":
                        fitter.test(model, other_loader(), verbose=False)
                        snapshot(fitter, "test")
                    elif cell.entry == "fit_validate":
                        fitter.validate(model, other_loader(), verbose=False)
                        snapshot(fitter, "validate")
            run.global_step = fitter.global_step
            run.optimizer = [o.state_dict() for o in fitter.optimizers]
        except BaseException as error:  # the promises say which runs may raise
            run.error = error
    run.model = {k: v.clone() for k, v in model.state_dict().items()}
    run.rng = (torch.rand(4), np.random.rand(4), random.random())
    run.warnings = [w for w in caught if "seis" in str(w.message).lower() or w.category.__name__ == "SEISWarning"]
    run.seen = list(SEEN)
    return run


# ---------------------------------------------------------------------------------------------- two ranks


class _Message:
    def __init__(self, message: str) -> None:
        self.message = message


class _Callback:
    """What the promises read of a SEISCallback, across a process boundary."""

    def __init__(self, cb: SEISCallback) -> None:
        self.history, self.evaluations, self.disabled = cb.history, cb.evaluations, cb.disabled
        self.probe_set = cb.probe_set


def _portable(run: Run, rank: int) -> Run:
    run.rank = rank
    if rank:  # rank 0 writes the logs; another rank may read them half-written
        run.phases = [Phase(phase.stage, phase.log_dir, None, None) for phase in run.phases]
    run.callbacks = [_Callback(cb) for cb in run.callbacks]
    run.warnings = [_Message(str(w.message)) for w in run.warnings]
    if run.error is not None:
        run.error = RuntimeError(f"{type(run.error).__name__}: {run.error}")
    return run


def _rank(rank: int, port: int, cell: Cell, variants: tuple, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank), NODE_RANK="0")
    os.environ.update(WORLD_SIZE="2", RANK=str(rank))
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    runs = {variant: _portable(execute(cell, variant, Path(root), devices=2), rank) for variant in variants}
    torch.save(runs, f"{root}/runs.{rank}")


def ddp_runs(cell: Cell, variants: tuple, root: Path, seconds: float = 150) -> list[dict]:
    """``execute(cell, variant)`` for each variant in a 2-process DDP run (gloo, CPU), launched as
    torchrun would (``LOCAL_RANK`` set, so Lightning starts no processes itself); the runs of each rank."""
    import socket
    import time

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.start_processes(
        _rank, args=(port, cell, variants, str(root)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + seconds
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):  # raises if a rank fails
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"the DDP run of {cell.id} took over {seconds:g} s (a rank waited in a collective)")
    return [torch.load(root / f"runs.{rank}", weights_only=False) for rank in range(2)]
