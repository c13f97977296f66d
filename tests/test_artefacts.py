"""The committed artefacts hold: every file in ``docs/figures/`` has a manifest entry (``scripts/_manifest.py``) built
after the last commit that changed the math, and the README's tables and numbers are read from them
(``scripts/readme_tables.py``). The helpers are tested on small synthetic folders, CSVs and git repositories."""

from __future__ import annotations

import csv
import json
import multiprocessing
import shutil
import subprocess
from pathlib import Path

import pytest

from scripts import _manifest as manifest
from scripts import readme_tables
from scripts.readme_tables import Held, check, number, render

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
README = (ROOT / "README.md").read_text(encoding="utf-8")
HAS_GIT = shutil.which("git") is not None
needs_git = pytest.mark.skipif(not HAS_GIT, reason="git is not installed")


# ---- the manifest helper ---------------------------------------------------------------------------------------


def test_a_build_records_each_file_with_its_command_commit_seeds_machine_and_times(tmp_path):
    build = manifest.Build(seeds=[0, 1, 2], argv=[str(ROOT / "scripts" / "figure3_seeds.py"), "--fresh"])
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    written = build.record(tmp_path, ["a.csv", tmp_path / "a.png"])
    on_disk = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert on_disk == written
    assert set(on_disk["artefacts"]) == {"a.csv", "a.png"}
    entry = on_disk["artefacts"]["a.csv"]
    assert entry["seeds"] == [0, 1, 2]
    assert entry["sha256"] == manifest.sha256(tmp_path / "a.csv") != on_disk["artefacts"]["a.png"]["sha256"]
    assert entry["commit"] == (manifest.git("rev-parse", "HEAD") or manifest.UNKNOWN)
    assert all(path.startswith("seis_lightning/") for path in entry["dirty"])
    assert entry["machine"]["cores"] >= 1 and entry["machine"]["torch"] and entry["machine"]["cpu"]
    assert 0 <= entry["wall_s"] <= entry["build_wall_s"] and 0 <= entry["cpu_s"] <= entry["build_cpu_s"]
    assert entry["started"] <= entry["finished"]
    assert entry["command"] == "python scripts/figure3_seeds.py --fresh" and "earlier_commits" not in entry
    assert on_disk["math_modules"] == list(manifest.MATH)


def test_recording_one_file_keeps_the_others_entries(tmp_path):
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text(name)
    build = manifest.Build(seeds=[0])
    build.record(tmp_path, ["a.csv"])
    sum(i * i for i in range(300_000))  # some CPU time for the second step
    build.record(tmp_path, ["b.csv"])
    first = manifest.read(tmp_path)["artefacts"]
    assert first["b.csv"]["build_cpu_s"] >= first["a.csv"]["build_cpu_s"]  # each step timed, the build in total
    assert first["b.csv"]["build_wall_s"] == pytest.approx(
        first["a.csv"]["build_wall_s"] + first["b.csv"]["wall_s"], abs=0.2
    )
    (tmp_path / "b.csv").write_text("b again")
    manifest.Build(seeds={"seed_everything": 7}).record(tmp_path, ["b.csv"], note="again")
    second = manifest.read(tmp_path)["artefacts"]
    assert second["a.csv"] == first["a.csv"]
    assert second["b.csv"]["seeds"] == {"seed_everything": 7} and second["b.csv"]["note"] == "again"
    assert second["b.csv"]["sha256"] == manifest.sha256(tmp_path / "b.csv") != first["b.csv"]["sha256"]


def test_a_file_that_keeps_earlier_content_keeps_the_commits_of_that_content(tmp_path):
    (tmp_path / "runs.csv").write_text("run 1\n")
    manifest.Build().record(tmp_path, ["runs.csv"], reused=["runs.csv"])  # no entry before: an unrecorded build
    assert manifest.read(tmp_path)["artefacts"]["runs.csv"]["earlier_commits"] == [manifest.UNKNOWN]
    entries = manifest.read(tmp_path)
    entries["artefacts"]["runs.csv"] |= {"commit": "c0ffee", "earlier_commits": ["beef"]}
    (tmp_path / "MANIFEST.json").write_text(json.dumps(entries))
    manifest.Build().record(tmp_path, ["runs.csv"], reused=["runs.csv"])
    assert manifest.read(tmp_path)["artefacts"]["runs.csv"]["earlier_commits"] == ["beef", "c0ffee"]


