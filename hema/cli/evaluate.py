"""hema-evaluate: score any image classifier (a model folder or Hub id) on a built or Hub dataset split.

    hema-evaluate --model outputs/vit-harmonised --dataset ORG/matek19 --dataset-config harmonised
    hema-evaluate --model outputs/vit-harmonised --dataset built/acevedo20 --dataset-config harmonised --update-card

Prints accuracy, balanced accuracy, macro and weighted F1, ECE and per-class scores. The dataset is
brought to the model's training field of view when both record their scale (--no-match-field: as
stored). With --update-card (a local model folder), the result joins the folder's all_results.json,
model-index and domain-shift table, with its confusion matrix and reliability diagram; with
--push-to-hub the folder is then uploaded.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in hema.cli.train: idle OpenMP threads must not spin

from hema.base.errors import HemaError  # noqa: E402
from hema.base.published import DEFAULT_CONFIG, LABEL_COLUMNS  # noqa: E402
from hema.cli import run  # noqa: E402


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or Hub id of an image-classification model")
    p.add_argument("--dataset", required=True, help="built folder or Hub id of a dataset with the model's classes")
    p.add_argument("--dataset-config", default=DEFAULT_CONFIG, help=" | ".join(LABEL_COLUMNS))
    p.add_argument("--split", default="test")
    p.add_argument("--label-column", help="ClassLabel column (default: the config's)")
    p.add_argument("--no-match-field", dest="match_field", action="store_false",
                   help="evaluate the images as stored, not brought to the model's training field of view")
    p.add_argument("--compare-field", action="store_true", help="also report the images as stored, beside")
    p.add_argument("--stain-standardise", action="store_true",
                   help="also report with each colour channel re-standardised to the training set's (models trained by hema-train)")
    p.add_argument("--update-card", action="store_true", help="add the result to the model folder's card and results")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="with --update-card: upload the model folder there")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the `hf auth login` cache); never stored")
    p.add_argument("--batch-device", default=None, help="torch device (default: cuda when available, else cpu)")
    args = p.parse_args(argv)
    if args.push_to_hub and not args.update_card:
        p.error("--push-to-hub needs --update-card")
    return args


def evaluate_model(args: argparse.Namespace) -> None:
    import torch

    from hema.model import classifier, data, evaluation
    from hema.model import folder as model_folder

    folder = Path(args.model).expanduser()
    if args.update_card and not folder.is_dir():
        raise HemaError(f"--update-card needs a local model folder; {args.model} is not one")
    token = None
    if args.push_to_hub:
        from hema.base import hub

        token = hub.resolve_token(args.token)
        hub.check_write_access(args.push_to_hub, token, repo_type="model")
    loaded = classifier.load_trained(args.model)
    split = data.open_split(args.dataset, args.dataset_config, args.split, args.label_column)
    evaluation.check_classes(loaded.class_names, split)
    colour = getattr(loaded.model.config, evaluation.COLOUR_ATTRIBUTE, None)
    if args.stain_standardise and colour is None:
        raise HemaError(f"--stain-standardise: {args.model} records no training colour statistics (not made by hema-train)")
    device = args.batch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluation.score(
        loaded.model, loaded.image_size, loaded.image_mean, loaded.image_std, split,
        model_field_um=getattr(loaded.model.config, evaluation.FIELD_ATTRIBUTE, None), match_field=args.match_field,
        compare_field=args.compare_field,
        stain_target=evaluation.ChannelStats(**colour) if args.stain_standardise else None, device=device,
    )
    print(describe(result))
    if args.update_card:
        model_folder.add_evaluation(folder, result)
        print(f"added to {folder / 'README.md'} and {folder / 'all_results.json'}")
    if args.push_to_hub:
        from hema.base import hub

        url = hub.push_folder(folder, args.push_to_hub, repo_type="model", token=token,
                              commit_message=f"hema-evaluate: {split.name} macro-F1 {result['macro_f1']:.4f}",
                              ignore_patterns=model_folder.PUSH_IGNORE)
        print(f"pushed: {url}")


def describe(result: dict) -> str:
    """The evaluation as a table for the terminal."""
    lines = [
        f"{result['dataset_name']} ({result['dataset']}, config {result['config']}, split {result['split']}): "
        f"{result['images']:,} images, field of view "
        + (f"matched (centre {result['crop_fraction']:.0%})" if result["field_matched"] else "as stored"),
        "  " + "  ".join(f"{k} {result[k]:.4f}" for k in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "ece")),
        f"  {'class':<34} {'precision':>9} {'recall':>7} {'F1':>6} {'support':>8}",
    ]
    lines += [f"  {r['class']:<34} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['f1']:>6.3f} {r['support']:>8}"
              for r in result["per_class"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return run(evaluate_model, parse_args(argv, prog), interrupted="interrupted: nothing was written")
