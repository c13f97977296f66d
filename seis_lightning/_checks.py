"""One argument check for the options that ``seis_scores``, ``SEISMetric``, ``SEISProbe`` and the callback share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LAYOUTS = ("channels_first", "channels_last")
PRECISIONS = ("auto", "float64", "float32")


def check_options(**options: Any) -> None:
    """Raise ``ValueError`` naming the option and its allowed values for any option out of range.

    Options given as ``None`` are not checked; ``layout`` and ``num_prefix_tokens`` may be mappings
    per layer, whose values are checked.
    """
    for name, value in options.items():
        if value is None:
            continue
        values = list(value.values()) if isinstance(value, Mapping) and name in _PER_LAYER else [value]
        for item in values:
            allowed, check = _RULES[name]
            if not check(item):
                per_layer = " (or a mapping per layer)" if name in _PER_LAYER else ""
                raise ValueError(f"Expected `{name}` to be {allowed}{per_layer}, but got {item!r}.")


def _integer(low: int):
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_PER_LAYER = ("layout", "num_prefix_tokens")
_RULES = {
    "keep": ("a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
    "eps": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    "layout": (f"one of {LAYOUTS}", lambda v: v in LAYOUTS),
    "num_prefix_tokens": ("a non-negative integer", _integer(0)),
    "max_positions": ("a positive integer", _integer(1)),
    "precision": (f"one of {PRECISIONS}", lambda v: v in PRECISIONS),
    "jackknife_groups": ("0 (off) or an integer >= 2", lambda v: _integer(0)(v) and v != 1),
    "batch_size": ("an integer >= 2", _integer(2)),
    "num_samples": ("an integer >= 2", _integer(2)),
    "every_n_epochs": ("a positive integer", _integer(1)),
    "num_transforms": ("None or a positive integer", _integer(1)),
}
