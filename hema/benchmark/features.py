"""Frozen features of a dataset split, extracted once and kept on disk.

A feature set is keyed by everything it depends on: the backbone and its revision, the feature
(cls, mean, both), the input size and normalisation, the dataset split's fingerprint (datasets'
hash of its files, config and filter), the label column and the field-of-view crop. A second
protocol, or a second run, reads it back and loads no model; a backbone of another revision gets
another key, and the stored metadata is checked again on reading.

Extraction reads the split's images through the model wing's decode-once cache (each image decoded
and resized once, as the evaluation transform does, shared by every backbone of that input size and
crop), then resizes (when the backbone's size differs), normalises and runs the model on whole
batches on the device: bf16 on a GPU (fp16 where it has no bf16), float32 on the CPU. The
decode size and the precision are part of the key.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hema.base import atomic
from hema.base.errors import HemaError
from hema.base.stages import stage
from hema.benchmark.backbones import Backbone
from hema.model.inputs import decoded_images

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when what a cached feature set means changes


@dataclass
class FeatureSet:
    """Features of a split's rows, with what the protocols need beside them."""

    features: np.ndarray  # float32, rows x D
    labels: np.ndarray  # int64 ClassLabel ids of the label column
    groups: np.ndarray  # int64 field_group of each row (the row itself when the dataset has none)
    image_ids: np.ndarray  # str
    class_names: tuple[str, ...]
    grouped: bool  # groups are field_groups (False: each row is its own group)

    def take(self, rows: np.ndarray) -> FeatureSet:
        return FeatureSet(self.features[rows], self.labels[rows], self.groups[rows], self.image_ids[rows],
                          self.class_names, self.grouped)

    @staticmethod
    def concat(sets: list[FeatureSet]) -> FeatureSet:
        return FeatureSet(*(np.concatenate([getattr(s, k) for s in sets]) for k in ("features", "labels", "groups",
                                                                                    "image_ids")),
                          sets[0].class_names, all(s.grouped for s in sets))


def precision(device: str) -> torch.dtype:
    """What the model computes in: bf16 on a GPU that has it (Ampere on), fp16 on older GPUs (a T4), float32 on the CPU."""
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def cache_key(backbone: Backbone, rows: datasets.Dataset, label_column: str, crop: float, decode_size: int,
              dtype: torch.dtype) -> dict:
    """Everything a split's features depend on (stored with them, checked on reading)."""
    return {"cache_version": CACHE_VERSION, "backbone": backbone.ref, "revision": backbone.revision,
            "feature": backbone.feature, "image_size": backbone.image_size, "image_mean": list(backbone.image_mean),
            "image_std": list(backbone.image_std), "dataset": rows._fingerprint, "rows": len(rows),
            "label_column": label_column, "crop": round(float(crop), 6), "decode_size": decode_size,
            "precision": str(dtype).removeprefix("torch.")}


def split_features(
    backbone: Backbone, rows: datasets.Dataset, label_column: str, *, crop: float, decode_size: int, cache_dir: Path,
    model: Callable[[], nn.Module], device: str, batch_size: int,
) -> tuple[FeatureSet, bool]:
    """The features of `rows` (a labelled split) and whether they came from the cache; `model` is called
    (to load the backbone) only when they did not."""
    dtype = precision(device)
    key = cache_key(backbone, rows, label_column, crop, decode_size, dtype)
    path = cache_dir / "features" / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]}.npz"
    cached = _read(path, key)
    if cached is not None:
        return cached, True
    with stage(f"features of {backbone.name}") as notes:
        images = decoded_images(rows, "image", decode_size, cache_dir / "decoded", crop)
        matrix = extract(model(), images, backbone, device, batch_size, dtype)
        notes.append(f"{len(matrix)} rows, {backbone.feature}")
    grouped = "field_group" in rows.column_names
    names = rows.features[label_column].names
    result = FeatureSet(matrix, np.asarray(rows[label_column], dtype=np.int64),
                        np.asarray(rows["field_group"] if grouped else np.arange(len(rows)), dtype=np.int64),
                        np.asarray(rows["image_id"] if "image_id" in rows.column_names else np.arange(len(rows)).astype(str)),
                        tuple(names), grouped)
    _write(path, key, result)
    return result, False


def extract(model: nn.Module, images: np.ndarray, backbone: Backbone, device: str, batch_size: int,
            dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Features of N x 3 x S x S uint8 images: batches moved to the device, resized to the backbone's
    size when S differs, normalised, through the frozen model (under autocast to `dtype` on a GPU)."""
    model = model.to(device)
    mean = torch.tensor(backbone.image_mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(backbone.image_std, device=device).view(1, 3, 1, 1) * 255
    size = backbone.image_size
    out = []
    autocast = torch.autocast("cuda", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device).float()
            if batch.shape[-1] != size:
                batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            out.append(model((batch - mean) / std).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _read(path: Path, key: dict) -> FeatureSet | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            if meta["key"] != key:  # another backbone revision, dataset or transform: never reused
                return None
            return FeatureSet(stored["features"], stored["labels"], stored["groups"], stored["image_ids"],
                              tuple(meta["class_names"]), bool(meta["grouped"]))
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("ignoring the unreadable feature cache %s (%s)", path, exc)
        return None


def _write(path: Path, key: dict, result: FeatureSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"key": key, "class_names": list(result.class_names), "grouped": result.grouped})
    with atomic.replacing(path) as partial, open(partial, "wb") as f:
        np.savez(f, features=result.features.astype(np.float32), labels=result.labels, groups=result.groups,
                 image_ids=result.image_ids.astype(str), meta=np.array(meta))


def export(path: Path, result: FeatureSet) -> None:
    """The features as a plain .npz anyone can refit with scikit-learn: X, y, groups, image_id, classes."""
    with atomic.replacing(path) as partial, open(partial, "wb") as f:
        np.savez(f, X=result.features, y=result.labels, groups=result.groups, image_id=result.image_ids.astype(str),
                 classes=np.array(result.class_names))


def check_same_classes(train: FeatureSet, test: FeatureSet, what: str) -> None:
    if train.class_names != test.class_names:
        raise HemaError(f"{what}: the classes differ ({', '.join(train.class_names)} against "
                        f"{', '.join(test.class_names)}); use configs with the same classes (the harmonised view)")
