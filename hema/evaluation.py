"""Evaluating a classifier on any built or Hub dataset: the scores, calibration and field-of-view matching.

Used after training (train_vit.py --eval-dataset) and on its own (hema-evaluate), so a model trained
elsewhere can be compared the same way. Each evaluation decodes the split's images, by default
brings them to the training data's field of view (a centre crop of the same microns, from the
pixel sizes the builds record, then the model's resize), and reports accuracy, balanced accuracy,
macro and weighted F1, per-class scores, the confusion matrix and the expected calibration error.
"""

from __future__ import annotations

import functools
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hema import calibration, figures
from hema.errors import HemaError
from hema.imaging import BadImageError, decode_rgb
from hema.views import VIEWS

#: Stored in the model's config.json: the width of the training images' field, in microns, and the
#: per-channel mean and std of its training images (uint8 units, as the model sees them).
FIELD_ATTRIBUTE = "hema_field_of_view_um"
COLOUR_ATTRIBUTE = "hema_channel_stats"
_BATCH = 64
_SUMMARY = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "ece")


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


@dataclass(frozen=True)
class EvalSplit:
    """One split of a dataset to evaluate on, with what the card and the field matching need."""

    source: str  # Hub id or built folder, as given
    config: str
    split: str
    label_column: str
    name: str  # the dataset's pretty name
    dataset_type: str  # the model-index's dataset type: the Hub id, or the folder's name
    class_names: tuple[str, ...]
    pixel_size_um: float | None
    rows: object  # datasets.Dataset, labelled rows only

    @property
    def key(self) -> str:
        return f"{self.dataset_type}:{self.config}:{self.split}"

    @property
    def field_um(self) -> float | None:
        """The width of this split's images in microns (from its first image), when the pixel size is known."""
        if self.pixel_size_um is None or len(self.rows) == 0:
            return None
        return float(self.pixel_size_um * _first_width(self.rows))


def dataset_facts(source: str) -> tuple[str, float | None]:
    """(pretty name, pixel size in microns) of a built folder or Hub dataset, from its build info or card."""
    from huggingface_hub import DatasetCard

    folder = Path(source).expanduser()
    if folder.is_dir() and (folder / "build_info.json").is_file():
        info = json.loads((folder / "build_info.json").read_text())
        card = DatasetCard.load(folder / "README.md").data
        return card.pretty_name or folder.name, info.get("pixel_size_um")
    try:
        card = DatasetCard.load(source, repo_type="dataset").data
    except Exception:  # noqa: BLE001 - an offline Hub or a dataset without a card: unknown scale
        return source, None
    return card.pretty_name or source, (card.to_dict().get("hema") or {}).get("pixel_size_um")


def open_split(source: str, config: str, split: str, label_column: str | None = None) -> EvalSplit:
    """A split of a built folder or Hub dataset, checked (HemaError with one line when it cannot be used)."""
    from hema import train_data

    label_column = label_column or (VIEWS[config].label_column if config in VIEWS else "label")
    splits, class_names = train_data.load_splits(source, config, label_column, "image", splits=(split,))
    name, pixel_size = dataset_facts(source)
    folder = Path(source).expanduser()
    return EvalSplit(source, config, split, label_column, name, folder.name if folder.is_dir() else source,
                     class_names, pixel_size, splits[split])


def field_of_view_um(source: str, rows) -> float | None:
    """The width in microns of a dataset's images (its recorded pixel size x the first image's width)."""
    _, pixel_size = dataset_facts(source)
    return None if pixel_size is None or len(rows) == 0 else float(pixel_size * _first_width(rows))


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


def evaluate(
    model, image_size: int, mean, std, split: EvalSplit, *, crop: float = 1.0, device: str = "cpu",
    stain_target: ChannelStats | None = None,
) -> dict:
    """Scores of `model` (a transformers image classifier) on `split`, its images centre-cropped to `crop`.

    With `stain_target` (the training images' ChannelStats), each channel of the split is first
    re-standardised to the training set's mean and std (label-free, from the split's own statistics).
    """
    import evaluate as hf_evaluate
    import torch

    from hema.metrics import CELL_CLASSIFICATION

    raw = split.rows.cast_column("image", _undecoded())
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
    predictions = probs.argmax(axis=1)
    metric = hf_evaluate.load(str(CELL_CLASSIFICATION), keep_in_memory=True)
    scores = metric.compute(predictions=predictions, references=labels, class_names=list(split.class_names))
    bins = calibration.reliability(probs.max(axis=1), predictions == labels)
    return {**scores, "ece": bins.ece, "reliability": vars(bins), "images": int(len(labels)), "crop_fraction": crop}


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
        scores["as_stored"] = {k: v for k, v in run(crop=1.0).items() if k in _SUMMARY}
    if stain_target is not None:
        scores["stain_standardised"] = {k: v for k, v in run(crop=crop, stain_target=stain_target).items() if k in _SUMMARY}
    return record(split, scores, field_matched=crop < 1.0 or (match_field and model_field_um is not None))


def record(split: EvalSplit, scores: dict, *, field_matched: bool) -> dict:
    """What all_results.json and the card keep of one evaluation."""
    return {
        "dataset": split.dataset_type, "dataset_name": split.name, "config": split.config, "split": split.split,
        "field_matched": field_matched, **scores,
    }


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


def _undecoded():
    from datasets import Image as ImageFeature

    return ImageFeature(decode=False)


def _first_width(rows) -> int:
    cell = rows.cast_column("image", _undecoded())[0]["image"]
    data = cell["bytes"] if cell.get("bytes") is not None else Path(cell["path"]).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        return im.size[0]


class _PreparedImages:
    """A split's images as the model sees them (cropped, resized, uint8 N x 3 x S x S), decoded batch by batch."""

    def __init__(self, raw, size: int, crop: float):
        self.raw, self.size, self.crop = raw, size, crop

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start = rows.start or 0
        cells = self.raw[rows]["image"]
        return np.stack([_prepared(cell, self.size, self.crop, start + i) for i, cell in enumerate(cells)])

    def batches(self):
        for start in range(0, len(self), _BATCH):
            yield self[start : start + _BATCH]


def _prepared(cell: dict, size: int, crop: float, row: int) -> np.ndarray:
    """3 x size x size uint8: the centre `crop` of the image, resized as ViTImageProcessor resizes (bilinear)."""
    data = cell["bytes"] if cell.get("bytes") is not None else Path(cell["path"]).read_bytes()
    try:
        rgb = decode_rgb(data).rgb
    except BadImageError as exc:
        raise HemaError(f"row {row} of the evaluation split is not a decodable image ({exc})") from None
    if crop < 1.0:
        h, w = rgb.shape[:2]
        ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
        top, left = (h - ch) // 2, (w - cw) // 2
        rgb = rgb[top : top + ch, left : left + cw]
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized).transpose(2, 0, 1)
