"""Shared by the benchmarks: seeded synthetic activations, peak-memory probes, one subprocess per measurement.

Every measurement runs in a fresh interpreter (``run_worker``), so the peak memory of one side is
never inflated by the other side or by an earlier measurement.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

# The baseline is the tests' float64 numpy reference (tests/reference.py): one home for it.
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPOSITORY not in sys.path:
    sys.path.insert(0, REPOSITORY)

from seis_lightning.functional import SCORES_AND_NULLS  # noqa: E402

COMPARED = SCORES_AND_NULLS  # the scores compared between the metric and the baseline


def pick_device() -> torch.device:
    """CUDA when there is one, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine_description() -> str:
    """One line: CPU model, cores, memory, accelerator, torch version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1).strip()
    except (OSError, AttributeError):
        pass
    memory = ""
    with contextlib.suppress(ValueError, OSError):
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores{memory}, {gpu}; torch {torch.__version__}"


def synthetic_batches(
    *,
    seed: int,
    num_images: int,
    batch_size: int,
    channels: int,
    size: int,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of float32 activations ``a`` (smooth random maps) and ``b`` (``a`` rotated by 90° plus noise).

    ``a``: white noise box-filtered over positions, mixed over channels by a fixed matrix with a
    decaying spectrum, then shifted and rectified like a ReLU layer. Batch ``i`` depends only on
    ``(seed, i)``, so any process regenerates the same activations.
    """
    mixing_generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=mixing_generator))
    decay = 1.0 / torch.arange(1, channels + 1, dtype=torch.float32).sqrt()
    mixing = (q * decay).to(device)
    for index in range(math.ceil(num_images / batch_size)):
        n = min(batch_size, num_images - index * batch_size)
        generator = torch.Generator(device).manual_seed(seed * 1_000_003 + index + 1)
        noise = torch.randn(n, channels, size, size, generator=generator, device=device)
        smooth = F.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)
        a = torch.relu(torch.einsum("dc,nchw->ndhw", mixing, smooth) + 0.1)
        b = a.rot90(1, dims=(-2, -1)) + 0.05 * torch.randn(a.shape, generator=generator, device=device)
        yield a, b.contiguous()


def streamed_metric(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device, precision: str = "auto"
) -> tuple[Any, dict]:
    """Stream ``(a, b)`` batches into a fresh ``SEISMetric`` on ``device``; return it and its scores."""
    from seis_lightning.metric import SEISMetric

    metric = SEISMetric(precision=precision).to(device)
    for a, b in batches:
        metric.update(a, b)
    scores = metric.compute()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return metric, scores


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


class PeakMemory:
    """Peak resident memory of this process above its level at ``start()`` (bytes).

    Resets the kernel's high-water mark (``VmHWM``) through ``/proc/self/clear_refs`` where allowed;
    otherwise the delta is taken against the high-water mark at ``start()``.
    """

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.baseline = _status_kib("VmHWM")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda_baseline = torch.cuda.memory_allocated()

    def stop(self) -> dict[str, int]:
        result = {
            "peak_rss_delta": (_status_kib("VmHWM") - self.baseline) * 1024,
            "peak_rss": _status_kib("VmHWM") * 1024,
        }
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            result["peak_cuda_delta"] = torch.cuda.max_memory_allocated() - self.cuda_baseline
        return result


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def run_worker(script: str, args: Sequence[str], threads: int, env: Mapping[str, str] | None = None) -> dict:
    """Run ``script --worker ...`` in a fresh interpreter and return the JSON it prints last.

    ``threads`` caps the OpenMP, MKL and OpenBLAS thread pools of the worker. On a small machine
    shared with other processes, multi-threaded LAPACK loses its gain whenever another process
    holds a core (bench/README.md has the figures), so one thread gives reproducible timings.
    ``env`` adds environment variables.
    """
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads)), **(env or {})}
    completed = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"worker {args} failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def megabytes(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.1f}"
