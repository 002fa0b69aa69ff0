"""The Parquet files of a build: split x part, whole files per config, fingerprinted names.

Each split's rows are written per part (hema.dataset.configs), so every config is a union of whole files;
the files are written in parallel, one per task.
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

from hema.base.forked import fork_map
from hema.base.published import SPLITS
from hema.dataset import schema
from hema.dataset.catalog import CatalogRow
from hema.dataset.configs import VIEWS, ConfigSplit, Part, keeps_part, part_name, part_of

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
    rows: Sequence[CatalogRow],
    spool: Path,
    data_dir: Path,
    fingerprint: str,
    features: datasets.Features,
    num_proc: int | None = None,
) -> list[Shard]:
    """Write every row (with its stored bytes from the `spool` folder) into the split x part files
    under data_dir, a file per task in `num_proc` forked processes (all cores by default)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    planned: list[tuple[str, Part, str, list[int]]] = []  # split, part, file name, row indices
    for split in SPLITS:
        parts: dict[Part, list[int]] = {}
        for i, r in enumerate(rows):
            if r.split == split:
                parts.setdefault(part_of(r), []).append(i)
        for part in sorted(parts, reverse=True):  # the deduplicated, harmonised part first
            members = [rows[i] for i in parts[part]]
            chunks = np.array_split(np.array(parts[part]), _file_count(members))
            for k, chunk in enumerate(chunks):
                name = f"{split}-{part_name(part)}-{fingerprint}-{k:05d}-of-{len(chunks):05d}.parquet"
                planned.append((split, part, name, chunk.tolist()))
    written = fork_map(_write_file, (rows, spool, data_dir, features),
                       [(name, members) for _, _, name, members in planned], num_proc)
    return [Shard(split, part, f"{data_dir.name}/{name}", len(members), num_bytes)
            for (split, part, name, members), num_bytes in zip(planned, written)]


def _compression(schema_: pa.Schema) -> dict[str, str]:
    """Snappy, as datasets writes, except on encoded image bytes: it cannot shrink them, only cost time."""
    leaves = []
    for field in schema_:
        children = list(field.type) if pa.types.is_struct(field.type) else []
        leaves += [f"{field.name}.{child.name}" for child in children] or [field.name]
    return {leaf: "NONE" if leaf == "image.bytes" else "SNAPPY" for leaf in leaves}


def _write_file(
    build: tuple[Sequence[CatalogRow], Path, Path, datasets.Features], file: tuple[str, list[int]]
) -> int:
    """Write one Parquet file of `build`'s (rows, spool folder, data folder, features); its Arrow bytes."""
    (rows, spool, data_dir, features), (name, members) = build, file
    schema_ = features.arrow_schema
    num_bytes = 0
    with contextlib.ExitStack() as stack:
        images: dict[str, BinaryIO] = {}
        writer = stack.enter_context(pq.ParquetWriter(data_dir / name, schema_, compression=_compression(schema_)))
        for start in range(0, len(members), ROW_GROUP_ROWS):
            batch = []
            for i in members[start : start + ROW_GROUP_ROWS]:
                r = rows[i]
                spool_file, offset, length = r.stored_at
                if spool_file not in images:
                    images[spool_file] = stack.enter_context(open(spool / spool_file, "rb"))
                images[spool_file].seek(offset)
                batch.append(schema.example(r, images[spool_file].read(length)))  # already as stored
            table = pa.Table.from_pylist(batch, schema=schema_)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            num_bytes += table.nbytes
    return num_bytes
