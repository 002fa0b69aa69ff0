"""The catalog: every image of a raw folder with its metadata, before any Parquet is written.

Each image is read and decoded exactly once, in parallel (`num_proc` processes, a batch of files per
task, signed together: hema.dedup.signatures); what comes back is a small record (its signature, the
name its stored image gets). When a spool folder is given, the workers append the bytes the dataset
stores for each image (hema.base.imaging.stored_bytes) to spool files there in the same pass, so a
build never decodes an image twice. Dedup and splits then work on the records only, so memory stays
bounded by the record size, not by the pixels.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm.auto import tqdm

from hema.base.errors import HemaError
from hema.base.files import UnusableFile, printable, read_regular_file
from hema.base.forked import fork_imap
from hema.base.imaging import BadImageError, DecodedImage, ImageLimits, decode_rgb, phash_hex, stored_bytes, stored_name
from hema.base.published import SPLITS
from hema.base.stages import stage
from hema.base.taxonomy import harmonised_id
from hema.dataset.parameters import CellImageConfig
from hema.dataset.scan import ImageEntry, Scan, SkippedFile
from hema.dataset.sources.declaration import Source
from hema.dataset.splits import assign_splits
from hema.dedup.duplicates import DupPair
from hema.dedup.groups import ImageGroups, group_images
from hema.dedup.signatures import BATCH, SignatureTable, signature_batch
from hema.dedup.smear_fields import FieldPair
from hema.synthetic.manifest import SampleManifest

logger = logging.getLogger(__name__)

CATALOG_VERSION = 5  # bump when what a row means changes: it is part of the build fingerprint


@dataclass(frozen=True)
class CatalogRow:
    """One published row, less the pixels."""

    image_id: str
    path: Path
    label: int
    cell_class: str  # the label's name
    harmonised_label: int  # -1: no harmonised class
    extra: dict[str, int]  # the source's own ClassLabel columns
    stored_name: str  # file name of the stored image: the source's, or re-encoded as PNG
    stored_at: "StoredAt | None"  # where the stored bytes are in the build's spool folder
    pixel_sha256: str
    phash: str
    dup_group: int
    dup_group_size: int
    dup_kind: str
    label_conflict: bool
    dup_representative: bool
    field_group: int  # connected component of duplicate and shared-field pairs: one smear field
    field_group_size: int
    split: str


@dataclass
class Catalog:
    rows: list[CatalogRow]  # sorted by image_id
    pairs: list[DupPair]  # indices into rows
    field_pairs: list[FieldPair]  # indices into rows
    seed: int
    val_size: float
    test_size: float
    skipped: list[SkippedFile] = field(default_factory=list)
    missing_classes: list[str] = field(default_factory=list)
    synthetic: SampleManifest | None = None  # the raw folder is the synthetic sample: its marker

    def fingerprint(self) -> str:
        """Short hash of everything a build publishes: names shards so caches never serve old data."""
        h = hashlib.sha256(f"v{CATALOG_VERSION}|{self.seed}|{self.val_size}|{self.test_size}".encode())
        for r in self.rows:
            h.update(f"|{r.image_id}:{r.label}:{r.pixel_sha256}:{r.dup_group}:{r.field_group}:{r.split}".encode())
        return h.hexdigest()[:10]


#: Where a row's stored bytes are: (spool file name in the spool folder, offset, length).
StoredAt = tuple[str, int, int]

_spool_files: dict[Path, BinaryIO] = {}  # this process's own spool file, per spool folder


def _spool(folder: Path, data: bytes) -> StoredAt:
    """Append `data` to this process's spool file in `folder` (unbuffered: a worker may be terminated)."""
    out = _spool_files.get(folder)
    if out is None:
        out = _spool_files[folder] = open(folder / f"{os.getpid()}.spool", "ab", buffering=0)
    offset = out.tell()
    out.write(data)
    return Path(out.name).name, offset, len(data)


