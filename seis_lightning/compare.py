"""Two groups of runs compared layer by layer: did a change (augmentation, an architecture, a training
recipe) raise or lower a score beyond the noise of training seeds and probe images?

A run is a folder holding the callback's ``seis_scores.csv`` (or the file itself, or a folder with
runs below it, e.g. ``logs/digits_cnn`` with ``version_0``, ``version_1``, ...) or a
:func:`~seis_lightning.score_model` result ``{transform: {layer: {score: value}}}``; the runs of a
group are its seeds, pooled. Per transformation, layer and score (and, with a ``shift`` sweep, the
aliasing gap per layer: transform ``sweep_shift``, score ``aliasing_gap``), :func:`compare_runs` gives each
side's mean over seeds, the spread between seeds (``sd``, sample standard deviation) and the mean
jackknife SE of a run (``se``, from ``<score>_se``), then the difference of the means
``delta = mean_b - mean_a`` and its standard error, from two sources of noise:

- **seeds**: ``seed_se = sqrt(sd_a**2 / n_a + sd_b**2 / n_b)`` (Welch), each side's term with
  ``n - 1`` degrees of freedom;
- **probe images**: ``jackknife_se = sqrt(se_a**2 + se_b**2)``, not divided by the number of seeds (the
  runs of a group score the same probe images, so that noise does not average out over seeds); each
  term with ``G - 1`` degrees of freedom for ``G`` jackknife groups (``jackknife_groups``), else taken
  as exact.

``se = sqrt(seed_se**2 + jackknife_se**2)``, and its degrees of freedom ``df`` by Welch-Satterthwaite
over the four terms ``v``: ``df = (sum v)**2 / sum(v**2 / df_v)``. The verdict: ``|delta| >
t_{(1 + level)/2, df} * se`` (``bar``, the half-width of the two-sided ``level`` interval of delta) is
"raised" or "lowered" by the sign of delta, else "within noise" (:func:`welch_verdict`, the one rule,
shared with the findings tests). With 3 + 3 seeds and no jackknife, ``df`` is 2 to 4 and the bar 2.8 to
4.3 standard errors, not a fixed 2. A side with fewer than two seeds has no seed spread: the comparison
falls back to the two jackknife terms alone (``se_from`` says ``jackknife``; ``df`` by the same rule,
``2 (G - 1)`` for equal SEs; it then says whether these runs differ beyond the probe images' noise, not
whether the change would hold over seeds), or, without
jackknife SEs or ``jackknife_groups``, is "not enough seeds".
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from seis_lightning.functional import SCORES
from seis_lightning.sweeps import ALIASING, SHIFT_FAMILY
from seis_lightning.trainer_io import CSV_NAME

Scores = Mapping[str, Mapping[str, Mapping[str, float]]]  # transform -> layer -> score -> value
Run = str | os.PathLike | Scores
VERDICTS = ("raised", "lowered", "within noise", "not enough seeds", "no scores")
COMPARED = (*SCORES, ALIASING)  # the scores, and the aliasing gap of a shift sweep (under ``sweep_shift``)
_SIDE = ("seeds", "mean", "sd", "se")  # a side's columns, after its name
_BOTH = ("delta", "seed_se", "jackknife_se", "se", "df", "t", "t_critical", "bar", "verdict", "se_from")


def columns(names: Sequence[str] = ("a", "b")) -> tuple[str, ...]:
    """The columns of :func:`compare_runs`'s rows for sides called ``names``."""
    return ("transform", "layer", "score", *(f"{name}_{c}" for name in names for c in _SIDE), *_BOTH)


# ------------------------------------------------------------------ Student's t


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (any real ``df > 0``; ``inf``: the
    normal), by bisection on its distribution function (:func:`t_cdf`) to about 1e-12 relative.

    Example:
        >>> round(t_quantile(0.975, 4), 3)
        2.776

    Raises:
        ValueError: when ``p`` is not in (0, 1) or ``df`` is not positive.
    """
    if not 0 < p < 1:
        raise ValueError(f"t_quantile needs a probability p in (0, 1), got p={p!r}.")
    if not df > 0:
        raise ValueError(f"t_quantile needs degrees of freedom df > 0, got df={df!r}.")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if p == 0.5:
        return 0.0
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2 * high
    while high - low > 1e-12 * high:
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return 0.5 * (low + high)


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function: ``P(T <= t) = 1 - I_x(df/2, 1/2) / 2`` for ``t >= 0``, with
    ``x = df / (df + t**2)`` and ``I`` the regularized incomplete beta function (the normal for ``df = inf``)."""
    if math.isinf(df):
        tail = 0.5 * math.erfc(abs(t) / math.sqrt(2))
    else:
        tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)`` by its continued fraction (modified Lentz), on the side of ``x`` where it converges fast."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _beta_fraction(a, b, x) / a
    return 1 - front * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return fraction


