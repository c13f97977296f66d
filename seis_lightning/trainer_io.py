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
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from matplotlib.figure import Figure

from seis_lightning.functional import SCORES
from seis_lightning.plotting import (
    CSV_COLUMNS,
    custom_scalars_layout,
    depth_figure,
    heatmap_figure,
    margin_scalars,
    score_rows,
    sweep_figures,
)

CSV_NAME = "seis_scores.csv"
Scores = Mapping[str, Mapping[str, float]]


# ------------------------------------------------------------------ where the Trainer stands


def epochs_trained(trainer: pl.Trainer) -> float:
    """Epochs trained so far, fractional inside an epoch (mid-epoch validation, ``max_steps``, a mid-epoch resume)."""
    begun = trainer.fit_loop.epoch_progress.current.ready  # epochs begun, the latest included
    batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # of the latest epoch begun
    total = trainer.num_training_batches
    fraction = min(batches / total, 1.0) if math.isfinite(total) and total > 0 else float(batches > 0)
    return max(begun - 1, 0) + fraction


def stage_loader(trainer: pl.Trainer, stage: str, num_samples: int) -> tuple[Any, int]:
    """The stage's first dataloader, and how many images its limits (``limit_*_batches``, ``fast_dev_run``) allow."""
    name = "test" if stage == "test" else "val"
    loaders, limit = getattr(trainer, f"{name}_dataloaders"), getattr(trainer, f"limit_{name}_batches")
    if loaders is None and trainer.datamodule is not None:
        try:
            loaders = getattr(trainer.datamodule, f"{name}_dataloader")()
        except (NotImplementedError, AttributeError, MisconfigurationException):
            loaders = None
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    if loaders is None or limit == 0:
        return None, 0
    batch_size = getattr(loaders, "batch_size", None) or 1
    if isinstance(limit, int):
        num_samples = min(num_samples, limit * batch_size)
    elif limit < 1 and hasattr(loaders, "__len__"):
        num_samples = min(num_samples, max(1, int(limit * len(loaders))) * batch_size)
    return loaders, num_samples


# ------------------------------------------------------------------ where results go


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
    ``transforms`` included. Rank zero only."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if not trainer.is_global_zero:
        return
    if not trainer.fast_dev_run:  # like Lightning's own logs and checkpoints, none in a fast_dev_run
        path = os.path.join(log_folder(trainer), CSV_NAME)
        _append_csv(path, score_rows(entry, transforms))
        _upload_csv(trainer, path)
    step, epoch = entry["step"], entry["epoch"]
    bounds = margin_scalars(prefix, entry["scores"])
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            _write_layout(logger.experiment, prefix, entry["scores"])
            if bounds:
                logger.log_metrics(bounds, step=step)
    if not figures:
        return
    for transform, by_layer in entry["scores"].items():
        tagged = {f"{prefix}/{transform}/depth": depth_figure(by_layer, f"{transform}, epoch {epoch:g}")}
        if len(history) > 1 or prefix == "seis":
            series = [(h["epoch"], h["scores"][transform]) for h in history if transform in h["scores"]]
            for score in SCORES:
                tagged[f"{prefix}/{transform}/heatmap/{score}"] = heatmap_figure(
                    series, score, f"{score} ({transform})"
                )
        for logger in trainer.loggers:
            _log_figures(logger, tagged, step)
    for logger in trainer.loggers:
        _log_figures(logger, sweep_figures(prefix, entry["scores"], transforms, f"epoch {epoch:g}"), step)


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
    written: dict[tuple[str, str], tuple[str, ...]] = getattr(writer, "_seis_layout", {})
    new = {
        (prefix, transform): tuple(layer for layer, values in by_layer.items() if _has_se(values))
        for transform, by_layer in scores.items()
    }
    if all(written.get(key) == layers for key, layers in new.items()):
        return
    written = writer._seis_layout = {**written, **new}
    layout: dict = {}
    for p in sorted({p for p, _ in written}):
        transforms = sorted(t for q, t in written if q == p)
        layout.update(custom_scalars_layout(transforms, p, {t: written[p, t] for t in transforms}))
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


def _append_csv(path: str, rows: list[dict[str, Any]]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    new = not os.path.exists(path)
    with open(path, "a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
