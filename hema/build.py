"""Publishing a build: run a builder, then lay out exactly what goes to the Hub, atomically.

OUT ends up holding README.md (the card), data/<split>-<fingerprint>-NNNNN-of-NNNNN.parquet,
class_distribution.png, dedup_report.csv, build_info.json (provenance: seed, fractions, versions,
counts) and, when there are label conflicts, conflicting_pairs.png.
Everything is written into a hidden sibling folder first and swapped in only when complete, so a
failed or interrupted build leaves the previous OUT untouched.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import datasets

from hema import __version__, card, figures
from hema.catalog import Catalog
from hema.dedup import DupPair
from hema.errors import HemaError
from hema.imaging import decode_rgb
from hema.sample import SampleManifest
from hema.splits import SPLITS

logger = logging.getLogger(__name__)

BUILD_INFO = "build_info.json"
REPORT_NAME = "dedup_report.csv"
DISTRIBUTION_FIGURE = "class_distribution.png"
CONFLICT_FIGURE = "conflicting_pairs.png"


class LabelledImage(Protocol):
    image_id: str
    cell_class: str


@dataclass(frozen=True)
class BuildSummary:
    output_dir: Path
    split_counts: dict[str, int]
    duplicates: dict[str, int]
    skipped: int
    synthetic: bool

    def describe(self) -> str:
        splits = " / ".join(f"{s} {self.split_counts[s]:,}" for s in SPLITS)
        kind = "images of the SYNTHETIC sample" if self.synthetic else "images"
        lines = [
            f"Built {sum(self.split_counts.values()):,} {kind} ({splits}) into {self.output_dir}",
            f"  duplicate groups: {self.duplicates['exact_groups']} exact, {self.duplicates['near_groups']} near, "
            f"{self.duplicates['conflict_groups']} with a label conflict; {self.skipped} file(s) skipped",
            "  configs: default, deduplicated, harmonised",
            f"  load it: python -c \"from datasets import load_dataset; print(load_dataset('{self.output_dir}'))\"",
        ]
        return "\n".join(lines)


def check_output_dir(output_dir: Path, data_dir: Path) -> None:
    """Refuse outputs that would overwrite the source or a folder that is not a previous build."""
    out, src = output_dir.resolve(), data_dir.resolve()
    if out == src or src.is_relative_to(out) or out.is_relative_to(src):
        raise HemaError(f"--output-dir {output_dir} must be outside --data-dir {data_dir} and not contain it")
    if out.is_file():
        raise HemaError(f"--output-dir {output_dir} is a file")
    if out.is_dir() and any(out.iterdir()) and not is_build(out):
        raise HemaError(f"--output-dir {output_dir} is not empty and not a previous build: refusing to replace it")


def is_build(folder: Path) -> bool:
    return (folder / "README.md").is_file() and (folder / "data").is_dir()


def publish(
    builder: datasets.DatasetBuilder,
    output_dir: Path,
    *,
    num_proc: int | None = None,
    max_shard_size: str = "500MB",
    synthetic: SampleManifest | None = None,
) -> BuildSummary:
    """Prepare `builder` (whose `catalog` it fills) as Parquet and lay out OUT for publishing."""
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    # datasets leaves lock files beside the folder it prepares: prepare in a scratch folder, not OUT.
    scratch = Path(tempfile.mkdtemp(prefix=".hema-prepare-", dir=output_dir.parent))
    try:
        staging.mkdir()
        started = time.perf_counter()
        builder.download_and_prepare(
            output_dir=str(scratch / "parquet"),
            file_format="parquet",
            max_shard_size=max_shard_size,
            num_proc=num_proc,
            download_mode=datasets.DownloadMode.FORCE_REDOWNLOAD,
        )
        catalog: Catalog = builder.catalog
        logger.info("prepared %d rows as Parquet in %.1f s", len(catalog.rows), time.perf_counter() - started)
        shards = _move_shards(scratch / "parquet", staging / "data", builder.dataset_name, catalog.fingerprint())
        write_dedup_report(catalog.pairs, catalog.rows, staging / REPORT_NAME)
        info = build_info(catalog, builder, synthetic is not None)
        (staging / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
        figures.class_distribution(
            catalog.rows, staging / DISTRIBUTION_FIGURE,
            "MLL23 images per class and split" + (" (SYNTHETIC sample)" if synthetic else ""),
        )
        conflict_figure = _conflict_figure(catalog, staging / CONFLICT_FIGURE)
        card.render_card(
            catalog, shards, builder.info, synthetic=synthetic, conflict_figure=conflict_figure
        ).save(staging / "README.md")
        _swap_in(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BuildSummary(
        output_dir=output_dir,
        split_counts=info["splits"],
        duplicates=info["duplicates"],
        skipped=len(catalog.skipped),
        synthetic=synthetic is not None,
    )


def build_info(catalog: Catalog, builder: datasets.DatasetBuilder, synthetic: bool) -> dict:
    """What a build was made from and with: enough to reproduce it and to say so in a commit."""
    counts = Counter(r.split for r in catalog.rows)
    return {
        "builder": f"{type(builder).__name__} {builder.info.version}",
        "hema_version": __version__,
        "datasets_version": datasets.__version__,
        "fingerprint": catalog.fingerprint(),
        "seed": catalog.seed,
        "val_size": catalog.val_size,
        "test_size": catalog.test_size,
        "synthetic": synthetic,
        "images": len(catalog.rows),
        "splits": {s: counts[s] for s in SPLITS},
        "duplicates": card.duplicate_summary(catalog),
        "skipped_files": len(catalog.skipped),
    }


def read_build_info(folder: Path) -> dict:
    """The provenance of a built folder, or HemaError when `folder` is not one."""
    path = Path(folder) / BUILD_INFO
    if not is_build(Path(folder)) or not path.is_file():
        raise HemaError(f"{folder} is not a dataset folder made by `hema_dataset.py build` (no {BUILD_INFO})")
    return json.loads(path.read_text())


def set_repo_id(folder: Path, repo_id: str) -> None:
    """Point the card's loading snippets at `repo_id` (the card is rendered before anyone knows it)."""
    info = read_build_info(folder)
    readme = Path(folder) / "README.md"
    text = readme.read_text().replace(f'"{info.get("repo_id", card.PLACEHOLDER_REPO_ID)}"', f'"{repo_id}"')
    _write_atomic(readme, text)
    _write_atomic(Path(folder) / BUILD_INFO, json.dumps({**info, "repo_id": repo_id}, indent=2) + "\n")


