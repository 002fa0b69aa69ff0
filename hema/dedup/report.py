"""The dedup report: one CSV row per confirmed pair, what a reviewer reads beside a build or after
`hema-dataset dedup`."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from hema.base import atomic
from hema.base.files import UnusableFile, read_regular_file
from hema.dedup.duplicates import DupPair
from hema.dedup.smear_fields import FieldPair

REPORT_COLUMNS = ("image_id_a", "label_a", "image_id_b", "label_b", "kind", "score", "shift_y", "shift_x", "transform")


class LabelledImage(Protocol):
    image_id: str
    cell_class: str


def write_dedup_report(
    pairs: Sequence[DupPair], field_pairs: Sequence[FieldPair], images: Sequence[LabelledImage], path: Path
) -> None:
    """One row per confirmed pair (indices into `images`): ids, labels, kind (exact, near or
    shared_field: two crops of one smear field), score, shift, transform."""
    with atomic.replacing(path) as partial, open(partial, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(REPORT_COLUMNS)
        for p in pairs:
            a, b = images[p.a], images[p.b]
            out.writerow([a.image_id, a.cell_class, b.image_id, b.cell_class, p.kind, f"{p.score:.4f}", *p.shift, p.transform])
        for p in field_pairs:
            a, b = images[p.a], images[p.b]
            out.writerow([a.image_id, a.cell_class, b.image_id, b.cell_class, "shared_field", f"{p.score:.4f}",
                          *p.shift, "identity"])


def is_dedup_report(path: Path) -> bool:
    """Whether `path` is a report write_dedup_report wrote (so that writing it again loses nothing)."""
    try:
        first = read_regular_file(path, 1 << 30).split(b"\n", 1)[0].decode().strip()
    except (OSError, UnusableFile, UnicodeDecodeError):
        return False
    return first == ",".join(REPORT_COLUMNS)
