"""The model card (README.md) written beside a trained cell classifier.

Rendered from hema/templates/model_card.md.jinja; its confusion-matrix figure is drawn by hema.figures.

The card's YAML is made by huggingface_hub's ModelCardData, so the Hub reads the model-index
(test accuracy, macro-F1, balanced accuracy on the dataset, config and split) and the base model;
the body states what the numbers mean on 18 imbalanced classes and what the model is not for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hema import templates
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


def card_data(inputs: CardInputs) -> ModelCardData:
    """YAML metadata: model-index results tied to the dataset, its config and the test split."""
    results = [
        EvalResult(
            task_type="image-classification", task_name="Image Classification",
            dataset_type=inputs.dataset_id, dataset_name=inputs.dataset_pretty,
            dataset_config=inputs.dataset_config, dataset_split="test",
            metric_type=metric_type, metric_name=name, metric_value=round(inputs.test[key], 4), metric_args=args,
        )
        for metric_type, name, key, args in INDEXED_METRICS
    ]
    return ModelCardData(
        model_name=inputs.model_name,
        base_model=inputs.base_model,
        datasets=[inputs.dataset_id] if inputs.dataset_on_hub else None,
        library_name="transformers",
        pipeline_tag="image-classification",
        license="cc-by-4.0",
        tags=["image-classification", "vision", "biology", "medical", "hematology", "blood-cells", *inputs.tags],
        metrics=["accuracy", "f1", "balanced_accuracy"],
        eval_results=results,
    )


def render(inputs: CardInputs) -> ModelCard:
    per_class = [row | {"lineage": LINEAGE.get(row["class"], "")} for row in inputs.test["per_class"]]
    return ModelCard.from_template(
        card_data(inputs), template_path=str(templates.MODEL_CARD),
        **{k: v for k, v in vars(inputs).items() if k not in {"base_model", "tags", "image_mean", "image_std"}},
        num_classes=len(per_class), per_class=per_class,
        image_mean=[round(float(m), 4) for m in inputs.image_mean],
        image_std=[round(float(s), 4) for s in inputs.image_std],
    )
