"""Where the probe pass's peak memory goes (issue 28), for ResNet-18 at 224 px: the metric's sums, and what the
allocator keeps.

Three measurements, each in its own process on one torch thread, on the images of ``bench_probe_cost.py``:

- ``probe``: one probe pass at the callback's defaults (``score_model(model, images)``), its peak resident
  memory and the resident memory before it (the model, the images, torch itself);
- ``probe`` again under glibc's ``MALLOC_MMAP_THRESHOLD_=131072``: blocks above 128 KiB are mapped and
  unmapped one by one instead of being kept in the heap once freed; the difference of the two peaks is memory
  the allocator keeps, not memory the pass holds (an environment setting of the process, for reading the
  figure: the library does not set it);
- ``state``: the bytes of the metrics' sums (every ``SEISMetric`` state tensor after the pass's updates), per
  layer, from each scored layer's reduced map size ``[C, S]`` and the pass's images and draws.

    .venv/bin/python bench/bench_probe_memory.py                 # about 3 minutes
    .venv/bin/python bench/bench_probe_memory.py --images 512
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _probe_setup import IMAGES_AND_MODEL

CHILD = (
    r"""
import json, math, resource, sys, warnings
import torch, torchvision
torch.set_num_threads(1); warnings.filterwarnings("ignore")
mode, images, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
name, weights = "resnet18", "none"
"""
    + IMAGES_AND_MODEL
    + r"""
model.eval()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from seis_lightning import score_model
if mode == "probe":
    scores = score_model(model, x)
    layers = list(next(iter(scores.values())))
    print(json.dumps({"before_mib": before, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "layers": layers}))
else:
    from seis_lightning import SEISMetric
    from seis_lightning.pass_plan import pass_plan
    from seis_lightning.scoring import SEISProbe
    layers, probe = json.loads(sys.argv[4]), SEISProbe()
    shapes = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda module, args, out, name=name: shapes.__setitem__(name, tuple(out.shape))) for name in layers]
    with torch.no_grad():
        model(x[:2])
    for hook in hooks:
        hook.remove()
    out = {}
    for name, shape in shapes.items():
        c, s = shape[1], min(math.prod(shape[2:]), probe.options.max_positions)
        metric = SEISMetric(num_transforms=len(probe.draws), options=probe.options)
        generator = torch.Generator().manual_seed(1)
        for chunk in pass_plan(images, probe.batch_size):  # the probe pass's chunks
            n = chunk.stop - chunk.start
            a = torch.randn(n, c, s, generator=generator)
            for draw in range(len(probe.draws)):
                metric.update(a, torch.randn(n, c, s, generator=generator), offset=chunk.start, draw=draw)
        state_mib = sum(t.nbytes for t in metric.metric_state.values()) / 2**20  # every state: sums and shifts
        out[name] = {"channels": c, "positions": s, "state_mib": state_mib}
    print(json.dumps(out))
"""
)


def child(mode: str, args: argparse.Namespace, env: dict | None = None, *extra: str) -> dict:
    command = [sys.executable, "-c", CHILD, mode, str(args.images), str(args.size), *extra]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    plain = child("probe", args)
    mapped = child("probe", args, {"MALLOC_MMAP_THRESHOLD_": "131072"})
    state = child("state", args, None, json.dumps(plain["layers"]))
    print(f"ResNet-18 (untrained), {args.images} images of {args.size} px, score_model at the defaults, 1 thread")
    print(f"{'layer':10}{'C':>6}{'S':>6}{'sums MiB':>10}")
    for name, row in state.items():
        print(f"{name:10}{row['channels']:6d}{row['positions']:6d}{row['state_mib']:10.1f}")
    sums = sum(row["state_mib"] for row in state.values())
    added, added_mapped = plain["peak_mib"] - plain["before_mib"], mapped["peak_mib"] - mapped["before_mib"]
    print(f"metric sums, all layers: {sums:.0f} MiB")
    print(f"peak {plain['peak_mib']:.0f} MiB ({plain['before_mib']:.0f} before the pass: +{added:.0f});")
    print(
        f"with MALLOC_MMAP_THRESHOLD_=131072 peak {mapped['peak_mib']:.0f} MiB (+{added_mapped:.0f}): the allocator"
        f" keeps {added - added_mapped:.0f} MiB; sums {sums / added:.0%} of what the pass adds"
    )
    print(json.dumps({"args": vars(args), "plain": plain, "mapped": mapped, "state": state}))


if __name__ == "__main__":
    main()
