"""hema-dataset: build MLL23, Acevedo20, Matek19 or BMC as a Hugging Face dataset (Parquet + card) and publish it.

Subcommands: sample (the offline synthetic sample in the MLL23 layout), build (a raw folder in a
source's own layout to a hub-ready folder), dedup (duplicates in any labelled folder), download (a
source's archives), push (a built folder to the Hub). The top-level hema_dataset.py runs the same
command line.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from hema.base.errors import HemaError
from hema.cli import add_dataclass_arguments, run
from hema.dataset import BUILD_PARAMETERS, BUILDERS, DEFAULT_SOURCE, push_build
from hema.dataset.catalog import decode_entries
from hema.dataset.scan import scan_class_folders
from hema.dedup import group_images
from hema.dedup.report import is_dedup_report, write_dedup_report


def _cmd_sample(args: argparse.Namespace) -> None:
    from hema.synthetic.painter import PAINTED_CLASSES, draw_sample

    manifest = draw_sample(Path(args.output_dir), per_class=args.per_class, seed=args.seed, overwrite=args.overwrite)
    print(
        f"Drew a SYNTHETIC sample of {manifest.per_class * len(PAINTED_CLASSES)} images "
        f"({manifest.per_class} per class, seed {manifest.seed}) in the MLL23 layout: {args.output_dir}"
    )


def _cmd_build(args: argparse.Namespace) -> None:
    parameters = {f.name: getattr(args, f.name) for f in BUILD_PARAMETERS}
    builder = BUILDERS[args.source]
    summary = builder.build_folder(Path(args.data_dir), Path(args.output_dir), num_proc=args.num_proc, **parameters)
    print(summary.describe())


def _cmd_dedup(args: argparse.Namespace) -> None:
    scan = scan_class_folders(Path(args.data_dir), classes=None)  # any layout: folders are labels
    decoded = decode_entries(scan.entries, num_proc=args.num_proc)
    folders = sorted({e.cell_class for e in decoded.entries})
    labels = [folders.index(e.cell_class) for e in decoded.entries]
    grouped = group_images(decoded.sigs, labels=labels, num_proc=args.num_proc)
    found, shared = grouped.duplicates, grouped.fields
    report = Path(args.report)
    if report.exists() and not is_dedup_report(report):
        raise HemaError(f"{report} exists and is not a dedup report: refusing to overwrite it; choose another --report")
    write_dedup_report(found.pairs, shared.pairs, decoded.entries, report)
    first_members = np.unique(found.dup_group, return_index=True)[1]
    kinds = Counter(found.dup_kind[i] for i in first_members)
    cross = [p for p in found.pairs if labels[p.a] != labels[p.b]]
    print(
        f"{len(decoded.entries):,} images: {kinds['exact']} exact and {kinds['near']} near duplicate groups, "
        f"{len(found.pairs)} confirmed pairs ({len(cross)} across labels), {len(shared.pairs)} shared-field "
        f"pairs; report: {args.report}"
    )
    for p in cross:
        print(f"  {decoded.entries[p.a].image_id} <-> {decoded.entries[p.b].image_id} ({p.kind}, score {p.score:.3f})")


def _cmd_download(args: argparse.Namespace) -> None:
    from hema.dataset.sources import acevedo20, mll23

    if args.source == "acevedo20":
        out = acevedo20.download(Path(args.output_dir), base_url=args.mendeley_url)
    else:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
        out = mll23.download(Path(args.output_dir), classes, base_url=args.zenodo_url)
    print(f"{args.source} raw class folders are in {out}; next: "
          f"hema-dataset build --source {args.source} --data-dir {out} --output-dir OUT")


def _cmd_push(args: argparse.Namespace) -> None:
    from hema.base.hub import resolve_token

    url = push_build(Path(args.output_dir), args.repo_id, token=resolve_token(args.token), private=args.private,
                     revision=args.revision)
    print(f"Pushed {args.output_dir} to {url}\n  load it: load_dataset({args.repo_id!r})")


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="draw the offline synthetic sample in the MLL23 raw layout")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--per-class", type=int, default=40, help="images per class (default 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR when it holds a sample drawn earlier")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("build", help="build the hub-ready dataset folder (Parquet + card)")
    p.add_argument("--source", choices=sorted(BUILDERS), default=DEFAULT_SOURCE,
                   help=f"which dataset the raw folder holds, in its own layout (default {DEFAULT_SOURCE})")
    p.add_argument("--data-dir", required=True, help="the raw folder: class folders (mll23, acevedo20), the TCIA "
                   "download holding annotations.dat (matek19), or BM_cytomorphology_data (bmc)")
    p.add_argument("--output-dir", required=True, help="replaced only when the build succeeds")
    add_dataclass_arguments(p, BUILD_PARAMETERS)
    p.add_argument("--num-proc", type=int, default=None, help="decoding processes (default: all cores)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("dedup", help="find exact and near duplicates in any folder of labelled images")
    p.add_argument("--data-dir", required=True, help="one subfolder per label (MLL23, Matek19, Acevedo20...)")
    p.add_argument("--report", default="dedup_report.csv", help="CSV of confirmed pairs (default ./dedup_report.csv)")
    p.add_argument("--num-proc", type=int, default=None, help="decoding processes (default: all cores)")
    p.set_defaults(func=_cmd_dedup)

    p = sub.add_parser("download", help="download a source's archives (MLL23 from Zenodo, Acevedo20 from Mendeley Data) and extract them")
    p.add_argument("--source", choices=["mll23", "acevedo20"], default=DEFAULT_SOURCE,
                   help="Matek19 and BMC are served by TCIA's own tools: download them with those")
    p.add_argument("--output-dir", required=True, help="receives one folder per class (resumable)")
    p.add_argument("--classes", help="mll23: comma-separated subset of the 18 classes (default: all, ~9.1 GB)")
    p.add_argument("--zenodo-url", help="Zenodo base URL (default: $HEMA_ZENODO_URL or https://zenodo.org)")
    p.add_argument("--mendeley-url", help="Mendeley Data base URL (default: $HEMA_MENDELEY_URL or https://data.mendeley.com)")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("push", help="publish a built folder as a Hub dataset repo")
    p.add_argument("--output-dir", required=True, help="a folder made by `build`")
    p.add_argument("--repo-id", required=True, help="NAMESPACE/NAME, e.g. my-org/mll23")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to (created if needed; default main)")
    p.add_argument("--token", help="Hub token (default: $HF_TOKEN, then `hf auth login`); never printed")
    p.set_defaults(func=_cmd_push)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    return run(args.func, args, interrupted="interrupted: nothing was replaced")
