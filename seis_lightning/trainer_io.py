"""The Trainer-facing side of :class:`~seis_lightning.SEISCallback`: which loader it probes and how
far its limits reach, where the Trainer stands (epochs trained, the logging step), and where results
go (every logger, the ``seis_scores.csv`` file, figures for loggers that take them).

Everything here reads a :class:`~lightning.pytorch.Trainer`; the figures themselves are
:mod:`seis_lightning.plotting`'s, pure.
"""

from __future__ import annotations

import csv
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.model_helpers import is_overridden
from matplotlib.figure import Figure
from torch import Tensor

from seis_lightning.functional import SCORES
from seis_lightning.plotting import (
    CSV_COLUMNS,
    aliasing_figures,
    custom_scalars_layout,
    depth_figure,
    heatmap_figure,
    margin_scalars,
    progress_label,
    score_rows,
    sweep_figures,
)
from seis_lightning.probe import InputGetter, probe_images

CSV_NAME = "seis_scores.csv"
# The CSV files each Trainer (one run) has written: its first rows start a file afresh (a re-used folder
# or logger version holds one run's rows), later ones append.
_CSV_STARTED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
Scores = Mapping[str, Mapping[str, float]]


# ------------------------------------------------------------------ where the Trainer stands


def epochs_trained(trainer: pl.Trainer) -> float:
    """Epochs trained so far, fractional inside an epoch (mid-epoch validation, ``max_steps``, a mid-epoch resume)."""
    begun = trainer.fit_loop.epoch_progress.current.ready  # epochs begun, the latest included
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # of the latest epoch begun
    total = trainer.num_training_batches
    fraction = min(batches / total, 1.0) if math.isfinite(total) and total > 0 else float(batches > 0)
    return max(begun - 1, 0) + fraction


def logging_step(trainer: pl.Trainer, epoch_end: bool = False) -> int:
    """The step Lightning's own ``self.log`` uses now (as ``LearningRateMonitor`` does): the batches that
    stepped; with ``epoch_end``, one fewer (not below 0): the row where Lightning logged the epoch
    metrics at a training epoch's end, and the row of a resumed model's last step."""
    step = trainer.fit_loop.epoch_loop._batches_that_stepped
    return max(step - 1, 0) if epoch_end else step


def checkpoint_progress(checkpoint: Mapping[str, Any], state_key: str) -> tuple[float, int, int]:
    """``(epoch, global_step, step)`` of a checkpoint's model, labelled as the fit that saved it labelled
    the same weights: epochs trained (not Lightning's 0-based ``epoch`` field), optimizer steps, and the
    logged step (the row of TensorBoard and the CSV).

    Taken from the checkpoint's own SEIS history (under ``state_key``) when it scored that step, else
    from the fit loop's saved progress, as :func:`epochs_trained` and :func:`logging_step` count them.
    """
    global_step = int(checkpoint.get("global_step", 0))
    history = checkpoint.get("callbacks", {}).get(state_key, {}).get("history", [])
    scored = [entry for entry in history if entry.get("global_step") == global_step]
    if scored:
        return float(scored[-1]["epoch"]), global_step, int(scored[-1]["step"])
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    begun = loop.get("epoch_progress", {}).get("current", {}).get("ready", checkpoint.get("epoch", 0) + 1)
    batches = loop.get("epoch_loop.batch_progress", {})
    current = batches.get("current", {}).get("processed", 0)
    earlier = batches.get("total", {}).get("processed", 0) - current  # of the epochs before the latest begun
    if batches.get("is_last_batch"):
        fraction = 1.0
    else:  # the batches an epoch has, known once one epoch is complete (else the epochs completed)
        fraction = min(current / (earlier / (begun - 1)), 1.0) if begun > 1 and earlier > 0 else 0.0
    stepped = loop.get("epoch_loop.state_dict", {}).get("_batches_that_stepped", global_step)
    return max(begun - 1, 0) + fraction, global_step, min(stepped, max(global_step - 1, 0))


