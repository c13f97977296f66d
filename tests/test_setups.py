"""The invariant matrix: every cell (data source x schedule x entry point) against the promises of
``SEISCallback`` (README, "What the callback promises"), in the form each cell allows (``promises``):

(a) weights, optimizer state, losses, logged metrics and RNG streams (torch, numpy, random) are
    bit-identical with and without the callback (the same code path twice, so equality is exact);
(b) SEIS points land on the rows where Lightning logs the validation metrics (plus step 0); without
    validation, on the epoch metrics' rows; ``validate``/``test`` on that call's rows;
(c) every probe image is one the probed loader yields (its sampler or batch_sampler, its split, its
    transforms) within the batches Lightning runs of it (``limit_val_batches``, ``limit_test_batches``,
    ``fast_dev_run``: the first batches; under a shuffling sampler, no more images than those batches
    hold); ``validate``/``test`` score the loader of that call;
(d) with ``strict=False`` nothing the callback does ends training; ``strict=True`` raises at the first
    failure, with its cause;
(e) one unscorable layer or transformation costs only itself: its reason goes to the history, the CSV
    and one warning; every other layer and transformation is still scored.

Where Lightning logs nothing (``fast_dev_run``) or the callback must step aside (images of several sizes),
(b) is "b-unlogged": no SEIS point or file, and the scorings made where validation runs (or none); for images
of several sizes (e) is "e-aside": the faulty run steps aside once, for that cause, and scores nothing, and
the failing-forward half of (a) does not apply (no forward pass is made). The CUDA RNG stream of (a) is
checked on a CUDA device by ``test_device_rng_stream_is_the_same_with_and_without_the_callback[cuda]``
(skipped, with the reason, where there is none).

Each cell runs five times (no callback; a clean callback; a callback with two unscorable layers and a
transformation that changes the image size next to good ones; the same with ``strict=True``; a clean
callback on a model whose forward draws a random number and raises whenever the callback runs it); the
runs are shared by the cell's promises. The setups live in ``tests/setups.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from seis_lightning import SEISCallback
from tests.lightning_helpers import TinyCNN
from tests.setups import (
    ENTRIES,
    FAULTS,
    FIT_ENTRIES,
    GOOD_LAYERS,
    OTHER,
    OTHER_BATCHES,
    SCHEDULES,
    SOURCES,
    Cell,
    compatible,
    ddp_runs,
    execute,
    ids,
    image,
    in_batches,
    promises,
    source,
    train_loader,
)

VARIANTS = ("none", "clean", "faulty", "strict", "explode")


# ---------------------------------------------------------------------------------------------- promises


def _equal_states(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _equal_states(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal_states(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def _lightning_rows(rows: list | None) -> list[dict]:
    """Lightning's own rows of metrics.csv, without the SEIS columns (and the rows only SEIS wrote)."""
    kept = ({k: v for k, v in row.items() if not k.startswith("seis") and v != ""} for row in rows or [])
    return [row for row in kept if set(row) - {"step", "epoch"}]


def promise_a(cell: Cell, runs: dict, variants=("clean", "faulty")) -> None:
    none = runs["none"]
    assert none.error is None, none.error
    for variant in variants:
        run = runs[variant]
        assert run.error is None, f"{variant}: {run.error!r}"
        assert run.global_step == none.global_step, variant
        _equal_states(none.model, run.model, f"{variant} weights")
        _equal_states(none.optimizer, run.optimizer, f"{variant} optimizer state")
        _equal_states(none.losses, run.losses, f"{variant} losses")
        assert torch.equal(none.rng[0], run.rng[0]), f"{variant}: torch RNG stream"
        assert np.array_equal(none.rng[1], run.rng[1]), f"{variant}: numpy RNG stream"
        assert none.rng[2] == run.rng[2], f"{variant}: python RNG stream"
        assert len(none.phases) == len(run.phases)
        for before, after in zip(none.phases, run.phases):
            assert _lightning_rows(before.metrics) == _lightning_rows(after.metrics), f"{variant}: metrics.csv"


