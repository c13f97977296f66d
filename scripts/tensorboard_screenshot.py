"""Screenshot TensorBoard on a log folder with headless Chromium (Debian: `apt-get install chromium`).

    python scripts/tensorboard_screenshot.py logs/digits_cnn docs/figures/tensorboard.png --tab images

Starts TensorBoard on a free local port, loads the page in headless Chromium, saves a PNG, stops both.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--tab", default="images", help="TensorBoard tab: images, scalars, custom_scalars, timeseries")
    parser.add_argument("--tag-filter", default="", help="regex for the tab's tag filter")
    parser.add_argument("--size", default="1400,1000", help="window width,height")
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("No Chromium found: install it (Debian: apt-get install chromium).")
    port = free_port()
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/#{args.tab}" + (f"&tagFilter={args.tag_filter}" if args.tag_filter else "")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
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
                    f"--user-data-dir={profile}",
                    f"--window-size={args.size}",
                    "--virtual-time-budget=20000",
                    f"--screenshot={args.output.resolve()}",
                    url,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
            )
        print(f"screenshot of {url}: {args.output}")
    finally:
        board.terminate()
        board.wait(timeout=30)


if __name__ == "__main__":
    main()
