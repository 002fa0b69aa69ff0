"""The model card (README.md) written beside a trained cell classifier.

Rendered from hema/templates/model_card.md.jinja; its confusion-matrix figure is drawn by hema.figures.

The card's YAML is made by huggingface_hub's ModelCardData, so the Hub reads the model-index
(test accuracy, macro-F1, balanced accuracy on the dataset, config and split) and the base model;
the body states what the numbers mean on 18 imbalanced classes and what the model is not for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hema import templates
from hema.errors import HemaError
from hema.taxonomy import LINEAGE

CONFUSION_FIGURE = "confusion_matrix.png"

#: (metric_type, pretty name, key in the metric's results, metric_args) reported in the model-index.
INDEXED_METRICS = (
    ("accuracy", "Accuracy", "accuracy", None),
    ("f1", "Macro F1", "macro_f1", {"average": "macro"}),
    ("balanced_accuracy", "Balanced accuracy", "balanced_accuracy", None),
)


@dataclass
class CardInputs:
    model_name: str
    model_id: str  # what `pipeline(model=...)` takes: the Hub repo id, or the output folder
    architecture: str
    dataset_id: str  # Hub dataset id, or the local folder's name
    dataset_on_hub: bool
    dataset_pretty: str
    dataset_config: str
    label_column: str
    synthetic: bool
    origin: str  # one sentence on where the weights started from
    base_model: str | None
    image_size: int
    image_mean: Sequence[float]
    image_std: Sequence[float]
    test: dict
    validation: dict
    best_step: int
    hyperparameters: dict
    training_time: str
    hardware: str
    tags: list[str] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)  # other datasets (hema.evaluation.record)


def results_of(dataset_type: str, dataset_name: str, config: str, split: str, scores: dict) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="image-classification", task_name="Image Classification",
            dataset_type=dataset_type, dataset_name=dataset_name, dataset_config=config, dataset_split=split,
            metric_type=metric_type, metric_name=name, metric_value=round(scores[key], 4), metric_args=args,
        )
        for metric_type, name, key, args in INDEXED_METRICS
    ]


def eval_results(inputs: CardInputs) -> list[EvalResult]:
    """The model-index: the training dataset's test split, then one result per other dataset evaluated."""
    results = results_of(inputs.dataset_id, inputs.dataset_pretty, inputs.dataset_config, "test", inputs.test)
    for e in inputs.evaluations:
        results += results_of(e["dataset"], e["dataset_name"], e["config"], e["split"], e)
    return results


def card_data(inputs: CardInputs) -> ModelCardData:
    """YAML metadata: model-index results tied to each dataset, its config and split."""
    return ModelCardData(
        model_name=inputs.model_name,
        base_model=inputs.base_model,
        datasets=[inputs.dataset_id] if inputs.dataset_on_hub else None,
        library_name="transformers",
        pipeline_tag="image-classification",
        license="cc-by-4.0",
        tags=["image-classification", "vision", "biology", "medical", "hematology", "blood-cells", *inputs.tags],
        metrics=["accuracy", "f1", "balanced_accuracy"],
        eval_results=eval_results(inputs),
    )


SHIFT_BEGIN, SHIFT_END = "<!-- hema:domain-shift -->", "<!-- /hema:domain-shift -->"


def in_domain(inputs: CardInputs) -> dict:
    """The training dataset's test scores, as the domain-shift section lists them first."""
    return {"dataset_name": inputs.dataset_pretty, "config": inputs.dataset_config, **inputs.test}


def domain_shift_section(base: dict, evaluations: list[dict]) -> str:
    """Markdown between markers: the in-domain test score, each other dataset's score and the drop, calibration."""
    lines = [
        SHIFT_BEGIN,
        "| dataset | config / split | field of view | macro F1 | change | balanced accuracy | ECE "
        "| macro F1 as stored | macro F1 stain-standardised |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
        f"| {base['dataset_name']} (in domain) | {base['config']} / test | as trained | {base['macro_f1']:.4f} | – | "
        f"{base['balanced_accuracy']:.4f} | {_ece(base)} | – | – |",
    ]
    for e in evaluations:
        field = f"matched (centre {e['crop_fraction']:.0%})" if e["field_matched"] else "as stored"
        lines.append(
            f"| {e['dataset_name']} | {e['config']} / {e['split']} | {field} | {e['macro_f1']:.4f} | "
            f"{e['macro_f1'] - base['macro_f1']:+.4f} | {e['balanced_accuracy']:.4f} | {_ece(e)} | "
            f"{_variant(e, 'as_stored')} | {_variant(e, 'stain_standardised')} |"
        )
    lines.append("")
    lines += [f"![Reliability on {e['dataset_name']}]({e['figures'][1]})" for e in evaluations if e.get("figures")]
    lines.append(SHIFT_END)
    return "\n".join(lines)


def update_evaluations(card_path: Path, target: Path, base: dict, evaluations: list[dict],
                       base_results: list[EvalResult]) -> None:
    """Write to `target` the model card `card_path` with its domain-shift section and model-index
    rewritten for `evaluations`."""
    card = ModelCard.load(card_path)
    text = str(card)
    start, end = text.find(SHIFT_BEGIN), text.find(SHIFT_END)
    if start < 0 or end < 0:
        raise HemaError(f"{card_path} has no domain-shift section: it was not written by hema-train")
    card.data.eval_results = base_results + [
        r for e in evaluations for r in results_of(e["dataset"], e["dataset_name"], e["config"], e["split"], e)
    ]
    body = text[text.index("---", 3) + 3 :]
    start, end = body.find(SHIFT_BEGIN), body.find(SHIFT_END) + len(SHIFT_END)
    body = body[:start] + domain_shift_section(base, evaluations) + body[end:]
    Path(target).write_text(f"---\n{card.data.to_yaml()}\n---{body}")


def _variant(evaluation: dict, name: str) -> str:
    return f"{evaluation[name]['macro_f1']:.4f}" if name in evaluation else "–"


def _ece(scores: dict) -> str:
    return f"{scores['ece']:.4f}" if "ece" in scores else "–"


def render(inputs: CardInputs) -> ModelCard:
    per_class = [row | {"lineage": LINEAGE.get(row["class"], "")} for row in inputs.test["per_class"]]
    return ModelCard.from_template(
        card_data(inputs), template_path=str(templates.MODEL_CARD),
        **{k: v for k, v in vars(inputs).items() if k not in {"base_model", "tags", "image_mean", "image_std", "evaluations"}},
        num_classes=len(per_class), per_class=per_class,
        domain_shift=domain_shift_section(in_domain(inputs), inputs.evaluations),
        image_mean=[round(float(m), 4) for m in inputs.image_mean],
        image_std=[round(float(s), 4) for s in inputs.image_std],
    )
