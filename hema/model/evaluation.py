"""Evaluating a classifier: the scores, calibration and field-of-view matching, in one place.

`classification_scores` is every number an evaluation reports (accuracy, balanced accuracy, macro and
weighted F1, per-class scores, the confusion matrix, the expected calibration error), from
predictions however they were made: the training loop's validation, and `evaluate` on any built or
Hub dataset (train_vit.py --eval-dataset, hema-evaluate), which decodes the split's images and by
default brings them to the training data's field of view (a centre crop of the same microns, from
the pixel sizes the builds record, then the model's resize).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np

from hema.base.errors import HemaError
from hema.base.imaging import BadImageError, image_cell_bytes
from hema.model import calibration
from hema.model.data import EvalSplit
from hema.model.inputs import decode_resized
from hema.model.metrics import CELL_CLASSIFICATION

#: Stored in the model's config.json: the width of the training images' field, in microns, and the
#: per-channel mean and std of its training images (uint8 units, as the model sees them).
FIELD_ATTRIBUTE = "hema_field_of_view_um"
COLOUR_ATTRIBUTE = "hema_channel_stats"
#: The headline numbers of an evaluation, as logs, terminals and all_results.json show them.
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
_BATCH = 64


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and std of a set of images (uint8 units): what stain re-standardisation matches."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, images: np.ndarray) -> "ChannelStats":
        """Of N x 3 x H x W uint8 images, in chunks (a memory map of a whole split is fine)."""
        total, sums, squares = 0, np.zeros(3), np.zeros(3)
        for start in range(0, len(images), 256):
            chunk = np.asarray(images[start : start + 256], dtype=np.float64)
            total += chunk.shape[0] * chunk.shape[2] * chunk.shape[3]
            sums += chunk.sum(axis=(0, 2, 3))
            squares += (chunk**2).sum(axis=(0, 2, 3))
        mean = sums / max(total, 1)
        std = np.sqrt(np.maximum(squares / max(total, 1) - mean**2, 1e-6))
        return cls(tuple(float(m) for m in mean), tuple(float(v) for v in std))


def check_classes(trained: tuple[str, ...], split: EvalSplit) -> None:
    if tuple(split.class_names) != tuple(trained):
        raise HemaError(
            f"{split.source} (config {split.config}) has classes {', '.join(split.class_names)}, the model "
            f"{', '.join(trained)}: evaluate on a config with the same classes (the harmonised view gives every "
            "source the same 11)"
        )


def crop_fraction(model_field_um: float | None, split: EvalSplit) -> float:
    """Share of each image's side to keep so that it shows the model's field of view (1: no crop possible)."""
    field = split.field_um
    if model_field_um is None or field is None:
        return 1.0
    return float(min(1.0, model_field_um / field))


@functools.cache
def _metric():
    import evaluate

    return evaluate.load(str(CELL_CLASSIFICATION), keep_in_memory=True)


def classification_scores(predictions: np.ndarray, confidences: np.ndarray, references: np.ndarray,
                          class_names: Sequence[str]) -> dict:
    """The metric module's numbers (accuracy, balanced accuracy, macro and weighted F1, per class,
    confusion matrix) and calibration (ECE, reliability bins) of top-1 `predictions` and their
    `confidences` against `references`."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    report = _metric().compute(predictions=predictions, references=references, class_names=list(class_names))
    bins = calibration.reliability(np.asarray(confidences), predictions == references)
    return {**report, "ece": bins.ece, "reliability": vars(bins)}


def evaluate(
    model, image_size: int, mean, std, split: EvalSplit, *, crop: float = 1.0, device: str = "cpu",
    stain_target: ChannelStats | None = None,
) -> dict:
    """Scores of `model` (a transformers image classifier) on `split`, its images centre-cropped to `crop`.

    With `stain_target` (the training images' ChannelStats), each channel of the split is first
    re-standardised to the training set's mean and std (label-free, from the split's own statistics).
    """
    import torch

    raw = split.rows.cast_column("image", datasets.Image(decode=False))
    labels = np.asarray(raw[split.label_column], dtype=np.int64)
    shift = None
    if stain_target is not None:
        own = ChannelStats.of(_PreparedImages(raw, image_size, crop))
        shift = (np.array(own.mean), np.array(own.std), np.array(stain_target.mean), np.array(stain_target.std))
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    probabilities = []
    model.eval().to(device)
    with torch.no_grad():
        for pixels in _PreparedImages(raw, image_size, crop).batches():
            values = pixels.astype(np.float32)
            if shift is not None:
                own_mean, own_std, target_mean, target_std = (x.reshape(1, 3, 1, 1) for x in shift)
                values = np.clip((values - own_mean) / own_std * target_std + target_mean, 0, 255)
            batch = (torch.from_numpy(values.astype(np.float32)) / 255 - mean_t) / std_t
            logits = model(pixel_values=batch.to(device)).logits.float()
            probabilities.append(torch.softmax(logits, dim=-1).cpu().numpy())
    probs = np.concatenate(probabilities)
    scores = classification_scores(probs.argmax(axis=1), probs.max(axis=1), labels, split.class_names)
    return {**scores, "images": int(len(labels)), "crop_fraction": crop}


def score(
    model, image_size: int, mean, std, split: EvalSplit, *, model_field_um: float | None, match_field: bool = True,
    compare_field: bool = False, stain_target: ChannelStats | None = None, device: str = "cpu",
) -> dict:
    """The evaluation record of `split`: matched to the model's field of view unless told not to, with
    the as-stored score beside it (`compare_field`) and the stain-re-standardised one (`stain_target`)."""
    crop = crop_fraction(model_field_um, split) if match_field else 1.0
    run = functools.partial(evaluate, model, image_size, mean, std, split, device=device)
    scores = run(crop=crop)
    if compare_field and crop < 1.0:
        scores["as_stored"] = _headline(run(crop=1.0))
    if stain_target is not None:
        scores["stain_standardised"] = _headline(run(crop=crop, stain_target=stain_target))
    return record(split, scores, field_matched=crop < 1.0 or (match_field and model_field_um is not None))


def _headline(scores: dict) -> dict:
    return {k: scores[k] for k in (*SUMMARY_METRICS, "ece")}


def record(split: EvalSplit, scores: dict, *, field_matched: bool) -> dict:
    """What all_results.json and the card keep of one evaluation."""
    return {
        "dataset": split.dataset_type, "dataset_name": split.name, "config": split.config, "split": split.split,
        "field_matched": field_matched, **scores,
    }


class _PreparedImages:
    """A split's images as the model sees them (cropped, resized, uint8 N x 3 x S x S), decoded batch by batch."""

    def __init__(self, raw, size: int, crop: float):
        self.raw, self.size, self.crop = raw, size, crop

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start = rows.start or 0
        return np.stack([_prepared(cell, self.size, self.crop, start + i) for i, cell in enumerate(self.raw[rows]["image"])])

    def batches(self):
        for start in range(0, len(self), _BATCH):
            yield self[start : start + _BATCH]


def _prepared(cell: dict, size: int, crop: float, row: int) -> np.ndarray:
    try:
        return decode_resized(image_cell_bytes(cell), size, crop)
    except BadImageError as exc:
        raise HemaError(f"row {row} of the evaluation split is not a decodable image ({exc})") from None
