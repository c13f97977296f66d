"""An independent float64 numpy reference of SEIS_SPEC.md, built on the full unfolded matrices.

It never uses Gram sums or the package's code: it centres the stored activations explicitly,
unfolds them, and runs eigh / SVD in numpy.
"""

from __future__ import annotations

import numpy as np


def _whiten(cov: np.ndarray, keep: float, eps: float) -> np.ndarray | None:
    values, vectors = np.linalg.eigh(cov)
    values, vectors = np.clip(values[::-1], 0, None), vectors[:, ::-1]
    if values.sum() <= 0:
        return None
    held = np.cumsum(values) / values.sum()
    k = min(int(np.sum(held < keep - 1e-12)) + 1, int(np.sum(values > eps * values[0])))
    k = max(k, 1)
    return vectors[:, :k] / np.sqrt(values[:k])


def _principal_axes_in_ties(m: np.ndarray, u: np.ndarray, rho: np.ndarray, z: np.ndarray, tolerance: float = 1e-9):
    """SEIS_SPEC.md, "Ties": in each run of equal ρ, Gram-Schmidt of the projected principal directions.

    The block's span holds the left singular vectors; project A's whitened principal directions
    e_1, e_2, ... (the rows of u) onto it, orthonormalise them in order, and take z = Mᵀu/ρ.
    """
    u, z = u.copy(), z.copy()
    start = 0
    for i in range(1, len(rho) + 1):
        if i < len(rho) and rho[i - 1] - rho[i] <= tolerance:
            continue
        if i - start >= 2 and rho[start] > tolerance:
            basis = u[:, start:i]
            projector = basis @ basis.T
            columns = []
            for e in np.eye(len(u)):
                p = projector @ e
                for c in columns:
                    p = p - (c @ p) * c
                if np.linalg.norm(p) > 1e-8:
                    columns.append(p / np.linalg.norm(p))
                if len(columns) == i - start:
                    break
            u[:, start:i] = np.stack(columns, axis=1)
            z[:, start:i] = m.T @ u[:, start:i] / rho[start:i]
        start = i
    return u, z


def _cca(x: np.ndarray, y: np.ndarray, x_cross: np.ndarray, y_cross: np.ndarray, keep: float, eps: float):
    """CCA of x against y (denoised on x, y); cross-covariance from the row pairs (x_cross, y_cross)."""
    wx = _whiten(x.T @ x / (len(x) - 1), keep, eps)
    wy = _whiten(y.T @ y / (len(y) - 1), keep, eps)
    if wx is None or wy is None:
        return None
    cross = x_cross.T @ y_cross / (len(x_cross) - 1)
    m = wx.T @ cross @ wy
    u, rho, zt = np.linalg.svd(m, full_matrices=False)
    u, z = _principal_axes_in_ties(m, u, rho, zt.T)
    w, v = wx @ u, wy @ z
    cos = np.abs(np.sum(w * v, 0)) / (np.linalg.norm(w, axis=0) * np.linalg.norm(v, axis=0))
    rho = np.clip(rho, 0, 1)
    return {"rho": rho, "alignment": np.clip(cos, 0, 1), "kx": wx.shape[1], "ky": wy.shape[1]}


def null_permutation(num_images: int, batch_size: int | None = None) -> np.ndarray:
    """Index of the transformed image paired with image n: n - 1 within each batch (torch.roll by one)."""
    batch_size = batch_size or num_images
    perm = np.arange(num_images)
    for start in range(0, num_images, batch_size):
        stop = min(start + batch_size, num_images)
        if stop - start >= 2:
            perm[start:stop] = np.roll(perm[start:stop], 1)
        else:
            perm[start:stop] = -1
    return perm


def reference_scores(
    a,
    b,
    keep: float = 0.99,
    eps: float = 1e-8,
    batch_size: int | None = None,
    centring: str = "map",
    b_null=None,
):
    """SEIS scores of maps a, b of shape [N, C, S] (numpy float64).

    ``b_null`` [N, C, S]: the transformed maps paired with each image for the null, which may lie
    outside ``b`` (a jackknife's left-out images); by default ``b`` in the order of
    :func:`null_permutation`. Either way they are centred on ``b``'s mean map.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n, c, s = a.shape
    perm = null_permutation(n, batch_size)
    paired = perm >= 0 if b_null is None else np.ones(n, dtype=bool)
    partners = b[perm[paired]] if b_null is None else np.asarray(b_null, dtype=np.float64)
    out = {}
    for unfolding in ("spatial", "channel"):
        if unfolding == "spatial":
            unfold = lambda m: m.reshape(-1, s)  # noqa: E731  (image, channel) rows
        else:
            unfold = lambda m: m.transpose(0, 2, 1).reshape(-1, c)  # noqa: E731  (image, position) rows
        if centring == "map":
            ac, bc = a - a.mean(0), b - b.mean(0)
            x, y = unfold(ac), unfold(bc)
            y_null = unfold(partners - b.mean(0))
            x_null = unfold(ac[paired])
        else:  # plain per-column centring, as reimplementations of the paper do
            x, y = unfold(a), unfold(b)
            x, y = x - x.mean(0), y - y.mean(0)
            x_null, y_null = x, unfold(b[perm])
            y_null = y_null - y_null.mean(0)
        for suffix, xc, yc in (("", x, y), ("_null", x_null, y_null)):
            res = _cca(x, y, xc, yc, keep, eps)
            score = "equivariance" if unfolding == "spatial" else "channel_invariance"
            if res is None:
                out[score + suffix] = np.nan
                continue
            out[score + suffix] = float(res["rho"].mean())
            out[f"{unfolding}_rho{suffix}"] = res["rho"]
            out[f"{unfolding}_kx"], out[f"{unfolding}_ky"] = res["kx"], res["ky"]
            if unfolding == "spatial":
                out["invariance" + suffix] = float((res["rho"] * res["alignment"]).mean())
    return out
