"""The published model folder: what `pipeline("image-classification", model=OUT)` and the Hub read.

OUT gets model.safetensors, config.json (id2label = the dataset's class names), preprocessor_config.json
(a ViTImageProcessor doing the evaluation transform), all_results.json, confusion_matrix.png,
training_args.json and README.md (the card). No pickles: checkpoints (OUT/checkpoints) and TensorBoard
logs (OUT/runs) stay beside it and are never pushed.

The published files are written into a staging folder and swapped in together (hema.atomic: one
rename exchange on Linux), the checkpoints and logs carried over: a reader, `pipeline` included,
never sees the weights of one run beside the card or config of another. OUT must be absent, empty
or a folder of hema-train's: anything else is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import nn

from hema import atomic, evaluation, figures, model_card
from hema.checkpoints import CHECKPOINTS
from hema.errors import HemaError
from hema.files import printable
from hema.training import LoadedModel

PUBLISHED = ("model.safetensors", "config.json", "preprocessor_config.json", "all_results.json",
             model_card.CONFUSION_FIGURE, "training_args.json", "README.md")
#: For push_folder: never upload checkpoints (optimiser pickles), logs, or any pickle.
PUSH_IGNORE = ["checkpoints/**", "runs/**", ".staging/**", "*.bin", "*.pt", "*.pth", "*.pkl"]
RUNS = "runs"  # TensorBoard logs
#: What a run writes into OUT besides PUBLISHED: kept across runs, never pushed.
KEPT = (CHECKPOINTS, RUNS)
_FIGURE_PREFIXES = ("confusion_matrix_", "reliability_")  # per evaluated dataset (evaluation.write_figures)
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
#: Hyperparameters shown in the card, in this order, from training_args.json.
CARD_HYPERPARAMETERS = ("epochs", "max_steps", "batch_size", "total_batch_size", "learning_rate", "weight_decay",
                        "warmup_ratio", "gradient_accumulation_steps", "max_grad_norm", "label_smoothing",
                        "class_weighting", "balanced_sampler", "mixed_precision", "image_size", "seed",
                        "num_processes")


def check_output_dir(out: Path) -> None:
    """HemaError unless `out` is absent, empty, or holds only what hema-train writes."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise HemaError(f"output folder {out} is not a folder (a file or a link): refusing to write a model there")
    strangers = [p.name for p in sorted(out.iterdir()) if not _written_by_training(p)] if out.is_dir() else []
    if strangers:
        shown = ", ".join(printable(name) for name in strangers[:3]) + (", ..." if len(strangers) > 3 else "")
        raise HemaError(f"output folder {out} holds what hema-train does not write ({shown}): "
                        "refusing to replace it; choose an empty or new folder")


def _written_by_training(path: Path) -> bool:
    if path.is_symlink():
        return False
    if path.name in KEPT or path.name == ".staging":  # .staging: left by runs of hema < 0.3
        return path.is_dir()
    return path.is_file() and (path.name in PUBLISHED or (path.name.startswith(_FIGURE_PREFIXES) and path.suffix == ".png"))


def write(out: Path, *, model: nn.Module, loaded: LoadedModel, run_config: dict, state: dict, test: dict,
          class_names: Sequence[str], hardware: str, dataset_source: str, evaluations: Sequence[dict] = ()) -> None:
    """Write every published file into a staging folder, then swap it in for OUT in one step.

    `evaluations` are other datasets' scores (hema.evaluation.record); each gets its figures.
    """
    from transformers import ViTImageProcessor

    with _publishing(out) as staging:
        model.save_pretrained(staging)
        ViTImageProcessor(
            do_resize=True, size={"height": loaded.image_size, "width": loaded.image_size},
            resample=2, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,  # 2 = PIL bilinear
            image_mean=list(loaded.image_mean), image_std=list(loaded.image_std),
        ).save_pretrained(staging)
        results = {"best_step": state["best_step"], "train_seconds": round(state["train_seconds"], 1),
                   **{f"validation_{k}": v for k, v in state["best_validation"].items()},
                   **{f"test_{k}": test[k] for k in SUMMARY_METRICS},
                   "test_ece": test["ece"],
                   "test_per_class": test["per_class"], "test_confusion_matrix": test["confusion_matrix"]}
        (staging / "training_args.json").write_text(json.dumps(run_config, indent=1, default=str))
        figures.confusion_matrix(test["confusion_matrix"], class_names, staging / model_card.CONFUSION_FIGURE)
        evaluations = [{**e, "figures": list(evaluation.write_figures(staging, e))} for e in evaluations]
        inputs = card_inputs(out, model, loaded, run_config, state, test, hardware, dataset_source, evaluations)
        base = {**model_card.in_domain(inputs), "dataset": inputs.dataset_id, "split": "test", "in_domain": True}
        results["datasets"] = {e["dataset"]: e for e in [base, *evaluations]}
        (staging / "all_results.json").write_text(json.dumps(results, indent=1))
        model_card.render(inputs).save(staging / "README.md")


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