def read_image(path: Path, limits: ImageLimits) -> tuple[bytes, DecodedImage]:
    """A raw image file's bytes and pixels, within `limits`: regular files only, the byte bound checked
    before reading, the pixel bound before decoding (UnusableFile or BadImageError saying why not)."""
    data = read_regular_file(path, limits.max_bytes)
    return data, decode_rgb(data, limits)


def _decode_batch(
    paths: Sequence[Path], spool: Path | None, limits: ImageLimits
) -> tuple[list[tuple[str, StoredAt | None] | str], SignatureTable]:
    """Worker: decode files (spooling their stored bytes) and sign them together: per file, its stored
    name and where its stored bytes are, or a string: why it cannot be used; and the signatures of
    the usable ones, in order."""
    results: list[tuple[str, StoredAt | None] | str] = []
    images = []
    for path in paths:
        try:
            data, decoded = read_image(path, limits)
        except (UnusableFile, BadImageError) as exc:
            results.append(str(exc))
            continue
        except OSError as exc:
            results.append(f"cannot read file ({exc.strerror or exc})")
            continue
        at = _spool(spool, stored_bytes(data, decoded)) if spool is not None else None
        results.append((stored_name(path.name, decoded), at))
        images.append(decoded.rgb)
    return results, signature_batch(images)


@dataclass
class DecodedFolder:
    """The usable images of a scan, in scan order, with what their decoding produced."""

    entries: list[ImageEntry]
    stored_names: list[str]
    stored_at: list[StoredAt | None]
    sigs: SignatureTable
    skipped: list[SkippedFile]


READ_AHEAD = 256  # files the kernel is asked to start reading before the workers reach them
_RELEASE_EVERY = 256  # batches whose signatures are written between two releases of their pages (~54 MB)


