"""What train_vit.py trains on: a built MLL23 folder or Hub dataset, checked, or the demo's sample.

The classes come from a ClassLabel column (`label`, 18 classes; `harmonised_label`, 11), never from a
list kept here, so a model's id2label is the dataset's own.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from hema.cache import cache_root
from hema.errors import HemaError
from hema.splits import SPLITS
from hema.training import looks_like_path


def demo_dataset(per_class: int) -> str:
    """The synthetic sample, drawn and built once into the cache (hema.sample + the MLL23 builder)."""
    from hema.build import not_a_build
    from hema.sources.mll23 import MLL23
    from hema.sample import ensure_sample

    sample = ensure_sample(per_class=per_class, seed=0)
    built = cache_root() / "demo-build" / f"mll23-synthetic-{sample.name}"
    if not_a_build(built):
        print(f"demo: building the synthetic sample {sample} into {built}")
        print(MLL23.build_folder(sample, built).describe())
    else:
        print(f"demo: the synthetic sample's dataset is {built} (load it: datasets.load_dataset({str(built)!r}))")
    return str(built)


def load_splits(source: str, config: str, label_column: str, image_column: str,
                splits: tuple[str, ...] = SPLITS) -> tuple[dict[str, datasets.Dataset], tuple[str, ...]]:
    """The `splits` (train/validation/test) of a built folder or Hub dataset, and the class names of `label_column`.

    Rows without a class in that column (harmonised_label -1 for the MLL23-only classes, when the
    default config is trained on harmonised labels) are left out.
    """
    folder = Path(source).expanduser()
    if folder.exists() and not folder.is_dir():
        raise HemaError(f"dataset {source} is a file, not a dataset folder")
    if not folder.exists() and looks_like_path(source):
        raise HemaError(f"dataset {source}: no such folder")
    try:
        loaded = datasets.load_dataset(str(folder) if folder.is_dir() else source, config)
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
