"""Where SEIS results go: TensorBoard (scalars, standard errors, margin charts, figures), CSVLogger,
Weights & Biases and MLflow (offline), and ``seis_scores.csv``; each read back after a real ``Trainer.fit``."""

from __future__ import annotations

import csv
import math
import re
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
from matplotlib.container import ErrorbarContainer

from seis_lightning import SEISCallback, layer_scores
from seis_lightning.functional import SCORES, SEISWarning
from seis_lightning.plotting import CSV_COLUMNS, depth_figure
from seis_lightning.trainer_io import CSV_NAME, log_folder
from tests.lightning_helpers import TinyCNN, digits_loaders, read_events, trainer

LAYERS = ["conv1", "conv2"]
KNOWN_SE = {score: 0.01 * (i + 1) for i, score in enumerate(SCORES)}


@pytest.fixture
def standard_errors(monkeypatch):
    """Known standard errors (:data:`KNOWN_SE`) on every score, so that the logging is tested apart from the
    jackknife's math (tests/test_metric.py tests that)."""
    compute = layer_scores.compute

    def with_standard_errors(*args, **kwargs):
        result = compute(*args, **kwargs)
        for by_layer in result.scores.values():
            for values in by_layer.values():
                values.update({f"{score}_se": se for score, se in KNOWN_SE.items()})
        return result

    monkeypatch.setattr(layer_scores, "compute", with_standard_errors)