def promise_a_failing(cell: Cell, runs: dict) -> None:
    """(a) when the callback fails: its forward passes raise (after drawing a random number). Not for varsize:
    there the collection fails first, and "a" itself covers it."""
    promise_a(cell, runs, variants=("explode",))


def _steps(rows: list[dict], prefix: str) -> set[int]:
    return {int(row["step"]) for row in rows if any(v != "" and k.startswith(prefix) for k, v in row.items())}


def _new_rows(run, index: int) -> list[dict]:
    """The rows the index-th Trainer call wrote (rows of the same logger before it dropped)."""
    phase = run.phases[index]
    earlier = [p for p in run.phases[:index] if p.log_dir == phase.log_dir]
    return phase.metrics[len(earlier[-1].metrics) :] if earlier else phase.metrics


def promise_b(cell: Cell, runs: dict) -> None:
    run = runs["clean"]
    assert run.error is None, run.error
    fresh = True
    for index, phase in enumerate(run.phases):
        rows = _new_rows(run, index)
        if phase.stage == "fit":
            seis, val, epoch = _steps(rows, "seis/"), _steps(rows, "val_loss"), _steps(rows, "train_loss_epoch")
            assert seis, f"no SEIS point in fit call {index}"
            expected = epoch if cell.schedule == "noval" else val
            assert expected <= seis, f"rows {sorted(expected - seis)} without SEIS (SEIS at {sorted(seis)})"
            allowed = val | epoch | ({0} if fresh else set())
            assert seis <= allowed, f"SEIS at {sorted(seis - allowed)}, not on Lightning's rows {sorted(allowed)}"
            tag = "seis/hflip/equivariance/conv1"
            logged = [int(row["step"]) for row in rows if row.get(tag, "") != "" and int(row["step"]) > 0]
            # (at step 0 the baseline and a validation after the first optimizer step share Lightning's row)
            assert len(logged) == len(set(logged)), f"{tag} logged twice at a step: {logged}"
            fresh = False
        else:
            seis = _steps(rows, f"seis_{phase.stage}/")
            lightning = _steps(rows, "val_loss" if phase.stage == "validate" else "test_loss")
            assert seis and seis == lightning, f"seis_{phase.stage} at {sorted(seis)}, Lightning at {sorted(lightning)}"
        # each point is the score of the callback's entry at that step
        callback = run.callbacks[min(index, len(run.callbacks) - 1)]  # resume: one callback per Trainer
        tag = f"{'seis' if phase.stage == 'fit' else 'seis_' + phase.stage}/hflip/equivariance/conv1"
        entries = callback.history if phase.stage == "fit" else callback.evaluations
        for row in rows:
            if row.get(tag, "") != "":
                step, value = int(row["step"]), float(row[tag])
                scored = [e["scores"]["hflip"]["conv1"]["equivariance"] for e in entries if e["step"] == step]
                assert any(abs(score - value) < 1e-6 for score in scored), f"{tag}={value} at {step}: {scored}"
    if cell.entry.startswith("resume"):
        first, resumed = (cb.history for cb in run.callbacks)
        epochs = [entry["epoch"] for entry in resumed]
        assert epochs[: len(first)] == [entry["epoch"] for entry in first] and len(resumed) > len(first), (
            f"resumed history {epochs} does not continue {[entry['epoch'] for entry in first]}"
        )


def batch_limit(cell: Cell, fn: str) -> int | float:
    """The limit Lightning puts on the batches of the loader that ``fn`` (``trainer.state.fn``) evaluates."""
    options = {**source(cell.source).trainer, **SCHEDULES[cell.schedule]}
    if options.get("fast_dev_run"):
        return 1
    return options.get("limit_test_batches" if fn == "test" else "limit_val_batches", 1.0)


