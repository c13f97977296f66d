"""What importing the package costs: the math alone pulls in neither Lightning nor matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_functional_math_loads_neither_lightning_nor_matplotlib():
    """(torchmetrics itself imports matplotlib: the metric cannot avoid it, the math does.)"""
    loaded = _run(
        "import json, sys; import seis_lightning.functional;"
        " heavy = {'lightning', 'matplotlib', 'torchmetrics'};"
        " print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & heavy)))"
    )
    assert loaded == []


def test_public_names_still_import_from_the_package():
    names = _run(
        "import json, seis_lightning; from seis_lightning import SEISCallback, SEISMetric, seis_scores, score_model;"
        " print(json.dumps([SEISCallback.__name__, SEISMetric.__name__, seis_scores.__name__,"
        " sorted(set(seis_lightning.__all__) - set(dir(seis_lightning))), seis_lightning.__version__]))"
    )
    assert names[:4] == ["SEISCallback", "SEISMetric", "seis_scores", []]
    version = next(line for line in (ROOT / "pyproject.toml").read_text().splitlines() if line.startswith("version"))
    assert names[4] == version.split('"')[1]


def test_version_without_installed_metadata():
    """An uninstalled checkout (no ``seis-lightning`` distribution) reads pyproject.toml's version."""
    version = _run(
        "import importlib.metadata as m, json; real = m.version;"
        " m.version = lambda name: (_ for _ in ()).throw(m.PackageNotFoundError(name)) if name == 'seis-lightning'"
        " else real(name);"
        " import seis_lightning; print(json.dumps(seis_lightning.__version__))"
    )
    assert version[0].isdigit() and version != "0+unknown"
