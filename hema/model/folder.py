"""The published model folder: what `pipeline("image-classification", model=OUT)` and the Hub read.

OUT gets model.safetensors, config.json (id2label = the dataset's class names), preprocessor_config.json
(a ViTImageProcessor doing the evaluation transform), all_results.json, confusion_matrix.png,
training_args.json and README.md (the card). No pickles: checkpoints (OUT/checkpoints) and TensorBoard
logs (OUT/runs) stay beside it and are never pushed.

The published files are written into a staging folder and swapped in together (hema.base.atomic: one
rename exchange on Linux), the checkpoints and logs carried over: a reader, `pipeline` included,
never sees the weights of one run beside the card or config of another. OUT must be absent, empty
or a folder of hema-train's: anything else is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from hema.base import atomic, figures
from hema.base.errors import HemaError
from hema.base.files import first_names
from hema.model import calibration
from hema.model import card as model_card
from hema.model.checkpoints import CHECKPOINTS, TrainingState
from hema.model.evaluation import SUMMARY_METRICS
from hema.model.inputs import image_processor

PUBLISHED = ("model.safetensors", "config.json", "preprocessor_config.json", "all_results.json",
             model_card.CONFUSION_FIGURE, "training_args.json", "README.md")
#: For push_folder: never upload checkpoints (optimiser pickles), logs, or any pickle.
PUSH_IGNORE = ["checkpoints/**", "runs/**", ".staging/**", "*.bin", "*.pt", "*.pth", "*.pkl"]
RUNS = "runs"  # TensorBoard logs
#: What a run writes into OUT besides PUBLISHED: kept across runs, never pushed.
KEPT = (CHECKPOINTS, RUNS)
_FIGURE_PREFIXES = ("confusion_matrix_", "reliability_")  # per evaluated dataset (write_figures)


def check_output_dir(out: Path) -> None:
    """HemaError unless `out` is absent, empty, or holds only what hema-train writes."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise HemaError(f"output folder {out} is not a folder (a file or a link): refusing to write a model there")
    strangers = [p.name for p in sorted(out.iterdir()) if not _written_by_training(p)] if out.is_dir() else []
    if strangers:
        raise HemaError(f"output folder {out} holds what hema-train does not write ({first_names(strangers)}): "
                        "refusing to replace it; choose an empty or new folder")


def _written_by_training(path: Path) -> bool:
    if path.is_symlink():
        return False
    if path.name in KEPT or path.name == ".staging":  # .staging: left by runs of hema < 0.3
        return path.is_dir()
    return path.is_file() and (path.name in PUBLISHED or (path.name.startswith(_FIGURE_PREFIXES) and path.suffix == ".png"))


def write(out: Path, *, model: nn.Module, state: TrainingState, test: dict, card: model_card.CardInputs,
          training_args: dict) -> None:
    """Write every published file into a staging folder, then swap it in for OUT in one step.

    `card.evaluations` are other datasets' scores (hema.model.evaluation.record); each gets its
    figures. `training_args` is every option as the run used it (training_args.json).
    """
    with _publishing(out) as staging:
        model.save_pretrained(staging)
        image_processor(card.image_size, card.image_mean, card.image_std).save_pretrained(staging)
        results = {"best_step": state.best_step, "train_seconds": round(state.train_seconds, 1),
                   **{f"validation_{k}": v for k, v in state.best_validation.items()},
                   **{f"test_{k}": test[k] for k in SUMMARY_METRICS},
                   "test_ece": test["ece"],
                   "test_per_class": test["per_class"], "test_confusion_matrix": test["confusion_matrix"]}
        (staging / "training_args.json").write_text(json.dumps(training_args, indent=1, default=str))
        figures.confusion_matrix(test["confusion_matrix"], [r["class"] for r in test["per_class"]],
                                 staging / model_card.CONFUSION_FIGURE)
        card = dataclasses.replace(card, evaluations=[{**e, "figures": list(write_figures(staging, e))}
                                                      for e in card.evaluations])
        base = {**model_card.in_domain(card), "dataset": card.dataset.dataset_id, "split": "test", "in_domain": True}
        results["datasets"] = {e["dataset"]: e for e in [base, *card.evaluations]}
        (staging / "all_results.json").write_text(json.dumps(results, indent=1))
        model_card.render(card).save(staging / "README.md")