def test_recording_a_file_that_was_not_written_fails_and_records_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.csv was not written by this build"):
        manifest.Build().record(tmp_path, ["missing.csv"])
    assert not (tmp_path / "MANIFEST.json").exists()


def _record_each(folder: Path, names: list[str]) -> None:
    build = manifest.Build()
    for name in names:
        build.record(folder, [name])


def test_builds_side_by_side_keep_each_others_entries(tmp_path):
    names = [f"{side}{k}.csv" for side in "ab" for k in range(40)]
    for name in names:
        (tmp_path / name).write_text(name)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_record_each, args=(tmp_path, names[k::2])) for k in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert sorted(manifest.read(tmp_path)["artefacts"]) == sorted(names)


def test_the_command_is_the_one_typed_from_the_root():
    script = str(ROOT / "scripts" / "reference_networks.py")
    assert manifest.command([script, "--foolbox", "a b.whl"], module="") == (
        "python scripts/reference_networks.py --foolbox 'a b.whl'"
    )
    assert manifest.command([script, "--fresh"], module="scripts.blurpool_aliasing") == (
        "python -m scripts.blurpool_aliasing --fresh"
    )


# ---- staleness against the math, on a small git repository ------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A repository with a math module, a plotting module and a folder of artefacts built at its first commit."""
    (tmp_path / "seis_lightning").mkdir()
    (tmp_path / "seis_lightning" / "scores.py").write_text("SCORE = 1\n")
    (tmp_path / "seis_lightning" / "plotting.py").write_text("COLOUR = 'red'\n")
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "a.csv").write_text("score\n1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "first")
    built = _git(tmp_path, "rev-parse", "HEAD")
    entry = {"commit": built, "dirty": [], "sha256": manifest.sha256(figures / "a.csv"), "command": "python x.py"}
    (figures / "MANIFEST.json").write_text(json.dumps({"artefacts": {"a.csv": entry}}))
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "the artefacts")
    return tmp_path


def _commit(repo: Path, path: str, text: str, message: str) -> None:
    (repo / path).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", message)


@needs_git
def test_artefacts_built_before_a_change_of_the_math_are_stale(repo):
    assert manifest.history_available(repo) is None
    assert manifest.stale(repo / "figures", repo) == []
    _commit(repo, "seis_lightning/plotting.py", "COLOUR = 'blue'\n", "plotting only")
    assert manifest.stale(repo / "figures", repo) == []  # not a math module
    _commit(repo, "seis_lightning/scores.py", "SCORE = 2\n", "the scores change")
    (problem,) = manifest.stale(repo / "figures", repo)
    assert problem.startswith("a.csv: built from ") and "before 1 commit(s) that changed the math" in problem
    assert "the scores change" in problem


@needs_git
def test_artefacts_that_differ_from_their_manifest_are_named(repo):
    figures = repo / "figures"
    (figures / "a.csv").write_text("score\n2\n")
    (figures / "b.png").write_bytes(b"png")
    entries = json.loads((figures / "MANIFEST.json").read_text())
    entries["artefacts"]["gone.csv"] = dict(entries["artefacts"]["a.csv"])
    entries["artefacts"]["a.csv"]["dirty"] = ["seis_lightning/scores.py", "seis_lightning/plotting.py"]
    entries["artefacts"]["a.csv"]["earlier_commits"] = [manifest.UNKNOWN, "0" * 40]
    (figures / "MANIFEST.json").write_text(json.dumps(entries))
    assert manifest.stale(figures, repo) == [
        "b.png: no entry in MANIFEST.json (no recorded build)",
        f"gone.csv: in MANIFEST.json but not in {figures}",
        "a.csv: its content is not what `python x.py` wrote (SHA-256 differs)",
        "a.csv: built with uncommitted changes to seis_lightning/scores.py",
        "a.csv: built from unknown, a commit that was not recorded (content kept from an unrecorded build)",
        f"a.csv: built from {'0' * 12}, a commit that is not in this repository",
    ]
    (figures / "MANIFEST.json").unlink()
    assert manifest.stale(figures, repo) == [
        f"no MANIFEST.json in {figures}: rebuild the artefacts with `make figures`"
    ]


