"""Nearest neighbours by matrix products: k-means centroids and distances, for the duplicate and
shared-field candidate searches (no index library: numpy's BLAS is fast enough at MLL23's size)."""

from __future__ import annotations

import numpy as np


def principal_axes(x: np.ndarray, dims: int) -> np.ndarray:
    """The first `dims` principal axes of the rows of x (as columns): a cheaper space to search in."""
    centred = x - x.mean(axis=0)
    _, axes = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues: the last are principal
    return np.ascontiguousarray(axes[:, ::-1][:, :dims], dtype=np.float32)


def half_sq_dist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x - y|^2 / 2 for all rows of x against all rows of y."""
    dist = _ranking_dist(x, y)
    dist += 0.5 * (x * x).sum(axis=1)[:, None]
    return dist


def _ranking_dist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x - y|^2 / 2 less |x|^2 / 2: the same order over the rows of y for each row of x, one pass less."""
    dist = x @ y.T
    np.subtract(0.5 * (y * y).sum(axis=1)[None, :], dist, out=dist)
    return dist


_ROWS_AT_ONCE = 2048  # rows whose distance matrix is ranked together: it stays in a core's cache


def nearest(x: np.ndarray, centroids: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` nearest centroids of each row, nearest first."""
    if len(x) > _ROWS_AT_ONCE:
        return np.concatenate([nearest(x[s : s + _ROWS_AT_ONCE], centroids, count)
                               for s in range(0, len(x), _ROWS_AT_ONCE)])
    dist = _ranking_dist(x, centroids)
    if count <= 4 < len(centroids):  # argmin passes beat a partition for a few
        rows, found = np.arange(len(x)), []
        for _ in range(count):
            found.append(dist.argmin(axis=1))
            dist[rows, found[-1]] = np.inf
        return np.stack(found, axis=1)
    part = np.argpartition(dist, count - 1, axis=1)[:, :count] if count < len(centroids) else (
        np.broadcast_to(np.arange(len(centroids)), dist.shape))
    return np.take_along_axis(part, np.argsort(np.take_along_axis(dist, part, axis=1), axis=1), axis=1)


def kmeans(x: np.ndarray, count: int, steps: int = 8) -> np.ndarray:
    """Plain Lloyd iterations from a fixed random start (deterministic for a given input)."""
    rng = np.random.default_rng(0)
    centroids = x[rng.choice(len(x), count, replace=False)].copy()
    for _ in range(steps):
        home = nearest(x, centroids, 1)[:, 0]
        sizes = np.bincount(home, minlength=count)
        sums = np.zeros_like(centroids)
        np.add.at(sums, home, x)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
    return centroids
