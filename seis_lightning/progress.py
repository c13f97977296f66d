"""What a long probe pass says before and while it runs: the work ahead, counted (:class:`PassCost`, logged
at INFO when large), and a progress bar over the forward passes and the layers' scores (:func:`progress_bar`).

The counts are operation counts, not a time: how fast a model's forward pass, a Gram product or an
eigendecomposition runs depends on the device, and nothing here measures it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from seis_lightning.scores import HALF_SAMPLES

# A pass is "large" (its estimate logged at INFO, its bar shown from the start) above either count.
LARGE_FLOPS = 1e10  # Gram products and eigendecompositions: seconds of a CPU core or more
LARGE_FORWARD_IMAGES = 10_000  # images through the model: probe images x (1 + transformation draws)
AUTO_DELAY = 2.0  # seconds before an automatic bar (`progress=None`) appears: short passes show none
EIGH_FLOPS = 9  # x n^3: a symmetric eigendecomposition with its vectors (tridiagonal QR), about


@dataclass(frozen=True)
class PassCost:
    """The work of one probe pass (on this process), counted from its plan and the layers' map sizes.

    Example:
        >>> cost = PassCost(images=512, chunks=8, draws=4, sizes={"conv1": (32, 196), "fc": (10, 1)})
        >>> cost.forward_passes, cost.whiteners, cost.large
        (40, {196: 5, 32: 5, 10: 5, 1: 5}, True)
        >>> print(cost)  # doctest: +NORMALIZE_WHITESPACE
        SEIS probe pass: 512 images in 8 batches x (1 + 4 transformation draws) = 40 forward passes; 2 layers;
        Gram products 19 GFLOP; 20 covariance eigendecompositions, the largest 196x196 (5 of them, layer
        'conv1'), about 0.34 GFLOP, and 32 for the CCAs, each at most as large. Counts of operations, not a
        time estimate.

    Attributes:
        images: probe images this process scores.
        chunks: forward passes of the probe images (batches of at most ``batch_size``).
        draws: transformation draws; each chunk runs ``1 + draws`` forward passes.
        sizes: ``{layer: (C, S)}``: channels and positions of each scorable layer's maps after the
            position cap (``max_positions``).
        replicates: score sets per transformation: 1, or ``1 +`` the jackknife's half-samples.
    """

    images: int
    chunks: int
    draws: int
    sizes: dict[str, tuple[int, int]]
    replicates: int = 1

    @property
    def forward_passes(self) -> int:
        return self.chunks * (1 + self.draws)

    @property
    def gram_flops(self) -> float:
        """Multiply-adds x 2 of the Gram products (spec, "Streaming statistics"): per image, the spatial
        ``C·S²`` and channel ``S·C²`` products of the original maps once and, per draw, three more
        (transformed, cross, null cross)."""
        per_image = sum(c * s * s + s * c * c for c, s in self.sizes.values())
        return 2.0 * self.images * per_image * (1 + 3 * self.draws)

    @property
    def whiteners(self) -> dict[int, int]:
        """``{n: count}`` of the ``n × n`` covariance eigendecompositions (spec, "Compute, per unfolding", step 2):
        per layer, unfolding (``S`` spatial, ``C`` channel) and score set, the original maps' once and the
        transformed maps' once per draw."""
        counts: dict[int, int] = {}
        for c, s in self.sizes.values():
            for n in (s, c):
                counts[n] = counts.get(n, 0) + (1 + self.draws) * self.replicates
        return dict(sorted(counts.items(), reverse=True))

    @property
    def ccas(self) -> int:
        """The CCAs' eigendecompositions (step 3; score and null per draw), each at most as large as the
        covariances': the retained dimensions."""
        return 2 * 2 * self.draws * self.replicates * len(self.sizes)

    @property
    def eigen_flops(self) -> float:
        """The covariance eigendecompositions' floating-point operations, at about ``9 n³`` each."""
        return float(sum(EIGH_FLOPS * n**3 * count for n, count in self.whiteners.items()))

    @property
    def large(self) -> bool:
        return (
            self.gram_flops + self.eigen_flops >= LARGE_FLOPS or self.images * (1 + self.draws) >= LARGE_FORWARD_IMAGES
        )

    def __str__(self) -> str:
        text = (
            f"SEIS probe pass: {self.images} images in {self.chunks} batches x (1 + {self.draws} transformation"
            f" draws) = {self.forward_passes} forward passes; {len(self.sizes)} layers"
        )
        if self.sizes:
            (n, count), *_ = self.whiteners.items()
            layer = next(name for name, size in self.sizes.items() if n in size)
            text += (
                f"; Gram products {_flops(self.gram_flops)}; {sum(self.whiteners.values())} covariance"
                f" eigendecompositions, the largest {n}x{n} ({count} of them, layer {layer!r}), about"
                f" {_flops(self.eigen_flops)}, and {self.ccas} for the CCAs, each at most as large"
            )
        return text + ". Counts of operations, not a time estimate."


def half_samples(jackknife_groups: int) -> int:
    """The jackknife's half-samples for ``jackknife_groups`` groups (0: none)."""
    if jackknife_groups < 2:
        return 0
    return min(math.comb(jackknife_groups, -(-jackknife_groups // 2)), HALF_SAMPLES)


def _flops(flops: float) -> str:
    return f"{flops / 1e12:.3g} TFLOP" if flops >= 1e12 else f"{flops / 1e9:.3g} GFLOP"


def progress_bar(progress: bool | None, total: int, description: str, unit: str, large: bool = False) -> Any:
    """A ``tqdm`` bar on stderr, or ``None``.

    Args:
        progress: ``True``: shown; ``False``: none; ``None``: only on a terminal (stderr a TTY), from the
            start for a ``large`` pass and otherwise once the work has lasted :data:`AUTO_DELAY` seconds.
        total: the number of steps.
        description: the bar's label.
        unit: what one step is.
        large: see :attr:`PassCost.large`.
    """
    if progress is False or (progress is None and not _terminal()):
        return None
    from tqdm import tqdm

    delay = 0.0 if progress or large else AUTO_DELAY
    return tqdm(total=total, desc=description, unit=unit, file=sys.stderr, delay=delay, leave=True, dynamic_ncols=True)


def _terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def advance(bar: Any, what: str) -> None:
    """One step of a progress bar (``None``: none), naming what was just done."""
    if bar is not None:
        bar.set_postfix_str(what, refresh=False)
        bar.update()
