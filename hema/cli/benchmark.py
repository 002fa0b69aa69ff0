"""hema-benchmark: which representation reads blood cells best? Frozen backbones scored by kNN and
linear probes over built or Hub datasets, with protocols that know about duplicates and smear fields.

    hema-benchmark --backbone facebook/dinov2-small --backbone DinoBloom-S.pth \\
        --dataset ORG/mll23 --dataset ORG/acevedo20 [--protocols fixed,few-shot,cv,cross] [--output-dir DIR]

Writes results.json, results.csv, summary.md and scores.png into --output-dir; --push-results
appends the rows to a results dataset on the Hub, --update-card adds them to a model folder's card.
Features are cached (--cache-dir): a second protocol or a rerun loads no model.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in hema.cli.train: idle OpenMP threads must not spin

from hema.base.errors import HemaError  # noqa: E402
from hema.base.published import DEFAULT_CONFIG, LABEL_COLUMNS  # noqa: E402
from hema.cli import run  # noqa: E402


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers of at least 1, got {text!r}")
    return values


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    from hema.benchmark import BACKBONE_FEATURES, PROTOCOLS

    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", action="append", required=True, metavar="REF",
                   help="Hub id or folder of a transformers vision model, or a DINOv2-format checkpoint file "
                        "(DinoBloom's .pth); repeatable")
    p.add_argument("--dataset", action="append", required=True, metavar="REF",
                   help="Hub id or folder built by hema-dataset (any dataset with image and ClassLabel columns); repeatable")
    p.add_argument("--dataset-config", default=DEFAULT_CONFIG, help=" | ".join(LABEL_COLUMNS))
    p.add_argument("--cross-config", default="harmonised",
                   help="the config cross-dataset pairs are fitted and tested on: the same classes (default harmonised)")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help=f"comma-separated, of {', '.join(PROTOCOLS)} (default: all)")
    p.add_argument("--feature", default="cls", choices=BACKBONE_FEATURES, help="class token, mean patch token, or both")
    p.add_argument("--image-size", type=int, help="input size in pixels (default: the backbone's)")
    p.add_argument("--shots", type=_ints, default=(1, 5, 10, 50), help="few-shot images per class (default 1,5,10,50)")
    p.add_argument("--draws", type=int, default=10, help="few-shot draws (default 10)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates of each interval (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--cache-dir", help="feature and image cache (default: $HEMA_CACHE or ~/.cache/hema, /benchmark)")
    p.add_argument("--output-dir", default="benchmark-results", help="results folder (replaced: only one of ours)")
    p.add_argument("--export-features", action="store_true",
                   help="also write each feature set as a plain .npz (X, y, groups, image_id, classes) in OUTPUT_DIR/features")
    p.add_argument("--update-card", metavar="MODEL_FOLDER", help="add the results to this model folder's card (model-index)")
    p.add_argument("--push-results", metavar="REPO_ID", help="append the results to this results dataset on the Hub")
    p.add_argument("--private", action="store_true", help="create the results dataset private")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the `hf auth login` cache); never stored")
    args = p.parse_args(argv)
    for name in ("draws", "folds", "bootstrap", "batch_size", "image_size"):
        value = getattr(args, name)
        if value is not None and value < (2 if name == "folds" else 1):
            p.error(f"--{name.replace('_', '-')} must be at least {2 if name == 'folds' else 1}")
    return args


def benchmark(args: argparse.Namespace) -> None:
    import torch

    from hema.base import atomic, hub
    from hema.base.cache import cache_root
    from hema.benchmark import Plan, results, run_benchmark
    from hema.model import folder as model_folder

    out = Path(args.output_dir)
    check_output_dir(out)
    token = None
    if args.push_results:  # before any work that a rejected token would waste
        token = hub.resolve_token(args.token)
        hub.check_write_access(args.push_results, token, repo_type="dataset")
    if args.update_card:
        if args.update_card not in args.backbone:
            raise HemaError(f"--update-card {args.update_card}: not one of the --backbone models, so it gets no results")
        model_folder.check_output_dir(Path(args.update_card))
    plan = Plan(
        backbones=args.backbone, datasets=args.dataset, config=args.dataset_config, cross_config=args.cross_config,
        feature=args.feature,
        image_size=args.image_size, protocols=tuple(p.strip() for p in args.protocols.split(",") if p.strip()),
        shots=args.shots, draws=args.draws, folds=args.folds, bootstrap=args.bootstrap, seed=args.seed,
        batch_size=args.batch_size, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        cache_dir=Path(args.cache_dir) if args.cache_dir else cache_root() / "benchmark",
    )
    with atomic.scratch_dir(out) as scratch:
        staging = scratch / atomic.STAGING
        staging.mkdir()
        if args.export_features:
            plan = dataclasses.replace(plan, export_dir=staging / results.FEATURES_DIR)
        rows, tally = run_benchmark(plan)
        results.write_files(staging, rows)
        check_output_dir(out)
        atomic.replace_dir(scratch, out)
    print(results.summary(rows))
    print(f"{len(rows)} result rows in {out} ({tally.extracted} feature sets extracted, {tally.cached} read from the cache)")
    if args.update_card:
        entries, section = results.model_index(rows, args.update_card)
        model_folder.add_benchmark(Path(args.update_card), entries, section)
        print(f"added {len(entries)} results to {Path(args.update_card) / 'README.md'}")
    if args.push_results:
        print(f"pushed: {results.push_results(rows, args.push_results, token=token, private=args.private)}")


def check_output_dir(out: Path) -> None:
    """HemaError unless the results folder is absent, empty, or one of ours."""
    from hema.benchmark import results

    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise HemaError(f"output folder {out} is not a folder: refusing to replace it")
    if out.is_dir() and any(out.iterdir()) and not results.is_results_folder(out):
        raise HemaError(f"output folder {out} is not empty and holds no hema-benchmark results: refusing to replace it")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return run(benchmark, parse_args(argv, prog), interrupted="interrupted: the results folder was not replaced")


if __name__ == "__main__":  # python -m hema.cli.benchmark: the notebooks run it from a checkout
    raise SystemExit(main(prog="hema-benchmark"))
