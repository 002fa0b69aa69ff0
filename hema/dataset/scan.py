"""Finding the images of a raw folder of class folders (MLL23's and Acevedo20's layout).

Only layout is checked here (no decoding): an unknown class folder stops the build before anything
is written; junk the archives carry (__MACOSX, .DS_Store, Thumbs.db, hidden files) is ignored.
A source whose layout says more (a finer class in the file name, re-annotations in a side file)
fills `harmonised` and `extra` of each entry from it (hema/dataset/sources/). A folder holding the
synthetic sample's marker says so in `Scan.synthetic` (hema.synthetic.manifest), so that every build
of it is labelled SYNTHETIC.

The folder is hostile until proven otherwise: nothing outside its real path is ever read (a link,
to a file or to a class folder, that resolves outside is skipped), only regular files are kept (a
FIFO or a device would block or never end), and a name that is not valid UTF-8 cannot become a
published image_id. Each such file is skipped with a warning and listed in the card, by a printable
form of its name.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from hema.base.errors import HemaError
from hema.base.files import file_kind, is_inside, printable, real_root
from hema.synthetic.manifest import SampleManifest, read_manifest

logger = logging.getLogger(__name__)

IGNORED_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
OUTSIDE = "a link to a place outside the data folder"


@dataclass(frozen=True)
class ImageEntry:
    image_id: str  # POSIX path relative to the data dir: the published, stable id of the image
    path: Path
    cell_class: str  # the `label`, in the source's taxonomy
    harmonised: str | None = None  # the harmonised label (hema.base.taxonomy.HARMONISED_CLASSES), if any
    extra: dict[str, int] = field(default_factory=dict)  # source-only ClassLabel columns, -1 where absent
    size: int = 0  # bytes of the file


@dataclass(frozen=True)
class SkippedFile:
    image_id: str  # printable: escapes stand for undecodable bytes and control characters
    reason: str


@dataclass(frozen=True)
class Scan:
    entries: list[ImageEntry]  # sorted by image_id
    missing_classes: list[str]  # classes with no folder (they keep their ClassLabel id, 0 images)
    skipped: list[SkippedFile] = field(default_factory=list)  # found but not usable: links out, FIFOs, bad names
    synthetic: SampleManifest | None = None  # the folder is the synthetic sample: its marker

    @property
    def source_bytes(self) -> int:
        return sum(e.size for e in self.entries)


def is_ignored(name: str) -> bool:
    return name in IGNORED_NAMES or name.startswith(".") or name.startswith("._")


def scan_class_folders(
    data_dir: Path,
    classes: Sequence[str] | None,
    harmonised: Mapping[str, str] | None = None,
    *,
    within: Path | None = None,
) -> Scan:
    """List every usable image file under DIR/<class>/ (recursively), or raise HemaError.

    `classes` are the folder names allowed; None accepts any folder as a label (the dedup command on
    any labelled folder). `harmonised` maps a folder to its harmonised label. `within` (default:
    `data_dir`) is the folder nothing may be read from outside of, and where a sample marker is.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise HemaError(f"data dir {printable(str(data_dir))} does not exist or is not a folder")
    root = real_root(within or data_dir)
    if not is_inside(data_dir, root):  # a source's image folder inside `within` that links out of it
        raise HemaError(f"{printable(str(data_dir))} is {OUTSIDE}: nothing outside {printable(str(within))} is read")
    skipped: list[SkippedFile] = []
    folders = []
    for entry in _listing(data_dir):
        reason = _unusable(entry, root)
        if reason:
            _skip(skipped, entry.name, reason)
        elif entry.is_dir():
            folders.append(Path(entry.path))
        else:
            logger.warning("skipping %s: not inside a class folder", printable(entry.name))
    unknown = [p.name for p in folders if classes is not None and p.name not in classes]
    if unknown:
        raise HemaError(
            f"{printable(str(data_dir))} holds folder(s) that are not classes of this dataset: "
            f"{', '.join(map(printable, unknown))}; expected only: {', '.join(classes)}"
        )
    entries = [
        ImageEntry(image_id=image_id, path=path, cell_class=folder.name, harmonised=(harmonised or {}).get(folder.name),
                   size=size)
        for folder in folders
        for image_id, path, size in _files_under(folder, data_dir, root, skipped)
    ]
    if not entries:
        raise HemaError(f"no images found under {printable(str(data_dir))} (expected <class>/<image> files)")
    present = {folder.name for folder in folders}
    missing = [c for c in classes or () if c not in present]
    for c in missing:
        logger.warning("class folder %s is missing: the class keeps its label id with 0 images", c)
    return Scan(entries=sorted(entries, key=lambda e: e.image_id), missing_classes=missing, skipped=skipped,
                synthetic=read_manifest(within or data_dir))


def _listing(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as found:
        return sorted((e for e in found if not is_ignored(e.name)), key=lambda e: e.name)


def _unusable(entry: os.DirEntry, root: Path) -> str | None:
    """Why a folder entry cannot be read into a build, or None: a name that is not UTF-8, a link out
    of `root`, a broken link, or something that is neither a folder nor a regular file."""
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if entry.is_symlink() and not is_inside(entry.path, root):
        return OUTSIDE
    try:
        mode = entry.stat().st_mode  # follows a link (within root)
    except OSError:
        return "a broken link"
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    return f"not a regular file ({file_kind(mode)})"


def _files_under(folder: Path, data_dir: Path, root: Path, skipped: list[SkippedFile]) -> list[tuple[str, Path, int]]:
    """(image_id, path, bytes) of each usable file under `folder`; links to folders inside it are not
    followed (they would list files twice, or loop) but skipped like every unusable entry."""
    found = []
    for entry in _listing(folder):
        image_id = Path(entry.path).relative_to(data_dir).as_posix()
        reason = _unusable(entry, root)
        if reason is None and entry.is_dir() and entry.is_symlink():
            reason = "a link to a folder (not followed)"
        if reason:
            _skip(skipped, image_id, reason)
        elif entry.is_dir():
            found += _files_under(Path(entry.path), data_dir, root, skipped)
        else:
            found.append((image_id, Path(entry.path), entry.stat().st_size))
    return found


def _skip(skipped: list[SkippedFile], name: str, reason: str) -> None:
    shown = printable(name)
    logger.warning("skipping %s: %s", shown, reason)
    skipped.append(SkippedFile(shown, reason))
