"""Group-aware, label-stratified train/validation/test splits, with duplicates in every split.

No patient or slide ids are published for MLL23. The leaks we can stop are a duplicate group, or
crops of one smear field, straddling splits, hence whole field_groups (hema.dedup.smear_fields: duplicate pairs
and shared-field pairs, connected) are assigned. Three passes:

1. every class with at least three groups gives one of its smallest groups (first in the seed's
   shuffled order on ties) to test and one to validation, so even lymphocyte_reactive (33 images)
   is in every split;
2. the multi-image groups (duplicates, crops of one field), all classes together in the seed's
   shuffled order, each go to the split furthest below its share of such groups, the conflicting
   ones and the others counted apart: duplicates, and the borderline cells labelled twice, fall
   into train, validation and test in the split shares, so that test scores include the hard cases;
3. the single images of each class, shuffled, each go to the split furthest below its share of that
   class's images (ties drawn by the seed), which brings every class to its target counts.
"""

from __future__ import annotations

import numpy as np

from hema.base.errors import HemaError


def check_fractions(val_size: float, test_size: float) -> None:
    if not (0 < val_size < 1 and 0 < test_size < 1 and val_size + test_size < 1):
        raise HemaError(
            f"val_size {val_size} and test_size {test_size} must each be in (0, 1) "
            "and sum to less than 1"
        )


def group_labels(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The label each group is stratified by: its most frequent label (smallest id on ties)."""
    n_groups = int(groups.max()) + 1
    counts = np.zeros((n_groups, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(counts, (groups, labels), 1)
    return counts.argmax(axis=1)


def assign_splits(
    labels: np.ndarray, groups: np.ndarray, *, seed: int, val_size: float, test_size: float,
    conflict: np.ndarray | None = None,
) -> np.ndarray:
    """Split index per image (0 train, 1 validation, 2 test), deterministic for a seed; every group
    (per image: its field_group, or any grouping that must not straddle splits) lies in one split.

    `conflict` (per image) marks groups whose labels disagree: they are spread apart from the others.
    The fractions are as check_fractions accepts them.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    sizes = np.bincount(groups)
    by_label = group_labels(labels, groups)
    conflicted = np.zeros(len(sizes), dtype=bool)
    if conflict is not None:
        conflicted[groups[np.asarray(conflict, dtype=bool)]] = True
    shares = np.array([1 - val_size - test_size, val_size, test_size])
    rng = np.random.default_rng(seed)
    group_split = np.full(len(sizes), -1, dtype=np.int8)

    def furthest_below(target: np.ndarray, filled: np.ndarray) -> int:
        deficit = target - filled
        return int(rng.choice(np.flatnonzero(deficit >= deficit.max() - 1e-9)))

    order = {label: rng.permutation(np.flatnonzero(by_label == label)) for label in np.unique(by_label)}
    for members in order.values():  # 1. every class in every split
        if len(members) >= 3:
            for split, g in zip((2, 1), members[np.argsort(sizes[members], kind="stable")[:2]]):
                group_split[g] = split
    multi = rng.permutation(np.flatnonzero((sizes > 1) & (group_split < 0)))
    for stratum in (multi[conflicted[multi]], multi[~conflicted[multi]]):  # 2. duplicates in the split shares
        filled = np.zeros(3)
        for g in stratum:
            split = furthest_below(shares * len(stratum), filled)
            group_split[g] = split
            filled[split] += 1
    for members in order.values():  # 3. single images fill each class up to its targets
        target = shares * sizes[members].sum()
        placed = np.zeros(3)
        done = group_split[members] >= 0
        np.add.at(placed, group_split[members][done], sizes[members][done])
        for g in members[~done]:
            split = furthest_below(target, placed)
            group_split[g] = split
            placed[split] += sizes[g]
    return group_split[groups]