@contextlib.contextmanager
def _publishing(out: Path) -> Iterator[Path]:
    """A staging folder to fill; it then replaces OUT's published files in one swap (checkpoints and
    logs carried over). OUT is checked to be hema-train's before and again at the swap."""
    check_output_dir(out)
    with atomic.scratch_dir(out) as scratch:
        staging = scratch / atomic.STAGING
        staging.mkdir()
        yield staging
        check_output_dir(out)
        atomic.replace_dir(scratch, out, carry=KEPT)


def figure_names(evaluation: dict) -> tuple[str, str]:
    """The file names of an evaluation's confusion matrix and reliability diagram."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{evaluation['dataset']}-{evaluation['config']}-{evaluation['split']}").strip("-")
    return f"confusion_matrix_{slug}.png", f"reliability_{slug}.png"


def write_figures(folder: Path, evaluation: dict) -> tuple[str, str]:
    """The evaluation's confusion matrix and reliability diagram in `folder`; their file names."""
    confusion, diagram = figure_names(evaluation)
    names = [row["class"] for row in evaluation["per_class"]]
    figures.confusion_matrix(evaluation["confusion_matrix"], names, folder / confusion,
                             title=f"Confusion matrix: {evaluation['dataset_name']} ({evaluation['split']})")
    figures.reliability_diagram(calibration.Reliability(**evaluation["reliability"]), folder / diagram,
                                f"Reliability: {evaluation['dataset_name']} (ECE {evaluation['ece']:.3f})")
    return confusion, diagram


def add_evaluation(folder: Path, record: dict) -> None:
    """Add (or replace) one other dataset's evaluation in a model folder: figures, all_results.json, card.

    The folder's files are linked into a staging folder, the three changed ones written anew there,
    and the whole swapped in: a reader sees the folder before or after, never half updated.
    """
    folder = Path(folder)
    results_path, card_path = folder / "all_results.json", folder / "README.md"
    if not results_path.is_file() or not card_path.is_file():
        raise HemaError(f"{folder} is not a model folder written by hema-train (no all_results.json or README.md)")
    results = json.loads(results_path.read_text())
    datasets = results.get("datasets") or {}
    base = next((e for e in datasets.values() if e.get("in_domain")), None)
    if base is None:
        raise HemaError(f"{results_path} has no in-domain test result to compare with")
    with _publishing(folder) as staging:
        _link_files(folder, staging, rewritten={*figure_names(record), results_path.name, card_path.name})
        record = {**record, "figures": list(write_figures(staging, record))}
        datasets[record["dataset"]] = record
        results["datasets"] = datasets
        others = [e for e in datasets.values() if not e.get("in_domain")]
        base_results = model_card.results_of(base["dataset"], base["dataset_name"], base["config"], "test", base)
        model_card.update_evaluations(card_path, staging / card_path.name, base, others, base_results)
        (staging / results_path.name).write_text(json.dumps(results, indent=1))


def add_benchmark(folder: Path, results: list, section: str) -> None:
    """Put frozen-feature benchmark results (model-index entries, a Markdown section) into a model
    folder's card, swapped in with the folder's other files as add_evaluation does."""
    folder = Path(folder)
    card_path = folder / "README.md"
    if not card_path.is_file():
        raise HemaError(f"{folder} is not a model folder with a card (no README.md)")
    with _publishing(folder) as staging:
        _link_files(folder, staging, rewritten={card_path.name})
        model_card.with_benchmark(card_path, staging / card_path.name, results, section)


def _link_files(folder: Path, staging: Path, rewritten: set[str]) -> None:
    """The folder's files into staging as hard links, but those to be written anew (never write
    through a link into OUT)."""
    for path in folder.iterdir():
        if path.is_file() and path.name not in rewritten:
            atomic.link_or_copy(path, staging / path.name)
