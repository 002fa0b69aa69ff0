"""The model card (README.md) written beside a trained cell classifier.

Rendered from templates/model_card.md.jinja out of typed inputs (CardInputs: what was trained on what,
with which recipe, and how it scored), never from option names; its confusion-matrix figure is drawn
by hema.base.figures. The card's YAML is made by huggingface_hub's ModelCardData, so the Hub reads the
model-index (test accuracy, macro-F1, balanced accuracy on each dataset, config and split) and the
base model; the body states what the numbers mean on imbalanced classes and what the model is not for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hema.base.errors import HemaError
from hema.base.published import DatasetFacts
from hema.model.classifier import LoadedModel

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.jinja"
CONFUSION_FIGURE = "confusion_matrix.png"

#: (metric_type, pretty name, key in the metric's results, metric_args) reported in the model-index.
INDEXED_METRICS = (
    ("accuracy", "Accuracy", "accuracy", None),
    ("f1", "Macro F1", "macro_f1", {"average": "macro"}),
    ("balanced_accuracy", "Balanced accuracy", "balanced_accuracy", None),
)


@dataclass(frozen=True)
class TrainingRecipe:
    """The hyperparameters the card shows, in this order, as the run used them."""

    epochs: float
    max_steps: int
    batch_size: int
    total_batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_ratio: float
    gradient_accumulation_steps: int
    max_grad_norm: float
    label_smoothing: float
    class_weighting: str
    balanced_sampler: bool
    mixed_precision: str
    image_size: int
    seed: int
    num_processes: int


@dataclass(frozen=True)
class CardInputs:
    """Everything the card says, typed."""

    model_id: str  # what `pipeline(model=...)` takes: the Hub repo id, or the output folder
    architecture: str
    dataset: DatasetFacts  # the dataset trained on
    dataset_config: str
    label_column: str
    lineage: Mapping[str, str]  # class -> haematopoietic lineage, of the classes trained on
    origin: str  # one sentence on where the weights started from
    base_model: str | None
    image_size: int
    image_mean: Sequence[float]
    image_std: Sequence[float]
    test: dict
    validation: dict
    best_step: int
    recipe: TrainingRecipe
    training_time: str
    hardware: str
    evaluations: list[dict] = field(default_factory=list)  # other datasets (hema.model.evaluation.record)

    @property
    def model_name(self) -> str:
        return self.model_id.rstrip("/").split("/")[-1]


def architecture(config) -> str:
    """The model's architecture in a few words, from its transformers config."""
    if config.model_type == "vit":
        return f"ViT ({config.num_hidden_layers} layers, width {config.hidden_size}, patch {config.patch_size})"
    return config.model_type


def origin(loaded: LoadedModel) -> str:
    """Where the weights started from, in one sentence."""
    if loaded.base_model:
        return f"Fine-tuned from [{loaded.base_model}](https://huggingface.co/{loaded.base_model})."
    if loaded.random_init:
        return "Trained from random initialisation (architecture from a configuration file)."
    return "Fine-tuned from a local checkpoint."


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
    results = results_of(inputs.dataset.dataset_id, inputs.dataset.name, inputs.dataset_config, "test", inputs.test)
    for e in inputs.evaluations:
        results += results_of(e["dataset"], e["dataset_name"], e["config"], e["split"], e)
    return results


def card_data(inputs: CardInputs) -> ModelCardData:
    """YAML metadata: model-index results tied to each dataset, its config and split."""
    return ModelCardData(
        model_name=inputs.model_name,
        base_model=inputs.base_model,
        datasets=[inputs.dataset.dataset_id] if inputs.dataset.on_hub else None,
        library_name="transformers",
        pipeline_tag="image-classification",
        license="cc-by-4.0",
        tags=["image-classification", "vision", "biology", "medical", "hematology", "blood-cells",
              *(["synthetic"] if inputs.dataset.synthetic else [])],
        metrics=["accuracy", "f1", "balanced_accuracy"],
        eval_results=eval_results(inputs),
    )


SHIFT_BEGIN, SHIFT_END = "<!-- hema:domain-shift -->", "<!-- /hema:domain-shift -->"
BENCHMARK_BEGIN, BENCHMARK_END = "<!-- hema:benchmark -->", "<!-- /hema:benchmark -->"
FROZEN = "(frozen features)"  # ends the metric name of every benchmark result in the model-index


def in_domain(inputs: CardInputs) -> dict:
    """The training dataset's test scores, as the domain-shift section lists them first."""
    return {"dataset_name": inputs.dataset.name, "config": inputs.dataset_config, **inputs.test}


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


def with_benchmark(card_path: Path, target: Path, results: list[EvalResult], section: str) -> None:
    """Write to `target` the model card `card_path` with its frozen-feature benchmark results (model-index
    entries and a section) replaced by `results` and `section`."""
    card = ModelCard.load(card_path)
    kept = [r for r in card.data.eval_results or [] if not (r.metric_name or "").endswith(FROZEN)]
    card.data.eval_results = kept + results
    text = str(card)
    body = text[text.index("---", 3) + 3 :]
    start, end = body.find(BENCHMARK_BEGIN), body.find(BENCHMARK_END)
    block = f"{BENCHMARK_BEGIN}\n## Frozen-feature benchmark (hema-benchmark)\n\n{section.split(chr(10), 2)[-1]}\n{BENCHMARK_END}"
    body = body[:start] + block + body[end + len(BENCHMARK_END):] if start >= 0 and end >= 0 else f"{body.rstrip()}\n\n{block}\n"
    Path(target).write_text(f"---\n{card.data.to_yaml()}\n---{body}")


def _variant(evaluation: dict, name: str) -> str:
    return f"{evaluation[name]['macro_f1']:.4f}" if name in evaluation else "–"


def _ece(scores: dict) -> str:
    return f"{scores['ece']:.4f}" if "ece" in scores else "–"


def render(inputs: CardInputs) -> ModelCard:
    per_class = [row | {"lineage": inputs.lineage.get(row["class"], "")} for row in inputs.test["per_class"]]
    recipe = {k: v for k, v in dataclasses.asdict(inputs.recipe).items() if v is not None}
    return ModelCard.from_template(
        card_data(inputs), template_path=str(TEMPLATE),
        model_name=inputs.model_name, model_id=inputs.model_id, architecture=inputs.architecture,
        dataset_pretty=inputs.dataset.name, dataset_config=inputs.dataset_config, label_column=inputs.label_column,
        synthetic=inputs.dataset.synthetic, origin=inputs.origin, image_size=inputs.image_size,
        image_mean=[round(float(m), 4) for m in inputs.image_mean], image_std=[round(float(s), 4) for s in inputs.image_std],
        test=inputs.test, validation=inputs.validation, best_step=inputs.best_step, hyperparameters=recipe,
        training_time=inputs.training_time, hardware=inputs.hardware, num_classes=len(per_class), per_class=per_class,
        domain_shift=domain_shift_section(in_domain(inputs), inputs.evaluations),
    )
