"""Nearest neighbours by matrix products: an inverted file over two-level k-means centroids, for the
duplicate and shared-field candidate searches (no index library: bench/search_bench.py measures
faiss-cpu's IVF and HNSW on the same fingerprints)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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
    return _smallest(_ranking_dist(x, centroids), count)[0]


_ARGMIN_PASSES = 16  # up to this many, one argmin pass per rank beats a partition and a sort


def _smallest(dist: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the `count` smallest of each row of dist, smallest first, and their values (dist is
    overwritten)."""
    count = min(count, dist.shape[1])
    if count <= _ARGMIN_PASSES:
        rows, found, values = np.arange(len(dist)), [], []
        for _ in range(count):
            found.append(dist.argmin(axis=1))
            values.append(dist[rows, found[-1]])
            dist[rows, found[-1]] = np.inf
        return np.stack(found, axis=1), np.stack(values, axis=1)
    part = np.argpartition(dist, count - 1, axis=1)[:, :count] if count < dist.shape[1] else (
        np.broadcast_to(np.arange(dist.shape[1]), dist.shape))
    part = np.take_along_axis(part, np.argsort(np.take_along_axis(dist, part, axis=1), axis=1), axis=1)
    return part, np.take_along_axis(dist, part, axis=1)


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


_PROBES_AT_ONCE = 65536  # queries probed together: bounds their (queries, cells, fine) distances


@dataclass(frozen=True)
class InvertedFile:
    """Rows filed in lists of about the same length under k-means centroids found in two levels:
    coarse cells, then fine centroids within each cell. A list's length stays the same at any n, so
    scanning the probed lists (the bulk of a search) costs the same per query at 40k rows and at 170k;
    finding them ranks every coarse centroid and a few cells' fine ones, about sqrt(n / list_length)
    each, where one level of sqrt(n) lists made the scans grow as sqrt(n) (docs/scaling.md).
    Deterministic for a given input."""

    coarse: np.ndarray  # (cells, d)
    fine: np.ndarray  # (cells, most fine per cell, d); a cell's unused places repeat its coarse centroid
    fine_count: np.ndarray  # fine centroids in use per cell
    cells_probed: int  # coarse cells whose fine centroids a probe ranks
    order: np.ndarray  # the rows, by list (list = a cell's first fine list + the fine centroid), ascending within
    bounds: np.ndarray  # order[bounds[l] : bounds[l + 1]] are the rows filed under list l

    @classmethod
    def build(cls, x: np.ndarray, list_length: int, cells_probed: int = 3, train_size: int = 65536) -> InvertedFile:
        """File the rows of x, for probes that rank the fine centroids of `cells_probed` coarse cells;
        the centroids are trained on at most `train_size` rows drawn at random."""
        n = len(x)
        rng = np.random.default_rng(0)
        train = x[np.sort(rng.choice(n, train_size, replace=False))] if n > train_size else x
        lists = max(1, round(n / list_length))
        # cells * fine per cell = lists; a probe ranks all cells and cells_probed cells' fine centroids:
        # cheapest with sqrt(lists * cells_probed) cells
        coarse = kmeans(train, max(1, min(len(train), round(np.sqrt(lists * cells_probed)))))
        in_cell = nearest(train, coarse, 1)[:, 0]
        fine_sets = []
        for c in range(len(coarse)):  # a cell's share of the lists, from its share of the training rows
            members = train[in_cell == c]
            share = round(lists * len(members) / len(train))
            fine_sets.append(kmeans(members, min(len(members), share)) if share and len(members) else coarse[c : c + 1])
        fine_count = np.array([len(f) for f in fine_sets])
        fine = np.repeat(coarse[:, None, :], fine_count.max(), axis=1)
        for c, f in enumerate(fine_sets):
            fine[c, : len(f)] = f
        filing = cls(coarse, fine, fine_count, 1, np.empty(0, np.int64), np.empty(0, np.int64))  # in its nearest cell
        home = np.concatenate([filing.probe(x[s : s + _ROWS_AT_ONCE], 1)[:, 0] for s in range(0, n, _ROWS_AT_ONCE)])
        order = np.argsort(home, kind="stable")
        return cls(coarse, fine, fine_count, cells_probed, order, np.searchsorted(home[order], np.arange(filing.lists + 1)))

    @property
    def lists(self) -> int:
        return int(self.fine_count.sum())

    def probe(self, queries: np.ndarray, count: int) -> np.ndarray:
        """The `count` lists nearest each query (its nearest first; -1 where fewer exist), among the
        fine centroids of its `cells_probed` nearest coarse cells."""
        if len(queries) > _PROBES_AT_ONCE:
            return np.concatenate([self.probe(queries[s : s + _PROBES_AT_ONCE], count)
                                   for s in range(0, len(queries), _PROBES_AT_ONCE)])
        cells = min(self.cells_probed, len(self.coarse))
        first_list = np.r_[0, np.cumsum(self.fine_count)[:-1]]
        near_cells = nearest(queries, self.coarse, cells)
        width = self.fine.shape[1]
        unused = np.where(np.arange(width) < self.fine_count[:, None], 0, np.inf).astype(np.float32)
        dist = np.empty((len(queries), cells, width), dtype=np.float32)
        for (rank, c), rows in _grouped(near_cells):
            dist[rows, rank] = _ranking_dist(queries[rows], self.fine[c]) + unused[c]
        best, best_dist = _smallest(dist.reshape(len(queries), -1), count)
        lists = first_list[np.take_along_axis(near_cells, best // width, axis=1)] + best % width
        return np.where(np.isfinite(best_dist), lists, -1)

    def probed_lists(self, probes: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, slice]]:
        """For each list that holds rows and is probed (probes: lists per query, as from `probe`): the
        queries that probe it, where it stands in each one's probes, and its slice of `order`."""
        flat = probes.ravel()
        by_list = np.argsort(flat, kind="stable")
        at = np.searchsorted(flat[by_list], np.arange(self.lists + 1))
        for lst in np.flatnonzero((np.diff(at) > 0) & (np.diff(self.bounds) > 0)):
            query, rank = np.divmod(by_list[at[lst] : at[lst + 1]], probes.shape[1])
            yield query, rank, slice(self.bounds[lst], self.bounds[lst + 1])


def _grouped(keys: np.ndarray) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """((column, value), rows holding that value in that column) for every value of a 2-D int array."""
    for column in range(keys.shape[1]):
        order = np.argsort(keys[:, column], kind="stable")
        values = keys[order, column]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        for s, e in zip(starts, np.r_[starts[1:], len(order)]):
            yield (column, int(values[s])), order[s:e]
