"""The probe pass against the training it watches, at ImageNet size (issue 28): CPU time and peak memory.

Each measurement runs in its own process, one torch thread, on the same seeded images:

- ``train``: one training epoch over the probe images (forward + backward + SGD, batches of 16);
- ``forward``: the probe pass's forward passes alone (the images and each draw of the transformations,
  in eval mode, no gradients): the floor of any probe pass;
- ``probe``: one probe pass, ``score_model`` at the callback's defaults (default layers, the paper's
  random affine as 4 draws, chunks of ``BATCH_SIZE`` = 16 images).

It prints CPU seconds and peak resident memory (MiB) of each, and the ratios probe / train for both
(targets, issue 28: CPU time <= 2.5x, peak memory <= 1.3x, for ResNet-18 at 224 px and 64 images).

    .venv/bin/python bench/bench_probe_cost.py                       # ResNet-18, 64 images of 224 px (~3 min)
    .venv/bin/python bench/bench_probe_cost.py --images 512          # the same with 512 images
    .venv/bin/python bench/bench_probe_cost.py --model mobilenet_v2 --images 160 --weights IMAGENET1K_V1
        # MobileNetV2 with its real weights (read from $TORCH_HOME/hub/checkpoints; see
        # scripts/reference_networks.py for where the file comes from offline)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _probe_setup import IMAGES_AND_MODEL

from seis_lightning.scoring import BATCH_SIZE

CHILD = (
    r"""
import json, resource, sys, time, warnings
import torch, torchvision
from torch import nn
torch.set_num_threads(1); warnings.filterwarnings("ignore")
mode, name, images, size, weights = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
batch = int(sys.argv[6])
"""
    + IMAGES_AND_MODEL
    + r"""
y = torch.randint(0, 10, (images,), generator=torch.Generator().manual_seed(1))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
c0, w0 = time.process_time(), time.perf_counter()
if mode == "train":
    opt = torch.optim.SGD(model.parameters(), lr=0.01); model.train()
    for i in range(0, images, 16):
        opt.zero_grad(); nn.functional.cross_entropy(model(x[i:i + 16])[:, :10], y[i:i + 16]).backward(); opt.step()
elif mode == "forward":
    from seis_lightning.scoring import SEISProbe
    probe = SEISProbe()
    model.eval()
    with torch.no_grad():
        for chunk in x.split(batch):
            model(chunk)
            for _, g in probe.draws:
                model(g(chunk))
else:
    from seis_lightning import score_model
    score_model(model, x, batch_size=batch)
print(json.dumps({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "before_mib": before}))
"""
)


def measure(mode: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-c", CHILD, mode, args.model, str(args.images), str(args.size), args.weights]
    command.append(str(args.batch_size))
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="a torchvision.models constructor")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--weights", default="none", help="torchvision weights name, or none (untrained)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=BATCH_SIZE,
        help=f"the probe's batch_size (default {BATCH_SIZE}, the library's)",
    )
    parser.add_argument("--only", choices=("train", "forward", "probe"), help="measure one of the three only")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args)))
        return
    results = {mode: measure(mode, args) for mode in ("train", "forward", "probe")}
    print(
        f"{args.model}, {args.images} images of {args.size} px, weights {args.weights},"
        f" probe batch_size {args.batch_size}, 1 thread"
    )
    print(f"{'':10}{'CPU s':>9}{'wall s':>9}{'peak MiB':>10}")
    for mode, r in results.items():
        print(f"{mode:10}{r['cpu_s']:9.1f}{r['wall_s']:9.1f}{r['peak_mib']:10.0f}")
    train, forward, probe = results["train"], results["forward"], results["probe"]
    print(
        f"probe / train: CPU time {probe['cpu_s'] / train['cpu_s']:.2f}x (target <= 2.5x), peak memory"
        f" {probe['peak_mib'] / train['peak_mib']:.2f}x (target <= 1.3x); forward passes alone"
        f" {forward['cpu_s'] / train['cpu_s']:.2f}x"
    )
    print(json.dumps({"args": vars(args), **results}))


if __name__ == "__main__":
    main()
