"""hema.dedup.vector_search: nearest centroids match a brute-force ranking, however many rows at once;
the inverted file files every row once, in lists of the length asked for, and is exact when every
list is probed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hema.dedup import duplicates, vector_search


@pytest.mark.parametrize("count", [1, 4, 6, 20])
def test_nearest_is_the_brute_force_ranking_in_blocks_of_rows(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    rng = np.random.default_rng(count)
    x = rng.normal(size=(1000, 16)).astype(np.float32)
    centroids = rng.normal(size=(40, 16)).astype(np.float32)
    want = np.argsort(((x[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1, kind="stable")[:, :count]
    monkeypatch.setattr(vector_search, "_ROWS_AT_ONCE", 64)  # 16 blocks, the last one short
    assert np.array_equal(vector_search.nearest(x, centroids, count), want)


def _fine_centroids(index: vector_search.InvertedFile) -> np.ndarray:
    """The fine centroids in list order."""
    return np.concatenate([index.fine[c, :used] for c, used in enumerate(index.fine_count)])


def test_inverted_file_files_every_row_once_under_its_nearest_list() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 8)).astype(np.float32)
    index = vector_search.InvertedFile.build(x, list_length=50, cells_probed=3, train_size=2000)
    assert 95 <= index.lists <= 105 and index.bounds[-1] == len(x)  # each cell's share of 100, rounded
    assert np.array_equal(np.sort(index.order), np.arange(len(x)))
    filed = np.repeat(np.arange(index.lists), np.diff(index.bounds))
    home = np.empty(len(x), dtype=np.int64)
    home[index.order] = filed
    filing = dataclasses.replace(index, cells_probed=1)
    assert np.array_equal(home, filing.probe(x, 1)[:, 0])  # its nearest list in its nearest cell
    for lst in range(index.lists):  # ascending within each list
        assert np.all(np.diff(index.order[index.bounds[lst] : index.bounds[lst + 1]]) > 0)
    # probed in every cell, the lists come in the brute-force order of their centroids
    queries = rng.normal(size=(50, 8)).astype(np.float32)
    fine = _fine_centroids(index)
    want = np.argsort(((queries[:, None, :] - fine[None]) ** 2).sum(axis=2), axis=1, kind="stable")[:, :30]
    everywhere = dataclasses.replace(index, cells_probed=len(index.coarse))
    assert np.array_equal(everywhere.probe(queries, 30), want)


def test_neighbour_search_probing_every_list_is_the_exact_k_nearest(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    embed = rng.normal(size=(600, 8)).astype(np.float32)
    monkeypatch.setattr(duplicates, "LIST_LENGTH", 32)  # ~19 lists in ~9 cells: all probed
    monkeypatch.setattr(duplicates, "SEARCH_CELLS", 1000)
    monkeypatch.setattr(duplicates, "SEARCH_PROBES", 1000)
    dist = ((embed[:, None, :] - embed[None]) ** 2).sum(axis=2)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, axis=1)[:, :5]
    want = {(min(i, j), max(i, j)) for i, row in enumerate(nearest) for j in row}
    assert {tuple(p) for p in duplicates._neighbour_pairs(embed, 5).tolist()} == want
