"""The Parquet files of a build: split x part, whole files per config, fingerprinted names.

Each split's rows are written per part (hema.views), so every config is a union of whole files.
A part is cut into files of at most MAX_ROWS_PER_FILE rows and MAX_BYTES_PER_FILE bytes (enough
files for parallel streaming at full size, small enough for the Hub); an empty part gets no file,
since a zero-row Parquet file breaks datasets 5.2. Row groups hold ROW_GROUP_ROWS rows, as datasets
writes image datasets, so the Hub's viewer can page through them.

Names are `data/<split>-<part>-<fingerprint>-NNNNN-of-NNNNN.parquet`: the card lists them
explicitly, and a new build (new fingerprint) is a new file list, which caches never confuse with
an old one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hema import schema
from hema.catalog import CatalogRow
from hema.splits import SPLITS
from hema.views import VIEWS, Part, keeps_part, part_name, part_of

MAX_ROWS_PER_FILE = 1_000
MAX_BYTES_PER_FILE = 500 * 10**6
ROW_GROUP_ROWS = 100


@dataclass(frozen=True)
class Shard:
    split: str
    part: Part
    path: str  # relative to the build folder, e.g. data/train-dedup-harmonised-<fp>-00000-of-00003.parquet
    rows: int
    num_bytes: int  # Arrow bytes, as datasets counts a split's num_bytes


@dataclass(frozen=True)
class ConfigSplit:
    """What one config holds of one split."""

    paths: list[str]
    rows: int
    num_bytes: int


def layout(shards: Sequence[Shard]) -> dict[str, dict[str, ConfigSplit]]:
    """Per config and split: its files, rows and bytes. Splits without rows are left out."""
    out: dict[str, dict[str, ConfigSplit]] = {}
    for view in VIEWS.values():
        out[view.name] = {}
        for split in SPLITS:
            mine = [s for s in shards if s.split == split and keeps_part(view, s.part)]
            if mine:
                out[view.name][split] = ConfigSplit(
                    [s.path for s in mine], sum(s.rows for s in mine), sum(s.num_bytes for s in mine)
                )
    return out


def _file_count(rows: Sequence[CatalogRow]) -> int:
    stored = sum(r.stored_at[2] for r in rows)
    return max(math.ceil(len(rows) / MAX_ROWS_PER_FILE), math.ceil(stored / MAX_BYTES_PER_FILE), 1)


def write_shards(
    rows: Sequence[CatalogRow], spool: Path, data_dir: Path, fingerprint: str, features: datasets.Features
) -> list[Shard]:
    """Write every row (with its stored bytes from the `spool` folder) into the split x part files under data_dir."""
    data_dir.mkdir(parents=True, exist_ok=True)
    schema_ = features.arrow_schema
    shards = []
    with contextlib.ExitStack() as stack:
        images = {p.name: stack.enter_context(open(p, "rb")) for p in spool.glob("*.spool")}
        for split in SPLITS:
            parts: dict[Part, list[CatalogRow]] = {}
            for r in rows:
                if r.split == split:
                    parts.setdefault(part_of(r), []).append(r)
            for part in sorted(parts, reverse=True):  # the deduplicated, harmonised part first
                members = parts[part]
                chunks = np.array_split(np.arange(len(members)), _file_count(members))
                for i, chunk in enumerate(chunks):
                    name = f"{split}-{part_name(part)}-{fingerprint}-{i:05d}-of-{len(chunks):05d}.parquet"
                    num_bytes = _write_file(
                        [members[j] for j in chunk], images, data_dir / name, schema_, features
                    )
                    shards.append(Shard(split, part, f"{data_dir.name}/{name}", len(chunk), num_bytes))
    return shards


def _compression(schema_: pa.Schema) -> dict[str, str]:
    """Snappy, as datasets writes, except on encoded image bytes: it cannot shrink them, only cost time."""
    leaves = []
    for field in schema_:
        children = list(field.type) if pa.types.is_struct(field.type) else []
        leaves += [f"{field.name}.{child.name}" for child in children] or [field.name]
    return {leaf: "NONE" if leaf == "image.bytes" else "SNAPPY" for leaf in leaves}


def _write_file(
    rows: list[CatalogRow], images: dict[str, BinaryIO], path: Path, schema_: pa.Schema, features: datasets.Features
) -> int:
    num_bytes = 0
    with pq.ParquetWriter(path, schema_, compression=_compression(schema_)) as writer:
        for start in range(0, len(rows), ROW_GROUP_ROWS):
            batch = []
            for r in rows[start : start + ROW_GROUP_ROWS]:
                name, offset, length = r.stored_at
                images[name].seek(offset)
                batch.append(features.encode_example(schema.example(r, images[name].read(length))))
            table = pa.Table.from_pylist(batch, schema=schema_)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            num_bytes += table.nbytes
    return num_bytes