def _read_ahead(path: Path) -> None:
    """Have the kernel read `path` in the background, so no worker waits for the disk (Linux).
    Opened without blocking: a file that became a FIFO since the scan must not stop the build."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return  # the worker reports what is wrong with it
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass  # not a regular file: the worker says so
    finally:
        os.close(fd)


def decode_entries(
    entries: list[ImageEntry], *, num_proc: int | None, spool: Path | None = None, limits: ImageLimits = ImageLimits()
) -> DecodedFolder:
    """Decode every entry once (in `num_proc` processes, all cores by default), with a progress bar.

    With `spool` (a folder), the workers write each usable image's stored bytes into spool files
    there themselves (see `stored_at`): the bytes never pass through this process. A file that is
    over `limits` is skipped unread or undecoded; unusable files are logged and listed in `skipped`.
    """
    paths = [e.path for e in entries]
    batches = [paths[s : s + BATCH] for s in range(0, len(paths), BATCH)]  # a task: signed together
    # the signatures are filled in place (in files of the spool folder when there is one), cut at the end
    decoded = DecodedFolder([], [], [], SignatureTable.allocate(len(paths), spool), [])
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: _spool_files.pop(spool).close() if spool in _spool_files else None)  # in-process
        task = functools.partial(_decode_batch, spool=spool, limits=limits)
        results = stack.enter_context(fork_imap(task, batches, num_proc))
        progress = stack.enter_context(tqdm(total=len(paths), desc="Decoding images", unit=" images"))
        for path in paths[:READ_AHEAD]:
            _read_ahead(path)
        done = 0
        for k, (batch, signed) in enumerate(results, 1):
            for path in paths[done + READ_AHEAD : done + READ_AHEAD + len(batch)]:
                _read_ahead(path)
            decoded.sigs.put(len(decoded.entries), signed)
            if k % _RELEASE_EVERY == 0:
                decoded.sigs.release_pages()  # written: the page cache holds them
            for entry, result in zip(entries[done : done + len(batch)], batch):
                if isinstance(result, str):
                    decoded.skipped.append(SkippedFile(printable(entry.image_id), printable(result)))
                    continue
                name, at = result
                decoded.entries.append(entry)
                decoded.stored_names.append(name)
                decoded.stored_at.append(at)
            done += len(batch)
            progress.update(len(batch))
    decoded.sigs.release_pages()
    decoded.sigs = decoded.sigs.take(slice(0, len(decoded.entries)))
    for s in decoded.skipped:
        logger.warning("skipping %s: %s", s.image_id, s.reason)
    return decoded


def check_strict(skipped: Sequence[SkippedFile]) -> None:
    """--strict: any file found and not used is an error, named (the first five)."""
    if skipped:
        listed = "; ".join(f"{s.image_id}: {s.reason}" for s in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        raise HemaError(f"strict build: {len(skipped)} unusable file(s): {listed}{more}")


def make_catalog(
    scan: Scan, config: CellImageConfig, source: Source, *, num_proc: int | None = None, spool: Path | None = None
) -> Catalog:
    """Decode, deduplicate and split the images of `scan` (of a raw folder in `source`'s layout) with
    `config`'s parameters. Bad input raises HemaError.

    With `spool` (a folder), the stored bytes of every image are written there (CatalogRow.stored_at).
    """
    if config.strict:
        check_strict(scan.skipped)
    with stage("decode") as notes:
        decoded = decode_entries(scan.entries, num_proc=num_proc, spool=spool, limits=config.limits)
        notes.append(f"{len(decoded.entries)} images")
    skipped = scan.skipped + decoded.skipped
    if config.strict:
        check_strict(skipped)
    if not decoded.entries:
        raise HemaError(f"no decodable images under {config.data_dir}")
    labels = np.array([source.class_id(e.cell_class) for e in decoded.entries])
    grouped = group_images(decoded.sigs, labels=labels, num_proc=num_proc)
    with stage("splits"):
        return _catalog(scan, config, decoded, skipped, labels, grouped)


def _catalog(scan: Scan, config: CellImageConfig, decoded: DecodedFolder, skipped: list[SkippedFile],
             labels: np.ndarray, grouped: ImageGroups) -> Catalog:
    """The rows: each decoded image with its groups and its split."""
    found, shared = grouped.duplicates, grouped.fields
    groups = found.dup_group
    sizes = found.group_sizes  # per image
    conflict = found.label_conflict  # per image: its group holds more than one label
    _, first_member = np.unique(groups, return_index=True)
    representative = np.zeros(len(labels), dtype=bool)
    representative[first_member[~conflict[first_member]]] = True
    field_sizes = shared.group_sizes
    split = assign_splits(labels, shared.field_group, seed=config.seed, val_size=config.val_size, test_size=config.test_size,
                          conflict=conflict)

    rows = [
        CatalogRow(
            image_id=entry.image_id,
            path=entry.path,
            label=int(labels[i]),
            cell_class=entry.cell_class,
            harmonised_label=harmonised_id(entry.harmonised),
            extra=entry.extra,
            stored_name=name,
            stored_at=at,
            pixel_sha256=decoded.sigs.pixel_sha256[i].decode(),
            phash=phash_hex(int(decoded.sigs.phash[i])),
            dup_group=int(groups[i]),
            dup_group_size=int(sizes[i]),
            dup_kind=found.dup_kind[i],
            label_conflict=bool(conflict[i]),
            dup_representative=bool(representative[i]),
            field_group=int(shared.field_group[i]),
            field_group_size=int(field_sizes[i]),
            split=SPLITS[split[i]],
        )
        for i, (entry, name, at) in enumerate(zip(decoded.entries, decoded.stored_names, decoded.stored_at))
    ]
    return Catalog(
        rows=rows,
        pairs=found.pairs,
        field_pairs=shared.pairs,
        skipped=skipped,
        missing_classes=scan.missing_classes,
        synthetic=scan.synthetic,
        seed=config.seed,
        val_size=config.val_size,
        test_size=config.test_size,
    )
