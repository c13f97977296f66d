"""``SEISCallback``: decides when to score a model with :class:`~seis_lightning.scoring.SEISProbe`, and where to log."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor
from torch.utils.data import Dataset
from typing_extensions import override

from seis_lightning._checks import check_options
from seis_lightning.functional import SEISWarning
from seis_lightning.layers import OutputGetter, resolve_layers
from seis_lightning.probe import InputGetter, ProbeError, probe_images
from seis_lightning.scoring import ForwardFn, ProbeResult, Scores, SEISProbe, _call, warning_kind
from seis_lightning.sweeps import sweep_summaries
from seis_lightning.trainer_io import epochs_trained, log_results, stage_loader
from seis_lightning.transforms import GeometricTransform


class SEISCallback(Callback):
    """Score how chosen layers respond to geometric transformations, at validation end.

    For every layer and transformation, the activations of a fixed probe set of validation images
    are compared with those of the transformed images (SEIS, arXiv 2602.04054; ``SEIS_SPEC.md``):
    ``equivariance``, ``invariance`` and ``channel_invariance``, each next to its null baseline.
    Scores go to every logger as ``seis/<transform>/<score>/<layer>`` (and ``<score>_null``, and
    ``<score>_se`` with the jackknife) at the step Lightning's own ``self.log`` uses
    (``fit_loop.epoch_loop._batches_that_stepped``, as ``LearningRateMonitor`` does: ``trainer.global_step``
    except inside a validation after an optimizer step, where Lightning logs one step earlier), so
    the SEIS scalars join the validation metrics' rows; figures go to loggers that take them. The
    scoring itself is :class:`SEISProbe`'s (see
    :func:`~seis_lightning.score_model`); this callback decides when, on which images, and where
    the results go. A magnitude sweep (``"rotate:0:60:20"``) adds, per score, a figure of the score
    against the magnitude (``seis/sweep_<family>/<score>``) and, per layer, the magnitude where
    equivariance falls half-way to its null (``seis/sweep_<family>/equivariance_halfway/<layer>``, see
    :mod:`seis_lightning.sweeps`). It never changes weights, modes, gradients or RNG streams, and a failure only
    warns unless ``strict=True``.

    When: before training (``score_before_training``, step 0), at every validation during fit in
    every ``every_n_epochs``-th epoch (mid-epoch validations included), at each epoch end when the
    model has no validation loop, and always once on the model as training ends. ``validate`` and
    ``test`` runs log under ``seis_validate/`` and ``seis_test/`` and keep their own entries: the
    training history is never overwritten (a checkpoint's history is taken only by a resumed fit,
    and a changed configuration warns and starts afresh). A new Trainer takes its own probe set;
    a new fit starts a fresh history. ``state_key`` follows ``layers`` and ``transforms``, so
    several callbacks can share a Trainer and its checkpoints.

    Attributes:
        probe: the :class:`SEISProbe` (``layers``, ``transforms``, ``draws``).
        probe_set: the probe images, once taken.
        history: the fit's scorings, each ``{"stage", "epoch", "global_step", "step", "scores", "draws"}``
            (``epoch`` fractional for mid-epoch validation; ``step`` the logged step).
        evaluations: this Trainer's ``validate``/``test`` scorings, the same way.
        scores: the latest scores, ``{transform: {layer: {score: value}}}``.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> from seis_lightning import SEISCallback
        >>> seis = SEISCallback(layers=["conv1", "conv2"], transforms=["random_affine", "rotate:30"])
        >>> trainer = Trainer(callbacks=[seis], logger=False, enable_progress_bar=False)

    Args:
        layers, transforms, batch_size, keep, max_positions, seed, layout, num_prefix_tokens,
            output_getter, forward_fn, precision, jackknife_groups: see :class:`SEISProbe`.
        num_samples: probe images, spread evenly over the validation set (or ``probe_data``), taken
            once and kept; bounded like validation by ``limit_val_batches`` and ``fast_dev_run``.
        every_n_epochs: score the validations of every n-th epoch (and always the final model).
        input_getter: how to take the images from a batch: ``None`` (a tensor, the first element of a
            tuple/list, or a dict's ``"image"``-like key), an index, a key, or a callable.
        probe_data: images ``[N, C, H, W]``, a dataset or a dataloader to take them from, instead of
            the validation set.
        score_before_training: also score the untrained model at fit start (step 0).
        strict: raise when probing fails instead of warning and disabling or skipping.
        log_figures: draw depth-wise curves and heatmaps for loggers that take figures.

    Raises:
        ValueError: for an argument out of range, an unknown transformation, or (at setup) a layer
            name that matches no module, listing the closest names.
    """

    def __init__(
        self,
        layers: Sequence[str] | str | None = None,
        transforms: Sequence[GeometricTransform | str] | GeometricTransform | str | None = None,
        num_samples: int = 512,
        batch_size: int = 64,
        every_n_epochs: int = 1,
        keep: float = 0.99,
        max_positions: int = 1024,
        seed: int = 0,
        input_getter: InputGetter = None,
        probe_data: Tensor | Dataset | None = None,
        score_before_training: bool = True,
        layout: str | Mapping[str, str] | None = None,
        num_prefix_tokens: int | Mapping[str, int] | None = None,
        output_getter: OutputGetter | Mapping[str, OutputGetter] | None = None,
        forward_fn: ForwardFn | None = None,
        precision: str = "auto",
        jackknife_groups: int = 0,
        strict: bool = False,
        log_figures: bool = True,
    ) -> None:
        check_options(num_samples=num_samples, every_n_epochs=every_n_epochs)
        if input_getter is not None and not isinstance(input_getter, (int, str)) and not callable(input_getter):
            raise ValueError(
                f"Expected `input_getter` to be None, an index, a key or a callable, got {input_getter!r}."
            )
        self.probe = SEISProbe(
            layers,
            transforms,
            batch_size=batch_size,
            keep=keep,
            max_positions=max_positions,
            seed=seed,
            layout=layout,
            num_prefix_tokens=num_prefix_tokens,
            output_getter=output_getter,
            forward_fn=forward_fn,
            precision=precision,
            jackknife_groups=jackknife_groups,
        )
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.input_getter = input_getter
        self.probe_data = probe_data
        self.score_before_training = score_before_training
        self.strict = strict
        self.log_figures = log_figures
        self._trainer_id: int | None = None
        self._fit_id: int | None = None
        self._saved: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []  # fit entries: stage, epoch, global_step, scores, draws
        self._reset_run()

    def _reset_run(self) -> None:
        self.evaluations: list[dict[str, Any]] = []  # this Trainer's validate/test entries, apart from training
        self.disabled: str | None = None
        self._images: dict[str, Tensor] = {}
        self._warned: set[tuple[str, str]] = set()

    @property
    def state_key(self) -> str:
        # What names the logged series; the other options are checked when a history is loaded.
        return self._generate_state_key(layers=self.probe.layers, transforms=[t.name for t in self.probe.transforms])

    def _config(self) -> dict[str, Any]:
        probe = self.probe
        names = ("seed", "keep", "max_positions", "precision", "jackknife_groups")
        return {"num_samples": self.num_samples, **{name: getattr(probe, name) for name in names}}

    @property
    def probe_set(self) -> Tensor | None:
        """The probe images (CPU), once taken; ``None`` before."""
        return next(iter(self._images.values()), None)

    @property
    def scores(self) -> Scores:
        """The latest scores, ``{transform: {layer: {score: value}}}`` (empty before the first pass)."""
        latest = max(self.history + self.evaluations, key=lambda e: e["order"], default=None)
        return latest["scores"] if latest else {}

    # ------------------------------------------------------------------ when

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._saved = None  # a checkpoint's state, loaded after this
        if self._trainer_id != id(trainer):  # a new Trainer: its own probe set and evaluations
            self._trainer_id = id(trainer)
            self._reset_run()
        if stage == "fit" and self._fit_id != id(trainer):  # a new fit: a fresh history
            self._fit_id = id(trainer)
            self.history = []
        if self.probe.layers is not None:
            resolve_layers(pl_module, self.probe.layers)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        saved, self._saved = self._saved, None
        if saved is not None and saved.get("config") not in (None, self._config()):
            rank_zero_warn(
                f"SEISCallback: the checkpoint's SEIS history was made with {saved['config']}, but this callback is"
                f" configured with {self._config()}; starting a fresh history instead of mixing the two."
            )
        elif saved is not None:
            self.history = list(saved.get("history", []))
        if self.score_before_training and not self.history:
            self._score(trainer, pl_module, "fit", epochs_trained(trainer))

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn != "fit":
            self._score(trainer, pl_module, "validate", epoch=float(trainer.current_epoch))
            return
        epoch = epochs_trained(trainer)
        if math.ceil(epoch) % self.every_n_epochs == 0:
            self._score(trainer, pl_module, "fit", epoch)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.enable_validation and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._score(trainer, pl_module, "fit", float(trainer.current_epoch + 1))

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last = self.history[-1]["global_step"] if self.history else None
        if last != trainer.global_step:  # the model as training ends is always scored once
            self._score(trainer, pl_module, "fit", epochs_trained(trainer))

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._score(trainer, pl_module, "test", epoch=float(trainer.current_epoch))

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "config": self._config()}

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # validate/test of a checkpoint: the Trainer has not trained, so its scores take the checkpoint's progress
        self._checkpoint = (trainer.ckpt_path, checkpoint.get("epoch", 0), checkpoint.get("global_step", 0))

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = state_dict  # a resumed fit takes it at train start; validate/test runs leave the history alone

    # ------------------------------------------------------------------ scoring

    def _score(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, epoch: float) -> None:
        if self.disabled is not None:
            return
        try:
            images = self._probe_images(trainer, stage)
        except (ProbeError, MisconfigurationException) as error:
            if self.strict:
                raise MisconfigurationException(str(error)) from error
            self.disabled = str(error)
            rank_zero_warn(f"SEISCallback is disabled for this run: {error} (set strict=True to raise).")
            return
        try:
            precision = trainer.precision_plugin
            forward = self.probe.forward_fn or _call

            def forward_fn(model: Any, x: Tensor) -> Any:
                with precision.forward_context():
                    return forward(model, precision.convert_input(x))

            result = self.probe.score(
                pl_module, images, rank=trainer.global_rank, world_size=trainer.world_size, forward_fn=forward_fn
            )
            if self.strict and result.reasons:
                raise RuntimeError(" ".join(result.reasons.values()))
        except Exception as error:
            if self.strict:
                raise
            self._warn(
                "probe",
                f"SEISCallback: the probe pass ({stage}, step {trainer.global_step}) failed and was"
                f" skipped; training goes on (set strict=True to raise). {type(error).__name__}: {error}",
            )
            return
        self._record(trainer, stage, epoch, result)

    def _record(self, trainer: pl.Trainer, stage: str, epoch: float, result: ProbeResult) -> None:
        for reason in result.reasons.values():
            self._warn("layer", reason)
        for layer, message in result.warnings:
            self._warn(layer, f"SEIS layer {layer!r} at step {trainer.global_step}: {message}")
        # Lightning's own logging step (what `self.log` and LearningRateMonitor use), so rows line up
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        entry = dict(stage=stage, epoch=epoch, global_step=trainer.global_step, step=step)
        path, *progress = getattr(self, "_checkpoint", (None, 0, 0))
        if stage != "fit" and path is not None and path == trainer.ckpt_path:  # see on_load_checkpoint
            step = progress[1]
            entry.update(epoch=float(progress[0]), global_step=step, step=step)
        entry.update(scores=result.scores, draws=result.draws)
        entry["order"] = max([e["order"] for e in self.history + self.evaluations], default=-1) + 1  # the latest
        (self.history if stage == "fit" else self.evaluations).append(entry)
        prefix = "seis" if stage == "fit" else f"seis_{stage}"
        flat = {
            f"{prefix}/{transform}/{name}/{layer}": value
            for transform, by_layer in result.scores.items()
            for layer, values in by_layer.items()
            for name, value in values.items()
        }
        flat.update(sweep_summaries(prefix, result.scores, self.probe.transforms))  # one number per sweep and layer
        trainer.callback_metrics.update({key: torch.tensor(value) for key, value in flat.items()})
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=step)
        history = self.history if stage == "fit" else [entry]
        log_results(trainer, prefix, entry, history, figures=self.log_figures, transforms=self.probe.transforms)

    def _warn(self, layer: str, message: str) -> None:
        key = warning_kind(layer, message)
        if key not in self._warned:  # once per layer and kind, not per changing number
            self._warned.add(key)
            rank_zero_warn(message, category=SEISWarning)

    def _probe_images(self, trainer: pl.Trainer, stage: str) -> Tensor:
        # One probe set per Trainer: the validation set's (or probe_data), which test runs reuse when there is one.
        key = "test" if stage == "test" and self.probe_data is None and "validate" not in self._images else "validate"
        if key in self._images:
            return self._images[key]
        source, limit = self.probe_data, self.num_samples
        if source is None:
            source, limit = stage_loader(trainer, key, self.num_samples)
            if source is None:
                raise MisconfigurationException(
                    "SEISCallback needs probe images, but the Trainer has no validation dataloader (or"
                    " `limit_val_batches=0`, or the model has no `validation_step`, so Lightning skips validation)."
                    " Pass `val_dataloaders` to `Trainer.fit`, use a datamodule with `val_dataloader()`, or give"
                    " `SEISCallback(probe_data=images_or_dataset)`."
                )
        what = "probe_data" if self.probe_data is not None else f"the {'test' if key == 'test' else 'validation'} data"
        images = probe_images(
            source, limit, input_getter=self.input_getter, what=what, batch_size=self.probe.batch_size
        )
        if len(images) < self.num_samples:
            rank_zero_warn(
                f"SEISCallback asked for num_samples={self.num_samples} probe images but {what} gives {len(images)}"
                " (bounded by the data, `limit_val_batches` or `fast_dev_run`); using those."
            )
        self._images[key] = images
        return images
