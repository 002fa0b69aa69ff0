"""Connected components of a pair graph: how confirmed pairs become dup_groups and field_groups."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def components(n: int, links: Sequence[tuple[int, int]]) -> np.ndarray:
    """Connected components of the link graph; ids numbered in order of each group's first image."""
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(i) for i in range(n)], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1].astype(np.int64)  # roots are first members
