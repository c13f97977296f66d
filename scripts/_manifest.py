"""The manifest of the committed artefacts: ``docs/figures/MANIFEST.json`` says, per file, how it was built.

Every artefact script starts a :class:`Build` when it starts and calls :meth:`Build.record` with the files it
wrote; the entry of each file gets the command line, the commit it was built from (``HEAD`` at build time, with
the files of ``seis_lightning/`` that differed from it), the file's SHA-256, the seeds, the machine (CPU model,
cores, torch and Python versions, torch threads), the wall and CPU time of its step (since the build's previous
record) and of the whole build so far, and the dates. The
manifest sits in the folder of the files (``<out>/MANIFEST.json``); recording a file replaces its entry and keeps
the others.

A file built partly from the content of an earlier build (the runs CSVs of ``figure3_seeds`` and
``blurpool_aliasing``, which skip the runs they already hold) keeps the commits of that content in
``earlier_commits``: ``tests/test_artefacts.py`` holds every commit an artefact came from against the last
change of the math (:data:`MATH`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "MANIFEST.json"
# The modules whose change can change a number in an artefact: the math (statistics, scores, their front and the
# precision rules), the metric that sums it, what the pass reads (layers, layouts, the forward passes, the probe
# images, their order and the pass plan), the transformations, the pass itself, and the summaries the artefacts
# tabulate (sweeps: half-way angles and aliasing gaps; compare: the verdicts; synthetic: Figure 1).
MATH = tuple(
    f"seis_lightning/{name}.py"
    for name in (
        "_precision",
        "statistics",
        "scores",
        "functional",
        "metric",
        "layers",
        "layouts",
        "forward",
        "probe",
        "pass_plan",
        "transforms",
        "scoring",
        "pass_checks",
        "layer_scores",
        "standalone",
        "sweeps",
        "compare",
        "synthetic",
    )
)
UNKNOWN = "unknown"  # the commit of content whose build was not recorded


def git(*args: str, root: Path = ROOT) -> str | None:
    """The output of ``git <args>`` in ``root`` (stripped), or ``None`` where git or the repository is missing."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit(root: Path = ROOT) -> dict:
    """``HEAD`` and the files of ``seis_lightning/`` that differ from it (staged, unstaged or untracked)."""
    status = git("status", "--porcelain", "--", "seis_lightning", root=root)
    dirty = sorted(line[3:].split(" -> ")[-1] for line in (status or "").splitlines() if line.strip())
    return {"commit": git("rev-parse", "HEAD", root=root) or UNKNOWN, "dirty": dirty}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def command(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command line that ran this process, as typed from the repository root: ``python -m <module> ...`` for
    a module run (``module``; for this process's own ``argv``, the one ``python -m`` ran), else ``python <path> ...``
    with the script's path relative to the root."""
    if argv is None:  # this process: a module run shows in __main__'s spec
        argv = list(sys.argv)
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if module is None and spec is not None:
            module = spec.name.removesuffix(".__main__")
    if module:
        head = ["python", "-m", module]
    else:
        script = Path(argv[0]).resolve()
        head = ["python", script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else argv[0]]
    return shlex.join([*head, *argv[1:]])


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path`` (created if missing) so that builds running side by side (``make -j2``)
    do not drop each other's entries; no lock where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read(folder: Path) -> dict:
    """The manifest of ``folder`` (``{"artefacts": {}}`` when there is none)."""
    path = Path(folder) / MANIFEST
    if not path.exists() or path.stat().st_size == 0:
        return {"artefacts": {}}
    return json.loads(path.read_text())


class Build:
    """One build of some artefacts: started when made, its entries written by :meth:`record`."""

    def __init__(self, seeds: Iterable[int] | dict | None = None, argv: Sequence[str] | None = None) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.step = (self.wall, self.cpu)  # the end of the last record: each entry times its own step
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.seeds = seeds if isinstance(seeds, dict) or seeds is None else list(seeds)
        self.command = command(argv)
        self.source = commit()

    def record(
        self,
        folder: Path,
        files: Iterable[Path | str],
        *,
        seeds: Iterable[int] | dict | None = None,
        reused: Iterable[Path | str] = (),
        note: str | None = None,
        measured: dict | None = None,
    ) -> dict:
        """Write the entries of ``files`` (paths in ``folder``) into ``folder/MANIFEST.json`` and return it.

        ``reused``: files among ``files`` that keep content of an earlier build; their entries carry the commits
        of that content (``earlier_commits``, from their previous entries, ``"unknown"`` where none).
        ``measured``: numbers the build measured beside its files (a validation accuracy), kept in each entry.
        """
        folder, names = Path(folder), [Path(file).name for file in files]
        for name in names:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"manifest: {folder / name} was not written by this build; nothing recorded.")
        with _locked(folder / MANIFEST):
            return self._record(folder, names, seeds, reused, note, measured)

    def _record(self, folder: Path, names: list[str], seeds, reused, note, measured) -> dict:
        manifest = read(folder)
        entries = manifest.setdefault("artefacts", {})
        now = datetime.datetime.now(datetime.timezone.utc)
        wall, cpu = time.perf_counter(), time.process_time()
        common = {
            "command": self.command,
            **self.source,
            "seeds": self.seeds if seeds is None else (seeds if isinstance(seeds, dict) else list(seeds)),
            "machine": machine(),
            "wall_s": round(wall - self.step[0], 1),  # since the previous record of this build (or its start)
            "cpu_s": round(cpu - self.step[1], 1),  # of the whole process, every thread
            "build_wall_s": round(wall - self.wall, 1),  # since the build started
            "build_cpu_s": round(cpu - self.cpu, 1),
            "started": self.started.isoformat(timespec="seconds"),
            "finished": now.isoformat(timespec="seconds"),
        }
        reused_names = {Path(name).name for name in reused}
        for name in names:
            entry = {**common, "sha256": sha256(folder / name)}
            if name in reused_names:
                previous = entries.get(name)
                earlier = [UNKNOWN] if previous is None else [previous["commit"], *previous.get("earlier_commits", [])]
                entry["earlier_commits"] = sorted(set(earlier) - {self.source["commit"]})
            if note:
                entry["note"] = note
            if measured:
                entry["measured"] = dict(measured)
            entries[name] = entry
        manifest["artefacts"] = dict(sorted(entries.items()))
        manifest["math_modules"] = list(MATH)
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        self.step = (wall, cpu)
        return manifest


def history_available(root: Path = ROOT) -> str | None:
    """``None`` where git and the repository's whole history are at hand, else why not (no git, no repository,
    a shallow clone)."""
    shallow = git("rev-parse", "--is-shallow-repository", root=root)
    if shallow is None:
        return f"no git repository at {root} (or no git)"
    if shallow == "true":
        return "a shallow clone: the commits the artefacts were built from may be missing (git fetch --unshallow)"
    return None


def stale(folder: Path, root: Path = ROOT, math: Sequence[str] = MATH) -> list[str]:
    """What makes the artefacts of ``folder`` not what their manifest says, or older than the math: files without
    an entry (or entries without a file), content that differs from the recorded SHA-256, math files that differed
    from the build's commit, and commits an artefact came from that are not in ``HEAD``'s history or that a later
    commit touching :data:`MATH` follows. Needs the repository's history (:func:`history_available`)."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        return [f"no {MANIFEST} in {folder}: rebuild the artefacts with `make figures`"]
    entries = read(folder)["artefacts"]
    files = {path.name for path in folder.iterdir() if path.is_file() and path.name != MANIFEST}
    problems = [f"{name}: no entry in {MANIFEST} (no recorded build)" for name in sorted(files - set(entries))]
    problems += [f"{name}: in {MANIFEST} but not in {folder}" for name in sorted(set(entries) - files)]
    later: dict[str, str | None] = {}
    for name in sorted(files & set(entries)):
        entry = entries[name]
        if entry.get("sha256") != sha256(folder / name):
            problems.append(f"{name}: its content is not what `{entry.get('command')}` wrote (SHA-256 differs)")
        dirty = sorted(set(entry.get("dirty", [])) & set(math))
        if dirty:
            problems.append(f"{name}: built with uncommitted changes to {', '.join(dirty)}")
        for commit_ in [entry.get("commit", UNKNOWN), *entry.get("earlier_commits", [])]:
            if commit_ not in later:
                later[commit_] = _math_after(commit_, root, math)
            if later[commit_]:
                problems.append(f"{name}: built from {commit_[:12]}, {later[commit_]}")
    return problems


def _math_after(commit_: str, root: Path, math: Sequence[str]) -> str | None:
    """Why artefacts built from ``commit_`` are older than the math of ``HEAD``, or ``None`` when they are not."""
    if commit_ == UNKNOWN:
        return "a commit that was not recorded (content kept from an unrecorded build)"
    if git("cat-file", "-e", f"{commit_}^{{commit}}", root=root) is None:
        return "a commit that is not in this repository"
    if git("merge-base", "--is-ancestor", commit_, "HEAD", root=root) is None:
        return "a commit that is not in HEAD's history"
    changed = git("log", "--format=%h %s", f"{commit_}..HEAD", "--", *math, root=root)
    if changed:
        lines = changed.splitlines()
        return f"before {len(lines)} commit(s) that changed the math: " + "; ".join(line[:80] for line in lines[:3])
    return None