def _kept(batches: list[list[int]], limit: int | float) -> list[list[int]]:
    """The batches Lightning runs: the first ``limit`` (an int), or that fraction of them, rounded down."""
    if isinstance(limit, float):
        return batches if limit >= 1.0 else batches[: int(len(batches) * limit)]
    return batches[:limit]


def promise_b_unlogged(cell: Cell, runs: dict) -> None:
    """(b) where nothing is logged: under fast_dev_run (Lightning logs nothing, the callback neither: no SEIS
    row, no seis_scores.csv; it still scores where validation runs: before training and after the one step,
    or once per validate/test call) and where the callback stepped aside (no point, no entry anywhere)."""
    run = runs["clean"]
    assert run.error is None, run.error
    written = sorted(str(path) for path in Path(run.root).rglob("seis_scores.csv"))
    assert not written, f"the callback wrote {written}"
    for phase in run.phases:
        rows = [row for row in phase.metrics or [] if any(k.startswith("seis") and v != "" for k, v in row.items())]
        assert not rows, f"SEIS points in metrics.csv: {rows[:2]}"
    history = [entry for cb in run.callbacks for entry in cb.history]
    evaluations = [entry for cb in run.callbacks for entry in cb.evaluations]
    if any(cb.disabled for cb in run.callbacks):
        assert not history and not evaluations, "a callback that stepped aside scored"
        return
    assert cell.schedule == "fast_dev_run", "the callback neither logged nor stepped aside"
    fits = sum(phase.stage == "fit" for phase in run.phases)
    assert sorted({entry["global_step"] for entry in history}) == ([0, run.global_step] if fits else []), history
    assert len(evaluations) == len(run.phases) - fits, evaluations


def promise_e_aside(cell: Cell, runs: dict) -> None:
    """(e) where collecting the images fails first (images of several sizes): the faulty run steps aside once,
    for that cause, before any of its unscorable layers or transformations is reached, and scores nothing."""
    run = runs["faulty"]
    assert run.error is None, _chain(run.error)
    reasons = [cb.disabled for cb in run.callbacks]
    assert all(reason and "equal size" in reason for reason in reasons), reasons
    told = [str(w.message) for w in run.warnings if "disabled" in str(w.message)]
    assert len(told) == len(run.callbacks) and all("equal size" in message for message in told), told
    assert not any(f"'{fault}'" in str(w.message) for w in run.warnings for fault in FAULTS), run.warnings
    assert not any(cb.history or cb.evaluations for cb in run.callbacks)


def _allowed(cell: Cell) -> dict[str, tuple[set[int], int]]:
    """By ``trainer.state.fn``: the ids that call's loader (or probe_data) yields within Lightning's batch
    limit of it (``limit_val_batches``, ``limit_test_batches``, ``fast_dev_run``), and how many images that
    limit lets through. A shuffling sampler draws its first batches at random, so there only the count is
    known; ``probe_data`` is the user's choice, read whole."""
    src = source(cell.source)
    stages = {"validate": "validate", "test": "test", "fit_test": "test", "fit_validate": "validate"}
    probe_data = cell.schedule == "noval"
    loaders = {} if cell.entry in ("validate", "test") else {"fit": (src.allowed, src.batches)}
    if cell.entry in stages:
        other = cell.entry in ("fit_test", "fit_validate") and not probe_data
        loaders[stages[cell.entry]] = (OTHER, OTHER_BATCHES) if other else (src.allowed, src.batches)
    allowed = {}
    for fn, (yielded, batches) in loaders.items():
        limit = 1.0 if probe_data else batch_limit(cell, fn)
        kept = _kept(batches or in_batches(sorted(yielded)), limit)
        allowed[fn] = ({i for batch in kept for i in batch} if batches else yielded, sum(map(len, kept)))
    return allowed


