"""Publishing a build: catalog a raw folder, then lay out exactly what goes to the Hub, atomically.

OUT ends up holding README.md (the card), data/<split>-<part>-<fingerprint>-NNNNN-of-NNNNN.parquet
(hema.shards), class_distribution.png, dedup_report.csv, build_info.json (provenance: seed,
fractions, versions, counts), conflicting_pairs.png when labels conflict and shared_fields.png when
crops share a smear field.
Everything is written into a locked scratch folder beside OUT first and swapped in only when
complete (hema.atomic), so a failed or killed build leaves the previous OUT untouched, and the next
build removes what a killed one left.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import datasets

from hema import __version__, atomic, card, figures
from hema.build_config import CellImageConfig
from hema.catalog import Catalog, CatalogRow, make_catalog
from hema.dedup import DupPair
from hema.fields import FieldPair
from hema.errors import HemaError
from hema.imaging import decode_rgb
from hema.sample import SampleManifest
from hema.shards import ConfigSplit, layout, write_shards
from hema.source import Source
from hema.splits import SPLITS
from hema.views import DEFAULT_CONFIG

logger = logging.getLogger(__name__)

BUILD_INFO = "build_info.json"
REPORT_NAME = "dedup_report.csv"
DISTRIBUTION_FIGURE = "class_distribution.png"
CONFLICT_FIGURE = "conflicting_pairs.png"
FIELD_FIGURE = "shared_fields.png"


class LabelledImage(Protocol):
    image_id: str
    cell_class: str


@dataclass(frozen=True)
class BuildSummary:
    output_dir: Path
    config_rows: dict[str, dict[str, int]]  # config -> split -> rows
    duplicates: dict[str, int]
    skipped: int
    synthetic: bool

    def describe(self) -> str:
        counts = self.config_rows[DEFAULT_CONFIG]
        splits = " / ".join(f"{s} {counts.get(s, 0):,}" for s in SPLITS)
        kind = "images of the SYNTHETIC sample" if self.synthetic else "images"
        configs = "; ".join(f"{name} {sum(rows.values()):,}" for name, rows in self.config_rows.items())
        lines = [
            f"Built {sum(counts.values()):,} {kind} ({splits}) into {self.output_dir}",
            f"  duplicate groups: {self.duplicates['exact_groups']} exact, {self.duplicates['near_groups']} near, "
            f"{self.duplicates['conflict_groups']} with a label conflict; {self.skipped} file(s) skipped",
            f"  configs (rows): {configs}",
            f"  load it: python -c \"from datasets import load_dataset; print(load_dataset('{self.output_dir}'))\"",
        ]
        return "\n".join(lines)


def check_output_dir(output_dir: Path, data_dir: Path) -> None:
    """Refuse outputs that would overwrite the source or a folder that is not a previous build."""
    out, src = output_dir.resolve(), data_dir.resolve()
    if out == src or src.is_relative_to(out) or out.is_relative_to(src):
        raise HemaError(f"output folder {output_dir} must be outside the data folder {data_dir} and not contain it")
    if out.is_file():
        raise HemaError(f"output folder {output_dir} is a file")
    if out.is_dir() and any(out.iterdir()) and not is_build(out):
        raise HemaError(f"output folder {output_dir} is not empty and not a previous build: refusing to replace it")


def is_build(folder: Path) -> bool:
    return (folder / "README.md").is_file() and (folder / "data").is_dir()


def publish(
    config: CellImageConfig,
    source: Source,
    output_dir: Path,
    *,
    builder_id: str,
    num_proc: int | None = None,
    synthetic: SampleManifest | None = None,
) -> BuildSummary:
    """Catalog `config.data_dir` (in `source`'s layout) with the config's parameters, write shards and card, swap OUT in.

    `builder_id` names the builder in build_info.json.
    """
    output_dir = Path(output_dir)
    info = source.info()
    with atomic.scratch_dir(output_dir) as scratch:
        spool = scratch / "spool"
        spool.mkdir()
        catalog = make_catalog(Path(config.data_dir), config, source, num_proc=num_proc, spool=spool)
        staging = scratch / "out"
        staging.mkdir()
        conflict_figure = CONFLICT_FIGURE if _conflicting_pairs(catalog) else None
        field_figure = FIELD_FIGURE if catalog.field_pairs else None
        drawing = _draw_figures_in_background(catalog, source, staging, synthetic is not None)
        try:
            fingerprint = catalog.fingerprint()
            started = time.perf_counter()
            shards = write_shards(catalog.rows, spool, staging / "data", fingerprint, info.features, num_proc)
            shutil.rmtree(spool)
            configs = layout(shards)
            logger.info("wrote %d rows into %d Parquet files in %.1f s", len(catalog.rows), len(shards),
                        time.perf_counter() - started)
            write_dedup_report(catalog.pairs, catalog.field_pairs, catalog.rows, staging / REPORT_NAME)
            duplicates = card.duplicate_summary(catalog)
            provenance = build_info(catalog, fingerprint, source, builder_id, configs, duplicates, synthetic is not None)
            (staging / BUILD_INFO).write_text(json.dumps(provenance, indent=2) + "\n")
            card.render_card(
                catalog, source, configs, info, duplicates, synthetic=synthetic,
                conflict_figure=conflict_figure, field_figure=field_figure,
            ).save(staging / "README.md")
            drawing.join()
        finally:  # a failed build stops its figure process too
            if drawing.is_alive():
                drawing.terminate()
                drawing.join()
        if drawing.exitcode != 0:
            raise HemaError(f"drawing the build's figures failed (exit status {drawing.exitcode}; see above)")
        atomic.replace_dir(staging, output_dir, scratch)
    return BuildSummary(
        output_dir=output_dir,
        config_rows=provenance["configs"],
        duplicates=duplicates,
        skipped=len(catalog.skipped),
        synthetic=synthetic is not None,
    )


def build_info(
    catalog: Catalog,
    fingerprint: str,
    source: Source,
    builder_id: str,
    configs: dict[str, dict[str, ConfigSplit]],
    duplicates: dict[str, int],
    synthetic: bool,
) -> dict:
    """What a build was made from and with: enough to reproduce it and to say so in a commit."""
    return {
        "source": source.name,
        "pixel_size_um": source.pixel_size_um,
        "builder": builder_id,
        "hema_version": __version__,
        "datasets_version": datasets.__version__,
        "fingerprint": fingerprint,
        "seed": catalog.seed,
        "val_size": catalog.val_size,
        "test_size": catalog.test_size,
        "synthetic": synthetic,
        "images": len(catalog.rows),
        "splits": {s: c.rows for s, c in configs[DEFAULT_CONFIG].items()},
        "configs": {name: {s: c.rows for s, c in splits.items()} for name, splits in configs.items()},
        "duplicates": duplicates,
        "skipped_files": len(catalog.skipped),
    }


def read_build_info(folder: Path) -> dict:
    """The provenance of a built folder, or HemaError when `folder` is not one."""
    path = Path(folder) / BUILD_INFO
    if not is_build(Path(folder)) or not path.is_file():
        raise HemaError(f"{folder} is not a dataset folder made by `hema-dataset build` (no {BUILD_INFO})")
    return json.loads(path.read_text())


def set_repo_id(folder: Path, repo_id: str) -> None:
    """Point the card's loading snippets at `repo_id` (the card is rendered before anyone knows it)."""
    info = read_build_info(folder)
    readme = Path(folder) / "README.md"
    previous = info.get("repo_id", card.placeholder_repo_id(info.get("source", "mll23")))
    text = readme.read_text()
    for quoted in ('"{}"', "hf://datasets/{}/"):  # the snippets name the repo in these two ways only
        text = text.replace(quoted.format(previous), quoted.format(repo_id))
    atomic.write_text(readme, text)
    atomic.write_text(Path(folder) / BUILD_INFO, json.dumps({**info, "repo_id": repo_id}, indent=2) + "\n")


def commit_message(info: dict) -> str:
    splits = " / ".join(f"{s} {n:,}" for s, n in info["splits"].items())
    source = "SYNTHETIC sample" if info["synthetic"] else info["builder"].split()[0]
    return (
        f"{source} build {info['fingerprint']}: {info['images']:,} images ({splits}), split seed {info['seed']}, "
        f"{info['builder']}, hema {info['hema_version']}"
    )


def write_dedup_report(
    pairs: Sequence[DupPair], field_pairs: Sequence[FieldPair], images: Sequence[LabelledImage], path: Path
) -> None:
    """One row per confirmed pair (indices into `images`): ids, labels, kind (exact, near or
    shared_field: two crops of one smear field), score, shift, transform."""
    rows = images
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image_id_a", "label_a", "image_id_b", "label_b", "kind", "score", "shift_y", "shift_x", "transform"])
        for p in pairs:
            a, b = rows[p.a], rows[p.b]
            out.writerow([a.image_id, a.cell_class, b.image_id, b.cell_class, p.kind, f"{p.score:.4f}", *p.shift, p.transform])
        for p in field_pairs:
            a, b = rows[p.a], rows[p.b]
            out.writerow([a.image_id, a.cell_class, b.image_id, b.cell_class, "shared_field", f"{p.score:.4f}",
                          *p.shift, "identity"])


def _conflicting_pairs(catalog: Catalog) -> list[DupPair]:
    return [p for p in catalog.pairs if catalog.rows[p.a].label != catalog.rows[p.b].label]


def _draw_figures_in_background(
    catalog: Catalog, source: Source, folder: Path, synthetic: bool
) -> multiprocessing.process.BaseProcess:
    """Draw the card's figures into `folder` in a forked process, while this one writes Parquet."""
    drawing = multiprocessing.get_context("fork").Process(target=_draw_figures, args=(catalog, source, folder, synthetic))
    drawing.start()
    return drawing


def _draw_figures(catalog: Catalog, source: Source, folder: Path, synthetic: bool) -> None:
    figures.class_distribution(
        catalog.rows, source.classes, folder / DISTRIBUTION_FIGURE,
        f"{source.title} images per class and split" + (" (SYNTHETIC sample)" if synthetic else ""),
    )
    conflicts = _conflicting_pairs(catalog)
    if conflicts:  # side by side with both labels
        figures.image_pairs(_side_by_side(catalog.rows, conflicts[:8]), folder / CONFLICT_FIGURE,
                            f"Duplicates with conflicting labels ({len(conflicts)} pairs)")
    if catalog.field_pairs:  # one pair from each of a few field groups
        by_group = {catalog.rows[p.a].field_group: p for p in reversed(catalog.field_pairs)}
        figures.image_pairs(_side_by_side(catalog.rows, list(by_group.values())[:6]), folder / FIELD_FIGURE,
                            f"Crops of one smear field ({len(catalog.field_pairs)} pairs)")


def _side_by_side(rows: Sequence[CatalogRow], pairs: Sequence[DupPair | FieldPair]) -> list:
    """(image a, image b, "file name and class | file name and class") for figures.image_pairs."""
    return [
        (
            decode_rgb(rows[p.a].path.read_bytes()).rgb,
            decode_rgb(rows[p.b].path.read_bytes()).rgb,
            " | ".join(f"{r.path.name}\n{r.cell_class}" for r in (rows[p.a], rows[p.b])),
        )
        for p in pairs
    ]
