"""seis-lightning: SEIS equivariance and invariance scores for PyTorch Lightning.

The public names load on first use (PEP 562), so ``import seis_lightning.functional`` (the pure
math) pulls in neither Lightning nor matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "SEISCallback": "seis_lightning.callback",
    "HistoryEntry": "seis_lightning.callback",
    "SEISOptions": "seis_lightning.options",
    "SEISWarning": "seis_lightning.functional",
    "jackknife_se": "seis_lightning.functional",
    "seis_combine_statistics": "seis_lightning.functional",
    "seis_from_statistics": "seis_lightning.functional",
    "seis_maps": "seis_lightning.functional",
    "seis_scores": "seis_lightning.functional",
    "seis_statistics": "seis_lightning.functional",
    "capture": "seis_lightning.layers",
    "layer_names": "seis_lightning.layers",
    "resolve_layers": "seis_lightning.layers",
    "SEISMetric": "seis_lightning.metric",
    "probe_images": "seis_lightning.probe",
    "ProbeResult": "seis_lightning.scoring",
    "SEISProbe": "seis_lightning.scoring",
    "score_model": "seis_lightning.standalone",
    "compare_runs": "seis_lightning.compare",
    "GeometricTransform": "seis_lightning.transforms",
    "RandomAffine": "seis_lightning.transforms",
    "flip": "seis_lightning.transforms",
    "parse_transform": "seis_lightning.transforms",
    "rotate": "seis_lightning.transforms",
    "scale": "seis_lightning.transforms",
    "translate": "seis_lightning.transforms",
}

__all__ = sorted(_EXPORTS)


def _find_version() -> str:
    """pyproject.toml's version: from the installed metadata, else (an uninstalled checkout) from the file."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seis-lightning")
    except PackageNotFoundError:
        import re
        from pathlib import Path

        try:
            text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
        except OSError:
            return "0+unknown"
        found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
        return found.group(1) if found else "0+unknown"


__version__ = _find_version()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'seis_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