@needs_git
def test_a_build_commit_off_the_history_of_head_is_stale(repo):
    _git(repo, "checkout", "-qb", "side")
    _commit(repo, "seis_lightning/plotting.py", "COLOUR = 'green'\n", "on a side branch")
    side = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-")
    entries = json.loads((repo / "figures" / "MANIFEST.json").read_text())
    entries["artefacts"]["a.csv"]["commit"] = side
    (repo / "figures" / "MANIFEST.json").write_text(json.dumps(entries))
    assert manifest.stale(repo / "figures", repo) == [
        f"a.csv: built from {side[:12]}, a commit that is not in HEAD's history"
    ]


@needs_git
def test_a_shallow_clone_or_no_repository_says_why_history_is_missing(repo, tmp_path_factory):
    clone = tmp_path_factory.mktemp("clone") / "shallow"
    _git(repo.parent, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    assert "shallow clone" in manifest.history_available(clone)
    assert "no git repository" in manifest.history_available(tmp_path_factory.mktemp("bare"))


# ---- the README's tables and numbers, on synthetic CSVs ----------------------------------------------------------


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_numbers_are_rounded_with_a_minus_sign_and_an_optional_plus():
    assert number(-0.004867) == "\u22120.005" and number(0.012463, sign=True) == "+0.012"
    assert number(41.6, 0) == "42" and number(0.706545, 2) == "0.71"


def test_the_fig3_table_renders_each_layer_from_the_csv(tmp_path):
    base = {"dataset": "mnist", "transform": "random_affine", "score": "invariance", "verdict": "raised"}
    cells = {"plain_mean": 0.5, "plain_sd": 0.0104, "plain_se": 0.002, "augment_mean": 0.61, "augment_sd": 0.02}
    cells |= {"augment_se": 0.0031, "delta": -0.11, "seed_se": 0.0123, "jackknife_se": 0.0037}
    rows = [base | cells | {"layer": "conv1"}, base | cells | {"layer": "fc", "score": "equivariance"}]
    _write(tmp_path / "fig3_seeds.csv", rows)
    table = readme_tables.fig3_seeds_mnist(tmp_path)
    assert table.splitlines()[2:] == [
        "| conv1 | 0.500 ± 0.010 (0.002) | 0.610 ± 0.020 (0.003) | \u22120.110 | 0.012 | 0.004 | raised |"
    ]


def test_the_position_cap_table_marks_readings_beyond_2_se_and_0_02_and_maps_that_fit(tmp_path):
    key = {"network": "digits_cnn", "layer": "conv1.0", "transform": "hflip", "score": "invariance"}
    rows = [key | {"method": "full", "cap": 784, "positions": 784, "value": 0.5, "se": 0.015}]
    rows += [key | {"method": "adaptive", "cap": 576, "positions": 576, "value": 0.531, "se": ""}]  # 0.031 > 0.03
    rows += [key | {"method": "random", "cap": 576, "positions": 576, "value": 0.475, "se": ""}]  # 0.025: within
    rows += [key | {"method": m, "cap": 256, "positions": 256, "value": 0.49, "se": ""} for m in ("adaptive", "random")]
    _write(tmp_path / "position_cap_study.csv", rows)
    (line,) = readme_tables.position_cap(tmp_path).splitlines()[2:]
    assert (
        line
        == "| digits_cnn conv1.0 (784) | hflip | invariance | 0.500 ± 0.015 | = | = | 0.531 ✗ | 0.475 | 0.490 | 0.490 |"
    )


def test_the_blurpool_table_renders_the_gaps_their_difference_and_verdict():
    lines = readme_tables.blurpool_aliasing(FIGURES).splitlines()
    assert lines[3] == (
        "| conv1 (2) | 0.062 ± 0.011 (0.002) | 0.001 ± 0.000 (0.001) | \u22120.061 | 0.046 | lowered |"
    )  # docs/figures/blurpool_aliasing.csv's conv1 row: gaps, seed SEs, mean run SEs, delta, bar, verdict
    assert lines[2].startswith("| conv1.1 (1), ReLU before any pooling | 0.002 ± 0.001 (0.001) |")


def test_the_check_names_tables_and_numbers_that_differ_and_write_renders_the_tables(tmp_path):
    _write(tmp_path / "t.csv", [{"layer": "conv1", "value": "0.5049"}, {"layer": "conv2", "value": "0.25"}])

    def table(figures: Path) -> str:
        rows = readme_tables.read_csv(figures, "t.csv")
        return "".join(f"| {r['layer']} | {number(r['value'])} |\n" for r in rows)

    tables = {"t": table}
    held = [Held("conv1 reads {} here", "t.csv", {"layer": "conv1"}, "value", 2)]
    block = "<!-- figures:t -->\n| conv1 | 0.505 |\n| conv2 | 0.250 |\n<!-- /figures:t -->\n"
    text = f"A\n{block}conv1 reads 0.50 here\n"
    assert check(text, tmp_path, tables, held) == []
    stale_text = text.replace("0.505 |", "0.600 |").replace("reads 0.50", "reads 0.51")
    problems = check(stale_text, tmp_path, tables, held)
    assert len(problems) == 2
    assert problems[0].startswith("table t differs from its CSV") and "README: | conv1 | 0.600 |" in problems[0]
    assert "CSV:    | conv1 | 0.505 |" in problems[0] and "conv2" not in problems[0]  # the lines that differ
    assert problems[1] == (
        "'conv1 reads {} here': the README does not say 'conv1 reads 0.50 here', which t.csv {'layer': 'conv1'} value"
        " gives"
    )
    assert render(stale_text, tmp_path, tables) == text.replace("reads 0.50", "reads 0.51")  # tables only
    assert check("no markers", tmp_path, tables, []) == ["table t: no <!-- figures:t --> ... <!-- /figures:t --> block"]
    assert "2 rows" in check("x", tmp_path, {}, [Held("{}", "t.csv", {}, "value")])[0]  # picks exactly one row


def test_write_rewrites_the_readme_tables_and_check_exits_1_on_a_difference(tmp_path, capsys):
    figures = tmp_path / "figures"
    shutil.copytree(FIGURES, figures, ignore=shutil.ignore_patterns("*.png"))
    readme = tmp_path / "README.md"
    assert README.count("| fc | 0.934 ± ") == 1  # the MNIST seeds table's fc row
    readme.write_text(README.replace("| fc | 0.934 ± ", "| fc | 0.999 ± "))
    assert readme_tables.main(["--check", "--readme", str(readme), "--figures", str(figures)]) == 1
    assert "table fig3_seeds_mnist differs from its CSV" in capsys.readouterr().err
    readme_tables.main(["--write", "--readme", str(readme), "--figures", str(figures)])
    assert readme.read_text() == render(README, figures)
    assert "| fc | 0.934 ± " in readme.read_text()


def test_once_the_worked_example_is_an_artefact_the_readme_must_hold_its_table_and_differences(tmp_path):
    figures = tmp_path / "figures"
    shutil.copytree(FIGURES, figures, ignore=shutil.ignore_patterns("*.png"))
    assert (figures / "difference_example.csv").exists()  # built by make figures-fast
    assert check(README, figures) == []
    unwrapped = README.replace("<!-- figures:difference_example -->\n", "").replace(
        "<!-- /figures:difference_example -->\n", ""
    )
    problems = check(unwrapped, figures)
    assert "table difference_example: no <!-- figures:difference_example -->" in problems[0]
    moved = README.replace("epoch 12 − epoch 11 = 0.002", "epoch 12 − epoch 11 = 0.003")
    (problem,) = check(moved, figures)
    assert "the README does not say 'epoch 12 − epoch 11 = 0.002 against'" in problem


def test_numbers_a_build_measured_are_held_once_its_manifest_entry_exists(tmp_path):
    figures = tmp_path / "figures"
    shutil.copytree(FIGURES, figures, ignore=shutil.ignore_patterns("*.png", "MANIFEST.json"))
    measured = {  # what the README states, as the builds would record it
        "sweep_digits_rotate.csv": {"val_acc": 0.8914},
        "ref_mobilenet.csv": {"pretrained_top1": 0.9},
        "position_cap_study.csv": {"digits_cnn_heldout_accuracy": 0.8398},
        "fig4_tasks_decoders.csv": {"segmentation (U-Net): val_miou": 0.9912, "segmentation (FCN): val_miou": 0.6011},
    }
    for name, values in measured.items():
        manifest.Build().record(figures, [name], measured=values)
    assert [p for p in check(README, figures) if not p.startswith(tuple(STATED_OTHERWISE))] == []
    entries = json.loads((figures / "MANIFEST.json").read_text())
    entries["artefacts"]["fig4_tasks_decoders.csv"]["measured"]["segmentation (FCN): val_miou"] = 0.7
    del entries["artefacts"]["ref_mobilenet.csv"]["measured"]
    (figures / "MANIFEST.json").write_text(json.dumps(entries))
    problems = [p for p in check(README, figures) if not p.startswith(tuple(STATED_OTHERWISE))]
    assert problems == [
        "'top-1 {} on the 20 labelled': MANIFEST.json: the entry of ref_mobilenet.csv has no measured"
        " 'pretrained_top1'",
        "'vs {}). Tested on this': the README does not say 'vs 0.70). Tested on this', which MANIFEST.json"
        " fig4_tasks_decoders.csv measured 'segmentation (FCN): val_miou' gives",
    ]


# ---- the committed README and artefacts --------------------------------------------------------------------------

# Numbers the README states otherwise than its CSV, left to the lead (notes/manifest.md); empty once corrected.
STATED_OTHERWISE: list[str] = []


def test_every_table_and_number_of_the_readme_is_read_from_its_csv():
    problems = check(README, FIGURES)
    assert [p for p in problems if not any(p.startswith(known) for known in STATED_OTHERWISE)] == []


def test_the_readme_states_no_number_otherwise_than_its_csv():
    assert check(README, FIGURES) == []


@pytest.mark.parametrize("held", readme_tables.HELD, ids=lambda held: held.phrase[:40])
def test_each_held_number_would_fail_the_check_one_unit_off(held):
    """The phrase pins its number: the same phrase with the CSV's number one unit of its last digit away is not in
    the README (so a changed CSV fails the check)."""
    if any(known == repr(held.phrase) for known in STATED_OTHERWISE):
        pytest.skip("the README states this number otherwise (STATED_OTHERWISE)")
    value = held.value(FIGURES)
    for step in (-1, 1):
        assert held.expected(FIGURES, value + step * 10**-held.digits) not in README


# Artefacts the last rebuild did not reach (they would keep an earlier build): none. A rebuild stopped part way
# names its files here, so that their staleness cases are strict xfails until `make figures-full` reaches them.
NOT_REBUILT: set[str] = set()
ARTEFACTS = sorted(path.name for path in FIGURES.iterdir() if path.is_file() and path.name != manifest.MANIFEST)


def test_the_manifest_exists_and_names_only_artefacts_that_exist():
    why = manifest.history_available(ROOT)
    if why is not None:
        pytest.skip(f"needs the repository's history: {why}")
    problems = manifest.stale(FIGURES, ROOT)
    assert not any(p.startswith(f"no {manifest.MANIFEST}") or "but not in" in p for p in problems)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="not rebuilt in the last session: NOT_REBUILT"))
        if name in NOT_REBUILT
        else name
        for name in ARTEFACTS
    ],
)
def test_every_artefact_was_built_after_the_last_change_of_the_math(name):
    why = manifest.history_available(ROOT)
    if why is not None:
        pytest.skip(f"needs the repository's history: {why}")
    assert [p for p in manifest.stale(FIGURES, ROOT) if p.startswith(f"{name}:")] == []