def commit_message(info: dict) -> str:
    splits = " / ".join(f"{s} {n:,}" for s, n in info["splits"].items())
    source = "SYNTHETIC sample" if info["synthetic"] else "MLL23"
    return (
        f"{source} build {info['fingerprint']}: {info['images']:,} images ({splits}), split seed {info['seed']}, "
        f"{info['builder']}, hema {info['hema_version']}"
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _move_shards(prepared: Path, data_dir: Path, dataset_name: str, fingerprint: str) -> dict[str, list[str]]:
    """Rename the builder's shards to names that carry the build fingerprint.

    The card lists these names explicitly: with globs, `datasets` may serve an older build of the
    same folder from its cache; a new fingerprint is a new file list, hence a new cache entry.
    """
    data_dir.mkdir(parents=True)
    shards: dict[str, list[str]] = {}
    for split in SPLITS:
        files = sorted(prepared.glob(f"{dataset_name}-{split}.parquet")) or sorted(
            prepared.glob(f"{dataset_name}-{split}-*.parquet")
        )
        if not files:
            raise HemaError(f"the build produced no rows for the {split} split: too few usable images")
        names = []
        for i, f in enumerate(files):
            name = f"{split}-{fingerprint}-{i:05d}-of-{len(files):05d}.parquet"
            f.rename(data_dir / name)
            names.append(f"data/{name}")
        shards[split] = names
    return shards


def write_dedup_report(pairs: Sequence[DupPair], images: Sequence[LabelledImage], path: Path) -> None:
    """One row per confirmed pair (indices into `images`): ids, labels, kind, score, shift, transform."""
    rows = images
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image_id_a", "label_a", "image_id_b", "label_b", "kind", "score", "shift_y", "shift_x", "transform"])
        for p in pairs:
            a, b = rows[p.a], rows[p.b]
            out.writerow([a.image_id, a.cell_class, b.image_id, b.cell_class, p.kind, f"{p.score:.4f}", *p.shift, p.transform])


def _conflict_figure(catalog: Catalog, path: Path) -> str | None:
    """Conflicting pairs side by side with both labels; None when there are none."""
    rows = catalog.rows
    conflicts = [p for p in catalog.pairs if rows[p.a].label != rows[p.b].label]
    if not conflicts:
        return None
    shown = [
        (
            decode_rgb(rows[p.a].path.read_bytes()).rgb,
            decode_rgb(rows[p.b].path.read_bytes()).rgb,
            f"{rows[p.a].image_id} | {rows[p.b].image_id}",
        )
        for p in conflicts[:8]
    ]
    figures.image_pairs(shown, path, f"Duplicates with conflicting labels ({len(conflicts)} pairs)")
    return path.name


def _swap_in(staging: Path, output_dir: Path) -> None:
    if output_dir.exists():
        old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        output_dir.rename(old)
        staging.rename(output_dir)
        shutil.rmtree(old)
    else:
        staging.rename(output_dir)