def promise_c(cell: Cell, runs: dict) -> None:
    run = runs["clean"]
    allowed = _allowed(cell)
    src = source(cell.source)
    for fn, seen in run.seen:
        assert fn in allowed, f"the callback fed the model images during {fn!r}"
        yielded, _ = allowed[fn]
        assert set(seen) <= yielded, f"{fn}: probe ids {sorted(set(seen) - yielded)} not in the loader's first batches"
    for fn, (_, count) in allowed.items():
        distinct = {i for f, seen in run.seen if f == fn for i in seen}
        assert len(distinct) <= count * len(run.callbacks), f"{fn}: {len(distinct)} images, the limit lets {count}"
    disabled = any(cb.disabled for cb in run.callbacks)
    for fn in allowed:
        assert disabled or any(f == fn for f, _ in run.seen), f"nothing was scored during {fn!r}"
    everything = set().union(*(yielded for yielded, _ in allowed.values()))
    for cb in run.callbacks:
        if cb.probe_set is None:
            continue
        for x in cb.probe_set:
            (i,) = ids(x[None])
            assert i in everything, f"probe image {i} is not one the loader yields"
            candidates = [image(i, x.shape[-1])] + ([image(i, x.shape[-1]).flip(-1)] if src.flips else [])
            assert any(torch.equal(x, c) for c in candidates), f"probe image {i} is not as the loader yields it"
    if cell.source.startswith("multi"):
        assert any("dataloader_idx" in str(w.message) for w in run.warnings), "nothing says which loader is probed"


def _chain(error: BaseException | None) -> str:
    text = []
    while error is not None:
        text.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return " <- ".join(text)


def promise_d(cell: Cell, runs: dict) -> None:
    for variant in ("clean", "faulty", "explode"):
        assert runs[variant].error is None, f"{variant} (strict=False) ended with {_chain(runs[variant].error)}"
        assert runs[variant].global_step == runs["none"].global_step
    explode = runs["explode"]
    if explode.seen and explode.rank == 0:  # the callback ran the model (and it raised)
        told = [str(w.message) for w in explode.warnings if "the forward pass exploded" in str(w.message)]
        assert told, "a forward pass that raised went unreported"
    for cb in runs["clean"].callbacks:
        if cb.disabled:  # stepping aside is allowed, silently is not
            assert any("disabled" in str(w.message) for w in runs["clean"].warnings), cb.disabled
    strict = runs["strict"]
    assert strict.error is not None, "strict=True did not raise"
    text = _chain(strict.error)
    causes = [f"'{fault}'" for fault in FAULTS] + ["broken", "equal size"]
    assert any(cause in text for cause in causes), f"strict=True raised without its cause: {text}"
    if cell.entry in FIT_ENTRIES:
        assert strict.losses == [], "strict=True raised after training began, not at the first scoring"


def _finite(values: dict) -> bool:
    return all(math.isfinite(values[name]) for name in ("equivariance", "invariance", "channel_invariance"))


def promise_e(cell: Cell, runs: dict) -> None:
    run = runs["faulty"]
    assert run.error is None, _chain(run.error)
    entries = [entry for cb in run.callbacks for entry in cb.history + cb.evaluations]
    assert entries, "nothing was scored"
    for entry in entries:
        hflip = entry["scores"].get("hflip", {})
        for layer in GOOD_LAYERS:
            assert layer in hflip and _finite(hflip[layer]), f"good layer {layer!r} lost at step {entry['global_step']}"
        for layer in ("twice", "poison"):
            assert not any(map(math.isfinite, hflip.get(layer, {}).values())), f"{layer!r} scored"
        for values in entry["scores"].get("crop", {}).values():
            assert not any(map(math.isfinite, values.values())), "'crop' scored"
        told = repr({key: value for key, value in entry.items() if key not in ("scores", "draws")})
        missing = [fault for fault in FAULTS if fault not in told]
        assert not missing, f"the history entry does not say why {missing} were not scored: {told[:300]}"
    scores = run.phases[-1].scores if run.phases else None
    if scores is not None and run.phases[-1].metrics is not None:
        for fault in FAULTS:
            rows = [row for row in scores if fault in (row.get("layer"), row.get("transform"))]
            reasons = [value for row in rows for key, value in row.items() if key not in ("layer", "transform")]
            assert any(fault in str(value) for value in reasons), f"seis_scores.csv: no {fault!r} reason"
    for fault in FAULTS:
        told = [str(w.message) for w in run.warnings if f"'{fault}'" in str(w.message)]
        # one per callback: a resumed fit is a new callback in a new Trainer (as a new process would be)
        assert len(told) == len(run.callbacks), f"{len(told)} warnings about {fault!r}: {told}"


