"""hema.dedup.vector_search: nearest centroids match a brute-force ranking, however many rows at once."""

from __future__ import annotations

import numpy as np
import pytest

from hema.dedup import vector_search


@pytest.mark.parametrize("count", [1, 4, 6])
def test_nearest_is_the_brute_force_ranking_in_blocks_of_rows(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    rng = np.random.default_rng(count)
    x = rng.normal(size=(1000, 16)).astype(np.float32)
    centroids = rng.normal(size=(40, 16)).astype(np.float32)
    want = np.argsort(((x[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1, kind="stable")[:, :count]
    monkeypatch.setattr(vector_search, "_ROWS_AT_ONCE", 64)  # 16 blocks, the last one short
    assert np.array_equal(vector_search.nearest(x, centroids, count), want)