def card_inputs(out: Path, model: nn.Module, loaded: LoadedModel, run_config: dict, state: dict, test: dict,
                hardware: str, dataset_source: str, evaluations: Sequence[dict] = ()) -> model_card.CardInputs:
    """What the card says, from the run; the dataset's own card adds its pretty name and synthetic tag."""
    from huggingface_hub import DatasetCard

    local = Path(dataset_source).is_dir()
    try:
        dataset_card = DatasetCard.load(Path(dataset_source) / "README.md" if local else dataset_source,
                                        repo_type="dataset").data
    except Exception:  # noqa: BLE001 - offline Hub, no card, bad YAML: the card then just says "MLL23"
        dataset_card = None
    tags = list(getattr(dataset_card, "tags", None) or [])
    if loaded.base_model:
        origin = f"Fine-tuned from [{loaded.base_model}](https://huggingface.co/{loaded.base_model})."
    elif loaded.random_init:
        origin = "Trained from random initialisation (architecture from a configuration file)."
    else:
        origin = "Fine-tuned from a local checkpoint."
    config = model.config
    repo_id = run_config.get("push_to_hub")
    return model_card.CardInputs(
        model_name=(repo_id or str(out)).rstrip("/").split("/")[-1],
        model_id=repo_id or str(out),
        architecture=(f"ViT ({config.num_hidden_layers} layers, width {config.hidden_size}, patch {config.patch_size})"
                      if config.model_type == "vit" else config.model_type),
        dataset_id=Path(dataset_source).name if local else dataset_source,
        dataset_on_hub=not local,
        dataset_pretty=getattr(dataset_card, "pretty_name", None) or "MLL23",
        dataset_config=run_config["dataset_config"], label_column=run_config["label_column"],
        synthetic="synthetic" in tags, origin=origin, base_model=loaded.base_model,
        image_size=loaded.image_size, image_mean=loaded.image_mean, image_std=loaded.image_std,
        test=test, validation=state["best_validation"], best_step=state["best_step"],
        hyperparameters={k: run_config[k] for k in CARD_HYPERPARAMETERS if run_config.get(k) is not None},
        training_time=f"{state['train_seconds'] / 60:.1f} minutes", hardware=hardware,
        tags=["synthetic"] if "synthetic" in tags else [],
        evaluations=list(evaluations),
    )


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
        for path in folder.iterdir():
            if path.is_file():
                atomic.link_or_copy(path, staging / path.name)
        for name in (*evaluation.figure_names(record), results_path.name, card_path.name):
            (staging / name).unlink(missing_ok=True)  # written anew below: never through a link into OUT
        record = {**record, "figures": list(evaluation.write_figures(staging, record))}
        datasets[record["dataset"]] = record
        results["datasets"] = datasets
        others = [e for e in datasets.values() if not e.get("in_domain")]
        base_results = model_card.results_of(base["dataset"], base["dataset_name"], base["config"], "test", base)
        model_card.update_evaluations(card_path, staging / card_path.name, base, others, base_results)
        (staging / results_path.name).write_text(json.dumps(results, indent=1))
