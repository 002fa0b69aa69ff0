"""The catalog: every image of a raw folder with its metadata, before any Parquet is written.

Each image is read and decoded exactly once, in parallel (`num_proc` processes); what comes back is a
small record (fingerprints, whether the original bytes can be published). Dedup and splits then work
on these records only, so memory stays bounded by the record size, not by the pixels.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hema import dedup
from hema.errors import HemaError
from hema.imaging import BadImageError, decode_rgb, phash_hex
from hema.scan import ImageEntry, scan_class_folders
from hema.splits import SPLITS, assign_splits, check_fractions
from hema.taxonomy import CELL_CLASSES, class_id, harmonised_id

logger = logging.getLogger(__name__)

CATALOG_VERSION = 1  # bump when what a row means changes: it is part of the build fingerprint


@dataclass(frozen=True)
class SkippedFile:
    image_id: str
    reason: str


@dataclass(frozen=True)
class CatalogRow:
    """One published row, less the pixels."""

    image_id: str
    path: Path
    label: int
    keep_bytes: bool
    pixel_sha256: str
    phash: str
    dup_group: int
    dup_group_size: int
    dup_kind: str
    label_conflict: bool
    dup_representative: bool
    split: str

    @property
    def cell_class(self) -> str:
        return CELL_CLASSES[self.label]

    @property
    def harmonised_label(self) -> int:
        return harmonised_id(self.cell_class)


@dataclass
class Catalog:
    rows: list[CatalogRow]  # sorted by image_id
    pairs: list[dedup.DupPair]  # indices into rows
    skipped: list[SkippedFile] = field(default_factory=list)
    missing_classes: list[str] = field(default_factory=list)
    seed: int = 42
    val_size: float = 0.15
    test_size: float = 0.15

    def split_rows(self, split: str) -> list[CatalogRow]:
        return [r for r in self.rows if r.split == split]

    def fingerprint(self) -> str:
        """Short hash of everything a build publishes: names shards so caches never serve old data."""
        h = hashlib.sha256(f"v{CATALOG_VERSION}|{self.seed}|{self.val_size}|{self.test_size}".encode())
        for r in self.rows:
            h.update(f"|{r.image_id}:{r.label}:{r.pixel_sha256}:{r.dup_group}:{r.split}".encode())
        return h.hexdigest()[:10]


def _decode_one(path: Path) -> tuple[bool, dedup.Fingerprint] | str:
    """Worker: decode one file; a string is the reason it cannot be used."""
    try:
        decoded = decode_rgb(path.read_bytes())
    except BadImageError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    return decoded.keep_bytes, dedup.fingerprint(decoded.rgb)


@dataclass
class DecodedFolder:
    """The usable images of a scan, in scan order, with what their decoding produced."""

    entries: list[ImageEntry]
    keep_bytes: list[bool]
    prints: list[dedup.Fingerprint]
    skipped: list[SkippedFile]


def decode_entries(entries: list[ImageEntry], *, num_proc: int | None, strict: bool) -> DecodedFolder:
    """Decode every entry once (in `num_proc` processes, all cores by default), with a progress bar.

    Unusable files are logged and skipped, or with `strict` raise HemaError naming them.
    """
    paths = [e.path for e in entries]
    procs = max(1, min(num_proc or os.cpu_count() or 1, len(paths)))
    progress = dict(total=len(paths), desc="Decoding images", unit=" images")
    if procs == 1:
        results = [_decode_one(p) for p in tqdm(paths, **progress)]
    else:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            chunk = max(1, min(64, len(paths) // (procs * 8)))
            results = list(tqdm(pool.imap(_decode_one, paths, chunksize=chunk), **progress))
    decoded = DecodedFolder([], [], [], [])
    for entry, result in zip(entries, results):
        if isinstance(result, str):
            decoded.skipped.append(SkippedFile(entry.image_id, result))
        else:
            decoded.entries.append(entry)
            decoded.keep_bytes.append(result[0])
            decoded.prints.append(result[1])
    if decoded.skipped and strict:
        listed = "; ".join(f"{s.image_id}: {s.reason}" for s in decoded.skipped[:5])
        more = f" and {len(decoded.skipped) - 5} more" if len(decoded.skipped) > 5 else ""
        raise HemaError(f"--strict: {len(decoded.skipped)} unusable file(s): {listed}{more}")
    for s in decoded.skipped:
        logger.warning("skipping %s: %s", s.image_id, s.reason)
    return decoded


def make_catalog(
    data_dir: Path,
    *,
    seed: int = 42,
    val_size: float = 0.15,
    test_size: float = 0.15,
    strict: bool = False,
    num_proc: int | None = None,
) -> Catalog:
    """Scan, decode, deduplicate and split a raw MLL23 folder; raise HemaError on bad input."""
    check_fractions(val_size, test_size)
    started = time.perf_counter()
    scan = scan_class_folders(Path(data_dir))
    decoded = decode_entries(scan.entries, num_proc=num_proc, strict=strict)
    if not decoded.entries:
        raise HemaError(f"no decodable images under {data_dir}")
    logger.info("decoded %d images in %.1f s", len(decoded.entries), time.perf_counter() - started)
    started = time.perf_counter()
    labels = np.array([class_id(e.cell_class) for e in decoded.entries])
    found = dedup.find_duplicates(decoded.prints, labels=labels, num_proc=num_proc)
    logger.info("found %d duplicate pairs in %.1f s", len(found.pairs), time.perf_counter() - started)
    groups = found.dup_group
    sizes = np.bincount(groups)
    conflict = found.label_conflict  # per image: its group holds more than one label
    _, first_member = np.unique(groups, return_index=True)
    representative = np.zeros(len(labels), dtype=bool)
    representative[first_member[~conflict[first_member]]] = True
    split = assign_splits(labels, groups, seed=seed, val_size=val_size, test_size=test_size)

    rows = [
        CatalogRow(
            image_id=entry.image_id,
            path=entry.path,
            label=int(labels[i]),
            keep_bytes=keep,
            pixel_sha256=fp.pixel_sha256,
            phash=phash_hex(fp.phash),
            dup_group=int(groups[i]),
            dup_group_size=int(sizes[groups[i]]),
            dup_kind=found.dup_kind[i],
            label_conflict=bool(conflict[i]),
            dup_representative=bool(representative[i]),
            split=SPLITS[split[i]],
        )
        for i, (entry, keep, fp) in enumerate(zip(decoded.entries, decoded.keep_bytes, decoded.prints))
    ]
    return Catalog(
        rows=rows,
        pairs=found.pairs,
        skipped=decoded.skipped,
        missing_classes=scan.missing_classes,
        seed=seed,
        val_size=val_size,
        test_size=test_size,
    )