def check_monitors(
    trainer: pl.Trainer, transforms: Sequence[str], every_n_epochs: int, max_overhead: float | None = None
) -> None:
    """Refuse a ``ModelCheckpoint`` or ``EarlyStopping`` that monitors a SEIS score (``seis/<transform>/...``
    of one of ``transforms``) at times the callback does not score: it would rank by an earlier model's
    score, or stop at a validation whose key is absent (the callback leaves none stale).

    Raises:
        MisconfigurationException: naming the monitor and the setting that aligns it.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    every = trainer.check_val_every_n_epoch
    skips = every_n_epochs > 1 and (every is None or every % every_n_epochs != 0)  # some validations unscored
    align = f"or Trainer(check_val_every_n_epoch={every_n_epochs}), so that every validation is scored"
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if not isinstance(monitor, str) or not any(monitor.startswith(f"seis/{t}/") for t in transforms):
            continue
        what = f"{type(callback).__name__}(monitor={monitor!r})"
        if max_overhead is not None and (isinstance(callback, ModelCheckpoint) or callback.strict):
            raise MisconfigurationException(
                f"{what} needs a SEIS score at every validation it reads, but SEISCallback(max_overhead="
                f"{max_overhead}) skips scorings to stay within its budget. Remove `max_overhead`, or for"
                " EarlyStopping set strict=False to check only the scored validations."
            )
        if isinstance(callback, ModelCheckpoint) and (callback._every_n_train_steps or callback._train_time_interval):
            raise MisconfigurationException(
                f"{what} saves by training steps or time, but SEIS scores only at validations: it would rank"
                " checkpoints by an earlier model's score. Save at validations (`every_n_epochs`) instead."
            )
        if isinstance(callback, ModelCheckpoint) and skips and callback._every_n_epochs % every_n_epochs:
            raise MisconfigurationException(
                f"{what} reads its key at the validations of every {callback._every_n_epochs} epoch(s), but"
                f" SEISCallback(every_n_epochs={every_n_epochs}) scores the validations of one epoch in"
                f" {every_n_epochs}, and a skipped validation has no SEIS scores to rank by. Set"
                f" ModelCheckpoint(every_n_epochs={every_n_epochs}, ...) {align}."
            )
        if isinstance(callback, EarlyStopping) and skips and callback.strict:
            raise MisconfigurationException(
                f"{what} checks every validation, but SEISCallback(every_n_epochs={every_n_epochs}) scores"
                f" the validations of one epoch in {every_n_epochs}, and a skipped validation has no SEIS scores."
                f" Set EarlyStopping(strict=False, ...) to check only the scored validations ({align})."
            )


# ------------------------------------------------------------------ which images


def collect_probe_images(
    trainer: pl.Trainer,
    stage: str,
    cache: dict[tuple, Tensor],
    *,
    probe_data: Any,
    dataloader_idx: int,
    num_samples: int,
    input_getter: InputGetter,
    batch_size: int,
    warned: set,
) -> tuple[tuple, Tensor]:
    """``stage``'s probe images and the key that names their source, taken through
    :func:`~seis_lightning.probe.probe_images` once per source (``cache``, keyed by source).

    The source is ``probe_data``, else the loader of the running loop (the fit's validation loop, or
    that of ``validate``/``test``) as the user gave it, before Lightning adds a distributed sampler:
    every process probes the same images and shares the chunks out. A loader given to ``fit`` and
    then to ``validate`` (or a datamodule's) is one source, probed once.

    Raises:
        MisconfigurationException: when there is no loader, or ``dataloader_idx`` names none.
        ProbeError: when the images cannot be used (see :func:`~seis_lightning.probe.probe_images`).
        Exception: whatever the loader raises.
    """
    if probe_data is not None:
        key = ("probe_data",)
        if key not in cache:
            cache[key] = _collect(probe_data, "probe_data", None, num_samples, input_getter, batch_size)
        return key, cache[key]
    test = stage == "test"
    name, step = ("test", "test_step") if test else ("validation", "validation_step")
    loops = {"fit": trainer.fit_loop.epoch_loop.val_loop, "validate": trainer.validate_loop}
    source = loops[stage]._data_source if stage in loops else trainer.test_loop._data_source
    limit = trainer.limit_test_batches if test else trainer.limit_val_batches
    runs = is_overridden(step, trainer.lightning_module)  # else Lightning skips the loop and its loader
    if source.instance is None or not source.is_defined() or limit == 0 or not runs:
        argument = "val_dataloaders" if stage == "fit" else "dataloaders"
        raise MisconfigurationException(
            f"SEISCallback needs probe images, but the Trainer has no {name} dataloader (or"
            f" `limit_{'test' if test else 'val'}_batches=0`, or the model has no `{step}`, so Lightning skips it)."
            f" Pass `{argument}` to the Trainer's call, use a datamodule with `val_dataloader()`, or give"
            " `SEISCallback(probe_data=images_or_dataset)`."
        )
    key = (id(source.instance), source.name, dataloader_idx, limit)
    if key in cache:
        return key, cache[key]
    loaders = source.dataloader()
    if isinstance(loaders, Mapping):
        loaders = list(loaders.values())
    what = f"the {name} data"
    if isinstance(loaders, (list, tuple)):
        if dataloader_idx >= len(loaders):
            raise MisconfigurationException(
                f"SEISCallback(dataloader_idx={dataloader_idx}) names no loader: there are {len(loaders)}"
                f" {name} dataloaders; choose one of 0-{len(loaders) - 1}."
            )
        if len(loaders) > 1 and (name, "dataloader_idx") not in warned:
            warned.add((name, "dataloader_idx"))
            rank_zero_warn(
                f"SEISCallback found {len(loaders)} {name} dataloaders and probes the one at"
                f" dataloader_idx={dataloader_idx}; set `SEISCallback(dataloader_idx=...)` to probe another."
            )
        loaders = loaders[dataloader_idx]
        what += f" (dataloader_idx={dataloader_idx})" if dataloader_idx else ""
    cache[key] = _collect(loaders, what, _max_batches(limit, loaders), num_samples, input_getter, batch_size)
    return key, cache[key]


def _collect(
    data: Any, what: str, max_batches: int | None, num_samples: int, input_getter: InputGetter, batch_size: int
) -> Tensor:
    images = probe_images(
        data, num_samples, input_getter=input_getter, what=what, batch_size=batch_size, max_batches=max_batches
    )
    if len(images) < num_samples:
        rank_zero_warn(
            f"SEISCallback asked for num_samples={num_samples} probe images but {what} gives {len(images)}"
            " (bounded by the data, `limit_val_batches` or `fast_dev_run`); using those."
        )
    return images


def _max_batches(limit: int | float, loader: Any) -> int | None:
    """How many batches Lightning runs of ``loader`` under ``limit_*_batches`` (``None``: all)."""
    if isinstance(limit, int):
        return limit
    if limit >= 1.0 or not hasattr(loader, "__len__"):
        return None
    return max(1, int(limit * len(loader)))


# ------------------------------------------------------------------ where results go


def log_scalars(
    trainer: pl.Trainer,
    prefix: str,
    scores: Mapping[str, Mapping[str, Scores]],
    step: int,
    extra: Mapping[str, float] | None = None,
) -> set[str]:
    """Every score as ``<prefix>/<transform>/<score>/<layer>`` to every logger at ``step``, and to
    ``trainer.callback_metrics`` (for ``ModelCheckpoint``/``EarlyStopping`` to monitor); ``extra`` tagged
    scalars (the sweeps' summaries) with them. Returns the keys."""
    flat = {
        f"{prefix}/{transform}/{name}/{layer}": value
        for transform, by_layer in scores.items()
        for layer, values in by_layer.items()
        for name, value in values.items()
    }
    flat.update(extra or {})
    trainer.callback_metrics.update({key: torch.tensor(value) for key, value in flat.items()})
    for logger in trainer.loggers:
        logger.log_metrics(flat, step=step)
    return set(flat)


def log_results(
    trainer: Any,
    prefix: str,
    entry: Mapping[str, Any],
    history: Sequence[Mapping],
    figures: bool,
    transforms: Sequence[Any] = (),
) -> None:
    """Write one scoring's rows to ``seis_scores.csv`` in the log folder (:func:`log_folder`); give every
    TensorBoard logger the custom-scalars layout and, with the jackknife, the ends of its margin charts
    (:func:`margin_scalars`); with ``figures``, draw the figures for every logger that takes them
    (TensorBoard, Weights & Biases, MLflow), a :func:`sweep_figure` per score for every sweep among
    ``transforms`` and, with a ``shift`` sweep, the :func:`aliasing_figure` included. Rank zero only."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if not trainer.is_global_zero:
        return
    if not trainer.fast_dev_run:  # like Lightning's own logs and checkpoints, none in a fast_dev_run
        path = os.path.join(log_folder(trainer), CSV_NAME)
        started = _CSV_STARTED.setdefault(trainer, set())
        if path in started:
            _write_csv(path, score_rows(entry, transforms), "a")
        else:  # this run's first rows: the file starts afresh, with a resumed fit's earlier scorings
            started.add(path)
            earlier = [row for h in history if h is not entry for row in score_rows(h, transforms)]
            _write_csv(path, earlier + score_rows(entry, transforms), "w")
        _upload_csv(trainer, path)
    step, label = entry["step"], progress_label(entry)
    bounds = margin_scalars(prefix, entry["scores"])
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            _write_layout(logger.experiment, prefix, entry["scores"])
            if bounds:
                logger.log_metrics(bounds, step=step)
    if not figures:
        return
    for transform, by_layer in entry["scores"].items():
        tagged = {f"{prefix}/{transform}/depth": depth_figure(by_layer, f"{transform}, {label}")}
        if len(history) > 1 or prefix == "seis":
            series = [(h["epoch"], h["scores"][transform]) for h in history if transform in h["scores"]]
            for score in SCORES:
                tagged[f"{prefix}/{transform}/heatmap/{score}"] = heatmap_figure(
                    series, score, f"{score} ({transform})"
                )
        for logger in trainer.loggers:
            _log_figures(logger, tagged, step)
    sweeps = sweep_figures(prefix, entry["scores"], transforms, label)
    sweeps |= aliasing_figures(prefix, entry["scores"], transforms, entry.get("strides", {}), label)
    for logger in trainer.loggers:
        _log_figures(logger, sweeps, step)


def log_folder(trainer: Any) -> str:
    """Where ``seis_scores.csv`` goes: the run's own folder. That is the first TensorBoard or CSV logger's
    ``log_dir`` (what ``trainer.log_dir`` gives, without its broadcast, which would stall a multi-process
    run called from rank zero alone), else a Weights & Biases run's files folder (synced with the run),
    else the Trainer's ``default_root_dir`` (``logger=False``; MLflow, whose ``save_dir`` is the store's
    root shared by every run, gets the file as an artifact of its run instead)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, (TensorBoardLogger, CSVLogger)) and logger.log_dir:
            return logger.log_dir
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and getattr(logger.experiment, "dir", None):
            return logger.experiment.dir
    return trainer.default_root_dir


