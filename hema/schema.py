"""The published columns: one schema for every build, and the one function that fills a row of it."""

from __future__ import annotations

import datasets

from hema.taxonomy import CELL_CLASSES, HARMONISED_CLASSES

FEATURES = datasets.Features(
    {
        "image": datasets.Image(mode="RGB"),
        "label": datasets.ClassLabel(names=list(CELL_CLASSES)),
        "image_id": datasets.Value("string"),
        "pixel_sha256": datasets.Value("string"),
        "phash": datasets.Value("string"),
        "dup_group": datasets.Value("int64"),
        "dup_group_size": datasets.Value("int64"),
        "dup_kind": datasets.Value("string"),
        "label_conflict": datasets.Value("bool"),
        "dup_representative": datasets.Value("bool"),
        "harmonised_label": datasets.ClassLabel(names=list(HARMONISED_CLASSES)),
    }
)


def example(row, image: bytes) -> dict:
    """The published row of a catalog row (hema.catalog.CatalogRow) whose stored image is `image`."""
    return {
        "image": {"bytes": image, "path": row.stored_name},
        "label": row.label,
        "image_id": row.image_id,
        "pixel_sha256": row.pixel_sha256,
        "phash": row.phash,
        "dup_group": row.dup_group,
        "dup_group_size": row.dup_group_size,
        "dup_kind": row.dup_kind,
        "label_conflict": row.label_conflict,
        "dup_representative": row.dup_representative,
        "harmonised_label": row.harmonised_label,
    }
