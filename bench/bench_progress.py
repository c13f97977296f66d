"""What the progress bar of ``score_model`` costs: the same probe pass with ``progress=False`` and ``True``.

ResNet-18 (untrained), 32 images of 32 px, layers ``layer1``-``layer3`` and ``fc``, ``rotate:30`` and ``hflip``,
batches of 8, one torch thread; the two settings alternate, ``--repeats`` times each, and the script prints the
CPU seconds (``time.process_time()``) of each run and the ratio of the medians, with / without (target: 1, within
the noise). The bar itself goes to stderr; run with ``2>/dev/null`` to see the numbers alone on stdout.

    .venv/bin/python bench/bench_progress.py 2>/dev/null
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torchvision.models import resnet18

from seis_lightning import score_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = resnet18()
    images = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    options = dict(layers=["layer1", "layer2", "layer3", "fc"], transforms=["rotate:30", "hflip"], batch_size=8)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for progress in (False, True):
            started = time.process_time()
            score_model(model, images, progress=progress, **options)
            seconds[progress].append(time.process_time() - started)
    for progress, values in seconds.items():
        print(f"progress={progress}: CPU s {[round(v, 3) for v in values]}")
    ratio = statistics.median(seconds[True]) / statistics.median(seconds[False])
    print(f"ratio of medians (with / without the bar): {ratio:.2f}")


if __name__ == "__main__":
    main()
