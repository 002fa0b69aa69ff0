"""Finding the images of a raw folder of class folders (MLL23's and Acevedo20's layout).

Only layout is checked here (no decoding): an unknown class folder stops the build before anything
is written; junk the archives carry (__MACOSX, .DS_Store, Thumbs.db, hidden files) is ignored.
A source whose layout says more (a finer class in the file name, re-annotations in a side file)
fills `harmonised` and `extra` of each entry from it (hema/sources/).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from hema.errors import HemaError
from hema.taxonomy import CELL_CLASSES

logger = logging.getLogger(__name__)

IGNORED_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class ImageEntry:
    image_id: str  # POSIX path relative to the data dir: the published, stable id of the image
    path: Path
    cell_class: str  # the `label`, in the source's taxonomy
    harmonised: str | None = None  # the harmonised label (hema.taxonomy.HARMONISED_CLASSES), if any
    extra: dict[str, int] = field(default_factory=dict)  # source-only ClassLabel columns, -1 where absent


@dataclass(frozen=True)
class Scan:
    entries: list[ImageEntry]  # sorted by image_id
    missing_classes: list[str]  # classes with no folder (they keep their ClassLabel id, 0 images)


def is_ignored(name: str) -> bool:
    return name in IGNORED_NAMES or name.startswith(".") or name.startswith("._")


def scan_class_folders(
    data_dir: Path, classes: Sequence[str] | None = CELL_CLASSES, harmonised: Mapping[str, str] | None = None
) -> Scan:
    """List every candidate image file under DIR/<class>/ (recursively), or raise HemaError.

    `classes` are the folder names allowed (MLL23's by default); None accepts any folder as a label
    (the dedup command on any labelled folder). `harmonised` maps a folder to its harmonised label.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise HemaError(f"data dir {data_dir} does not exist or is not a folder")
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and not is_ignored(p.name))
    unknown = [p.name for p in folders if classes is not None and p.name not in classes]
    if unknown:
        raise HemaError(
            f"{data_dir} holds folder(s) that are not classes of this dataset: {', '.join(unknown)}; "
            f"expected only: {', '.join(classes)}"
        )
    for p in sorted(data_dir.iterdir()):
        if p.is_file() and not is_ignored(p.name):
            logger.warning("skipping %s: not inside a class folder", p.name)
    entries = [
        ImageEntry(image_id=path.relative_to(data_dir).as_posix(), path=path, cell_class=folder.name,
                   harmonised=(harmonised or {}).get(folder.name))
        for folder in folders
        for path in _files_under(folder)
    ]
    if not entries:
        raise HemaError(f"no images found under {data_dir} (expected <class>/<image> files)")
    present = {folder.name for folder in folders}
    missing = [c for c in classes or () if c not in present]
    for c in missing:
        logger.warning("class folder %s is missing: the class keeps its label id with 0 images", c)
    return Scan(entries=sorted(entries, key=lambda e: e.image_id), missing_classes=missing)


def _files_under(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_ignored(d))
        found.extend(Path(root) / f for f in sorted(files) if not is_ignored(f))
    return found
