"""The store-everything way to compute SEIS, as reimplementations of the paper do: the benchmarks' baseline.

All activations of ``x`` and ``T(x)`` are kept in memory; the scores come from float64 numpy on the
full unfolded data matrices: centre on the mean feature map, unfold, SVD denoising by
``np.linalg.svd`` of each centred data matrix, CCA by SVD of the whitened cross-covariance. Same
rules as ``SEIS_SPEC.md`` and ``seis_lightning.functional``, so the scores agree within 1e-6.

Run it to check that agreement on a small random example::

    .venv/bin/python bench/baseline.py
"""

from __future__ import annotations

import numpy as np


def null_partners(num_images: int, batch_size: int) -> np.ndarray:
    """Transformed image paired with image n by the null: n - 1 within its batch (``torch.roll`` by one).

    Images of a batch of one have no partner (-1).
    """
    partners = np.arange(num_images)
    for start in range(0, num_images, batch_size):
        stop = min(start + batch_size, num_images)
        partners[start:stop] = np.roll(partners[start:stop], 1) if stop - start >= 2 else -1
    return partners


def whitener(data: np.ndarray, keep: float, eps: float) -> np.ndarray | None:
    """``V_k Λ_k^{-1/2}`` from the SVD of a centred data matrix ``[rows, variables]``."""
    _, singular_values, vt = np.linalg.svd(data, full_matrices=False)
    eigenvalues = singular_values**2 / (len(data) - 1)
    total = eigenvalues.sum()
    if not total > 0:
        return None
    held = np.cumsum(eigenvalues) / total
    k_keep = int(np.sum(held < keep - 1e-12)) + 1
    k_eps = int(np.sum(eigenvalues > eps * eigenvalues[0]))
    k = max(1, min(k_keep, k_eps, len(eigenvalues)))
    return vt[:k].T / np.sqrt(eigenvalues[:k])


def cca(whitener_x: np.ndarray, cross: np.ndarray, whitener_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical correlations (clipped to [0, 1]) and ``|cos(w_i, v_i)|`` of the canonical weight vectors."""
    u, rho, zt = np.linalg.svd(whitener_x.T @ cross @ whitener_y, full_matrices=False)
    w, v = whitener_x @ u[:, : len(rho)], whitener_y @ zt[: len(rho)].T
    alignment = np.abs(np.sum(w * v, axis=0)) / (np.linalg.norm(w, axis=0) * np.linalg.norm(v, axis=0))
    return np.clip(rho, 0, 1), np.clip(alignment, 0, 1)


def baseline_scores(
    a: np.ndarray, b: np.ndarray, *, batch_size: int, keep: float = 0.99, eps: float = 1e-8
) -> dict[str, float]:
    """SEIS scores and nulls of all stored activations ``a``, ``b`` of shape ``[N, C, *spatial]``.

    ``batch_size`` is the batch size the activations were produced in: the null pairs image n
    with transformed image n - 1 of the same batch.
    """
    num_images, num_channels = a.shape[:2]
    a = np.asarray(a, dtype=np.float64).reshape(num_images, num_channels, -1)
    b = np.asarray(b, dtype=np.float64).reshape(num_images, num_channels, -1)
    num_positions = a.shape[2]
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    partners = null_partners(num_images, batch_size)
    paired = partners >= 0

    scores = {}
    for unfolding, score in (("spatial", "equivariance"), ("channel", "channel_invariance")):
        if unfolding == "spatial":
            x, y = a.reshape(-1, num_positions), b.reshape(-1, num_positions)  # rows (image, channel)
            x_null = a[paired].reshape(-1, num_positions)
            y_null = b[partners[paired]].reshape(-1, num_positions)
        else:
            x = a.transpose(0, 2, 1).reshape(-1, num_channels)  # rows (image, position)
            y = b.transpose(0, 2, 1).reshape(-1, num_channels)
            x_null = a[paired].transpose(0, 2, 1).reshape(-1, num_channels)
            y_null = b[partners[paired]].transpose(0, 2, 1).reshape(-1, num_channels)
        whitener_x, whitener_y = whitener(x, keep, eps), whitener(y, keep, eps)
        for suffix, xc, yc in (("", x, y), ("_null", x_null, y_null)):
            if whitener_x is None or whitener_y is None or len(xc) < 2:
                scores[score + suffix] = float("nan")
                if unfolding == "spatial":
                    scores["invariance" + suffix] = float("nan")
                continue
            rho, alignment = cca(whitener_x, xc.T @ yc / (len(xc) - 1), whitener_y)
            scores[score + suffix] = float(rho.mean())
            if unfolding == "spatial":
                scores["invariance" + suffix] = float((rho * alignment).mean())
    return scores


if __name__ == "__main__":
    import torch

    from seis_lightning.functional import seis_combine_statistics, seis_from_statistics, seis_statistics

    generator = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(256, 16, 6, 6, generator=generator))
    b = a.rot90(1, dims=(-2, -1)) + 0.1 * torch.randn(a.shape, generator=generator)
    stats = seis_combine_statistics(*(seis_statistics(x, y) for x, y in zip(a.split(64), b.split(64))))
    expected = seis_from_statistics(stats)
    got = baseline_scores(a.numpy(), b.numpy(), batch_size=64)
    difference = max(abs(got[name] - expected[name]) for name in got)
    print({name: round(value, 6) for name, value in got.items()})
    print(f"max |baseline - seis_lightning| = {difference:.2e}", "PASS" if difference <= 1e-6 else "FAIL")