# ------------------------------------------------------------------ reading runs


def read_scores_csv(
    path: str | os.PathLike, *, stage: str | None = None, epoch: float | None = None, step: int | None = None
) -> tuple[str, dict[str, dict[str, dict[str, float]]]]:
    """One scoring of a ``seis_scores.csv`` as ``{transform: {layer: {score, <score>_null, <score>_se}}}``,
    with a label saying which (``fit, epoch 2, step 90``).

    A file holds one block of rows per scoring, in the order they were made. The scoring read is the last
    one, or the last of ``stage`` (``fit``, ``validate``, ``test``) at ``epoch`` (epochs trained, as the
    ``epoch`` column) and ``step`` (the ``global_step`` column), those given.

    Raises:
        ValueError: when no scoring matches; the message lists those in the file.
    """
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    scorings: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in rows:
        scorings.setdefault((row["stage"], row["epoch"], row["global_step"]), []).append(row)

    def matches(key: tuple[str, str, str]) -> bool:
        return (
            (stage is None or key[0] == stage)
            and (epoch is None or math.isclose(float(key[1]), epoch, abs_tol=1e-9))
            and (step is None or int(key[2]) == step)
        )

    chosen = [key for key in scorings if matches(key)]
    if not chosen:
        wanted = ", ".join(
            f"{n}={v!r}" for n, v in (("stage", stage), ("epoch", epoch), ("step", step)) if v is not None
        )
        have = "; ".join(_label(key) for key in scorings) or "none"
        raise ValueError(f"{path} has no scoring with {wanted or 'any rows'}. Its scorings: {have}.")
    key = chosen[-1]
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for row in scorings[key]:
        values = scores.setdefault(row["transform"], {}).setdefault(row["layer"], {})
        values[row["score"]] = float(row["value"])
        values[f"{row['score']}_null"] = float(row["null"]) if row["null"] else math.nan
        if row["se"]:
            values[f"{row['score']}_se"] = float(row["se"])
    return _label(key), scores


def _label(key: tuple[str, str, str]) -> str:
    return f"{key[0]}, epoch {float(key[1]):g}, step {key[2]}"


def load_runs(
    group: Run | Iterable[Run], *, stage: str | None = None, epoch: float | None = None, step: int | None = None
) -> list[tuple[str, Scores]]:
    """The runs of a group as ``(label, scores)``: a folder with ``seis_scores.csv`` (or such folders below
    it, each a run), the CSV file itself, or a ``score_model`` result; one run or an iterable of them.
    ``stage``, ``epoch`` and ``step`` choose the scoring of a CSV (see :func:`read_scores_csv`).

    Raises:
        ValueError: when a path holds no ``seis_scores.csv``, or a file has no such scoring.
    """
    if isinstance(group, (str, os.PathLike, Mapping)):
        group = [group]
    runs = []
    for run in group:
        if isinstance(run, Mapping):
            runs.append((f"scores {len(runs)}", _with_aliasing(run)))
            continue
        path = Path(run)
        files = [path] if path.is_file() else [path / CSV_NAME] if (path / CSV_NAME).is_file() else []
        files = files or sorted(path.rglob(CSV_NAME))
        if not files:
            raise ValueError(
                f"No {CSV_NAME} in {str(path)!r}: give the run's log folder (where SEISCallback wrote it, e.g."
                f" logs/digits_cnn/version_0), a folder above such folders, or the CSV file."
            )
        for file in files:
            label, scores = read_scores_csv(file, stage=stage, epoch=epoch, step=step)
            runs.append((f"{file.parent} ({label})", scores))
    return runs


