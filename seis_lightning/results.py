"""What a probe pass found (:class:`ProbeResult`), and the rules for reporting it: which layers count as
not scored, and which warnings are one warning."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from seis_lightning.functional import SCORES, SCORES_AND_NULLS
from seis_lightning.sweeps import AliasingGap, Stride
from seis_lightning.transforms import GeometricTransform

Scores = dict[str, dict[str, dict[str, float]]]  # transform -> layer -> score -> value
LOGGED = SCORES_AND_NULLS
STANDARD_ERRORS = tuple(f"{score}_se" for score in SCORES)


@dataclass
class ProbeResult:
    """What one probe pass found.

    Attributes:
        scores: ``{transform: {layer: {score: value}}}``: the three scores, their nulls, and with the
            jackknife their standard errors ``<score>_se``; a random family's scores are the mean over
            its draws.
        draws: ``{transform: {layer: [per-draw scores]}}``.
        layers: the scored layers in forward order.
        reasons: ``{layer: why}`` for layers whose scores are NaN because their output could not be
            read (all scores NaN), next to the metric's own ``reasons``.
        warnings: ``(layer, message)`` pairs of the SEIS warnings raised while computing.
        transform_reasons: ``{transform: why}`` for transformations whose scores are NaN because they
            could not be applied (they change the image shape).
        strides: ``{layer: Stride}``, each layer's total stride (input width over map width), or why it has
            none (:func:`~seis_lightning.sweeps.layer_stride`).
        aliasing: ``{layer: AliasingGap}`` from a ``shift`` sweep among the transformations (empty without
            one; spec, "Aliasing gap").
    """

    scores: Scores
    draws: dict[str, dict[str, list[dict[str, float]]]]
    layers: list[str]
    reasons: dict[str, str] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    transform_reasons: dict[str, str] = field(default_factory=dict)
    strides: dict[str, Stride] = field(default_factory=dict)
    aliasing: dict[str, AliasingGap] = field(default_factory=dict)


def unscored_with_reasons(result: ProbeResult) -> ProbeResult:
    """A layer whose scores came out NaN (NaN or Inf maps, too few images...) is not scored: its
    warnings become its one reason, each distinct cause said once with the transformations (by name)
    and, when not all of them, the scores it hit; a layer with a reason keeps no other warning."""
    for layer in result.layers:
        nan = any(all(math.isnan(values[layer][score]) for score in SCORES) for values in result.scores.values())
        if nan and layer not in result.reasons:
            names = [t for t, by_layer in result.draws.items() for _ in by_layer.get(layer, [])]  # draw k's name
            said = _causes([message for name, message in result.warnings if name == layer])
            why = "; ".join(_cause(clause, names, where, hit) for clause, (where, hit) in said.items())
            result.reasons[layer] = f"SEIS layer {layer!r} was not scored: {why or 'its scores are NaN'}"
    result.warnings = [(layer, message) for layer, message in result.warnings if layer not in result.reasons]
    return result


def _causes(messages: Sequence[str]) -> dict[str, tuple[set[int], set[str]]]:
    """``{cause: (transformation indices, scores)}`` from ``SEIS scores are NaN (transformation k): score:
    cause; ...`` messages (no index: the one transformation, 0); any other message is its own cause."""
    causes: dict[str, tuple[set[int], set[str]]] = {}
    for message in dict.fromkeys(messages):
        found = re.fullmatch(r"SEIS scores are NaN(?: \(transformation (\d+)\))?: (.*)\.", message, re.DOTALL)
        if found is None:
            causes.setdefault(message, (set(), set()))
            continue
        for part in found[2].split("; "):
            score, _, cause = part.partition(": ")
            where, hit = causes.setdefault(cause, (set(), set()))
            where.add(int(found[1] or 0))
            hit.add(score)
    return causes


def _cause(clause: str, names: list[str], where: set[int], hit: set[str]) -> str:
    transforms = list(dict.fromkeys(names[k] for k in sorted(where) if 0 <= k < len(names)))
    scores = [s for s in SCORES_AND_NULLS if s in hit]
    detail = [", ".join(transforms)] if transforms else []
    if scores and len(scores) < len(SCORES_AND_NULLS):
        detail.append("for " + ", ".join(scores))
    return f"{clause} ({'; '.join(detail)})" if detail else clause


def warning_kind(layer: str, message: str) -> tuple[str, str]:
    """A key for de-duplicating warnings by layer and kind: the message with its numbers blanked.

    Names stay whole: quoted text (``'layer1'``) is kept as it is, and digits inside a name
    (``layer2``, ``features.3``) are not numbers, so two layers whose names differ by digits keep
    their own warnings."""
    parts = re.split(r"('[^'\s]*')", message)  # odd parts: the quoted names
    number = r"(?<![\w.])\d+(\.\d+)?(e[-+]?\d+)?"
    return layer, "".join(part if i % 2 else re.sub(number, "#", part) for i, part in enumerate(parts))


class SEISScores(dict):
    """What :func:`~seis_lightning.score_model` returns: ``{transform: {layer: {score: value}}}``, and what the
    pass summed up over the transformations.

    Attributes:
        sweeps: ``{"sweep_<family>/equivariance_halfway/<layer>": magnitude}``, the half-way magnitude of each
            sweep and layer (:mod:`~seis_lightning.sweeps`).
        sweep_reasons: why each NaN half-way magnitude is NaN.
        aliasing: ``{layer: AliasingGap(gap, se, reason)}`` from a ``shift`` sweep (spec, "Aliasing gap").
        strides: ``{layer: Stride(stride, reason)}``.
        transforms: the scored transformations (their families and magnitudes: the sweeps' curves).
    """

    def __init__(
        self,
        scores: Scores,
        result: ProbeResult,
        sweeps: dict,
        sweep_reasons: dict,
        transforms: Sequence[GeometricTransform] = (),
    ) -> None:
        super().__init__(scores)
        self.sweeps, self.sweep_reasons = sweeps, sweep_reasons
        self.aliasing, self.strides = result.aliasing, result.strides
        self.transforms = list(transforms)