PROMISES = {
    "a": promise_a,
    "a-failing": promise_a_failing,
    "b": promise_b,
    "b-unlogged": promise_b_unlogged,
    "c": promise_c,
    "d": promise_d,
    "e": promise_e,
    "e-aside": promise_e_aside,
}


# ---------------------------------------------------------------------------------------------- cells

CELLS = [
    *(Cell(source=name) for name in SOURCES),  # each data source x fit
    *(Cell(schedule=name) for name in SCHEDULES if name != "default"),  # each schedule x map-style
    *(Cell(entry=name) for name in ENTRIES if name != "fit"),  # each entry point x map-style
    # crosses
    Cell("sampler", "default", "test"),
    Cell("iterable", "default", "validate"),
    Cell("multi", "default", "validate"),
    Cell("batch_sampler", "default", "fit_test"),
    Cell("random_getitem", "vci_float", "fit"),
    Cell("dict", "accumulate", "fit"),
    Cell("iterable", "every2", "fit"),
    Cell("meta", "max_steps", "fit"),
    Cell("sampler", "default", "resume_reorder"),
    Cell("map", "noval", "fit_test"),
    Cell("map", "lvb_float", "fit_validate"),
    Cell("multi", "vci_int", "fit"),
    Cell("batch_sampler", "lvb_int", "validate"),  # found by the random crosses
    Cell("dict", "default", "fit_validate"),
    Cell("iterable", "default", "resume"),
    Cell("meta", "lvb_float", "fit"),
    Cell("sampler", "fast_dev_run", "fit"),
    Cell("dict", "noval", "fit"),
    Cell("random_getitem", "default", "test"),
    Cell("varsize", "default", "validate"),
    Cell("raising", "default", "test"),
    Cell("multi_idx1", "default", "fit_test"),
]
assert all(compatible(cell) for cell in CELLS) and len(set(CELLS)) == len(CELLS)

# Findings not yet fixed: (cell id, or "*" for every cell; promise) -> what fails and why. Each becomes a
# strict xfail of its cells, so the mark must go once the fix lands. Empty: the eleven findings of the first
# run (F1-F11, in CHANGELOG 0.3.0's "Fixed") hold in every cell.
KNOWN: dict[tuple[str, str], str] = {}


def known_failure(cell: Cell, promise: str) -> str | None:
    """The finding that makes ``promise`` fail in ``cell`` on this branch's code, or ``None``. Named cells get
    a strict xfail from it (so a fix must remove the line); the random crosses skip those checks."""
    return KNOWN.get((cell.id, promise)) or KNOWN.get(("*", promise))


_RUNS: dict[tuple[Cell, str], object] = {}


def runs_of(cell: Cell, root) -> dict:
    for variant in VARIANTS:
        if (cell, variant) not in _RUNS:
            _RUNS[(cell, variant)] = execute(cell, variant, root / cell.id)
    return {variant: _RUNS[(cell, variant)] for variant in VARIANTS}


def _params(cells):
    for cell in cells:
        for name in promises(cell):
            reason = known_failure(cell, name)
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(cell, name, id=f"{cell.id}-{name}", marks=marks)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("setups")


@pytest.mark.parametrize(("cell", "promise"), list(_params(CELLS)))
def test_promise(cell, promise, root):
    PROMISES[promise](cell, runs_of(cell, root))


# ---------------------------------------------------------------------------------------------- random crosses


