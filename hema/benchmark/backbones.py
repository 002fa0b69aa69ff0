"""Frozen backbones: what turns a batch of cell images into one feature vector each.

- any vision model transformers' AutoModel loads (ViT, DINOv2, CLIP's or SigLIP's vision tower,
  ConvNeXt, Swin, ...) from a Hub id or a folder, hema-train's model folders included (the ViT
  under their head); a folder holding only a config is a randomly initialised baseline (seed 0);
- a DINOv2-format checkpoint file, as DinoBloom is distributed (hema.benchmark.dinov2_weights).
timm models are left out: timm needs torchvision, and no torchvision release matches the torch this
project pins (2.13.0): installing it breaks transformers' imports.

A Backbone is known before any weights are loaded (`describe`): its name, revision (the Hub commit,
or the SHA-256 of local weights), input size, normalisation and feature. The feature cache is keyed
by those, so a cached feature set is read without loading a model, and a cache of another revision
is never read.

Features, as DINOv2's linear evaluation takes them: `cls` (the class token after the final norm, or
the pooled output of a model without one), `mean` (the mean of the patch tokens), `cls+mean` (both).
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hema.base.cache import cache_root
from hema.base.errors import HemaError
from hema.base.hub import local_or_hub
from hema.benchmark import dinov2_weights

FEATURES = ("cls", "mean", "cls+mean")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # DinoBloom's normalisation
DEFAULT_SIZE = 224
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
#: Models whose class token (after the final norm) is the first hidden state, and their prefix tokens.
_CLASS_TOKEN_MODELS = {"vit": 1, "deit": 2, "beit": 1, "data2vec-vision": 1, "dinov2": 1, "vit_mae": 1, "vit_msn": 1}


@dataclass(frozen=True)
class Backbone:
    ref: str  # as given: a Hub id, a model folder, a DINOv2-format checkpoint file
    name: str
    revision: str  # the Hub commit, or "sha256:..." of the local weights (or of the config, random init)
    feature: str  # one of FEATURES
    image_size: int
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    checkpoint: bool  # a DINOv2-format checkpoint file, not a transformers model


def describe(ref: str, feature: str = "cls", image_size: int | None = None) -> Backbone:
    """What identifies `ref`'s features, without loading its weights; HemaError in one line when it
    is not a model."""
    if feature not in FEATURES:
        raise HemaError(f"feature {feature!r}: choose one of {', '.join(FEATURES)}")
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise HemaError(f"backbone {ref}: a file that is not a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
        return Backbone(ref, path.stem, f"sha256:{dinov2_weights.file_sha256(path)}", feature,
                        image_size or DEFAULT_SIZE, IMAGENET_MEAN, IMAGENET_STD, checkpoint=True)
    where = local_or_hub(ref, "backbone")
    config = _config(ref, where)
    size, mean, std = _preprocessing(where, config)
    return Backbone(ref, where.name if isinstance(where, Path) else ref, _revision(where, config), feature,
                    image_size or size, mean, std, checkpoint=False)


def _config(ref: str, where: Path | str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(where))
    except Exception as exc:  # noqa: BLE001 - a folder or repo of someone else's files
        raise HemaError(f"backbone {ref}: cannot load its config ({_first_line(exc)})") from None


def _revision(where: Path | str, config) -> str:
    if not isinstance(where, Path):
        return getattr(config, "_commit_hash", None) or "unknown"
    digest = hashlib.sha256()
    weights = [where / name for name in _WEIGHTS if (where / name).is_file()]
    for path in weights or [where / "config.json"]:  # a config alone: a seeded random initialisation
        digest.update(path.name.encode() + bytes.fromhex(dinov2_weights.file_sha256(path)))
    return ("sha256:" if weights else "random-init:sha256:") + digest.hexdigest()


def _preprocessing(where: Path | str, config) -> tuple[int, tuple, tuple]:
    """Input size and normalisation from the model's image processor (else its config, ImageNet's)."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(str(where))
    except Exception:  # noqa: BLE001 - no processor shipped: the config and ImageNet's defaults
        processor = None
    sizes = [getattr(processor, "crop_size", None), getattr(processor, "size", None)]
    size = next((s.get("height") or s.get("shortest_edge") for s in sizes if isinstance(s, dict)
                 and (s.get("height") or s.get("shortest_edge"))), None)
    config_size = getattr(config, "image_size", None) or getattr(getattr(config, "vision_config", None), "image_size", None)
    size = size or (config_size[0] if isinstance(config_size, (list, tuple)) else config_size) or DEFAULT_SIZE
    mean = tuple(getattr(processor, "image_mean", None) or IMAGENET_MEAN)
    std = tuple(getattr(processor, "image_std", None) or IMAGENET_STD)
    return int(size), mean, std


def load(backbone: Backbone, cache_dir: Path | None = None) -> nn.Module:
    """The backbone as a module: pixel_values (normalised, N x 3 x S x S) -> features (N x D)."""
    if backbone.checkpoint:
        from transformers import Dinov2Model

        sha = backbone.revision.removeprefix("sha256:")
        folder = dinov2_weights.converted_folder(Path(backbone.ref).expanduser(), cache_dir or cache_root(), sha)
        model = _loaded(backbone.ref, lambda: Dinov2Model.from_pretrained(str(folder)))
    else:
        model = _transformers_model(backbone.ref)
    return FeatureModel(model, backbone.feature).eval()


def _transformers_model(ref: str) -> nn.Module:
    from transformers import AutoModel

    where = local_or_hub(ref, "backbone")
    config = _config(ref, where)
    options = {"add_pooling_layer": False} if config.model_type == "vit" else {}  # features are the class token
    if isinstance(where, Path) and not any((where / name).is_file() for name in _WEIGHTS):
        torch.manual_seed(0)  # a config alone: the same random baseline every time
        model = _loaded(ref, lambda: AutoModel.from_config(config, **options))
    else:
        model = _loaded(ref, lambda: AutoModel.from_pretrained(str(where), **options))
    model = getattr(model, "vision_model", model)  # CLIP, SigLIP: the vision tower
    if "pixel_values" not in inspect.signature(model.forward).parameters:
        raise HemaError(f"backbone {ref} ({config.model_type}) is not a vision model: it takes no images")
    return model


def _loaded(ref: str, make):
    try:
        return make()
    except HemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt weights raise SafetensorError, foreign ones RuntimeError
        raise HemaError(f"backbone {ref}: cannot load it ({_first_line(exc)})") from None


class FeatureModel(nn.Module):
    """A frozen vision model's feature per image: its class token, mean patch token, or both."""

    def __init__(self, model: nn.Module, feature: str):
        super().__init__()
        self.model, self.feature = model, feature
        model_type = getattr(model.config, "model_type", "")
        self.prefix = _CLASS_TOKEN_MODELS.get(model_type, 1 if "clip" in model_type or "siglip" in model_type else 0)
        self.class_token_first = model_type in _CLASS_TOKEN_MODELS

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values)
        hidden = out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        if hidden.dim() == 4:  # convolutional: B x C x H x W
            tokens, cls = hidden.flatten(2).transpose(1, 2), pooled.flatten(1) if pooled is not None else None
        else:
            tokens = hidden[:, self.prefix :]
            cls = hidden[:, 0] if self.class_token_first or pooled is None else pooled.flatten(1)
        mean = tokens.mean(dim=1)
        if self.feature == "mean" or cls is None:
            return mean
        return cls if self.feature == "cls" else torch.cat([cls, mean], dim=1)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