def _upload_csv(trainer: Any, path: str) -> None:
    """The whole ``seis_scores.csv`` so far, as an artifact of every MLflow run (replacing the last one)."""
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, path)


def _write_layout(writer: Any, prefix: str, scores: Mapping[str, Scores]) -> None:
    """One custom-scalars layout per writer, merged over every SEIS callback and stage that logs to it and
    rewritten when one adds a chart (TensorBoard reads the latest)."""
    written: dict[tuple[str, str], tuple[tuple[str, bool], ...]] = getattr(writer, "_seis_layout", {})
    new = {
        (prefix, transform): tuple((layer, _has_se(values)) for layer, values in by_layer.items())
        for transform, by_layer in scores.items()
    }
    if all(written.get(key) == layers for key, layers in new.items()):
        return
    written = writer._seis_layout = {**written, **new}
    layout: dict = {}
    for p in sorted({p for p, _ in written}):
        transforms = sorted(t for q, t in written if q == p)
        margins = {t: [layer for layer, se in written[p, t] if se] for t in transforms}
        layers = {t: [layer for layer, _ in written[p, t]] for t in transforms}
        layout.update(custom_scalars_layout(transforms, p, margins, layers))
    writer.add_custom_scalars(layout)


def _has_se(values: Mapping[str, float]) -> bool:
    return any(f"{score}_se" in values for score in SCORES)


def _log_figures(logger: Any, figures: Mapping[str, Figure], step: int) -> None:
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    if isinstance(logger, TensorBoardLogger):
        for tag, figure in figures.items():
            logger.experiment.add_figure(tag, figure, step)
    elif isinstance(logger, WandbLogger):
        for tag, figure in figures.items():
            logger.log_image(key=tag, images=[_png(figure)], step=step)
    elif isinstance(logger, MLFlowLogger):
        for tag, figure in figures.items():
            logger.experiment.log_figure(logger.run_id, figure, f"{tag}_step{step}.png")


def _png(figure: Figure) -> Any:
    """The figure as an RGB array (for loggers that take images)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _write_csv(path: str, rows: list[dict[str, Any]], mode: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    new = mode == "w" or not os.path.exists(path)
    with open(path, mode, newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
