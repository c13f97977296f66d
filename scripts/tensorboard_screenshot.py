"""Screenshot TensorBoard on a log folder with headless Chromium (Debian: `apt-get install chromium`).

    python scripts/tensorboard_screenshot.py logs/digits_cnn docs/figures/tensorboard.png --tab images
    python scripts/tensorboard_screenshot.py logs/browser-check shots/ --tab scalars,custom_scalars,images --check
    python scripts/tensorboard_screenshot.py logs/figures-tensorboard docs/figures/tensorboard.png --manifest

Starts TensorBoard (this environment's) on a free local port, loads the page in headless Chromium, saves a
PNG per tab (several tabs: ``OUTPUT/<tab>.png``), stops both. With ``--check``, asks TensorBoard's HTTP API
(what the page itself reads) whether every layer of every run's ``seis_scores.csv`` has its SEIS series
(score and null), its custom-scalar charts and its figures. Fails loudly (exit status 1, TensorBoard's own
output printed) when TensorBoard does not start, a screenshot is not written, or a check fails. With
``--manifest``, the screenshots' build is recorded in ``MANIFEST.json`` beside them (``scripts/_manifest.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SCORES = ("equivariance", "invariance", "channel_invariance")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fail(message: str, log: Path | None = None) -> None:
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    sys.exit(f"tensorboard_screenshot: {message}" + (f"\n--- TensorBoard's output ---\n{tail}" if tail else ""))


def get(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def expected(logdir: Path) -> dict[str, set[tuple[str, str]]]:
    """``{run: {(transform, layer)}}`` from each run's seis_scores.csv (fit rows), runs named as TensorBoard does."""
    found: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(logdir.rglob("seis_scores.csv")):
        run = path.parent.relative_to(logdir).as_posix() or "."
        with open(path) as file:
            rows = csv.DictReader(file)  # the scores' rows (not the aliasing gaps': their tags are seis/aliasing/...)
            found[run] = {(r["transform"], r["layer"]) for r in rows if r["stage"] == "fit" and r["score"] in SCORES}
    return found


def check(port: int, logdir: Path) -> list[str]:
    """What the page would miss: every layer's score and null series, its charts and the figures."""
    runs = expected(logdir)
    if not runs:
        return [f"no seis_scores.csv under {logdir}: not a SEIS run"]
    scalars = get(port, "/data/plugin/scalars/tags")
    images = get(port, "/data/plugin/images/tags")
    layout = json.dumps(get(port, "/data/plugin/custom_scalars/layout"))
    missing = []
    for run, pairs in runs.items():
        tags, figures = set(scalars.get(run, {})), set(images.get(run, {}))
        for transform, layer in sorted(pairs):
            for score in SCORES:
                for tag in (f"seis/{transform}/{score}/{layer}", f"seis/{transform}/{score}_null/{layer}"):
                    if tag not in tags:
                        missing.append(f"{run}: scalar {tag}")
                if f"{score} {layer} vs null" not in layout:
                    missing.append(f"{run}: custom-scalars chart '{score} {layer} vs null'")
        for transform in sorted({t for t, _ in pairs}):
            for tag in (f"seis/{transform}/depth", *(f"seis/{transform}/heatmap/{s}" for s in SCORES)):
                if tag not in figures:
                    missing.append(f"{run}: figure {tag}")
    return missing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", type=Path)
    parser.add_argument("output", type=Path, help="the PNG, or with several tabs a folder for <tab>.png")
    parser.add_argument("--tab", default="images", help="TensorBoard tab(s), comma-separated: images, scalars, ...")
    parser.add_argument("--tag-filter", default="", help="regex for the tab's tag filter")
    parser.add_argument("--size", default="1400,1000", help="window width,height")
    parser.add_argument("--check", action="store_true", help="check every layer's series and figures are served")
    parser.add_argument("--manifest", action="store_true", help="record the screenshots in MANIFEST.json beside them")
    args = parser.parse_args(argv)
    if args.manifest:
        try:
            from scripts._manifest import Build
        except ModuleNotFoundError:  # run as `python scripts/tensorboard_screenshot.py`
            from _manifest import Build
        build = Build(seeds={"seed_everything": 0})  # the demo recipe's
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        fail("no Chromium found: install it (Debian: apt-get install chromium).")
    if not args.logdir.is_dir():
        fail(f"{args.logdir} is not a folder")
    tabs = args.tab.split(",")
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "tensorboard.log"
        with open(log, "w") as out:
            board = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tensorboard.main",
                    "--logdir",
                    str(args.logdir),
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                    "--samples_per_plugin",
                    "images=100",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            for _ in range(120):
                if board.poll() is not None:
                    fail(f"TensorBoard exited with status {board.returncode} before serving", log)
                try:
                    get(port, "/data/runs")
                    break
                except OSError:
                    time.sleep(0.5)
            else:
                fail("TensorBoard did not answer within 60 s", log)
            if args.check:
                missing = check(port, args.logdir)
                if missing:
                    fail("the page would miss:\n  " + "\n  ".join(missing))
                print(f"check: every layer's SEIS series, charts and figures are served for {args.logdir}")
            for tab in tabs:
                output = args.output / f"{tab}.png" if len(tabs) > 1 else args.output
                output.parent.mkdir(parents=True, exist_ok=True)
                output.unlink(missing_ok=True)
                url = f"http://127.0.0.1:{port}/#{tab}" + (f"&tagFilter={args.tag_filter}" if args.tag_filter else "")
                done = subprocess.run(
                    [
                        browser,
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        f"--user-data-dir={Path(scratch) / 'profile'}",
                        f"--window-size={args.size}",
                        "--virtual-time-budget=20000",
                        f"--screenshot={output.resolve()}",
                        url,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
                if done.returncode != 0 or not output.is_file() or output.stat().st_size == 0:
                    fail(f"Chromium wrote no screenshot of {url} (status {done.returncode}): {done.stderr[-2000:]}")
                print(f"screenshot of {url}: {output}")
                if args.manifest:
                    build.record(output.parent, [output], note=f"TensorBoard of {args.logdir} (its run built it)")
        finally:
            board.terminate()
            board.wait(timeout=30)


if __name__ == "__main__":
    main()
