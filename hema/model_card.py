"""The model card (README.md) written beside a trained cell classifier (its figure: hema.figures).

The card's YAML is made by huggingface_hub's ModelCardData, so the Hub reads the model-index
(test accuracy, macro-F1, balanced accuracy on the dataset, config and split) and the base model;
the body states what the numbers mean on 18 imbalanced classes and what the model is not for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hema.taxonomy import LINEAGE

CONFUSION_FIGURE = "confusion_matrix.png"

#: (metric_type, pretty name, key in the metric's results, metric_args) reported in the model-index.
INDEXED_METRICS = (
    ("accuracy", "Accuracy", "accuracy", None),
    ("f1", "Macro F1", "macro_f1", {"average": "macro"}),
    ("balanced_accuracy", "Balanced accuracy", "balanced_accuracy", None),
)

_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A {{ architecture }} that classifies single peripheral-blood cell images into {{ num_classes }} classes: the
`{{ label_column }}` column of *{{ dataset_pretty }}*{% if dataset_config != "default" %} (config `{{ dataset_config }}`){% endif %}.
{{ origin }}
{% if synthetic %}
> **Trained on the synthetic sample.** The images it saw were drawn procedurally to look like MLL23;
> it demonstrates the pipeline and says nothing about real cells.
{% endif %}

## Results (test split, best validation checkpoint)

| metric | test | validation (best) |
|---|---|---|
| accuracy | {{ "%.4f"|format(test.accuracy) }} | {{ "%.4f"|format(validation.accuracy) }} |
| balanced accuracy | {{ "%.4f"|format(test.balanced_accuracy) }} | {{ "%.4f"|format(validation.balanced_accuracy) }} |
| macro F1 | {{ "%.4f"|format(test.macro_f1) }} | {{ "%.4f"|format(validation.macro_f1) }} |
| weighted F1 | {{ "%.4f"|format(test.weighted_f1) }} | {{ "%.4f"|format(validation.weighted_f1) }} |

MLL23's classes are very unequal in size (33 to 8,606 images), so accuracy mostly reflects the large
classes: macro F1 and balanced accuracy weigh every class the same. The checkpoint kept is the one with the best
validation macro F1 (step {{ best_step }}); the test split was evaluated once, with it.

### Per class (test)

| class | lineage | precision | recall | F1 | support |
|---|---|---|---|---|---|
{% for row in per_class -%}
| {{ row["class"] }} | {{ row.lineage }} | {{ "%.3f"|format(row.precision) }} | {{ "%.3f"|format(row.recall) }} | {{ "%.3f"|format(row.f1) }} | {{ row.support }} |
{% endfor %}
![Confusion matrix on the test split](confusion_matrix.png)

## How to use

```python
from transformers import pipeline

classifier = pipeline("image-classification", model="{{ model_id }}")
classifier("cell.tif")  # [{'label': 'neutrophil_segmented', 'score': ...}, ...]
```

The image processor resizes the whole image to {{ image_size }}x{{ image_size }} pixels (bilinear), rescales to
[0, 1] and normalises with mean {{ image_mean }} and std {{ image_std }}: the transform the evaluation used.
Inputs are expected to be single-cell crops like MLL23's (288x288 pixels, cell centred, Pappenheim stain).

## Intended use and limitations

For research on automated blood-cell morphology only. **Not a medical device, not for diagnosis,
and not for any clinical decision.** The data come from one laboratory, one staining protocol and one
scanner; expect performance to drop on other sites, stains and cameras, and on classes with few
training images. Duplicate images in the source data were kept in one split each, but the splits
are not separated by patient.

## Training

| | |
|---|---|
{% for key, value in hyperparameters.items() -%}
| {{ key }} | {{ value }} |
{% endfor %}
Training time: {{ training_time }} on {{ hardware }}.

Trained with `train_vit.py` of the hema project (Accelerate; images decoded once into a uint8 cache,
augmented on the device: random resized crop, flips and 90-degree rotations, brightness/contrast/stain
jitter).
"""


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
        card_data(inputs), template_str=_TEMPLATE,
        **{k: v for k, v in vars(inputs).items() if k not in {"base_model", "tags", "image_mean", "image_std"}},
        num_classes=len(per_class), per_class=per_class,
        image_mean=[round(float(m), 4) for m in inputs.image_mean],
        image_std=[round(float(s), 4) for s in inputs.image_std],
    )
