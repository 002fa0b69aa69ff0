"""DINOv2-format checkpoints (DinoBloom S/B/L/G, Zenodo record 10908163) as transformers' Dinov2Model.

DinoBloom is distributed as the DINOv2 training code saves it: a `.pth` whose "teacher" state dict
holds the backbone under `backbone.` (beside the DINO and iBOT heads, which features do not use),
in timm-style names (`blocks.N.attn.qkv`, `ls1.gamma`, `mlp.w12` for the giant's SwiGLU), with a
257-token `pos_embed`: a 16 x 16 grid of 14 px patches, 224 px. The architecture is read from the
shapes; the weights are renamed as transformers' own DINOv2 conversion script renames them (the
names of the facebook/dinov2-* checkpoints on the Hub, which every transformers release loads),
written once into a model folder under the cache, and loaded from there with from_pretrained.
The pickle is read with torch.load(weights_only=True): tensors and plain containers only.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import torch

from hema.base import atomic
from hema.base.errors import HemaError

_HEAD_DIM = 64  # every DINOv2 size has 64-dimensional attention heads
_SKIPPED = ("dino_head", "ibot_head")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a DINOv2-format checkpoint file, `backbone.` prefixes and heads removed."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file fails in many ways
        raise HemaError(f"backbone {path}: not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None
    for wrapper in ("teacher", "model", "state_dict"):
        if isinstance(raw, dict) and isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
    if not isinstance(raw, dict):
        raise HemaError(f"backbone {path}: holds no state dict")
    state = {k.removeprefix("backbone."): v for k, v in raw.items()
             if isinstance(v, torch.Tensor) and not k.removeprefix("backbone.").startswith(_SKIPPED)}
    missing = [k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight") if k not in state]
    if missing:
        raise HemaError(f"backbone {path}: not a DINOv2-format checkpoint (no {', '.join(missing)})")
    if "register_tokens" in state:
        raise HemaError(f"backbone {path}: DINOv2 with registers is not supported")
    return state


def config_of(state: dict[str, torch.Tensor]):
    """The Dinov2Config of a DINOv2 state dict, read from its shapes."""
    from transformers import Dinov2Config

    hidden = state["cls_token"].shape[-1]
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    patch = state["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    swiglu = "blocks.0.mlp.w12.weight" in state
    mlp_ratio = 4 if swiglu else state["blocks.0.mlp.fc1.weight"].shape[0] // hidden
    if not swiglu and mlp_ratio * hidden != state["blocks.0.mlp.fc1.weight"].shape[0]:
        raise HemaError("backbone: a DINOv2 checkpoint whose MLP width is not a whole multiple of its feature size")
    return Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // _HEAD_DIM,
                        mlp_ratio=mlp_ratio, patch_size=patch, image_size=grid * patch, use_swiglu_ffn=swiglu,
                        layer_norm_eps=1e-6)


def renamed(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """The state dict in the Hub's DINOv2 names (transformers' convert_dinov2_to_hf.py), q, k and v split."""
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    if "mask_token" in state:
        out["embeddings.mask_token"] = state["mask_token"].reshape(1, -1)
    for i in range(layers):
        block, layer = f"blocks.{i}.", f"encoder.layer.{i}."
        for part in ("weight", "bias"):
            q, k, v = state[f"{block}attn.qkv.{part}"].chunk(3)
            out |= {f"{layer}attention.attention.query.{part}": q, f"{layer}attention.attention.key.{part}": k,
                    f"{layer}attention.attention.value.{part}": v,
                    f"{layer}attention.output.dense.{part}": state[f"{block}attn.proj.{part}"],
                    f"{layer}norm1.{part}": state[f"{block}norm1.{part}"],
                    f"{layer}norm2.{part}": state[f"{block}norm2.{part}"]}
            mlp = {"w12": "weights_in", "w3": "weights_out"} if f"{block}mlp.w12.weight" in state else {"fc1": "fc1", "fc2": "fc2"}
            out |= {f"{layer}mlp.{new}.{part}": state[f"{block}mlp.{old}.{part}"] for old, new in mlp.items()}
        out[f"{layer}layer_scale1.lambda1"] = state[f"{block}ls1.gamma"]
        out[f"{layer}layer_scale2.lambda1"] = state[f"{block}ls2.gamma"]
    return out


def converted_folder(path: Path, cache_dir: Path, sha256: str) -> Path:
    """A transformers model folder of the checkpoint at `path` (whose SHA-256 is `sha256`), written once."""
    from safetensors.torch import save_file

    folder = cache_dir / "dinov2" / sha256[:24]
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return folder
    state = read_state(path)
    config = config_of(state)
    try:
        weights = renamed(state, config.num_hidden_layers)
    except KeyError as exc:
        raise HemaError(f"backbone {path}: a DINOv2 checkpoint without {exc.args[0]}") from None
    with atomic.scratch_dir(folder) as scratch:
        staging = scratch / atomic.STAGING
        staging.mkdir()
        config.save_pretrained(staging)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(staging / "model.safetensors"))
        atomic.replace_dir(scratch, folder)
    return folder


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