@st.composite
def cells(draw):
    return Cell(draw(st.sampled_from(SOURCES)), draw(st.sampled_from(list(SCHEDULES))), draw(st.sampled_from(ENTRIES)))


# No shrinking: a failing cross is already small (three axis values), and each example is four runs.
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)
@given(cell=cells().filter(compatible))
def test_random_crosses_keep_every_promise(cell, tmp_path_factory):
    root = tmp_path_factory.mktemp("crosses")
    for name in promises(cell):
        if known_failure(cell, name) is None:
            PROMISES[name](cell, runs_of(cell, root))


# ---------------------------------------------------------------------------------------------- two ranks

DDP_CELLS = [Cell("map", "default", "fit"), Cell("sampler", "default", "fit")]
_DDP: dict[Cell, list] = {}


@pytest.mark.distributed
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("cell", "promise"), list(_params(DDP_CELLS)))
def test_two_ranks_keep_every_promise(cell, promise, root):
    """2-process DDP (gloo): each rank keeps (a) and (d) and feeds the model only its loader's images (c);
    rank 0 writes the rows (b) and the warnings (e)."""
    if cell not in _DDP:
        _DDP[cell] = ddp_runs(cell, VARIANTS, root / f"ddp-{cell.id}")
    for rank, runs in enumerate(_DDP[cell]):
        if rank == 0 or promise not in ("b", "e"):
            PROMISES[promise](cell, runs)


# ---------------------------------------------------------------------------------------------- the device's RNG


class _DrawingNet(TinyCNN):
    """``TinyCNN`` (dropout: training draws from the device's RNG) whose forward also draws from the device's
    RNG in eval mode, as MC dropout would: a probe pass that did not put the RNG state back would move it."""

    def forward(self, x):
        torch.rand(len(x), device=x.device)
        return super().forward(x)


def _device_rng_after_fit(accelerator: str, callback: bool, root: Path) -> tuple[list, list]:
    """The RNG states of the device (all CUDA devices' for ``gpu``, torch's for ``cpu``) after seeding and after
    a 2-epoch fit of :class:`_DrawingNet`, with or without a strict SEISCallback scoring it."""

    def states() -> list:
        return list(torch.cuda.get_rng_state_all()) if accelerator == "gpu" else [torch.get_rng_state()]

    pl.seed_everything(0, verbose=False)
    start = states()
    seis = SEISCallback(layers=GOOD_LAYERS, transforms=["hflip"], num_samples=16, batch_size=8, log_figures=False,
                        strict=True)  # fmt: skip
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[seis] if callback else [],
        default_root_dir=root,
    )
    trainer.fit(_DrawingNet(), train_loader(), source("random_getitem").val)
    if callback:
        assert len(seis.history) == 3, seis.history  # before training and after each epoch: the model ran under SEIS
    return start, states()


@pytest.mark.parametrize(
    "accelerator",
    [
        "cpu",
        pytest.param(
            "gpu",
            id="cuda",
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(), reason="the CUDA RNG stream needs a CUDA device; this machine has none"
            ),
        ),
    ],
)
def test_device_rng_stream_is_the_same_with_and_without_the_callback(accelerator, tmp_path):
    """(a) for the device's RNG stream: after a fit whose training and probe passes both draw from it, the
    CUDA generators (``torch.cuda.get_rng_state_all()``) are where they are without the callback. The ``cpu``
    case runs the same code on torch's generator, so the test itself is exercised on every machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in tests/setups.py's execute: on these tiny tensors a second thread only spins
    try:
        start, without = _device_rng_after_fit(accelerator, False, tmp_path / "without")
        again, with_callback = _device_rng_after_fit(accelerator, True, tmp_path / "with")
    finally:
        torch.set_num_threads(threads)
    assert all(map(torch.equal, start, again))
    assert not all(map(torch.equal, start, without)), "the fit drew nothing from the device's RNG: nothing to check"
    assert len(with_callback) == len(without)
    assert all(map(torch.equal, without, with_callback)), "the callback moved the device's RNG stream"
