"""What a dataset source declares: its taxonomy, layout, licence, citation, scale and card text.

The generic builder (hema.dataset.builder) and everything under it (catalog, schema, card, figures)
read a `Source`; each source module (hema/dataset/sources/) fills one in. Nothing else differs
between the sources: they share columns, configs, dedup and splits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from hema.dataset.scan import Scan
from hema.dataset.schema import features


@dataclass(frozen=True)
class Source:
    name: str  # the --source value, e.g. "acevedo20"
    title: str  # e.g. "Acevedo20"
    pretty_name: str  # the card's title
    summary: str  # DatasetInfo.description: one sentence
    homepage: str
    license: str  # a Hub licence id, e.g. "cc-by-4.0"
    citation: str  # BibTeX
    pixel_size_um: float | None  # microns per pixel of the source images (fields of view can be matched); None: unpublished
    classes: tuple[str, ...]  # names of `label`, in ClassLabel order
    lineage: Mapping[str, str]  # class -> haematopoietic lineage, for the card
    scan: Callable[[Path], Scan]  # the layout: every image with its class (and extra columns)
    card_intro: str  # markdown: what the source is (the card's first paragraph)
    card_origin: str  # markdown: where images and labels come from and under which terms
    image_id_example: str  # an image_id in the source's layout, for the card
    extra_features: Mapping[str, datasets.ClassLabel] = field(default_factory=dict)  # source-only columns
    extra_columns_doc: Mapping[str, str] = field(default_factory=dict)  # column -> meaning, for the card

    def class_id(self, cell_class: str) -> int:
        return self.classes.index(cell_class)

    def info(self) -> datasets.DatasetInfo:
        """The DatasetInfo of a build of this source: its description, schema, homepage, licence, citation."""
        return datasets.DatasetInfo(
            description=self.summary, features=features(self), homepage=self.homepage, license=self.license,
            citation=self.citation,
        )

