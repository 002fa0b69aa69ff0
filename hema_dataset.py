"""MLL23 as a Hugging Face dataset: the `datasets` builder and the command line that publishes it.

MLL23 (Shetab Boushehri et al., Scientific Data 12:1773, 2025) is 41,621 expert-annotated
peripheral-blood single-cell images in 18 classes, distributed as one zip per class on Zenodo
(record 14277609, CC BY 4.0). The builder turns the raw class folders into train/validation/test
splits with duplicate metadata; `build` writes the hub-ready folder (Parquet + dataset card).

    python hema_dataset.py sample --output-dir DIR      # synthetic sample in the MLL23 layout
    python hema_dataset.py build --data-dir DIR --output-dir OUT
    python -c "import datasets; print(datasets.load_dataset('OUT'))"

Used directly as a builder:

    builder = MLL23(data_dir=DIR)            # or config_name="deduplicated" / "harmonised"
    builder.download_and_prepare()
    ds = builder.as_dataset()
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from hema import dedup, schema
from hema.build import (
    BuildSummary,
    check_output_dir,
    commit_message,
    publish,
    read_build_info,
    set_repo_id,
    write_dedup_report,
)
from hema.catalog import CatalogRow, decode_entries, make_catalog
from hema.errors import HemaError
from hema.imaging import decode_rgb, stored_bytes
from hema.sample import read_manifest
from hema.scan import scan_class_folders
from hema.splits import SPLITS, check_fractions
from hema.views import VIEWS

_CITATION = """\
@article{shetabboushehri2025mll23,
  title   = {A large expert-annotated single-cell peripheral blood dataset for hematological disease diagnostics},
  author  = {Shetab Boushehri, Sayedali and Kazeminia, Salome and Gruber, Armin and Matek, Christian and
             Spiekermann, Karsten and Pohlkamp, Christian and Haferlach, Torsten and Marr, Carsten},
  journal = {Scientific Data},
  volume  = {12},
  number  = {1},
  pages   = {1773},
  year    = {2025},
  doi     = {10.1038/s41597-025-06223-x}
}
"""
_HOMEPAGE = "https://doi.org/10.5281/zenodo.14277609"
_LICENSE = "cc-by-4.0"
_DESCRIPTION = (
    "MLL23: 41,621 expert-annotated peripheral-blood single-cell images (288x288 px, Pappenheim "
    "stain, Metafer scanner) in 18 classes from the Munich Leukemia Laboratory, with group-aware "
    "stratified splits and duplicate metadata."
)

FEATURES = schema.FEATURES


def info() -> datasets.DatasetInfo:
    return datasets.DatasetInfo(
        description=_DESCRIPTION, features=FEATURES, homepage=_HOMEPAGE, license=_LICENSE, citation=_CITATION
    )


@dataclass
class MLL23Config(datasets.BuilderConfig):
    """Split parameters are part of the config: another seed is another dataset."""

    seed: int = 42
    val_size: float = 0.15
    test_size: float = 0.15
    strict: bool = False  # unusable files are an error instead of a logged skip


class MLL23(datasets.GeneratorBasedBuilder):
    """MLL23 single-cell images from the raw class folders (`data_dir`)."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = MLL23Config
    BUILDER_CONFIGS = [MLL23Config(name=v.name, description=v.description) for v in VIEWS.values()]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> datasets.DatasetInfo:
        return info()

    def _split_generators(self, dl_manager):
        data_dir = self.config.data_dir or self._download(dl_manager)
        catalog = make_catalog(
            Path(data_dir),
            seed=self.config.seed,
            val_size=self.config.val_size,
            test_size=self.config.test_size,
            strict=self.config.strict,
        )
        view = VIEWS[self.config.name]
        return [
            datasets.SplitGenerator(
                name=split, gen_kwargs={"rows": [r for r in catalog.rows if r.split == split and view.keeps_row(r)]}
            )
            for split in SPLITS
        ]

    @staticmethod
    def _download(dl_manager) -> Path:
        """No data_dir: fetch the class zips from Zenodo into the datasets download cache (resumable)."""
        from hema.download import ZENODO_RECORD, download_mll23

        cache = Path(dl_manager.download_config.cache_dir or datasets.config.DOWNLOADED_DATASETS_PATH)
        return download_mll23(cache / f"mll23_zenodo_{ZENODO_RECORD}")

    def _generate_examples(self, rows: list[CatalogRow]):
        for row in rows:
            try:
                data = row.path.read_bytes()
            except OSError as exc:
                raise HemaError(f"{row.image_id} vanished or became unreadable during the build ({exc.strerror})") from None
            yield row.image_id, schema.example(row, stored_bytes(data, decode_rgb(data)))


def build_dataset(
    data_dir: Path,
    output_dir: Path,
    *,
    seed: int = 42,
    val_size: float = 0.15,
    test_size: float = 0.15,
    num_proc: int | None = None,
    strict: bool = False,
) -> BuildSummary:
    """Build the hub-ready folder OUT from raw class folders; OUT is replaced only on success."""
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    check_fractions(val_size, test_size)
    check_output_dir(output_dir, data_dir)
    config = MLL23Config(data_dir=str(data_dir), seed=seed, val_size=val_size, test_size=test_size, strict=strict)
    return publish(
        config, info(), output_dir, builder_id=f"MLL23 {MLL23.VERSION}", num_proc=num_proc,
        synthetic=read_manifest(data_dir),
    )