def _with_aliasing(scores: Scores) -> Scores:
    """A ``score_model`` result with its aliasing gaps (``.aliasing``) as the CSV holds them: transform
    ``sweep_shift``, score ``aliasing_gap`` and its ``_se``; other mappings as they are."""
    aliasing = getattr(scores, "aliasing", None)
    if not aliasing:
        return scores
    gaps = {layer: {ALIASING: gap.gap, f"{ALIASING}_se": gap.se} for layer, gap in aliasing.items()}
    return {**scores, f"sweep_{SHIFT_FAMILY}": gaps}


# ------------------------------------------------------------------ the comparison


def compare_runs(
    group_a: Run | Iterable[Run],
    group_b: Run | Iterable[Run],
    *,
    names: tuple[str, str] = ("a", "b"),
    stage: str | None = None,
    epoch: float | None = None,
    step: int | None = None,
    level: float = 0.95,
    jackknife_groups: int | None = None,
) -> list[dict[str, Any]]:
    """Per transformation, layer and score, how ``group_b``'s runs differ from ``group_a``'s, seeds pooled,
    with a verdict that accounts for few seeds (the module docstring gives every formula).

    Example:
        >>> a = [{"hflip": {"conv": {"invariance": v}}} for v in (0.50, 0.52, 0.51)]
        >>> b = [{"hflip": {"conv": {"invariance": v}}} for v in (0.60, 0.61, 0.62)]
        >>> row = compare_runs(a, b, names=("plain", "augment"))[0]
        >>> round(row["delta"], 3), round(row["df"], 3), round(row["t_critical"], 3), row["verdict"]
        (0.1, 4.0, 2.776, 'raised')

    Args:
        group_a: the baseline runs (see :func:`load_runs`): folders with ``seis_scores.csv``, the files, or
            ``score_model`` results ``{transform: {layer: {score: value}}}`` (with ``<score>_se`` from the
            jackknife where known); one run or several (its seeds).
        group_b: the runs compared with them; ``delta = mean_b - mean_a``.
        names: what to call the two groups, the prefixes of their columns (``<name>_mean``, ...).
        stage, epoch, step: which scoring of each CSV (default: the last one of the file).
        level: the two-sided confidence level of the verdict's bar.
        jackknife_groups: the ``G`` the runs' jackknife SEs came from, giving them ``G - 1`` degrees of
            freedom; ``None``: taken as exact where seeds are pooled, and no fallback for single seeds.

    Returns:
        One row per (transformation, layer, score), in the order of the first run, with the columns of
        :func:`columns` (``names``): per side ``seeds`` (finite values), ``mean``, ``sd`` and ``se`` (mean
        jackknife SE); then ``delta``, ``seed_se``, ``jackknife_se``, ``se``, ``df``, ``t`` (delta / se),
        ``t_critical``, ``bar`` (``t_critical * se``), ``verdict`` (one of :data:`VERDICTS`) and ``se_from``
        (``seeds+jackknife``, ``seeds``, ``jackknife`` or empty).

    Raises:
        ValueError: for a bad ``names``, ``level`` or ``jackknife_groups``, an empty group, or runs that
            cannot be read (see :func:`load_runs`).
    """
    if len(names) != 2 or len(set(names)) != 2 or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"compare_runs(names=...) needs two different non-empty names, got {names!r}.")
    if not 0 < level < 1:
        raise ValueError(f"compare_runs(level=...) needs a confidence level in (0, 1), e.g. 0.95; got {level!r}.")
    if jackknife_groups is not None and not (isinstance(jackknife_groups, int) and jackknife_groups >= 2):
        raise ValueError(f"compare_runs(jackknife_groups=...) is the runs' G >= 2 (or None), got {jackknife_groups!r}.")
    sides = []
    for name, group in zip(names, (group_a, group_b)):
        runs = [scores for _, scores in load_runs(group, stage=stage, epoch=epoch, step=step)]
        if not runs:
            raise ValueError(f"compare_runs: group {name!r} has no runs.")
        sides.append(runs)
    keys = dict.fromkeys(
        (transform, layer, score)
        for runs in sides
        for scores in runs
        for transform, by_layer in scores.items()
        for layer, values in by_layer.items()
        for score in COMPARED
        if score in values
    )
    jackknife_df = math.inf if jackknife_groups is None else jackknife_groups - 1
    rows = []
    for transform, layer, score in keys:
        row: dict[str, Any] = {"transform": transform, "layer": layer, "score": score}
        summaries = []
        for name, runs in zip(names, sides):
            found = [s[transform][layer] for s in runs if score in s.get(transform, {}).get(layer, {})]
            values = [v[score] for v in found if math.isfinite(v[score])]
            errors = [v[f"{score}_se"] for v in found if math.isfinite(v.get(f"{score}_se", math.nan))]
            summary = _side(values, errors)
            row.update({f"{name}_{c}": value for c, value in zip(_SIDE, summary)})
            summaries.append(summary)
        row.update(
            _difference(*summaries, level=level, jackknife_df=jackknife_df, has_groups=jackknife_groups is not None)
        )
        rows.append(row)
    return rows


