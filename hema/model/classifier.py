"""The classifier: a transformers image-classification model, loaded for fine-tuning or as trained.

Loading from the Hub, a local folder or a bare config (random initialisation) with a head sized for
the dataset's classes; a trained model with its own head for evaluation; and the forward that
training calls: for ViTs one that compiles into one graph, for other architectures the model's own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hema.base.errors import HemaError
from hema.base.hub import local_or_hub

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
#: Normalisation when a model comes without an image processor (what google/vit-* use).
DEFAULT_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass
class LoadedModel:
    model: nn.Module  # a transformers *ForImageClassification
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    image_size: int  # input side in pixels
    base_model: str | None  # Hub id the weights come from (None: local weights or random initialisation)
    random_init: bool  # the model folder held only a config
    notes: list[str]  # what was done to the model on the way (head replaced, positions resized)


def load_model(ref: str, class_names: Sequence[str], image_size: int | None) -> LoadedModel:
    """A classifier for `class_names` from a Hub id, a model folder, or a folder holding only config.json.

    A checkpoint whose head has another set of classes (or none, like ViT-in21k) gets a new head.
    With `image_size` other than the model's, ViT position embeddings are interpolated to it.
    """
    from transformers import AutoConfig, AutoModelForImageClassification

    where = local_or_hub(ref, "model")
    local = isinstance(where, Path)
    if local and not (where / "config.json").is_file():
        raise HemaError(f"model {ref}: the folder has no config.json, so it is not a model folder")
    source = str(where)
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001 - a folder or repo of someone else's files: any failure is "cannot load"
        raise HemaError(f"model {ref}: cannot load its config ({_first_line(exc)})") from None
    has_weights = not local or any((where / name).is_file() for name in _WEIGHT_FILES)
    id2label = dict(enumerate(class_names))
    label2id = {name: i for i, name in id2label.items()}
    notes = []
    if has_weights and _head_classes(config) != list(class_names):
        old = _head_classes(config)
        notes.append(f"the {len(old)}-class head of {ref} is replaced by a new {len(class_names)}-class head"
                     if old else f"{ref} has no classification head: a new {len(class_names)}-class head is added")
    try:
        if has_weights:
            model = AutoModelForImageClassification.from_pretrained(
                source, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True,
                attn_implementation="sdpa")
        else:
            config.id2label, config.label2id = id2label, label2id
            model = AutoModelForImageClassification.from_config(config, attn_implementation="sdpa")
            notes.append(f"{ref} holds only a config: the model is randomly initialised")
    except Exception as exc:  # noqa: BLE001 - corrupt weights raise SafetensorError, a wrong head RuntimeError
        raise HemaError(f"model {ref}: cannot load it ({_first_line(exc)})") from None
    native = _image_size(model)
    if image_size and native and image_size != native:
        notes.append(resize_position_embeddings(model, image_size))
    if not (image_size or native):
        raise HemaError(f"model {ref} ({config.model_type}) does not state its input size: give an image size")
    mean, std = _normalisation(where)
    return LoadedModel(model, mean, std, image_size=image_size or native,
                       base_model=None if local else ref, random_init=not has_weights, notes=notes)


@dataclass
class TrainedModel:
    """A finished classifier as it is published: its own head and classes, for evaluation."""

    model: nn.Module
    class_names: tuple[str, ...]
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    image_size: int


def load_trained(ref: str) -> TrainedModel:
    """An image classifier from a model folder or Hub id, with the class names of its head."""
    from transformers import AutoModelForImageClassification

    where = local_or_hub(ref, "model")
    try:
        model = AutoModelForImageClassification.from_pretrained(str(where), attn_implementation="sdpa")
    except Exception as exc:  # noqa: BLE001 - corrupt weights raise SafetensorError, a head unlike config.json RuntimeError
        raise HemaError(f"model {ref}: cannot load it as an image classifier ({_first_line(exc)})") from None
    classes = _head_classes(model.config)
    size = _image_size(model)
    if not classes or not size:
        raise HemaError(f"model {ref} states no class names or input size in its config")
    mean, std = _normalisation(where)
    return TrainedModel(model, tuple(classes), mean, std, size)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _head_classes(config) -> list[str]:
    """Class names of the checkpoint's classification head; [] when it has none."""
    if not any(a.endswith("ForImageClassification") for a in (config.architectures or [])):
        return []
    return [config.id2label[i] for i in sorted(config.id2label)]


