"""Publishing a build: catalog a raw folder, then lay out exactly what goes to the Hub, atomically.

OUT ends up holding README.md (the card), data/<split>-<part>-<fingerprint>-NNNNN-of-NNNNN.parquet
(hema.dataset.shards), class_distribution.png, dedup_report.csv, build_info.json (provenance: seed,
fractions, versions, counts), conflicting_pairs.png when labels conflict and shared_fields.png when
crops share a smear field.
Everything is written into a locked scratch folder beside OUT first and swapped in only when
complete (hema.base.atomic), so a failed or killed build leaves the previous OUT untouched, and the next
build removes what a killed one left. OUT is replaced only when it is provably a build of this
project (`not_a_build`); anything else that is not empty is refused.

A reader of OUT during a rebuild sees the old build or the new one, each whole: the swap is one
rename exchange (Linux; two renames elsewhere, between which OUT is briefly absent). A reader that
lists the files first and opens them later (load_dataset reads the card, then the Parquet files)
can find the files it listed gone if the swap falls in between: it fails, and a retry reads the new
build; it never gets rows of two builds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets

from hema import __version__
from hema.base import atomic, figures
from hema.base.errors import HemaError
from hema.base.files import first_names, printable
from hema.base.forked import in_background
from hema.base.imaging import ImageLimits
from hema.base.published import BUILD_INFO, CARD, DEFAULT_CONFIG, SPLITS, load_build_info
from hema.base.stages import stage
from hema.dataset import card
from hema.dataset.catalog import Catalog, CatalogRow, make_catalog, read_image
from hema.dataset.configs import ConfigSplit
from hema.dataset.parameters import CellImageConfig
from hema.dataset.scan import Scan
from hema.dataset.shards import layout, write_shards
from hema.dataset.sources.declaration import Source
from hema.dedup.duplicates import DupPair
from hema.dedup.report import write_dedup_report
from hema.dedup.signatures import ROW_BYTES
from hema.dedup.smear_fields import FieldPair

logger = logging.getLogger(__name__)

DATA = "data"
REPORT_NAME = "dedup_report.csv"
DISTRIBUTION_FIGURE = "class_distribution.png"
CONFLICT_FIGURE = "conflicting_pairs.png"
FIELD_FIGURE = "shared_fields.png"
#: Everything a build writes at the top of OUT, beside the folder DATA of Parquet files.
BUILD_FILES = frozenset({CARD, BUILD_INFO, REPORT_NAME, DISTRIBUTION_FIGURE, CONFLICT_FIGURE, FIELD_FIGURE})


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
    check_replaceable(output_dir)


def check_replaceable(output_dir: Path) -> None:
    """HemaError unless `output_dir` is absent, empty, or provably a previous build."""
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise HemaError(f"output folder {output_dir} is not a folder (a file or a link): refusing to replace it")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        why = not_a_build(output_dir)
        if why:
            raise HemaError(f"output folder {output_dir} is not empty and not a previous build ({why}): refusing to replace it")


def not_a_build(folder: Path) -> str | None:
    """Why `folder` is not provably a build of hema-dataset, in a few words; None when it is one:
    its build_info.json says so, and it holds nothing a build does not write."""
    if load_build_info(folder) is None:
        return f"no {BUILD_INFO} that hema-dataset build wrote"
    strangers = [p.name for p in sorted(folder.iterdir()) if p.name not in BUILD_FILES | {DATA}]
    data = folder / DATA
    if data.is_symlink() or not data.is_dir():
        strangers.append(DATA)
    else:
        strangers += [f"{DATA}/{p.name}" for p in sorted(data.iterdir())
                      if p.suffix != ".parquet" or p.is_symlink() or not p.is_file()]
    if strangers:
        return f"it holds what a build does not write: {first_names(strangers)}"
    return None


def publish(
    config: CellImageConfig,
    source: Source,
    output_dir: Path,
    *,
    builder_id: str,
    num_proc: int | None = None,
) -> BuildSummary:
    """Catalog `config.data_dir` (in `source`'s layout) with the config's parameters, write shards and card, swap OUT in.

    `builder_id` names the builder in build_info.json. A write that fails (disk full, read-only file
    system) is one HemaError saying where and, for a full disk, how much room the build needs.
    """
    output_dir = Path(output_dir)
    with stage("scan") as notes:
        scan = source.scan(Path(config.data_dir))
        notes.append(f"{len(scan.entries)} files")
    try:
        return _publish(scan, config, source, output_dir, builder_id, num_proc)
    except OSError as exc:
        raise HemaError(_cannot_write(exc, output_dir, scan)) from None


def _publish(
    scan: Scan, config: CellImageConfig, source: Source, output_dir: Path, builder_id: str, num_proc: int | None
) -> BuildSummary:
    info = source.info()
    with atomic.scratch_dir(output_dir) as scratch:
        spool = scratch / "spool"
        spool.mkdir()
        catalog = make_catalog(scan, config, source, num_proc=num_proc, spool=spool)
        staging = scratch / atomic.STAGING
        staging.mkdir()
        conflict_figure = CONFLICT_FIGURE if _conflicting_pairs(catalog) else None
        field_figure = FIELD_FIGURE if catalog.field_pairs else None
        # The card's figures are drawn in a forked process while this one writes the Parquet files.
        with contextlib.ExitStack() as figures:
            drawn = figures.enter_context(in_background(_draw_figures, catalog, source, staging, config.limits))
            fingerprint = catalog.fingerprint()
            with stage("parquet") as notes:
                shards = write_shards(catalog.rows, spool, staging / DATA, fingerprint, info.features, num_proc)
                shutil.rmtree(spool)
                configs = layout(shards)
                notes.append(f"{len(catalog.rows)} rows, {len(shards)} files")
            with stage("card"):  # the report, build_info.json, the card, and the figures drawn meanwhile
                write_dedup_report(catalog.pairs, catalog.field_pairs, catalog.rows, staging / REPORT_NAME)
                duplicates = card.duplicate_summary(catalog)
                provenance = build_info(catalog, fingerprint, source, builder_id, configs, duplicates)
                (staging / BUILD_INFO).write_text(json.dumps(provenance, indent=2) + "\n")
                card.render_card(catalog, source, configs, info, duplicates, conflict_figure=conflict_figure,
                                 field_figure=field_figure).save(staging / CARD)
                drawn()
                figures.close()  # the figures' process ends here, so its CPU is this stage's
        check_replaceable(output_dir)  # still so: the folder may have changed while we built
        atomic.replace_dir(scratch, output_dir)
    return BuildSummary(
        output_dir=output_dir,
        config_rows=provenance["configs"],
        duplicates=duplicates,
        skipped=len(catalog.skipped),
        synthetic=catalog.synthetic is not None,
    )


def _cannot_write(exc: OSError, output_dir: Path, scan: Scan) -> str:
    """One line for a failed write: where, why, and for a full disk how much room a build takes."""
    where = _existing(output_dir.parent.resolve())
    if exc.errno == errno.ENOSPC:
        # at most: stored images (<= the sources) in a spool, then in Parquet; and the signatures beside the spool
        signatures = ROW_BYTES * len(scan.entries)
        needed = 2 * scan.source_bytes + signatures
        return (f"no space left on the device of {where} while building {output_dir}: a build of these "
                f"{len(scan.entries):,} images needs up to {_size(needed)} free there "
                f"(twice the {_size(scan.source_bytes)} of source files, and {_size(signatures)} "
                f"of signatures); {_size(shutil.disk_usage(where).free)} are free")
    if exc.errno == errno.EROFS:
        return f"cannot build {output_dir}: {where} is on a read-only file system"
    return f"cannot build {output_dir}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def build_info(
    catalog: Catalog,
    fingerprint: str,
    source: Source,
    builder_id: str,
    configs: dict[str, dict[str, ConfigSplit]],
    duplicates: dict[str, int],
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
        "synthetic": catalog.synthetic is not None,
        "images": len(catalog.rows),
        "splits": {s: c.rows for s, c in configs[DEFAULT_CONFIG].items()},
        "configs": {name: {s: c.rows for s, c in splits.items()} for name, splits in configs.items()},
        "duplicates": duplicates,
        "skipped_files": len(catalog.skipped),
    }


def read_build_info(folder: Path) -> dict:
    """The provenance of a built folder, or HemaError when `folder` is not one."""
    why = not_a_build(Path(folder))
    if why:
        raise HemaError(f"{folder} is not a dataset folder made by `hema-dataset build` ({why})")
    return load_build_info(Path(folder))


def push_build(folder: Path, repo_id: str, *, token: str, private: bool = False, revision: str | None = None) -> str:
    """Upload a built folder to the Hub as one commit, its card's loading snippets naming `repo_id`;
    returns the URL. The repo id and token are checked first, and OUT changes only once the Hub
    holds the commit: its card and build_info.json then name the repository too."""
    from hema.base import hub

    folder = Path(folder)
    info = read_build_info(folder)
    hub.check_write_access(repo_id, token, repo_type="dataset")
    readme = card.with_repo_id((folder / CARD).read_text(), info.get("repo_id", card.placeholder_repo_id(info["source"])),
                               repo_id)
    provenance = json.dumps({**info, "repo_id": repo_id}, indent=2) + "\n"
    with atomic.scratch_dir(folder) as scratch:
        view = scratch / atomic.STAGING  # what is uploaded: OUT's files, linked, with the two above rewritten
        _link_tree(folder, view)
        for name, text in ((CARD, readme), (BUILD_INFO, provenance)):
            (view / name).unlink()
            (view / name).write_text(text)
        url = hub.push_folder(view, repo_id, repo_type="dataset", token=token, private=private, revision=revision,
                              commit_message=commit_message(info))
    atomic.write_text(folder / CARD, readme)
    atomic.write_text(folder / BUILD_INFO, provenance)
    return url


def _link_tree(source: Path, target: Path) -> None:
    """`target` holding the files of `source`, hard-linked (atomic.link_or_copy)."""
    for path in sorted(source.rglob("*")):
        linked = target / path.relative_to(source)
        if path.is_dir():
            linked.mkdir(parents=True, exist_ok=True)
        else:
            linked.parent.mkdir(parents=True, exist_ok=True)
            atomic.link_or_copy(path, linked)


def commit_message(info: dict) -> str:
    splits = " / ".join(f"{s} {n:,}" for s, n in info["splits"].items())
    source = "SYNTHETIC sample" if info["synthetic"] else info["builder"].split()[0]
    return (
        f"{source} build {info['fingerprint']}: {info['images']:,} images ({splits}), split seed {info['seed']}, "
        f"{info['builder']}, hema {info['hema_version']}"
    )


def _conflicting_pairs(catalog: Catalog) -> list[DupPair]:
    return [p for p in catalog.pairs if catalog.rows[p.a].label != catalog.rows[p.b].label]


def _draw_figures(catalog: Catalog, source: Source, folder: Path, limits: ImageLimits) -> None:
    figures.class_distribution(
        catalog.rows, source.classes, folder / DISTRIBUTION_FIGURE,
        f"{source.title} images per class and split" + (" (SYNTHETIC sample)" if catalog.synthetic else ""),
    )
    conflicts = _conflicting_pairs(catalog)
    if conflicts:  # side by side with both labels
        figures.image_pairs(_side_by_side(catalog.rows, conflicts[:8], limits), folder / CONFLICT_FIGURE,
                            f"Duplicates with conflicting labels ({len(conflicts)} pairs)")
    if catalog.field_pairs:  # one pair from each of a few field groups
        by_group = {catalog.rows[p.a].field_group: p for p in reversed(catalog.field_pairs)}
        figures.image_pairs(_side_by_side(catalog.rows, list(by_group.values())[:6], limits), folder / FIELD_FIGURE,
                            f"Crops of one smear field ({len(catalog.field_pairs)} pairs)")


def _side_by_side(rows: Sequence[CatalogRow], pairs: Sequence[DupPair | FieldPair], limits: ImageLimits) -> list:
    """(image a, image b, "file name and class | file name and class") for figures.image_pairs."""
    return [
        (
            read_image(rows[p.a].path, limits)[1].rgb,
            read_image(rows[p.b].path, limits)[1].rgb,
            " | ".join(f"{printable(r.path.name)}\n{r.cell_class}" for r in (rows[p.a], rows[p.b])),
        )
        for p in pairs
    ]