# ----------------------------------------------------------------------------- command line


def _cmd_sample(args: argparse.Namespace) -> None:
    from hema.sample import draw_sample

    manifest = draw_sample(Path(args.output_dir), per_class=args.per_class, seed=args.seed, overwrite=args.overwrite)
    print(
        f"Drew a SYNTHETIC sample of {len(manifest.image_ids)} images "
        f"({manifest.per_class} per class, seed {manifest.seed}) in the MLL23 layout: {args.output_dir}"
    )


def _cmd_build(args: argparse.Namespace) -> None:
    summary = build_dataset(
        Path(args.data_dir),
        Path(args.output_dir),
        seed=args.seed,
        val_size=args.val_size,
        test_size=args.test_size,
        num_proc=args.num_proc,
        strict=args.strict,
    )
    print(summary.describe())


def _cmd_dedup(args: argparse.Namespace) -> None:
    scan = scan_class_folders(Path(args.data_dir), classes=None)  # any layout: folders are labels
    decoded = decode_entries(scan.entries, num_proc=args.num_proc, strict=False)
    folders = sorted({e.cell_class for e in decoded.entries})
    labels = [folders.index(e.cell_class) for e in decoded.entries]
    found = dedup.find_duplicates(decoded.prints, labels=labels, num_proc=args.num_proc)
    write_dedup_report(found.pairs, decoded.entries, Path(args.report))
    first_members = np.unique(found.dup_group, return_index=True)[1]
    kinds = Counter(found.dup_kind[i] for i in first_members)
    cross = [p for p in found.pairs if labels[p.a] != labels[p.b]]
    print(
        f"{len(decoded.entries):,} images: {kinds['exact']} exact and {kinds['near']} near duplicate groups, "
        f"{len(found.pairs)} confirmed pairs ({len(cross)} across labels); report: {args.report}"
    )
    for p in cross:
        print(f"  {decoded.entries[p.a].image_id} <-> {decoded.entries[p.b].image_id} ({p.kind}, score {p.score:.3f})")


def _cmd_download(args: argparse.Namespace) -> None:
    from hema.download import download_mll23

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    out = download_mll23(Path(args.output_dir), classes, base_url=args.zenodo_url)
    print(f"MLL23 raw class folders are in {out}; next: python hema_dataset.py build --data-dir {out} --output-dir OUT")


def _cmd_push(args: argparse.Namespace) -> None:
    from hema.hub import push_folder, resolve_token

    folder = Path(args.output_dir)
    info = read_build_info(folder)
    token = resolve_token(args.token)
    set_repo_id(folder, args.repo_id)
    url = push_folder(
        folder, args.repo_id, repo_type="dataset", token=token, private=args.private,
        revision=args.revision, commit_message=commit_message(info),
    )
    print(f"Pushed {folder} to {url}\n  load it: load_dataset({args.repo_id!r})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="draw the offline synthetic sample in the MLL23 raw layout")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--per-class", type=int, default=40, help="images per class (default 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it is not empty")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("build", help="build the hub-ready dataset folder (Parquet + card)")
    p.add_argument("--data-dir", required=True, help="folder of MLL23 class folders")
    p.add_argument("--output-dir", required=True, help="replaced only when the build succeeds")
    p.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    p.add_argument("--val-size", type=float, default=0.15)
    p.add_argument("--test-size", type=float, default=0.15)
    p.add_argument("--num-proc", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--strict", action="store_true", help="unusable image files are an error")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("dedup", help="find exact and near duplicates in any folder of labelled images")
    p.add_argument("--data-dir", required=True, help="one subfolder per label (MLL23, Matek19, Acevedo20...)")
    p.add_argument("--report", default="dedup_report.csv", help="CSV of confirmed pairs (default ./dedup_report.csv)")
    p.add_argument("--num-proc", type=int, default=None, help="decoding processes (default: all cores)")
    p.set_defaults(func=_cmd_dedup)

    p = sub.add_parser("download", help="download the real MLL23 class zips from Zenodo and extract them")
    p.add_argument("--output-dir", required=True, help="receives one folder per class (resumable)")
    p.add_argument("--classes", help="comma-separated subset of the 18 classes (default: all, ~9.1 GB)")
    p.add_argument("--zenodo-url", help="Zenodo base URL (default: $HEMA_ZENODO_URL or https://zenodo.org)")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("push", help="publish a built folder as a Hub dataset repo")
    p.add_argument("--output-dir", required=True, help="a folder made by `build`")
    p.add_argument("--repo-id", required=True, help="NAMESPACE/NAME, e.g. my-org/mll23")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to (created if needed; default main)")
    p.add_argument("--token", help="Hub token (default: $HF_TOKEN, then `hf auth login`); never printed")
    p.set_defaults(func=_cmd_push)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        args.func(args)
    except HemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing was replaced", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
