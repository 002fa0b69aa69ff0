"""Group-aware, label-stratified train/validation/test splits.

No patient or slide ids are published for MLL23, so splits are image-level; the one leak we can
stop is a duplicate group straddling splits, hence whole dup_groups are assigned. Within each class,
groups are shuffled by the seed and each goes to the split furthest below its target share (ties
drawn by the seed), after
one group each has been given to test and validation when the class has at least three groups (so
a class as small as lymphocyte_reactive, 33 images, is present in every split).
"""

from __future__ import annotations

import numpy as np

from hema.errors import HemaError

SPLITS = ("train", "validation", "test")


def check_fractions(val_size: float, test_size: float) -> None:
    if not (0 < val_size < 1 and 0 < test_size < 1 and val_size + test_size < 1):
        raise HemaError(
            f"val_size {val_size} and test_size {test_size} must each be in (0, 1) "
            "and sum to less than 1"
        )


def group_labels(labels: np.ndarray, dup_group: np.ndarray) -> np.ndarray:
    """The label each group is stratified by: its most frequent label (smallest id on ties)."""
    n_groups = int(dup_group.max()) + 1
    counts = np.zeros((n_groups, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(counts, (dup_group, labels), 1)
    return counts.argmax(axis=1)


def assign_splits(
    labels: np.ndarray, dup_group: np.ndarray, *, seed: int, val_size: float, test_size: float
) -> np.ndarray:
    """Split index per image (0 train, 1 validation, 2 test), deterministic for a seed (fractions as checked by check_fractions)."""
    labels, dup_group = np.asarray(labels), np.asarray(dup_group)
    sizes = np.bincount(dup_group)
    by_label = group_labels(labels, dup_group)
    shares = np.array([1 - val_size - test_size, val_size, test_size])
    rng = np.random.default_rng(seed)
    group_split = np.zeros(len(sizes), dtype=np.int8)
    for label in np.unique(by_label):
        groups = rng.permutation(np.flatnonzero(by_label == label))
        target = shares * sizes[groups].sum()
        filled = np.zeros(3)
        if len(groups) >= 3:
            # The two smallest groups (first in shuffled order on ties) seed test and validation.
            seeds = groups[np.argsort(sizes[groups], kind="stable")[:2]]
            for split, g in zip((2, 1), seeds):
                group_split[g] = split
                filled[split] += sizes[g]
            groups = groups[~np.isin(groups, seeds)]
        # Large groups first so they cannot overshoot a small split late; stable keeps the shuffle.
        for g in groups[np.argsort(-sizes[groups], kind="stable")]:
            deficit = target - filled
            split = int(rng.choice(np.flatnonzero(deficit >= deficit.max() - 1e-9)))
            group_split[g] = split
            filled[split] += sizes[g]
    return group_split[dup_group]
