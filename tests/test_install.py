"""The product as users install it: the wheel carries the package, its recipes and ``py.typed``, and works
outside the repository.

The wheel is built offline from a copy of the sources and installed into a fresh virtual environment whose
dependencies are this environment's (a ``.pth`` file, so nothing is downloaded); the commands run from an
empty folder with ``PYTHONPATH`` unset, so only the installed package can be imported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "seis_lightning", "recipes"]  # what the build reads
VERSION = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
RECIPES = sorted(path.name for path in (ROOT / "recipes").glob("*.yaml"))

SCORE = """
import json
import sys
from pathlib import Path

import torch
from torch import nn

import seis_lightning

assert Path(seis_lightning.__file__).is_relative_to(sys.prefix), seis_lightning.__file__  # not the checkout
model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
images = torch.rand(64, 1, 12, 12, generator=torch.Generator().manual_seed(0))
scores = seis_lightning.score_model(model, images, layers=["0", "2"], transforms=["hflip"], batch_size=32)
print(json.dumps({"version": seis_lightning.__version__, "scores": scores}))
"""


def _run(command: list[str | Path], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``command`` in ``cwd`` with no ``PYTHONPATH``; fail with its output if it fails."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> tuple[Path, str]:
    """The wheel, built offline with this environment's setuptools from a copy of the sources (so the
    checkout gets no build artefacts), and the build's verbose output."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index"]
    done = _run([*pip_wheel, "--wheel-dir", dist, source], cwd=source)
    return next(dist.glob("*.whl")), done.stdout + done.stderr


@pytest.fixture(scope="module")
def venv(build, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel; its dependencies are seen through a ``.pth`` file
    naming this environment's site-packages (where the repository is not: an editable install there only
    works through its own ``.pth``, which Python does not read from a folder a ``.pth`` file adds)."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv)
    (Path(purelib.stdout.strip()) / "test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # --ignore-installed: this environment's editable seis-lightning is visible too, and must stay as it is.
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", build[0]], cwd=venv)
    return venv


def test_wheel_carries_the_package_its_recipes_and_py_typed(build):
    wheel, output = build
    assert wheel.name == f"seis_lightning-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = sorted(name for name in names if name.startswith("seis_lightning/recipe_files/"))
        assert [Path(name).name for name in shipped] == RECIPES and len(RECIPES) == 16
        for name in shipped:  # the repository's files themselves, not a copy kept by hand
            assert archive.read(name) == (ROOT / "recipes" / Path(name).name).read_bytes()
        metadata = archive.read(f"seis_lightning-{VERSION}.dist-info/METADATA").decode()
    assert "seis_lightning/py.typed" in names
    assert f"seis_lightning-{VERSION}.dist-info/licenses/LICENSE" in names
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "seis_lightning").rglob("*.py")}
    assert modules <= names, f"not in the wheel (a subpackage missing from pyproject.toml?): {modules - names}"
    assert "License-Expression: Apache-2.0" in metadata and f"Version: {VERSION}" in metadata
    # No warning from the build (e.g. setuptools' "`project.license` as a TOML table is deprecated").
    assert not re.search(r"\w+Warning:|deprecat", output, re.IGNORECASE), output


def test_installed_cli_fits_a_shipped_recipe_from_an_empty_folder(venv, tmp_path):
    bin_ = venv / "bin"
    listed = _run([bin_ / "seis-lightning", "recipes"], cwd=tmp_path).stdout
    assert all(f"\n{name.removesuffix('.yaml')} " in listed for name in RECIPES)
    assert str(venv) in listed  # the recipes come from the installed package

    fit = [bin_ / "seis-lightning", "fit", "--config", "digits_cnn", "--trainer.max_epochs=1"]
    fast = ["--trainer.limit_train_batches=10", "--seis.num_samples=64", "--trainer.enable_progress_bar=false"]
    out = _run([*fit, *fast], cwd=tmp_path, timeout=300).stdout
    assert "SEIS scores after" in out
    events = next((tmp_path / "logs" / "digits_cnn").rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = [tag for tag in accumulator.Tags()["scalars"] if tag.startswith("seis/random_affine/equivariance/")]
    assert tags, accumulator.Tags()["scalars"]
    events = accumulator.Scalars(tags[0])
    # before training, and with the validation after 10 batches at Lightning's logging step (global step 10 - 1)
    assert [event.step for event in events] == [0, 9]
    assert all(0.0 <= event.value <= 1.0 for event in events)


def test_installed_package_scores_a_model_with_the_public_api(venv, tmp_path):
    out = _run([venv / "bin" / "python", "-c", SCORE], cwd=tmp_path, timeout=300).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["version"] == VERSION
    assert list(result["scores"]["hflip"]) == ["0", "2"]
    for values in result["scores"]["hflip"].values():
        assert 0.0 <= values["equivariance"] <= 1.0 and 0.0 <= values["invariance"] <= 1.0
