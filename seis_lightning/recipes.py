"""The recipes shipped with the package: list them, and turn a bare recipe name into its file.

The wheel carries the repository's top-level ``recipes/`` folder as ``seis_lightning/recipe_files/``
(``[tool.setuptools]`` in ``pyproject.toml``), so ``seis-lightning fit --config digits_cnn`` works
wherever the package is installed. A recipe's header comment says what it is for (``# <name>: ...``),
the paper's result it is built to reproduce, where there is one (``Paper result: ...``), and what
our runs found, as the README's "What the scores say" reports it (``Our runs: ...``).
"""

from __future__ import annotations

import difflib
import re
import textwrap
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["Recipe", "format_recipe_table", "list_recipes", "recipe_folder", "resolve_config", "resolve_recipe"]

_NAME = re.compile(r"[\w.-]+")  # a bare name; anything else (a path, inline YAML) is left to LightningCLI
_PAPER_RESULT = re.compile(r"Paper result:\s*(.+?\.)(?=\s|$)")
_OUR_RUNS = re.compile(r"Our runs:\s*(.+?\.)(?=\s|$)")
_SENTENCE = re.compile(r".+?[.?!](?=\s|$)")


@dataclass(frozen=True)
class Recipe:
    """A shipped recipe.

    Args:
        name: the file name without ``.yaml``, as given to ``--config``.
        path: the YAML file.
        description: the header comment after ``# <name>:``, without the paper result and our runs.
        paper_result: the paper's result the recipe is built to reproduce, ``None`` for recipes beyond the paper.
        our_runs: what our runs of it found (the README's findings), ``None`` where the header does not say.
    """

    name: str
    path: Path
    description: str
    paper_result: str | None
    our_runs: str | None = None


def recipe_folder() -> Path:
    """The folder of the shipped recipes: ``seis_lightning/recipe_files`` when installed from a wheel,
    the repository's ``recipes/`` in a source checkout (an editable install maps no data folders)."""
    shipped = resources.files("seis_lightning") / "recipe_files"
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[1] / "recipes"


def _read_recipe(path: Path) -> Recipe:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    header = " ".join(" ".join(lines).removeprefix(f"{path.stem}:").split()).replace("its Figure", "Figure")
    found = {}
    for field, pattern in (("paper_result", _PAPER_RESULT), ("our_runs", _OUR_RUNS)):
        match = pattern.search(header)
        found[field] = None if match is None else match.group(1)
        if match is not None:
            header = " ".join((header[: match.start()] + header[match.end() :]).split())
    return Recipe(path.stem, path, header, **found)


def list_recipes() -> list[Recipe]:
    """The shipped recipes, sorted by name."""
    return [_read_recipe(path) for path in sorted(recipe_folder().glob("*.yaml"))]


def resolve_recipe(name: str) -> Path:
    """The file of the shipped recipe ``name`` (``digits_cnn`` or ``digits_cnn.yaml``).

    Example:
        >>> resolve_recipe("digits_cnn").name
        'digits_cnn.yaml'

    Raises:
        ValueError: no shipped recipe has that name; the message lists the closest and all names.
    """
    names = [recipe.name for recipe in list_recipes()]
    stem = name.removesuffix(".yaml")
    if stem in names:
        return recipe_folder() / f"{stem}.yaml"
    closest = difflib.get_close_matches(stem, names, n=3)
    hint = f" Did you mean {', '.join(closest)}?" if closest else ""
    raise ValueError(
        f"--config {name}: no such file and no shipped recipe of that name.{hint} Shipped recipes:"
        f" {', '.join(names)} (`seis-lightning recipes` describes them)."
    )


def resolve_config(value: str) -> str:
    """A ``--config`` value as LightningCLI should read it: an existing path or anything that is not a bare
    name (a path, inline YAML) unchanged, a bare name as the shipped recipe's path.

    Raises:
        ValueError: a bare name that is neither a file nor a shipped recipe.
    """
    if Path(value).exists() or not _NAME.fullmatch(value):
        return value
    return str(resolve_recipe(value))


def format_recipe_table(recipes: list[Recipe], width: int = 100) -> str:
    """The recipes as a text table: per recipe what it is for (the description's first sentence), the
    paper's result it is built to reproduce, and what our runs found."""
    column = max(len(recipe.name) for recipe in recipes) + 2
    rows = [f"{'recipe':<{column}}what it is for; the paper's result; what our runs found"]
    for recipe in recipes:
        sentence = _SENTENCE.match(recipe.description)
        parts = [
            ("for:   ", sentence.group() if sentence else recipe.description),
            ("paper: ", recipe.paper_result or "(beyond the paper)"),
            *([("ours:  ", recipe.our_runs)] if recipe.our_runs else []),
        ]
        lines = []
        for label, text in parts:
            wrapped = textwrap.wrap(text, width - column - len(label), break_on_hyphens=False) or [""]
            lines += [label + wrapped[0]] + [" " * len(label) + line for line in wrapped[1:]]
        rows.append(f"{recipe.name:<{column}}{lines[0]}")
        rows += [" " * column + line for line in lines[1:]]
    rows.append(
        f"\nRun one with `seis-lightning fit --config NAME` (a path to your own YAML works too);"
        f" the files are in {recipe_folder()}."
    )
    return "\n".join(rows)
