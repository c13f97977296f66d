"""TensorBoard as a person sees it: the demo recipe (cut short) served by this environment's TensorBoard and
loaded in headless Chromium (``make browser-check`` does the same on the full-length demo). Skipped where no
Chromium is installed (Debian: ``apt-get install chromium``)."""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import pytest

from seis_lightning.cli import main
from tests.test_cli import tiny

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)"),
]


def screenshot_script():
    path = Path(__file__).resolve().parent.parent / "scripts" / "tensorboard_screenshot.py"
    spec = importlib.util.spec_from_file_location("tensorboard_screenshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_layers_series_charts_and_figures_are_served_and_screenshotted(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["fit", *tiny(tmp_path), "--trainer.max_epochs=1", "--seis.log_figures=true"])
    script = screenshot_script()
    script.main([str(tmp_path), str(tmp_path / "shots"), "--tab", "scalars,custom_scalars,images", "--check"])
    out = capsys.readouterr().out
    assert "every layer's SEIS series, charts and figures are served" in out
    for tab in ("scalars", "custom_scalars", "images"):
        assert (tmp_path / "shots" / f"{tab}.png").read_bytes()[:4] == b"\x89PNG"
    pairs = script.expected(tmp_path)["digits_cnn/version_0"]  # what --check went through, layer by layer
    assert {transform for transform, _ in pairs} == {"random_affine"} and len(pairs) >= 2


def test_a_folder_without_seis_runs_fails_loudly(tmp_path):
    with pytest.raises(SystemExit, match=r"no seis_scores\.csv under"):
        screenshot_script().main([str(tmp_path), str(tmp_path / "shot.png"), "--check"])
