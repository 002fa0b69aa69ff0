"""A published build as both wings read it: its splits, its configs and the label column each one
trains, and build_info.json, what a build says about itself.

The dataset wing writes builds in this form (hema.dataset); the model wing and the benchmark read
them, from a folder or from the Hub, through this module, so that neither wing imports the other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hema.base.files import UnusableFile, read_regular_file
from hema.base.hub import local_or_hub

SPLITS = ("train", "validation", "test")
DEFAULT_CONFIG = "default"
#: Every published config and the ClassLabel column a model trained on it predicts.
LABEL_COLUMNS: dict[str, str] = {"default": "label", "deduplicated": "label", "harmonised": "harmonised_label"}

BUILD_INFO = "build_info.json"
CARD = "README.md"
#: Keys (and their types) every build_info.json has held: how a build is told from a folder that imitates one.
BUILD_INFO_KEYS = {"builder": str, "hema_version": str, "fingerprint": str, "configs": dict, "splits": dict}
_MAX_INFO_BYTES = 1 << 20


def label_column(config: str) -> str:
    """The label column a model trained on `config` predicts (`label` for configs hema does not know)."""
    return LABEL_COLUMNS.get(config, "label")


def load_build_info(folder: Path) -> dict | None:
    """The build_info.json of `folder` when it is one `hema-dataset build` writes, else None."""
    try:
        info = json.loads(read_regular_file(Path(folder) / BUILD_INFO, _MAX_INFO_BYTES))
    except (OSError, UnusableFile, ValueError):
        return None
    if not isinstance(info, dict) or any(not isinstance(info.get(k), kind) for k, kind in BUILD_INFO_KEYS.items()):
        return None
    return info


@dataclass(frozen=True)
class DatasetFacts:
    """What a dataset (a built folder or a Hub id) says about itself, for model cards and field matching."""

    ref: str  # as given: a Hub id or a folder
    dataset_id: str  # the Hub id, or the folder's name: the model-index's dataset type
    on_hub: bool
    name: str  # its pretty name
    source: str | None  # the hema source it was built from (mll23, acevedo20, ...), when known
    pixel_size_um: float | None  # microns per pixel, when recorded
    synthetic: bool  # built from the synthetic sample


def dataset_facts(ref: str) -> DatasetFacts:
    """The facts of a built folder (its build_info.json and card) or a Hub dataset (its card's
    metadata); unknown ones are None, as for a dataset hema did not build or an unreachable Hub."""
    from huggingface_hub import DatasetCard

    where = local_or_hub(ref, "dataset")
    local = isinstance(where, Path)
    info = (load_build_info(where) or {}) if local else {}
    try:
        card = DatasetCard.load(where / CARD if local else where, repo_type="dataset").data
    except Exception:  # noqa: BLE001 - an offline Hub, a dataset without a card, broken YAML: nothing known
        card = None
    meta = (card.to_dict().get("hema") or {}) if card is not None else {}
    tags = list(getattr(card, "tags", None) or [])
    dataset_id = where.name if local else str(where)
    return DatasetFacts(
        ref=ref, dataset_id=dataset_id, on_hub=not local,
        name=getattr(card, "pretty_name", None) or dataset_id,
        source=info.get("source") or meta.get("source"),
        pixel_size_um=info.get("pixel_size_um") or meta.get("pixel_size_um"),
        synthetic=bool(info.get("synthetic")) or "synthetic" in tags,
    )
