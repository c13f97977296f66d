"""The README's walk holds: its Python snippets run and print what it shows, the commands it names exist
(Makefile targets, ``seis-lightning`` subcommands, recipes, tools in the venv), its links land on headings,
and the walk comes before the reference."""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from seis_lightning import SEISCallback
from seis_lightning.cli import SUBCOMMANDS
from seis_lightning.functional import SCORES_AND_NULLS
from seis_lightning.plotting import format_score_table
from seis_lightning.recipes import list_recipes

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
WALK, REFERENCE = README.split("\n# Reference\n")
# a Python block, a paragraph that starts with "prints", and the text block of what it prints
PRINTING = re.compile(
    r"```python\n(?P<code>(?:(?!```).)*)```\n\nprints[^\n]*(?:\n[^\n]+)*\n\n```text\n(?P<out>.*?)```", re.S
)
CODE = re.compile(r"```(?:bash|python)\n(.*?)```", re.S)


def snippets(text: str) -> list[tuple[str, str]]:
    return [(match["code"], match["out"]) for match in PRINTING.finditer(text)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_walk_comes_first_then_the_reference():
    walk = [line for line in WALK.splitlines() if line.startswith("## ")]
    assert walk == [
        "## 1. Install",
        "## 2. The demo",
        "## 3. Watch the curves in TensorBoard",
        "## 4. In your own training: three lines",
        "## 5. Any PyTorch model: `score_model`",
        "## 6. Recipes and the command line",
    ]
    reference = [line for line in REFERENCE.splitlines() if line.startswith("## ")]
    assert "## Logging: steps, loggers, figures and the CSV" in reference and "## `score_model`" in reference
    assert "`seis_scores.csv`" not in WALK and "`seis_scores.csv`" in REFERENCE  # the details moved, not lost


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(code, out, id=f"{part}-{i}")
        for part, text in (("walk", WALK), ("reference", REFERENCE))
        for i, (code, out) in enumerate(snippets(text))
    ],
)
def test_a_snippet_prints_what_the_readme_shows(code, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert printed.getvalue() == expected


def test_the_walk_has_its_score_model_snippet_and_every_other_snippet_compiles():
    walk = snippets(WALK)
    assert len(walk) == 1 and "score_model(model, dataset, num_samples=256" in walk[0][0]
    assert len(snippets(REFERENCE)) == 1
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        compile(block, "README.md", "exec")


@pytest.mark.slow
def test_section_4_runs_as_written_and_reads_the_latest_scores(tmp_path, monkeypatch):
    """The python block of "## 4." as the README holds it: a 2-epoch fit of the demo's model and data with the
    callback (about 12 s of CPU on one thread), then the scores read back from ``callback.scores``."""
    import torch

    section = re.search(r"^## 4\.[^\n]*\n(.*?)^## ", WALK, re.S | re.M)
    assert section, 'the "## 4." section'
    [code] = re.findall(r"```python\n(.*?)```", section[1], re.S)
    assert "max_epochs=" in code and "callback.scores[" in code  # runnable as written, and read back
    monkeypatch.chdir(tmp_path)
    namespace, printed, threads = {"__name__": "__readme__"}, io.StringIO(), torch.get_num_threads()
    torch.set_num_threads(1)  # a shared machine: several threads per process only contend
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(code, "README.md", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    callback = namespace["callback"]
    assert len(callback.history) == 3 and callback.history[0]["step"] == 0  # before training, then 2 epochs
    assert callback.scores == callback.history[-1]["scores"]
    assert {t: sorted(by_layer) for t, by_layer in callback.scores.items()} == {
        "random_affine": ["conv1", "conv2", "conv3"],
        "rotate30": ["conv1", "conv2", "conv3"],
    }
    conv2 = callback.scores["rotate30"]["conv2"]
    assert 0 <= conv2["equivariance_null"] < conv2["equivariance"] <= 1
    expected = (
        f"conv2 under rotate:30: equivariance {conv2['equivariance']:.2f} (null {conv2['equivariance_null']:.2f})"
    )
    assert printed.getvalue().endswith(expected + "\n")  # after Lightning's own progress bar
    assert (tmp_path / "logs" / "lightning_logs" / "version_0" / "seis_scores.csv").is_file()


def test_the_demo_table_is_the_score_table_of_the_demo_recipes_layers():
    table = re.search(r"```text\n(SEIS scores after .*?)```", WALK, re.S)
    assert table, "the demo's printed table"
    lines = table[1].splitlines()
    assert re.fullmatch(r"SEIS scores after 12 epoch\(s\), step 539 \(global_step 540; nulls in brackets\):", lines[0])
    header = format_score_table({"random_affine": {"conv1": dict.fromkeys(SCORES_AND_NULLS, 0.5)}}).splitlines()[0]
    assert lines[1] == header
    rows = [line.split() for line in lines[3:] if line.strip()]
    assert [row[:2] for row in rows[:5]] == [
        ["random_affine", layer] for layer in ("conv1", "conv2", "conv3", "pool", "fc")
    ]
    for row in rows[:5]:
        values = [float(value.strip("()")) for value in row[2:]]
        assert len(values) == 6 and all(0 <= value <= 1 for value in values)
    assert "Watch the curves with:\n  .venv/bin/tensorboard --logdir logs" in table[1]


def test_the_commands_it_names_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.MULTILINE))
    named = set(re.findall(r"`make ([\w-]+)`", README)) | set(re.findall(r"^make ([\w-]+)", README, re.MULTILINE))
    assert {"install", "demo", "test", "figures"} <= named <= targets, named - targets
    subcommands = set(re.findall(r"seis-lightning (\w+)", README))
    assert {"fit", "validate", "recipes", "synthetic", "analyze"} <= subcommands <= set(SUBCOMMANDS)
    recipes = {recipe.name for recipe in list_recipes()}
    configs = set(re.findall(r"--config (?:recipes/)?(\w+)(?:\.yaml)?", README)) - {"my_recipe", "logs"}
    assert configs and configs <= recipes, configs - recipes
    scripts = re.findall(
        r'^([\w-]+) = "seis_lightning[\w.]*:\w+"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE
    )
    assert scripts == ["seis-lightning"]
    tools = set(re.findall(r"\.venv/bin/([\w-]+)", README))
    assert tools <= {*scripts, "tensorboard", "python", "pip", "activate"}, tools
    assert ".venv/bin/tensorboard --logdir logs" in WALK and "source .venv/bin/activate" in WALK


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_cpu_only_install_it_names_passes_the_index_to_pip(tmp_path):
    index = "https://download.pytorch.org/whl/cpu"
    assert f"make install TORCH_INDEX={index}" in WALK
    venv = tmp_path / "venv"
    dry = subprocess.run(
        ["make", "-n", "install", f"VENV={venv}", f"TORCH_INDEX={index}"], cwd=ROOT, capture_output=True, text=True
    )
    torch = [line for line in dry.stdout.splitlines() if "pip install -q torch" in line]
    assert len(torch) == 1 and torch[0].endswith(f"--index-url {index}"), dry.stdout + dry.stderr


