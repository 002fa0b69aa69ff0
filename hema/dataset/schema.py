"""The published columns: one schema for every source, and the one function that fills a row of it.

Every source has the same columns; `label` names its own classes, and a source may add ClassLabel
columns of its own right after `label` (Acevedo20's `fine_label`, Matek19's re-annotations).
"""

from __future__ import annotations

import datasets

from hema.base.taxonomy import HARMONISED_CLASSES


def features(source) -> datasets.Features:
    """The Features of a build of `source` (a hema.dataset.sources.declaration.Source: its classes
    and extra columns)."""
    return datasets.Features(
        {
            "image": datasets.Image(mode="RGB"),
            "label": datasets.ClassLabel(names=list(source.classes)),
            **source.extra_features,
            "image_id": datasets.Value("string"),
            "pixel_sha256": datasets.Value("string"),
            "phash": datasets.Value("string"),
            "dup_group": datasets.Value("int64"),
            "dup_group_size": datasets.Value("int64"),
            "dup_kind": datasets.Value("string"),
            "label_conflict": datasets.Value("bool"),
            "dup_representative": datasets.Value("bool"),
            "field_group": datasets.Value("int64"),
            "field_group_size": datasets.Value("int64"),
            "harmonised_label": datasets.ClassLabel(names=list(HARMONISED_CLASSES)),
        }
    )


def example(row, image: bytes) -> dict:
    """The published row of a catalog row (hema.dataset.catalog.CatalogRow) whose stored image is `image`."""
    return {
        "image": {"bytes": image, "path": row.stored_name},
        "label": row.label,
        **row.extra,
        "image_id": row.image_id,
        "pixel_sha256": row.pixel_sha256,
        "phash": row.phash,
        "dup_group": row.dup_group,
        "dup_group_size": row.dup_group_size,
        "dup_kind": row.dup_kind,
        "label_conflict": row.label_conflict,
        "dup_representative": row.dup_representative,
        "field_group": row.field_group,
        "field_group_size": row.field_group_size,
        "harmonised_label": row.harmonised_label,
    }
