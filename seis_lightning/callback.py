"""``SEISCallback``: decides when to score a model with :class:`~seis_lightning.scoring.SEISProbe`, and where to log."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor
from torch.utils.data import Dataset
from typing_extensions import override

from seis_lightning.forward import ForwardFn
from seis_lightning.functional import SEISWarning
from seis_lightning.layers import OutputGetter, check_layer_keys, layer_names, resolve_layers
from seis_lightning.options import check_options
from seis_lightning.probe import InputGetter, ProbeError
from seis_lightning.results import ProbeResult, Scores, warning_kind
from seis_lightning.scoring import BATCH_SIZE, SEISProbe
from seis_lightning.sweeps import sweep_summaries
from seis_lightning.trainer_io import (
    check_monitors,
    checkpoint_progress,
    collect_probe_images,
    epochs_trained,
    log_results,
    log_scalars,
    logging_step,
)
from seis_lightning.transforms import GeometricTransform

MAX_FAILURES = 3  # failed probe passes in a row before the callback disables itself


class HistoryEntry(TypedDict):
    """One scoring in :attr:`SEISCallback.history` or :attr:`SEISCallback.evaluations`.

    A plain ``dict`` at run time, so checkpoints hold plain dicts.
    """

    stage: str  # "fit", "validate" or "test"
    epoch: float  # fractional for mid-epoch validation
    global_step: int
    step: int  # the step the scores were logged at
    scores: Scores  # {transform: {layer: {score: value}}}, each random family's mean over its draws
    draws: dict[str, dict[str, list[dict[str, float]]]]  # {transform: {layer: [scores of each draw]}}
    reasons: dict[str, str]  # why a layer has NaN scores
    transform_reasons: dict[str, str]  # why a transformation has NaN scores
    strides: dict[str, float | None]  # each layer's total stride in input pixels (None: none)
    aliasing: dict[str, dict[str, Any]]  # with a shift sweep: {layer: {"gap", "se", "reason"}} (AliasingGap)
    order: int  # over history and evaluations together: the highest is the latest


class SEISCallback(Callback):
    """Score how chosen layers respond to geometric transformations, at validation end.

    For every layer and transformation, the activations of a fixed probe set of validation images
    are compared with those of the transformed images (SEIS, arXiv 2602.04054; ``SEIS_SPEC.md``):
    ``equivariance``, ``invariance`` and ``channel_invariance``, each next to its null baseline.
    Scores go to every logger as ``seis/<transform>/<score>/<layer>`` (and ``<score>_null``, and
    ``<score>_se`` with the jackknife) at the step Lightning's own ``self.log`` uses
    (``fit_loop.epoch_loop._batches_that_stepped``, as ``LearningRateMonitor`` does: ``trainer.global_step``
    except inside a validation after an optimizer step, where Lightning logs one step earlier), so
    the SEIS scalars join the validation metrics' rows (without validation, the epoch metrics' rows);
    figures go to loggers that take them. The
    scoring itself is :class:`SEISProbe`'s (see
    :func:`~seis_lightning.score_model`); this callback decides when, on which images, and where
    the results go. A magnitude sweep (``"rotate:0:60:20"``) adds, per score, a figure of the score
    against the magnitude (``seis/sweep_<family>/<score>``) and, per layer, the magnitude where
    equivariance falls half-way to its null (``seis/sweep_<family>/equivariance_halfway/<layer>``, see
    :mod:`seis_lightning.sweeps`). A ``shift`` sweep (``"shift:0:4:0.5"``, pixels) adds each layer's aliasing
    gap (``seis/aliasing/<layer>``; in ``seis_scores.csv`` a row per layer, transform ``sweep_shift``, score
    ``aliasing_gap``, with its SE and the layer's stride) and a figure of equivariance against the shift with
    the multiples of each layer's stride marked (``seis/sweep_shift/aliasing``). It never changes weights,
    modes, gradients or RNG streams, and a failure only warns unless ``strict=True``.

    When: before training (``score_before_training``, step 0), at every validation during fit in
    every ``every_n_epochs``-th epoch (mid-epoch validations included), at each epoch end when the
    model has no validation loop, and always once on the model as training ends. ``validate`` and
    ``test`` runs log under ``seis_validate/`` and ``seis_test/`` and keep their own entries: the
    training history is never overwritten (a checkpoint's history is taken only by a resumed fit,
    and a changed configuration warns and starts afresh). A new Trainer takes its own probe sets;
    a new fit starts a fresh history. ``state_key`` follows the set of ``layers`` (not their order)
    and ``transforms``, so several callbacks can share a Trainer and its checkpoints.

    Attributes:
        probe: the :class:`SEISProbe` (``layers``, ``transforms``, ``draws``).
        probe_set: the probe images of the latest scoring.
        history: the fit's scorings, each a :class:`HistoryEntry` ``{"stage", "epoch", "global_step", "step",
            "scores", "draws", "reasons", "transform_reasons", "strides", "aliasing", "order"}`` (``epoch``
            fractional for mid-epoch validation; ``step`` the logged step; ``reasons`` why a layer,
            ``transform_reasons`` why a transformation, has NaN scores; ``strides`` each layer's total stride;
            ``aliasing`` each layer's aliasing gap ``{"gap", "se", "reason"}`` with a ``shift`` sweep).
        evaluations: this Trainer's ``validate``/``test`` scorings, the same way.
        scores: the latest scores, ``{transform: {layer: {score: value}}}``.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> from seis_lightning import SEISCallback
        >>> seis = SEISCallback(layers=["conv1", "conv2"], transforms=["random_affine", "rotate:30"])
        >>> trainer = Trainer(callbacks=[seis], logger=False, enable_progress_bar=False)

    Args:
        layers, transforms, batch_size, forward_batch_size, keep, max_positions, seed, layout,
            num_prefix_tokens, output_getter, forward_fn, precision, jackknife_groups, strides: see
            :class:`SEISProbe`.
        num_samples: probe images, spread evenly over what the validation loader yields (through its own
            sampler or batch_sampler, collate function and dataset transforms; or ``probe_data``), taken
            once per loader and kept; bounded like validation by ``limit_val_batches`` and ``fast_dev_run``.
            ``validate`` and ``test`` runs probe the loader of that call (the fit's images are reused
            when it is the same loader).
        every_n_epochs: score the validations of every n-th epoch (and always the final model).
        input_getter: how to take the images from a batch: ``None`` (a tensor, the first element of a
            tuple/list, or a dict's ``"image"``-like key), an index, a key, or a callable.
        probe_data: images ``[N, C, H, W]``, a dataset or a dataloader to take them from, instead of
            the validation set.
        score_before_training: also score the untrained model at fit start (step 0).
        strict: raise at the first failure (collecting images, a forward pass, a layer or transformation
            that cannot be scored), with its cause, instead of warning. Without it nothing the callback
            does ends training: a failure to collect images disables the callback with one warning, a
            failed probe pass is skipped (and after ``MAX_FAILURES`` = 3 in a row disables it), a layer or
            transformation that cannot be scored has NaN scores and its reason in the history and the CSV.
        log_figures: draw depth-wise curves and heatmaps for loggers that take figures.
        dataloader_idx: with several validation (or test) dataloaders, the one to probe (default the
            first); a warning names it.
        max_overhead: a budget for the probe passes' share of the fit's wall time (e.g. ``0.05``): a
            scoring that would take the share above it is skipped (one warning says so). The baseline
            and the final model are always scored. Every fit scoring logs its seconds as
            ``seis/time/probe`` and the share so far as ``seis/time/share``, with or without a budget.

    Note:
        Under ``strategy="ddp_spawn"`` training runs in worker processes that Lightning starts: the
        ``history``, ``evaluations`` and ``scores`` are filled there, and this object in the launching
        process stays empty. Read the scores from the loggers or ``seis_scores.csv``, or use
        ``strategy="ddp"``, which runs the script itself in every process.

    Raises:
        ValueError: for an argument out of range, an unknown transformation, or (at setup) a layer
            name that matches no module or a declared stride of a layer not scored, listing the closest names.
    """

    def __init__(
        self,
        layers: Sequence[str] | str | None = None,
        transforms: Sequence[GeometricTransform | str] | GeometricTransform | str | None = None,
        num_samples: int = 512,
        batch_size: int = BATCH_SIZE,
        forward_batch_size: int | None = None,
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
        dataloader_idx: int = 0,
        max_overhead: float | None = None,
        strides: Mapping[str, int | float] | None = None,
    ) -> None:
        check_options(num_samples=num_samples, every_n_epochs=every_n_epochs)
        if isinstance(dataloader_idx, bool) or not isinstance(dataloader_idx, int) or dataloader_idx < 0:
            raise ValueError(f"Expected `dataloader_idx` to be a non-negative integer, but got {dataloader_idx!r}.")
        if input_getter is not None and not isinstance(input_getter, (int, str)) and not callable(input_getter):
            raise ValueError(
                f"Expected `input_getter` to be None, an index, a key or a callable, got {input_getter!r}."
            )
        self.probe = SEISProbe(
            layers,
            transforms,
            batch_size=batch_size,
            forward_batch_size=forward_batch_size,
            keep=keep,
            max_positions=max_positions,
            seed=seed,
            layout=layout,
            num_prefix_tokens=num_prefix_tokens,
            output_getter=output_getter,
            forward_fn=forward_fn,
            precision=precision,
            jackknife_groups=jackknife_groups,
            strides=strides,
        )
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.input_getter = input_getter
        self.probe_data = probe_data
        self.score_before_training = score_before_training
        self.strict = strict
        self.log_figures = log_figures
        self.dataloader_idx = dataloader_idx
        if max_overhead is not None and not (isinstance(max_overhead, (int, float)) and 0 < max_overhead < 1):
            raise ValueError(
                f"Expected `max_overhead` to be None or a share of the fit's time in (0, 1), e.g. 0.05, but got"
                f" {max_overhead!r}."
            )
        self.max_overhead = max_overhead
        self._fit_started = time.perf_counter()
        self._probe_seconds = (0.0, 0.0)  # this fit's probe passes: all together, the latest
        self._trainer_id: int | None = None
        self._fit_id: int | None = None
        self._saved: dict[str, Any] | None = None
        self.history: list[HistoryEntry] = []  # the fit's scorings
        self._reset_run()

    def _reset_run(self) -> None:
        self.evaluations: list[HistoryEntry] = []  # this Trainer's validate/test scorings, apart from training
        self.disabled: str | None = None
        self._images: dict[tuple, Tensor] = {}  # per probed loader (see trainer_io.probe_source)
        self._latest: tuple | None = None
        self._warned: set[tuple[str, str]] = set()
        self._failures = 0  # failed probe passes in a row
        self._logged: set[str] = set()  # the keys this callback put in trainer.callback_metrics
        self._scored_weights: tuple[int, ...] | None = None  # the weights of the latest fit scoring (see _weights)

    @property
    def state_key(self) -> str:
        # What names the logged series; the other options are checked when a history is loaded.
        # The layers as a set: the same layers in another order are the same series (the order given
        # still sets the figures' depth order).
        layers = sorted(self.probe.layers) if self.probe.layers is not None else None
        return self._generate_state_key(layers=layers, transforms=[t.name for t in self.probe.transforms])

    def _config(self) -> dict[str, Any]:
        options = self.probe.options
        numerics = {name: getattr(options, name) for name in ("keep", "max_positions", "precision", "jackknife_groups")}
        return {"num_samples": self.num_samples, "seed": self.probe.seed, **numerics}

    @property
    def probe_set(self) -> Tensor | None:
        """The probe images (CPU) of the latest scoring; ``None`` before the first."""
        return self._images.get(self._latest)

    @property
    def scores(self) -> Scores:
        """The latest scores, ``{transform: {layer: {score: value}}}`` (empty before the first pass)."""
        latest = max(self.history + self.evaluations, key=lambda e: e["order"], default=None)
        return latest["scores"] if latest else {}

    # ------------------------------------------------------------------ when

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._saved = None  # a checkpoint's state, loaded after this
        if self._trainer_id != id(trainer):  # a new Trainer: its own probe sets and evaluations
            self._trainer_id = id(trainer)
            self._reset_run()
        if stage == "fit" and self._fit_id != id(trainer):  # a new fit: a fresh history
            self._fit_id = id(trainer)
            self.history = []
        if self.probe.layers is not None:  # a declared stride must name a layer scored (default layers: a module)
            check_layer_keys("strides", self.probe.strides, resolve_layers(pl_module, self.probe.layers))
        else:
            check_layer_keys("strides", self.probe.strides, list(layer_names(pl_module)), what="model's modules")
        if stage == "fit":
            check_monitors(trainer, [t.name for t in self.probe.transforms], self.every_n_epochs, self.max_overhead)

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
        self._fit_started, self._probe_seconds = time.perf_counter(), (0.0, 0.0)
        if self._due(trainer, "train_start"):  # step 0, or a resumed model on the row of its last step
            self._run(trainer, pl_module, "fit", epochs_trained(trainer), epoch_end=True)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer, "validation_epoch_end"):
            fit = trainer.state.fn == "fit"
            stage, epoch = ("fit", epochs_trained(trainer)) if fit else ("validate", float(trainer.current_epoch))
            self._run(trainer, pl_module, stage, epoch)
        elif not trainer.sanity_checking:  # a skipped validation: no monitor may read an earlier model's scores
            for key in self._logged:
                trainer.callback_metrics.pop(key, None)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer, "train_epoch_end"):
            self._run(trainer, pl_module, "fit", float(trainer.current_epoch + 1), epoch_end=True)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer, "train_end"):  # after the last epoch's end: on its epoch metrics' row
            self._run(trainer, pl_module, "fit", epochs_trained(trainer), epoch_end=True)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A callback after this one may change the weights in its on_train_end (StochasticWeightAveraging
        # swaps the averaged weights in): the model the user gets is scored, on the same row.
        if self._due(trainer, "fit_end"):
            self._run(trainer, pl_module, "fit", epochs_trained(trainer), epoch_end=True)

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer, "test_epoch_end"):
            self._run(trainer, pl_module, "test", float(trainer.current_epoch))

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "config": self._config()}

    @override
    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # validate/test of a checkpoint: the Trainer has not trained, so its scores take the checkpoint's
        # progress, labelled as the fit labelled the same weights
        self._checkpoint = (trainer.ckpt_path, *checkpoint_progress(checkpoint, self.state_key))

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = state_dict  # a resumed fit takes it at train start; validate/test runs leave the history alone

    def _due(self, trainer: pl.Trainer, hook: str) -> bool:
        """Whether the hook ``hook`` scores now: the one place that decides when (see the class docstring)."""
        if self.disabled is not None or trainer.sanity_checking:
            return False
        if hook == "train_start":
            return self.score_before_training and not self.history
        if hook == "validation_epoch_end" and trainer.state.fn != "fit":
            return True
        if hook == "validation_epoch_end":
            return math.ceil(epochs_trained(trainer)) % self.every_n_epochs == 0 and self._within_budget(trainer)
        if hook == "train_epoch_end":  # no validation loop: each epoch's end stands for it
            due = not trainer.enable_validation and (trainer.current_epoch + 1) % self.every_n_epochs == 0
            return due and self._within_budget(trainer)
        if hook == "train_end":  # the model as training ends is always scored once
            return not self.history or self.history[-1]["global_step"] != trainer.global_step
        if hook == "fit_end":  # ... and again if its weights changed after that
            now, then = _weights(trainer.lightning_module), self._scored_weights
            # (the strategy's teardown moves a GPU model to the CPU: new tensors, nothing to compare)
            moved = then is None or [d for _, d in now] != [d for _, d in then]
            return bool(self.history) and not moved and now != then
        return hook == "test_epoch_end"

    def _within_budget(self, trainer: pl.Trainer) -> bool:
        """Whether one more probe pass, as long as the latest, keeps this fit's probe share within
        ``max_overhead`` (rank zero's clock decides for every process: the pass is a collective)."""
        if self.max_overhead is None:
            return True
        total, latest = self._probe_seconds
        elapsed = time.perf_counter() - self._fit_started
        within = trainer.strategy.broadcast((total + latest) / (elapsed + latest) <= self.max_overhead, src=0)
        if not within:
            self._warn(
                "budget",
                f"SEISCallback skipped the scoring at step {trainer.global_step} to keep its probe passes within"
                f" max_overhead={self.max_overhead} of the fit's time (so far {total:.1f} s of {elapsed:.1f} s; the"
                f" latest pass {latest:.1f} s); the final model is still scored.",
            )
        return within

    # ------------------------------------------------------------------ scoring

    def _run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, epoch: float, epoch_end: bool = False
    ) -> None:
        """Score now: take the probe images, run the probe pass, log. Any failure warns (and, at
        collection or after ``MAX_FAILURES`` failed passes in a row, disables) unless ``strict``."""
        try:
            images = self._images_for(trainer, stage)
        except Exception as error:
            reason = str(error) if isinstance(error, (ProbeError, MisconfigurationException)) else None
            reason = reason or f"collecting the probe images failed ({type(error).__name__}: {error})"
            if self.strict:
                raise MisconfigurationException(f"SEISCallback: {reason}") from error
            self._disable(reason)
            return
        started = time.perf_counter()
        try:
            result = self.probe.score(
                pl_module,
                images,
                rank=trainer.global_rank,
                world_size=trainer.world_size,
                forward_context=trainer.precision_plugin.forward_context,
            )
            if self.strict and (result.reasons or result.transform_reasons):
                raise RuntimeError(" ".join([*result.reasons.values(), *result.transform_reasons.values()]))
        except Exception as error:
            if self.strict:
                raise
            self._failures += 1
            cause = f"{type(error).__name__}: {error}"
            if self._failures >= MAX_FAILURES:
                self._disable(f"its probe pass failed at {self._failures} scorings in a row (the last: {cause})")
            else:
                self._warn(
                    "probe",
                    f"SEISCallback: the probe pass ({stage}, step {trainer.global_step}) failed and was skipped;"
                    f" training goes on (set strict=True to raise). {cause}",
                )
            return
        self._failures = 0
        seconds = time.perf_counter() - started
        timing = {"probe": seconds}
        if stage == "fit":
            self._scored_weights = _weights(pl_module)
            self._probe_seconds = (self._probe_seconds[0] + seconds, seconds)
            timing["share"] = self._probe_seconds[0] / (time.perf_counter() - self._fit_started)
        self._record(trainer, stage, epoch, result, step=logging_step(trainer, epoch_end=epoch_end), timing=timing)

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        rank_zero_warn(f"SEISCallback is disabled for this run: {reason} (set strict=True to raise).")

    def _record(
        self, trainer: pl.Trainer, stage: str, epoch: float, result: ProbeResult, step: int, timing: dict[str, float]
    ) -> None:
        for reason in [*result.reasons.values(), *result.transform_reasons.values()]:
            self._warn("layer", reason)
        for layer, message in result.warnings:
            self._warn(layer, f"SEIS layer {layer!r} at step {trainer.global_step}: {message}")
        global_step = trainer.global_step
        path, *progress = getattr(self, "_checkpoint", (None, 0.0, 0, 0))
        if stage != "fit" and path is not None and path == trainer.ckpt_path:  # see on_load_checkpoint
            epoch, global_step, step = progress
        entry = HistoryEntry(
            stage=stage,
            epoch=epoch,
            global_step=global_step,
            step=step,
            scores=result.scores,
            draws=result.draws,
            reasons=dict(result.reasons),
            transform_reasons=dict(result.transform_reasons),
            strides={layer: stride.stride for layer, stride in result.strides.items()},
            aliasing={layer: gap._asdict() for layer, gap in result.aliasing.items()},
            order=max([e["order"] for e in self.history + self.evaluations], default=-1) + 1,  # the latest
        )
        (self.history if stage == "fit" else self.evaluations).append(entry)
        prefix = "seis" if stage == "fit" else f"seis_{stage}"
        sweeps = sweep_summaries(prefix, result.scores, self.probe.transforms)  # one number per sweep and layer
        # With a shift sweep: each layer's aliasing gap (spec, "Aliasing gap"), where it has one.
        aliasing = {f"{prefix}/aliasing/{layer}": gap.gap for layer, gap in result.aliasing.items() if not gap.reason}
        extra = {**sweeps, **aliasing, **{f"{prefix}/time/{name}": value for name, value in timing.items()}}
        self._logged |= log_scalars(trainer, prefix, result.scores, step, extra=extra)
        history = self.history if stage == "fit" else [entry]
        log_results(trainer, prefix, entry, history, figures=self.log_figures, transforms=self.probe.transforms)

    def _warn(self, layer: str, message: str) -> None:
        key = warning_kind(layer, message)
        if key not in self._warned:  # once per layer and kind, not per changing number
            self._warned.add(key)
            rank_zero_warn(message, category=SEISWarning)

    def _images_for(self, trainer: pl.Trainer, stage: str) -> Tensor:
        """The probe images of this stage's loader (or ``probe_data``), taken once per loader and Trainer."""
        self._latest, images = collect_probe_images(
            trainer,
            stage,
            self._images,
            probe_data=self.probe_data,
            dataloader_idx=self.dataloader_idx,
            num_samples=self.num_samples,
            input_getter=self.input_getter,
            batch_size=self.probe.batch_size,
            warned=self._warned,
        )
        return images


def _weights(model: pl.LightningModule) -> tuple[tuple[int, str], ...]:
    """The version counters and devices of the model's parameters and buffers: the counters move with every
    in-place change (an optimizer step, a swap of weights), so equal counters mean the weights scored are
    still the model's."""
    return tuple((t._version, str(t.device)) for t in model.state_dict(keep_vars=True).values())
