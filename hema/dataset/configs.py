"""The published configs, the file parts that let each config be a union of whole files, and what
each config holds of each split.

A config (view) keeps the rows for which its rule holds. Rows are written into parts: one per
combination of the rules of the selecting views (representative or not, harmonised or not), so
that every config is exactly the union of the parts it keeps. The card's `configs` then name
whole files in `data_files` and need no `filters`, which the Hub's dataset viewer, datasets < 3.2,
pyarrow, polars, DuckDB and timm ignore: every client sees the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hema.base.published import DEFAULT_CONFIG, LABEL_COLUMNS

#: The part a row is written to: whether each of SELECTING_VIEWS keeps it, in that order.
Part = tuple[bool, ...]


@dataclass(frozen=True)
class View:
    name: str
    rule: str  # what the view keeps, in words, for the card
    description: str
    keeps: Callable[[object], bool] | None = None  # None: every row
    tags: tuple[str, str] = ("", "")  # file-name tag of the rows it keeps / leaves out

    def keeps_row(self, row: object) -> bool:
        return self.keeps is None or bool(self.keeps(row))

    @property
    def label_column(self) -> str:
        """The ClassLabel column a model trained on this config predicts."""
        return LABEL_COLUMNS[self.name]


@dataclass(frozen=True)
class ConfigSplit:
    """What one config holds of one split: its Parquet files, rows and Arrow bytes."""

    paths: list[str]
    rows: int
    num_bytes: int


#: The published configs by name; their names and label columns are hema.base.published's.
VIEWS: dict[str, View] = {
    v.name: v
    for v in (
        View(DEFAULT_CONFIG, "every image", "Every image."),
        View(
            "deduplicated",
            "one per duplicate group, conflicting groups dropped",
            "One image per duplicate group; groups whose labels conflict are dropped.",
            keeps=lambda row: row.dup_representative,
            tags=("dedup", "dupes"),
        ),
        View(
            "harmonised",
            "the classes shared by MLL23, Matek19 and Acevedo20",
            "The 11 classes shared by MLL23, Matek19 and Acevedo20 (harmonised_label).",
            keeps=lambda row: row.harmonised_label >= 0,
            tags=("harmonised", "other"),
        ),
    )
}

SELECTING_VIEWS: tuple[View, ...] = tuple(v for v in VIEWS.values() if v.keeps is not None)


def part_of(row: object) -> Part:
    return tuple(v.keeps_row(row) for v in SELECTING_VIEWS)


def part_name(part: Part) -> str:
    """e.g. "dedup-harmonised": the file-name infix, so globs like `train-dedup-*` select a config."""
    return "-".join(v.tags[0] if kept else v.tags[1] for v, kept in zip(SELECTING_VIEWS, part))


def keeps_part(view: View, part: Part) -> bool:
    return view.keeps is None or part[SELECTING_VIEWS.index(view)]
