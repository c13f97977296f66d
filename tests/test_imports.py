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


def _package_imports() -> dict[str, set[str]]:
    """Which package modules each module of ``seis_lightning`` imports, at any depth of its code (imports
    inside functions count: a deferred import hides a cycle, it does not remove it)."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "seis_lightning").glob("*.py")):
        name = path.stem
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seis_lightning"):
                module = node.module.split(".")
                if len(module) > 1:
                    targets.add(module[1])
                else:  # from seis_lightning import x, y
                    targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(a.name.split(".")[1] for a in node.names if a.name.startswith("seis_lightning."))
        graph[name] = {t for t in targets if (ROOT / "seis_lightning" / f"{t}.py").exists() and t != name}
    return graph


def test_the_package_modules_import_each_other_without_a_cycle():
    graph = {name: deps for name, deps in _package_imports().items() if name != "__init__"}
    assert "options" in graph["_precision"] or "_precision" in graph["options"]  # the graph is read
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep == "__init__":
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
