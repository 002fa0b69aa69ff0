"""Both searches over a set of images, in the order they depend on each other: duplicates first,
then crops of shared smear fields beyond them; the build (hema.dataset.catalog) and the dedup command
(hema.cli.dataset) both run them here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hema.base.stages import stage
from hema.dedup.duplicates import DedupResult, find_duplicates
from hema.dedup.signatures import SignatureTable
from hema.dedup.smear_fields import FieldResult, find_fields


@dataclass
class ImageGroups:
    duplicates: DedupResult  # dup_group per image, and the confirmed duplicate pairs
    fields: FieldResult  # field_group per image (duplicates and shared fields, connected), shared-field pairs


def group_images(sigs: SignatureTable, labels: Sequence[int] | None = None,
                 num_proc: int | None = None) -> ImageGroups:
    """Duplicate groups (labels only mark conflicts) and field groups of the signed images, each
    search in `num_proc` forked processes (all cores by default)."""
    with stage("duplicates") as notes:
        duplicates = find_duplicates(sigs, labels=labels, num_proc=num_proc)
        sigs.release_pages()
        notes.append(f"{len(duplicates.pairs)} duplicate pairs")
    with stage("fields") as notes:
        fields = find_fields(sigs, [(p.a, p.b) for p in duplicates.pairs], num_proc=num_proc)
        sigs.release_pages()
        notes.append(f"{len(fields.pairs)} shared-field pairs")
    return ImageGroups(duplicates, fields)
