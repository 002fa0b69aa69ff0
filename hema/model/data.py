"""What training and evaluation read: the splits of a built folder or Hub dataset, checked.

The classes come from a ClassLabel column (`label`, a source's own; `harmonised_label`, the 11 shared
ones), never from a list kept here, so a model's id2label is the dataset's own.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import datasets
import numpy as np
from PIL import Image

from hema.base.errors import HemaError
from hema.base.hub import local_or_hub
from hema.base.imaging import image_cell_bytes
from hema.base.published import SPLITS, DatasetFacts, dataset_facts, label_column as config_label_column


def load_splits(source: str, config: str, label_column: str, image_column: str,
                splits: tuple[str, ...] = SPLITS) -> tuple[dict[str, datasets.Dataset], tuple[str, ...]]:
    """The `splits` (train/validation/test) of a built folder or Hub dataset, and the class names of `label_column`.

    Rows without a class in that column (harmonised_label -1 for the MLL23-only classes, when the
    default config is trained on harmonised labels) are left out.
    """
    where = local_or_hub(source, "dataset")
    try:
        loaded = datasets.load_dataset(str(where), config)
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:  # OSError: unreachable Hub
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise HemaError(f"dataset {source} (config {config}): cannot load it ({first})") from None
    missing = set(splits) - set(loaded)
    if missing:
        raise HemaError(f"dataset {source} has no {', '.join(sorted(missing))} split (found: {', '.join(loaded)})")
    features = loaded[splits[0]].features
    if not isinstance(features.get(label_column), datasets.ClassLabel):
        columns = ", ".join(f"{k} ({type(v).__name__})" for k, v in features.items())
        raise HemaError(f"dataset {source} has no ClassLabel column {label_column!r} to train on "
                        f"(columns: {columns}); choose another label column")
    if not isinstance(features.get(image_column), datasets.Image):
        raise HemaError(f"dataset {source} has no Image column {image_column!r}; choose another image column")
    labelled = {}
    for name in splits:
        split = loaded[name]
        if min(split.unique(label_column), default=0) < 0:
            split = split.filter(lambda y: np.greater_equal(y, 0), input_columns=label_column, batched=True)
        labelled[name] = split
    return labelled, tuple(features[label_column].names)


@dataclass(frozen=True)
class EvalSplit:
    """One split of a dataset to evaluate on, with what the card and the field matching need."""

    facts: DatasetFacts  # what the dataset says about itself: name, id, pixel size
    config: str
    split: str
    label_column: str
    class_names: tuple[str, ...]
    rows: datasets.Dataset  # labelled rows only

    @property
    def source(self) -> str:
        return self.facts.ref

    @property
    def name(self) -> str:
        return self.facts.name

    @property
    def dataset_type(self) -> str:
        return self.facts.dataset_id

    @property
    def field_um(self) -> float | None:
        """The width of this split's images in microns (from its first image), when the pixel size is known."""
        return field_of_view_um(self.facts, self.rows)


def open_split(source: str, config: str, split: str, label_column: str | None = None) -> EvalSplit:
    """A split of a built folder or Hub dataset, checked (HemaError with one line when it cannot be used)."""
    label_column = label_column or config_label_column(config)
    splits, class_names = load_splits(source, config, label_column, "image", splits=(split,))
    return EvalSplit(dataset_facts(source), config, split, label_column, class_names, splits[split])


def field_of_view_um(facts: DatasetFacts, rows: datasets.Dataset) -> float | None:
    """The width in microns of a dataset's images (its recorded pixel size x the first image's width)."""
    if facts.pixel_size_um is None or len(rows) == 0:
        return None
    cell = rows.cast_column("image", datasets.Image(decode=False))[0]["image"]
    with Image.open(io.BytesIO(image_cell_bytes(cell))) as im:
        return float(facts.pixel_size_um * im.size[0])