def _side(values: list[float], errors: list[float]) -> tuple[int, float, float, float]:
    """``(seeds, mean, sd, se)`` of one side."""
    mean = statistics.fmean(values) if values else math.nan
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    se = statistics.fmean(errors) if errors else math.nan
    return len(values), mean, sd, se


def _difference(
    a: tuple[int, float, float, float],
    b: tuple[int, float, float, float],
    *,
    level: float,
    jackknife_df: float,
    has_groups: bool,
) -> dict[str, Any]:
    """The ``_BOTH`` columns of a row from its two sides' ``(seeds, mean, sd, se)``."""
    (n_a, mean_a, sd_a, se_a), (n_b, mean_b, sd_b, se_b) = a, b
    delta = mean_b - mean_a
    seed_terms = [(sd_a**2 / n_a, n_a - 1), (sd_b**2 / n_b, n_b - 1)] if min(n_a, n_b) >= 2 else []
    jackknife_terms = [(se_a**2, jackknife_df), (se_b**2, jackknife_df)]
    has_jackknife = all(math.isfinite(v) for v, _ in jackknife_terms)
    if seed_terms and has_jackknife:
        terms, se_from = seed_terms + jackknife_terms, "seeds+jackknife"
    elif seed_terms:
        terms, se_from = seed_terms, "seeds"
    elif has_jackknife and has_groups:
        terms, se_from = jackknife_terms, "jackknife"
    else:
        terms, se_from = [], ""
    seed_se = math.sqrt(sum(v for v, _ in seed_terms)) if seed_terms else math.nan
    jackknife_se = math.sqrt(se_a**2 + se_b**2)
    out = {"delta": delta, "seed_se": seed_se, "jackknife_se": jackknife_se, "se_from": se_from}
    if not math.isfinite(delta):
        return {**out, **dict.fromkeys(("se", "df", "t", "t_critical", "bar"), math.nan), "verdict": "no scores"}
    if not terms:
        return {**out, **dict.fromkeys(("se", "df", "t", "t_critical", "bar"), math.nan), "verdict": "not enough seeds"}
    return {**out, **welch_verdict(delta, terms, level=level)}


def welch_verdict(delta: float, terms: Sequence[tuple[float, float]], *, level: float = 0.95) -> dict[str, Any]:
    """The verdict on a difference ``delta`` whose variance is a sum of independent ``terms``
    ``(variance, df)`` (``df = inf``: a term taken as exact): ``se = sqrt(sum variance)``, ``df`` by
    Welch-Satterthwaite ``(sum v)**2 / sum(v**2 / df_v)``, and "raised" / "lowered" (by the sign of delta)
    when ``|delta| > t_{(1 + level)/2, df} * se`` (``bar``), else "within noise". The one rule of
    :func:`compare_runs`, ``seis-lightning compare`` and the findings tests.

    Example:
        >>> v = welch_verdict(0.1, [(0.01**2 / 3, 2), (0.01**2 / 3, 2)])
        >>> round(v["df"], 3), round(v["t_critical"], 3), v["verdict"]
        (4.0, 2.776, 'raised')

    Returns:
        ``{"se", "df", "t", "t_critical", "bar", "verdict"}``.

    Raises:
        ValueError: for no terms, a negative or non-finite variance, a df that is not positive, or a
            ``level`` outside (0, 1).
    """
    if not 0 < level < 1:
        raise ValueError(f"welch_verdict(level=...) needs a confidence level in (0, 1), e.g. 0.95; got {level!r}.")
    if not terms:
        raise ValueError("welch_verdict needs at least one (variance, df) term.")
    for variance, df in terms:
        if not (math.isfinite(variance) and variance >= 0 and df > 0):
            raise ValueError(f"welch_verdict: each term is (variance >= 0, df > 0), got {(variance, df)!r}.")
    variance = sum(v for v, _ in terms)
    spread = sum(v * v / df for v, df in terms)
    df = variance**2 / spread if spread > 0 else math.inf  # Welch-Satterthwaite; every term exact: the normal
    se = math.sqrt(variance)
    t_critical = t_quantile((1 + level) / 2, df)
    bar = t_critical * se
    verdict = "within noise" if abs(delta) <= bar else "raised" if delta > 0 else "lowered"
    t = delta / se if se > 0 else math.copysign(math.inf, delta) if delta else 0.0
    return {"se": se, "df": df, "t": t, "t_critical": t_critical, "bar": bar, "verdict": verdict}


