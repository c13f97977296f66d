"""``SEISMetric``: streaming SEIS scores as a torchmetrics ``Metric``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from seis_lightning._precision import _float64_home
from seis_lightning.options import Layout, Precision, ResolvedOptions, SEISOptions
from seis_lightning.scores import SEISResult, seis_from_statistics
from seis_lightning.statistics import (
    PAIRED_ROWS,
    PAIRED_STATISTICS,
    REFERENCE_STATISTICS,
    ROW_STATISTICS,
    SHIFTS,
    STATISTICS,
    _add_statistics,
    _bounded,
    _has_rows,
    _rows_to_grams,
    _statistics,
    _sum_names,
)


class SEISMetric(Metric):
    r"""Subspace-based Equivariance and Invariance Scores of one layer (arXiv 2602.04054).

    Compares activations ``a = f(x)`` with ``b = f(T x)`` of the same images. The maps are
    centred on the mean feature map and unfolded twice; after SVD denoising, CCA gives

    .. code-block:: text

        equivariance       = mean_i ρ_i                   spatial unfolding: rows (image, channel), columns positions
        invariance         = mean_i ρ_i |cos(w_i, v_i)|   w_i, v_i: canonical weight vectors in position space
        channel_invariance = mean_i ρ_i                   channel unfolding: rows (image, position), columns channels

    each with a null baseline that pairs image ``n`` with the transformed image ``n - 1`` of its
    batch. Only sums are kept (image count, map sums, Gram sums; float64), so memory does not grow
    with the number of images, and batches and processes combine by addition. A vector layer
    (one position) seen on fewer images than it has channels keeps its vectors instead of its
    channel Grams and is scored, exactly, from the image side (spec, "Streaming statistics"),
    until as many images as channels are in. The sums are taken about the first batch's mean maps
    (spec, "Precision"), so that activations with a large common offset lose nothing to
    cancellation; processes move theirs to the first process's when they are synced, and
    ``forward``/``merge_state`` to the running total's. The states' shapes are set by
    the first update, so every process must have had one before ``compute`` syncs them (a
    ``DistributedSampler`` gives every rank data; :class:`~seis_lightning.SEISProbe` drops a layer
    that a rank could not score).

    The sums follow the metric to its device (``.to``, ``.cuda``), except to a device without
    float64 (Apple MPS): there they stay on the CPU in float64, ``update`` takes activations on
    that device (products in float32, sums back on the CPU: :func:`~seis_lightning.functional.seis_statistics`),
    the eigen/SVD steps of ``compute`` run on the CPU (spec, "Precision"), and ``metric.device``
    still reports MPS. Dtype casts (``set_dtype``, ``.to(dtype)``, ``.half()``) leave them float64.

    As input to ``update``:

    - ``a``: ``[N, C, *spatial]`` (1 to 3 spatial axes), ``[N, T, D]`` with
      ``layout="channels_last"``, or ``[N, D]``; any floating dtype (products in ``precision``,
      sums in float64);
    - ``b``: a tensor of the same shape, or a sequence of ``num_transforms`` such tensors, which
      then share every statistic of ``a``.

    As output of ``compute``, a mapping (a list of ``num_transforms`` mappings when
    ``num_transforms`` is set): the float scores ``equivariance``, ``invariance``,
    ``channel_invariance`` and ``<score>_null``; retained dimensions ``spatial_kx``,
    ``spatial_ky``, ``channel_kx``, ``channel_ky``; canonical correlations ``spatial_rho``,
    ``channel_rho``; ``num_images``, ``num_channels``, ``num_positions``, ``pooled``; and
    ``reasons``, why each NaN score is NaN.

    With ``jackknife_groups = G`` (spec, "Uncertainty"), image n (counted over all updates since the
    last reset) goes to group ``n mod G``, with its null pair, and every statistic is kept per group
    (G times the state, still summed across batches and processes). ``compute`` then also scores
    the half-samples of the groups (each keeps ``ceil(G/2)`` of them: all such choices when there
    are at most 32, else 32 seeded ones) and adds the delete-half jackknife standard errors
    ``equivariance_se``, ``invariance_se``, ``channel_invariance_se`` (and ``<score>_null_se``),
    and under ``jackknife`` each score's replicates, scaled so that their sample standard deviation
    is the SE (:func:`~seis_lightning.functional.jackknife_se`;
    :func:`~seis_lightning.functional.family_se` for a mean over draws). It costs up to 33 sets of
    eigendecompositions per layer instead of one.

    Args:
        num_transforms: ``None`` to pass one tensor ``b`` to ``update``; an integer K to pass a
            sequence of K tensors (e.g. several draws of a random transformation).
        keep: share of variance kept by the SVD denoising, in (0, 1].
        eps: directions with eigenvalue below ``eps * λ_max`` are dropped, in [0, 1).
        layout: ``"channels_first"`` or ``"channels_last"``.
        num_prefix_tokens: leading tokens (class/register) to drop from ``[N, T, D]`` inputs.
        max_positions: larger maps keep a fixed random subset of this many positions (spec, "Large maps").
        jackknife_groups: 0 (off, the default) or the number of jackknife groups G >= 2 (e.g. 8)
            for the standard errors ``<score>_se``.
        precision: of the Gram products: ``"float64"``, ``"float32"`` (either way each batch is
            centred on its mean map and summed in float64; float32 scores within 1e-4 of float64
            except invariance at near-ties) or ``"auto"``: float64 on the CPU and on CUDA devices
            with full-rate float64 (compute capability 6.0, 7.0, 8.0, 9.0), float32 elsewhere
            (:func:`~seis_lightning.functional.resolve_precision`), resolved against the device of
            the first update's activations and kept until ``reset``. On MPS, ``"float32"`` or ``"auto"``.
        options: a :class:`~seis_lightning.options.SEISOptions` holding all of the above at once (as
            :class:`~seis_lightning.SEISProbe` hands its options down); the flat arguments are then not read.
        kwargs: passed to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: if an argument is out of range, or (from ``update``) if the shapes of ``a``
            and ``b`` differ or differ from earlier batches, or (from ``update`` and ``compute``) if
            ``precision="float64"`` on a device without float64.

    Example:
        >>> import torch
        >>> from seis_lightning import SEISMetric
        >>> metric = SEISMetric(jackknife_groups=8)
        >>> a = torch.randn(128, 8, 5, 5, generator=torch.Generator().manual_seed(0))
        >>> for batch in a.split(32):
        ...     metric.update(batch, batch.rot90(1, dims=(-2, -1)))
        >>> scores = metric.compute()
        >>> round(scores["equivariance"], 3), round(scores["invariance"], 3) < 0.3
        (1.0, True)
        >>> round(scores["invariance"], 3), round(scores["invariance_se"], 3), len(scores["jackknife"]["invariance"])
        (0.128, 0.02, 32)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        num_transforms: int | None = None,
        keep: float = 0.99,
        eps: float = 1e-8,
        layout: Layout = "channels_first",
        num_prefix_tokens: int = 0,
        max_positions: int = 1024,
        jackknife_groups: int = 0,
        precision: Precision = "auto",
        *,
        options: SEISOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_transforms is not None and (
            isinstance(num_transforms, bool) or not isinstance(num_transforms, int) or num_transforms < 1
        ):
            raise ValueError(f"Expected `num_transforms` to be None or a positive integer, but got {num_transforms!r}.")
        self.num_transforms = num_transforms
        # The options object, built here from the flat arguments unless a caller (the probe) hands one down.
        self.options = options or SEISOptions(
            keep=keep,
            eps=eps,
            layout=layout,
            num_prefix_tokens=num_prefix_tokens,
            max_positions=max_positions,
            jackknife_groups=jackknife_groups,
            precision=precision,
        )
        self.pooled = False
        # The options resolved at the first update, against the activations' device (spec, "Precision").
        self._resolved: ResolvedOptions | None = None
        # Images seen since the last reset: the next batch's jackknife groups continue from here.
        self._images_seen = 0
        self._drawn: set[int] = set()  # transformations whose shift is set (updates with `draw`)
        self._in_forward = False
        # Shapes are fixed by the first update: a scalar zero broadcasts into the first batch's sums.
        home = _float64_home(self.device)  # torch's default device, which may be MPS
        for name in STATISTICS:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64, device=home), dist_reduce_fx="sum")
        # The mean maps the sums are taken about: set by the first update, kept until reset; added
        # states are first moved to these (`_sync_dist`, `_reduce_states`).
        for name in SHIFTS:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64, device=home), dist_reduce_fx=None)
        # A vector layer's image side while it has fewer images than channels (scalar zeros otherwise);
        # joined, not added (`_sync_dist`, `_reduce_states`).
        for name in ROW_STATISTICS:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64, device=home), dist_reduce_fx=None)

    # The options, readable by their names (read-only: the options are validated once, in __init__).
    keep = property(lambda self: self.options.keep)
    eps = property(lambda self: self.options.eps)
    layout = property(lambda self: self.options.layout)
    num_prefix_tokens = property(lambda self: self.options.num_prefix_tokens)
    max_positions = property(lambda self: self.options.max_positions)
    jackknife_groups = property(lambda self: self.options.jackknife_groups)
    precision = property(lambda self: self.options.precision)

    def update(
        self, a: Tensor, b: Tensor | Sequence[Tensor], *, offset: int | None = None, draw: int | None = None
    ) -> None:
        """Add the statistics of one batch of paired activations.

        Args:
            a: activations of the original images.
            b: of the transformed images: a tensor, or a sequence of ``num_transforms`` tensors.
            offset: the index of the batch's first image in the whole probe set, counted across
                processes: image n goes to jackknife group ``(offset + n) mod G``, so 1 or N processes
                form the same groups (spec, "Uncertainty"). ``None``: the images seen since the last
                reset, which is the whole probe set on one process.
            draw: with ``num_transforms`` set, ``b`` may be the one tensor of transformation ``draw``
                alone, so that each transformation's activations can be added as soon as they exist and
                dropped (the probe pass adds each forward pass's maps before the next pass runs). A batch
                then comes as ``num_transforms`` calls with the same ``a``, for ``draw`` 0, 1, ... in
                order: the statistics of ``a`` are added with draw 0.
        """
        if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int) or offset < 0):
            raise ValueError(f"Expected `offset` to be None or a non-negative integer, but got {offset!r}.")
        if draw is not None:
            self._check_draw(b, draw)
        elif self.num_transforms is None and not isinstance(b, Tensor):
            raise ValueError("`b` must be one tensor; set `num_transforms` to pass a sequence of tensors.")
        elif self.num_transforms is not None and (isinstance(b, Tensor) or len(b) != self.num_transforms):
            got = "a tensor" if isinstance(b, Tensor) else f"{len(b)} tensors"
            raise ValueError(f"`b` must be a sequence of num_transforms={self.num_transforms} tensors, but got {got}.")
        options = self._resolved or self.options.resolved(a.device)
        first_index = self._images_seen if offset is None else offset
        # Vector layers keep their image side until they hold channel Grams (spec, "Streaming statistics").
        channel_rows = not self.channel_gram_aa.ndim
        if draw is None:
            shift = self._states() if self.shift_a.ndim else None
            stats = _statistics(a, b, options, first_index, shift, channel_rows=channel_rows)
            if shift is None:
                self._set_states(stats)
            elif _has_rows(stats):  # about the same shifts: the sums add, the vectors join
                self._set_states(_add_statistics(self._states(), stats))
            else:
                for name in STATISTICS:
                    setattr(self, name, getattr(self, name) + stats[name])
        else:
            stats = self._update_draw(a, b, draw, options, first_index, channel_rows)
        self.pooled = stats["pooled"]
        if draw is None or draw == self.num_transforms - 1:
            self._images_seen += a.shape[0]
            if _has_rows(self._states()):  # a whole batch is in: Grams from here on if they are cheaper
                self._set_states(_bounded(self._states()))
        self._resolved = options

    def _check_draw(self, b: Any, draw: Any) -> None:
        if self.num_transforms is None:
            raise ValueError("`draw` needs `num_transforms`: it says which of the transformations `b` is.")
        if isinstance(draw, bool) or not isinstance(draw, int) or not 0 <= draw < self.num_transforms:
            raise ValueError(f"Expected `draw` in [0, {self.num_transforms}) (num_transforms), but got {draw!r}.")
        if not isinstance(b, Tensor):
            raise ValueError(
                f"With `draw`, `b` must be the one tensor of transformation {draw}, but got {type(b).__name__}."
            )

    def _update_draw(
        self, a: Tensor, b: Tensor, draw: int, options: ResolvedOptions, first_index: int, channel_rows: bool
    ) -> dict:
        """``update`` for transformation ``draw`` alone: its paired statistics go into its slot of the
        transformation axis (the statistics of ``a`` are added with draw 0, the shifts set where unset;
        on the image side, draw 0 adds the batch's rows, each draw fills its own)."""
        known = self.shift_a.ndim > 0
        own_shift = not known or draw not in self._drawn
        shift = {"shift_a": self.shift_a, "shift_b": None if own_shift else self.shift_b[draw]} if known else None
        stats = _statistics(a, b, options, first_index, shift, reference=draw == 0, channel_rows=channel_rows)
        if draw == 0:
            for name in REFERENCE_STATISTICS:
                if name in stats:
                    setattr(self, name, getattr(self, name) + stats[name])
        if _has_rows(stats):
            self._add_draw_rows(stats, draw)
        axis = 1 if self.options.jackknife_groups else 0  # the transformation axis, after the group axis
        for name in (name for name in PAIRED_STATISTICS if name in stats):
            state = getattr(self, name)
            if not state.ndim:  # the first batch: one slot per transformation
                shape = list(stats[name].shape)
                shape.insert(axis, self.num_transforms)
                state = torch.zeros(shape, dtype=torch.float64, device=stats[name].device)
            state.select(axis, draw).add_(stats[name])
            setattr(self, name, state)
        if not known:
            self.shift_a = stats["shift_a"]
            shape, device = (self.num_transforms, *stats["shift_b"].shape), stats["shift_b"].device
            self.shift_b = torch.zeros(shape, dtype=torch.float64, device=device)
        if own_shift:
            self.shift_b[draw] = stats["shift_b"]
            self._drawn.add(draw)
        return stats

    def _add_draw_rows(self, stats: dict, draw: int) -> None:
        """The batch's vectors of transformation ``draw`` into its slot; with draw 0, the batch's rows first."""
        if draw == 0:
            slots = stats["channel_rows_b"].new_zeros(self.num_transforms, *stats["channel_rows_b"].shape)
            batch = {
                **{name: stats[name] for name in ("channel_rows_a", "row_group", "row_has_null")},
                **dict.fromkeys(PAIRED_ROWS, slots),
            }
            for name, value in batch.items():
                state = getattr(self, name)
                setattr(
                    self,
                    name,
                    value.clone() if not state.ndim else torch.cat([state, value], dim=-2 if value.ndim == 3 else 0),
                )
        num_images = len(stats["channel_rows_b"])
        for name in PAIRED_ROWS:
            getattr(self, name)[draw, -num_images:] = stats[name]

    def _states(self) -> dict[str, Tensor]:
        """The states that hold statistics: the sums and shifts, and the image side where it is kept."""
        return _statistics_in({name: getattr(self, name) for name in self._defaults})

    def _set_states(self, stats: dict[str, Any]) -> None:
        """Set every state from ``stats``; those it does not hold (the other side's) back to their defaults."""
        for name in (*STATISTICS, *SHIFTS, *ROW_STATISTICS):
            value = stats.get(name)
            setattr(self, name, value if value is not None else torch.zeros_like(self._defaults[name]))

    def _reduce_states(self, incoming_state: dict[str, Any]) -> None:
        """Add ``incoming_state`` (``forward``'s running total, ``merge_state``) to this batch's states,
        about the incoming shifts (torchmetrics would add sums about different shifts)."""
        self._set_states(_bounded(_add_statistics(_statistics_in(incoming_state), self._states())))

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        """Gather every process's states and add them, about the first process's shifts (torchmetrics
        would add sums about different shifts). Every process must have had an update. Image sides are
        joined if every process has one, else each first becomes channel Grams."""
        group = process_group or self.process_group
        states = self._states()
        rows = torch.tensor(float(_has_rows(states)), dtype=torch.float64, device=states["map_sum_a"].device)
        if not all(bool(flag) for flag in dist_sync_fn(rows, group=group)):
            states = _statistics_in(_rows_to_grams(states))  # in the order every rank gathers them
        gathered = {name: dist_sync_fn(value, group=group) for name, value in states.items()}
        total: dict[str, Any] = {name: values[0] for name, values in gathered.items()}
        for rank in range(1, len(gathered["num_images"])):
            total = _add_statistics(total, {name: values[rank] for name, values in gathered.items()})
        self._set_states(_bounded(total))

    def compute(self) -> SEISResult | list[SEISResult]:
        """SEIS scores of all images seen since the last reset."""
        stats = self._states()
        if not stats["map_sum_a"].ndim:
            # No update yet: empty statistics give NaN scores with a reason.
            stats = _empty_statistics(self.num_transforms, self.jackknife_groups)
        options = self._resolved or self.options.resolved(self.device)
        return seis_from_statistics(
            stats, keep=options.keep, eps=options.eps, pooled=self.pooled, precision=options.precision
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """``update`` plus the scores of this batch alone; the jackknife groups continue the count."""
        self._in_forward = True  # torchmetrics' forward resets the states around the batch
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._in_forward = False

    def reset(self) -> None:
        """Forget every image seen; jackknife groups start again from image 0."""
        super().reset()
        if not self._in_forward:
            self._images_seen = 0
            self._drawn = set()
            self._resolved = None

    def _apply(self, fn: Callable[[Tensor], Tensor], exclude_state: Sequence[str] = "") -> nn.Module:
        """torchmetrics' ``_apply`` (``.to``, ``.cuda``, ``set_dtype``, ...), float64 tensors kept float64.

        The target device is read as torchmetrics reads it, from ``fn`` applied to a float32
        tensor. Float64 tensors (the sums, their defaults, cached results) go through ``fn`` but stay
        float64 (a cast is dropped), or stay on the CPU where the device has no float64 (MPS).
        ``metric.device`` and everything else are torchmetrics' as before.
        """
        target = fn(torch.zeros(1, dtype=torch.float32, device=self.device)).device
        home = _float64_home(target)

        # torchmetrics tells the casts it ignores (`.half()`, ...) by the name of `fn`: wraps keeps it.
        @functools.wraps(fn)
        def keep_float64(t: Tensor) -> Tensor:
            if t.dtype != torch.float64:
                return fn(t)
            if home != target:
                return t.to(home)
            out = fn(t)
            return out if out.dtype == torch.float64 else t.to(out.device)

        return super()._apply(keep_float64, exclude_state)


def _statistics_in(states: dict[str, Any]) -> dict[str, Any]:
    """The statistics among a metric's states: sums and shifts, and the image side or the channel Grams,
    whichever is kept (:func:`~seis_lightning.statistics._sum_names`)."""
    names = (*_sum_names(states), *SHIFTS, *(ROW_STATISTICS if _has_rows(states) else ()))
    return {name: states[name] for name in names}


def _empty_statistics(num_transforms: int | None, jackknife_groups: int = 0) -> dict[str, Tensor]:
    groups = (jackknife_groups,) if jackknife_groups else ()
    lead = () if num_transforms is None else (num_transforms,)
    stats = {name: torch.zeros(*groups, 1, 1, dtype=torch.float64) for name in STATISTICS}
    stats["num_images"] = torch.zeros(groups, dtype=torch.float64)
    for name in PAIRED_STATISTICS:
        stats[name] = torch.zeros(*groups, *lead, 1, 1, dtype=torch.float64)
    stats["null_num_images"] = torch.zeros((*groups, *lead), dtype=torch.float64)
    return stats
