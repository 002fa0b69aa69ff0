"""Masked normalised cross-correlation: the score by which both searches confirm a pair (hema.dedup.duplicates
on the whole crop, its centred cell and its surround; hema.dedup.smear_fields away from both cells)."""

from __future__ import annotations

import numpy as np


def masked_ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Correlation of a and b (P, n, n) over each mask; -1 where the mask holds under 1/16 of a.
    (Each sum of products is one einsum pass, with no product array: 2-5x faster than masked sums.)"""
    w = mask.astype(np.float32)
    count = np.maximum(np.einsum("pij->p", w), 1.0)
    da = a - (np.einsum("pij,pij->p", a, w) / count)[:, None, None]
    da *= w
    db = b - (np.einsum("pij,pij->p", b, w) / count)[:, None, None]
    db *= w
    den = np.sqrt(np.einsum("pij,pij->p", da, da) * np.einsum("pij,pij->p", db, db))
    ncc = np.einsum("pij,pij->p", da, db) / np.maximum(den, 1e-6)
    return np.where(count >= a.shape[-1] ** 2 / 16, ncc, -1.0)  # a sliver of overlap proves nothing