def test_its_links_land_on_headings_and_files():
    anchors = {slug(line.lstrip("#")) for line in README.splitlines() if re.match(r"#{1,3} ", line)}
    links = re.findall(r"\]\(#([^)]+)\)", README)
    assert links and set(links) <= anchors, set(links) - anchors
    for path in re.findall(r"\]\((?!#|https?:)([^)#]+)\)", README):
        assert (ROOT / path).exists(), path


def test_every_timing_is_filled_in_from_a_measurement():
    assert not re.search(r"\b[A-Z]+_(TIME|OUTPUT|TABLE|SIZE)\b", README)
    for when in ("`make install` took", "It took", "`make test` took"):
        assert re.search(re.escape(when) + r" (\d+ min )?\d+ s\b", README), when


# The README's default for `transforms` is what `None` stands for (the paper's random affine).
DOCUMENTED_FOR_NONE = {"transforms": ["random_affine"]}


def test_the_callback_options_table_gives_the_signature_s_defaults():
    """Every row of "Callback options" names options of ``SEISCallback`` with the default its signature has
    (the table said ``batch_size`` 64 after the default had become 16, and nothing failed)."""
    section = REFERENCE.split("## Callback options\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ((?:`\w+`(?:, )?)+) \| ([^|]+) \|", section, re.M)
    parameters = inspect.signature(SEISCallback).parameters
    documented = {name: default for names, default in rows for name in re.findall(r"`(\w+)`", names)}
    assert set(documented) == set(parameters)
    for name, default in documented.items():
        value = ast.literal_eval(default.strip().strip("`"))
        expected = DOCUMENTED_FOR_NONE.get(name, parameters[name].default)
        assert value == expected and type(value) is type(expected), (name, value, parameters[name].default)