def fit(
    tmp_path, max_epochs: int = 1, log_figures: bool = True, max_overhead: float | None = None, **kwargs
) -> tuple[SEISCallback, pl.Trainer]:
    callback = SEISCallback(
        layers=LAYERS, num_samples=64, transforms="hflip", log_figures=log_figures, max_overhead=max_overhead
    )
    train, val = digits_loaders()
    fitter = trainer(tmp_path, [callback], max_epochs=max_epochs, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        fitter.fit(TinyCNN(), train, val)
    return callback, fitter


def layout_charts(events) -> dict[str, tuple[str, list[str]]]:
    """The latest custom-scalars layout (the one TensorBoard shows): ``{chart title: (kind, tags)}``."""
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    layout = layout_pb2.Layout.FromString(events.Tensors(metadata.CONFIG_SUMMARY_TAG)[-1].tensor_proto.string_val[0])
    charts = {}
    for category in layout.category:
        for chart in category.chart:
            if chart.HasField("margin"):
                (series,) = chart.margin.series
                charts[chart.title] = ("Margin", [series.value, series.lower, series.upper])
            else:
                charts[chart.title] = ("Multiline", list(chart.multiline.tag))
    return charts


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def assert_rows_match(rows: list[dict[str, str]], entries: list[dict]) -> None:
    """One row per scoring x transformation x layer x score, with the history's values (exact: the CSV holds
    ``repr`` of the floats)."""
    expected = [
        (e["stage"], e["epoch"], e["global_step"], transform, layer, score, values)
        for e in entries
        for transform, by_layer in e["scores"].items()
        for layer, values in by_layer.items()
        for score in SCORES
    ]
    assert len(rows) == len(expected) == len(entries) * 1 * len(LAYERS) * len(SCORES)
    for row, (stage, epoch, step, transform, layer, score, values) in zip(rows, expected):
        assert (row["stage"], row["transform"], row["layer"], row["score"]) == (stage, transform, layer, score)
        assert (float(row["epoch"]), int(row["global_step"])) == (epoch, step)
        assert float(row["value"]) == values[score]
        assert float(row["null"]) == values[f"{score}_null"]
        assert row["se"] == (str(values[f"{score}_se"]) if f"{score}_se" in values else "")


def test_standard_errors_reach_tensorboard_with_margin_charts(tmp_path, standard_errors):
    callback, _ = fit(tmp_path)
    events = read_events(tmp_path / "tb" / "version_0")
    scalars = events.Tags()["scalars"]
    assert [e["global_step"] for e in callback.history] == [0, 6]
    for score, se in KNOWN_SE.items():
        for layer in LAYERS:
            value = events.Scalars(f"seis/hflip/{score}/{layer}")
            assert [e.step for e in events.Scalars(f"seis/hflip/{score}_se/{layer}")] == [0, 5]
            assert [e.value for e in events.Scalars(f"seis/hflip/{score}_se/{layer}")] == pytest.approx([se, se])
            lower = events.Scalars(f"seis/hflip/{score}_lower/{layer}")
            upper = events.Scalars(f"seis/hflip/{score}_upper/{layer}")
            assert [e.step for e in lower] == [e.step for e in upper] == [e.step for e in value] == [0, 5]
            for v, lo, up in zip(value, lower, upper):
                assert (lo.value, up.value) == pytest.approx((v.value - 2 * se, v.value + 2 * se), abs=1e-6)
    assert len([t for t in scalars if t.startswith("seis/") and "/time/" not in t]) == len(SCORES) * len(LAYERS) * 5
    charts = layout_charts(events)
    assert charts["equivariance"] == ("Multiline", [r"seis/hflip/equivariance/.*"])
    for score in SCORES:
        for layer in LAYERS:
            tags = [f"seis/hflip/{score}{end}/{layer}" for end in ("", "_lower", "_upper")]
            assert charts[f"{score} {layer}"] == ("Margin", tags)
            assert all(tag in scalars for tag in tags)
    assert [e.step for e in events.Images("seis/hflip/depth")] == [0, 5]
    assert_rows_match(read_rows(tmp_path / "tb" / "version_0" / CSV_NAME), callback.history)


def test_jackknife_standard_errors_reach_tensorboard(tmp_path):
    """The real jackknife, end to end: finite positive ``<score>_se`` next to each score, its margin ends."""
    callback = SEISCallback(layers=LAYERS, num_samples=64, transforms="hflip", jackknife_groups=4, log_figures=False)
    train, val = digits_loaders()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        trainer(tmp_path, [callback], max_epochs=1).fit(TinyCNN(), train, val)
    events = read_events(tmp_path / "tb" / "version_0")
    for layer, values in callback.scores["hflip"].items():
        for score in SCORES:
            se = values[f"{score}_se"]
            assert 0 < se < 0.5, (layer, score, se)
            assert events.Scalars(f"seis/hflip/{score}_se/{layer}")[-1].value == pytest.approx(se, abs=1e-6)
            lower = events.Scalars(f"seis/hflip/{score}_lower/{layer}")[-1].value
            assert lower == pytest.approx(values[score] - 2 * se, abs=1e-6)
    assert ("Margin", [f"seis/hflip/invariance{end}/conv2" for end in ("", "_lower", "_upper")]) in layout_charts(
        events
    ).values()


def test_without_jackknife_nothing_changes(tmp_path):
    callback, _ = fit(tmp_path)
    events = read_events(tmp_path / "tb" / "version_0")
    tags = {tag for tag in events.Tags()["scalars"] if tag.startswith("seis/")}
    assert tags == {
        f"seis/hflip/{score}{suffix}/{layer}" for score in SCORES for suffix in ("", "_null") for layer in LAYERS
    } | {"seis/time/probe", "seis/time/share"}
    assert {kind for kind, _ in layout_charts(events).values()} == {"Multiline"}
    assert all(set(values) == {*SCORES, *(f"{s}_null" for s in SCORES)} for values in callback.scores["hflip"].values())


def test_depth_figure_draws_error_bars_only_with_standard_errors():
    scores = {layer: {score: 0.5 for score in SCORES} for layer in LAYERS}
    without = depth_figure(scores).axes[0]
    assert not [c for c in without.containers if isinstance(c, ErrorbarContainer)]
    with_se = {layer: {**values, **{f"{s}_se": se for s, se in KNOWN_SE.items()}} for layer, values in scores.items()}
    bars = [c for c in depth_figure(with_se).axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == len(SCORES)
    for bar, se in zip(bars, KNOWN_SE.values()):
        (segments,) = bar.lines[2]  # the vertical bars, one segment per layer: value ± 2 SE
        ends = [value for segment in segments.get_segments() for value in segment[:, 1]]
        assert ends == pytest.approx([0.5 - 2 * se, 0.5 + 2 * se] * len(LAYERS))


@pytest.mark.parametrize("logger", ["tensorboard", "none"])
def test_seis_scores_csv_reads_back_like_the_history(tmp_path, logger, standard_errors):
    """Every scoring of fit and of a later validate, one row per transformation x layer x score; with
    ``logger=False`` the file goes to ``default_root_dir``."""
    kwargs = {} if logger == "tensorboard" else {"logger": False}
    callback, fitter = fit(tmp_path, max_epochs=2, log_figures=False, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        fitter.validate(fitter.lightning_module, digits_loaders()[1])
    folder = tmp_path / "tb" / "version_0" if logger == "tensorboard" else tmp_path
    assert log_folder(fitter) == str(folder)
    rows = read_rows(folder / CSV_NAME)
    assert [e["global_step"] for e in callback.history] == [0, 6, 12]
    assert [e["stage"] for e in callback.evaluations] == ["validate"]
    assert_rows_match(rows, callback.history + callback.evaluations)


def test_csv_logger_gets_the_scalars(tmp_path, standard_errors):
    callback, _ = fit(tmp_path, log_figures=False, logger=pl.loggers.CSVLogger(tmp_path, name="csv", version=0))
    folder = tmp_path / "csv" / "version_0"
    with open(folder / "metrics.csv", newline="") as file:
        metrics = [row for row in csv.DictReader(file) if row["seis/hflip/invariance/conv1"]]
    assert [int(row["step"]) for row in metrics] == [0, 5]
    for row, entry in zip(metrics, callback.history):
        for layer, values in entry["scores"]["hflip"].items():
            for name, value in values.items():
                assert float(row[f"seis/hflip/{name}/{layer}"]) == pytest.approx(value, abs=1e-6)
    assert not any(name.endswith(("_lower", "_upper")) for name in metrics[0])  # margin-chart ends: TensorBoard only
    assert_rows_match(read_rows(folder / CSV_NAME), callback.history)


def test_wandb_offline_gets_scalars_and_figures(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    logger = pl.loggers.WandbLogger(offline=True, save_dir=str(tmp_path), project="seis")
    try:
        callback, fitter = fit(tmp_path, logger=logger)
        run_dir = logger.experiment.dir  # <tmp>/wandb/offline-run-*/files
        folder = log_folder(fitter)
    finally:
        wandb.finish()
        wandb.teardown()  # waits for the wandb-core process, which writes the run file, to exit
    images = sorted(p.relative_to(run_dir).as_posix() for p in (tmp_path / "wandb").rglob("*.png"))
    for tag in ("seis/hflip/depth", *(f"seis/hflip/heatmap/{score}" for score in SCORES)):
        assert len([p for p in images if p.startswith(f"media/images/{tag}_")]) == 2, (tag, images)
    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    for layer in LAYERS:
        logged = wandb_values(run_file.read_bytes(), f"seis/hflip/invariance/{layer}")
        assert logged == pytest.approx([e["scores"]["hflip"][layer]["invariance"] for e in callback.history])

    # The CSV goes to the run's files folder, which W&B syncs with the run; not to the shared save_dir.
    assert folder == run_dir and not (tmp_path / CSV_NAME).exists()
    assert_rows_match(read_rows(Path(run_dir) / CSV_NAME), callback.history)


def wandb_values(records: bytes, key: str) -> list[float]:
    """The values logged under ``key`` in an offline run file. wandb has no public reader for it; its records
    are protobuf messages holding each item as the key followed by field 16 (``value_json``), a JSON string.
    An item sits both in its history record and in the summary update after it: take each value once."""
    values: list[float] = []
    for match in re.finditer(re.escape(key.encode()) + rb"\x82\x01", records):
        size = records[match.end()]
        value = float(records[match.end() + 1 : match.end() + 1 + size])
        if not values or values[-1] != value:
            values.append(value)
    return values


def test_mlflow_gets_scalars_and_figures(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store, in maintenance mode
    from mlflow.tracking import MlflowClient

    uri = f"file:{tmp_path / 'mlruns'}"
    logger = pl.loggers.MLFlowLogger(experiment_name="seis", tracking_uri=uri)
    callback, _ = fit(tmp_path, logger=logger)
    client = MlflowClient(uri)
    history = client.get_metric_history(logger.run_id, "seis/hflip/invariance/conv1")
    assert [(m.step, m.value) for m in history] == [
        (e["step"], pytest.approx(e["scores"]["hflip"]["conv1"]["invariance"], abs=1e-6)) for e in callback.history
    ]
    artifacts = {a.path for a in client.list_artifacts(logger.run_id, "seis/hflip")}
    assert {"seis/hflip/depth_step0.png", "seis/hflip/depth_step5.png"} <= artifacts
    heatmaps = {a.path for a in client.list_artifacts(logger.run_id, "seis/hflip/heatmap")}
    assert heatmaps == {f"seis/hflip/heatmap/{score}_step{step}.png" for score in SCORES for step in (0, 5)}
    local = tmp_path / "mlruns"
    pngs = list(local.rglob("depth_step5.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert math.isfinite(history[-1].value)
    # The CSV is the run's artifact, with every scoring; the store's shared root holds none.
    assert "seis_scores.csv" in {a.path for a in client.list_artifacts(logger.run_id)}
    with open(client.download_artifacts(logger.run_id, "seis_scores.csv", str(tmp_path))) as file:
        rows = list(csv.DictReader(file))
    assert sorted({int(row["step"]) for row in rows}) == [e["step"] for e in callback.history]
    assert not (local / "seis_scores.csv").exists()


# ------------------------------------------------------------------ what the probe costs (issue 28 item 3)


def test_every_fit_scoring_logs_its_probe_seconds_and_share_to_tensorboard(tmp_path):
    callback, _ = fit(tmp_path, max_epochs=2, log_figures=False)
    events = read_events(tmp_path / "tb" / "version_0")
    seconds, share = events.Scalars("seis/time/probe"), events.Scalars("seis/time/share")
    steps = [entry["step"] for entry in callback.history]
    assert [e.step for e in seconds] == steps == [e.step for e in share] == [0, 5, 11]
    assert all(e.value > 0 for e in seconds)
    assert all(0 < e.value <= 1 for e in share)
    assert share[0].value > share[-1].value  # the baseline is all probe; training dilutes it


def test_max_overhead_skips_scorings_says_so_once_and_still_scores_the_final_model(tmp_path):
    callback = SEISCallback(layers=LAYERS, num_samples=64, transforms="hflip", log_figures=False, max_overhead=1e-9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, [callback], max_epochs=3).fit(TinyCNN(), *digits_loaders())
    said = [str(w.message) for w in caught if "skipped the scoring" in str(w.message)]
    assert len(said) == 1 and re.search(r"at step 6 .*max_overhead=1e-09 .* the final model is still scored", said[0])
    assert [(e["epoch"], e["global_step"]) for e in callback.history] == [(0.0, 0), (3.0, 18)]
    events = read_events(tmp_path / "tb" / "version_0")
    assert [e.step for e in events.Scalars("seis/time/probe")] == [0, 17]


@pytest.mark.parametrize("value", [0, 1, -0.1, "5%"])
def test_max_overhead_out_of_range_is_refused_by_name(value):
    with pytest.raises(ValueError, match=r"`max_overhead` to be None or a share of the fit's time in \(0, 1\)"):
        SEISCallback(max_overhead=value)


def test_depth_figure_is_sized_for_a_tensorboard_card_with_one_legend_entry_per_score():
    layers = ["conv1", "conv2", "pool", "features.3", "fc"]
    figure = depth_figure({layer: {score: 0.5 for score in SCORES} for layer in layers}, "hflip, epoch 1, step 5")
    assert figure.get_size_inches() == pytest.approx((4.45, 3.2))  # 445 x 320 px: legible scaled to ~300 px
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == [*SCORES, "null (dotted)"]
    assert figure.axes[0].get_title() == "hflip, epoch 1, step 5"
