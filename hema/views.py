"""The published configs: row filters over one physical copy of the images.

The same filters serve the builder (`MLL23(config_name=...)`) and the card's `configs` YAML, where
the Parquet builder applies them (`filters`, DNF syntax of pyarrow), so both views always agree.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

_OPS = {"==": operator.eq, ">=": operator.ge}


@dataclass(frozen=True)
class View:
    name: str
    filters: tuple[tuple[str, str, object], ...]
    rule: str  # what the view keeps, in words, for the card
    description: str

    def keeps(self, row: object) -> bool:
        """Whether a row (any object with the column attributes) passes the filters."""
        return all(_OPS[op](getattr(row, col), value) for col, op, value in self.filters)


VIEWS: dict[str, View] = {
    v.name: v
    for v in (
        View("default", (), "every image", "Every image."),
        View(
            "deduplicated",
            (("dup_representative", "==", True),),
            "one per duplicate group, conflicting groups dropped",
            "One image per duplicate group; groups whose labels conflict are dropped.",
        ),
        View(
            "harmonised",
            (("harmonised_label", ">=", 0),),
            "the 11 classes shared with Matek19 and Acevedo20",
            "The 11 classes shared with Matek19 and Acevedo20 (harmonised_label).",
        ),
    )
}