# ------------------------------------------------------------------ output


def format_comparison(rows: Sequence[Mapping[str, Any]], names: tuple[str, str] = ("a", "b")) -> str:
    """A plain-text table: per row each side's ``mean ± sd (se)`` and seeds, delta, its SE and bar, df, verdict."""
    header = [
        "transform",
        "layer",
        "score",
        *(f"{n}: mean ± sd (se)" for n in names),
        "delta",
        "se",
        "df",
        "bar",
        "verdict",
    ]
    body = []
    for r in rows:
        sides = [f"{r[f'{n}_mean']:.4f} ± {r[f'{n}_sd']:.4f} ({r[f'{n}_se']:.4f}) n={r[f'{n}_seeds']}" for n in names]
        verdict = r["verdict"] + (" (jackknife only)" if r["se_from"] == "jackknife" else "")
        body.append(
            [r["transform"], r["layer"], r["score"], *sides, f"{r['delta']:+.4f}", f"{r['se']:.4f}", f"{r['df']:.1f}",
             f"{r['bar']:.4f}", verdict]
        )  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *body]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_comparison_csv(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, names: tuple[str, str] = ("a", "b")
) -> None:
    """The rows to ``path``: columns of the rows' own first (e.g. a ``dataset`` added by the caller), then
    :func:`columns`; floats with 6 decimals, ``nan`` where undefined."""
    fields = columns(names)
    fields = (*(k for k in (rows[0] if rows else {}) if k not in fields), *fields)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows([{k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])


def comparison_figure(
    rows: Sequence[Mapping[str, Any]], names: tuple[str, str] = ("a", "b"), level: float = 0.95
) -> Figure:
    """Delta per layer (depth order) with its bar (``t_critical * se``) as error bars, one panel per score
    (and one for the aliasing gap when compared) and a series per transformation: filled where the verdict is
    raised or lowered, open within noise."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    transforms = list(dict.fromkeys(r["transform"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    shown = [score for score in COMPARED if score in SCORES or any(r["score"] == score for r in rows)]
    figure = Figure(figsize=(max(9.0, 0.6 * len(layers) * len(shown) + 2), 3.4), layout="constrained")
    panels = figure.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    width = 0.6 / max(len(transforms), 1)
    for axes, score in zip(panels, shown):
        for k, transform in enumerate(transforms):
            colour = colormaps["tab10"](k % 10)
            picked = [r for r in rows if r["score"] == score and r["transform"] == transform]
            x = np.array([layers.index(r["layer"]) for r in picked]) + (k - (len(transforms) - 1) / 2) * width
            delta = np.array([r["delta"] for r in picked], dtype=float)
            bar = np.array([r["bar"] for r in picked], dtype=float)
            axes.errorbar(x, delta, yerr=np.where(np.isfinite(bar), bar, 0), fmt="none", ecolor=colour, capsize=3)
            beyond = np.array([r["verdict"] in ("raised", "lowered") for r in picked], dtype=bool)
            axes.plot(x[beyond], delta[beyond], "o", color=colour)
            axes.plot(x[~beyond], delta[~beyond], "o", mfc="white", color=colour)
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
        axes.set_title(score)
        axes.grid(alpha=0.3)
    panels[0].set_ylabel(f"delta = {names[1]} − {names[0]}")
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colormaps["tab10"](k % 10)) for k in range(len(transforms))
    ]
    panels[-1].legend(handles, transforms, fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.suptitle(f"delta ± t·SE ({level:.0%}, Welch); filled: beyond the bar", fontsize="medium")
    return figure