def _image_size(model: nn.Module) -> int | None:
    size = getattr(model.config, "image_size", None)
    return size if size is None or isinstance(size, int) else size[0]


def _normalisation(where: Path | str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's own image mean/std when it ships an image processor config (a folder, or a Hub id)."""
    if isinstance(where, Path):
        path = where / "preprocessor_config.json"
        processor = json.loads(path.read_text()) if path.is_file() else {}
    else:
        from transformers import AutoImageProcessor
        try:
            p = AutoImageProcessor.from_pretrained(where)
            processor = {"image_mean": p.image_mean, "image_std": p.image_std}
        except (OSError, ValueError):
            processor = {}
    if "image_mean" not in processor:
        return DEFAULT_MEAN_STD
    return tuple(processor["image_mean"]), tuple(processor["image_std"])


def resize_position_embeddings(model: nn.Module, image_size: int) -> str:
    """Interpolate a ViT's position embeddings (bicubic) to a new image size, and record it in its config."""
    config = model.config
    if config.model_type != "vit":
        raise HemaError(f"image size {image_size}: only ViT models can change their image size (this is {config.model_type})")
    if image_size % config.patch_size:
        raise HemaError(f"image size {image_size} is not a multiple of the patch size {config.patch_size}")
    embeddings = model.vit.embeddings
    old, new = _image_size(model) // config.patch_size, image_size // config.patch_size
    pos = embeddings.position_embeddings.data
    grid = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    embeddings.position_embeddings = nn.Parameter(torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], 1))
    embeddings.image_size = embeddings.patch_embeddings.image_size = (image_size, image_size)
    embeddings.patch_embeddings.num_patches = new * new
    note = f"position embeddings interpolated from {config.image_size} to {image_size} pixels"
    config.image_size = image_size
    return note


class ViTClassifier(nn.Module):
    """Logits of a transformers ViTForImageClassification, from a forward that compiles as one graph.

    It reads the wrapped model's own parameters (so saving the model saves what was trained) and does
    what its forward does, minus what stops torch.compile from fusing it: output dataclasses, attention
    interface lookups, shape checks. Q, K and V run as one matrix product, attention through
    scaled_dot_product_attention, and the final LayerNorm only on the [CLS] token the head reads.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        vit, config = self.model.vit, self.model.config
        embeddings = vit.embeddings
        x = embeddings.patch_embeddings.projection(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat([embeddings.cls_token.expand(x.shape[0], -1, -1), x], 1) + embeddings.position_embeddings
        x = F.dropout(x, config.hidden_dropout_prob, self.training)
        batch, tokens, width = x.shape
        for layer in vit.layers:
            attn = layer.attention
            q, k, v = F.linear(
                layer.layernorm_before(x),
                torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
                None if attn.q_proj.bias is None else torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]),
            ).view(batch, tokens, 3, attn.num_attention_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(
                q, k, v, dropout_p=attn.attention_dropout if self.training else 0.0, scale=attn.scaling)
            a = attn.o_proj(a.transpose(1, 2).reshape(batch, tokens, -1))
            x = x + F.dropout(a, config.hidden_dropout_prob, self.training)
            h = layer.mlp.fc2(layer.mlp.activation_fn(layer.mlp.fc1(layer.layernorm_after(x))))
            x = x + F.dropout(h, config.hidden_dropout_prob, self.training)
        return self.model.classifier(vit.layernorm(x[:, 0]))


class HFClassifier(nn.Module):
    """Logits from the model's own forward: for architectures the compiled ViT path does not cover."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _has_vit_layout(model: nn.Module) -> bool:
    vit = getattr(model, "vit", None)
    layers = getattr(vit, "layers", None)
    return (model.config.model_type == "vit" and layers is not None and len(layers) > 0
            and all(hasattr(layers[0].attention, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and hasattr(layers[0], "mlp") and getattr(vit, "pooler", None) is None)


def classifier_module(model: nn.Module) -> nn.Module:
    """The module training calls: pixel_values -> logits; its state_dict keys are `model.` + the model's."""
    return ViTClassifier(model) if _has_vit_layout(model) else HFClassifier(model)
