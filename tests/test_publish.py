"""From nothing to the Hub and back: Zenodo download through the builder, push, load_dataset by repo id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import hema_dataset
from hema.dataset.publish import commit_message, read_build_info
from hema.base.errors import HemaError
from hema.base.published import SPLITS
from hema.dataset.sources.mll23 import CELL_CLASSES
from tests.zenodo_emulator import class_zip, tiny_tifs

REPO_ID = "hema-org/mll23"

# Loads every config through the emulated Hub and from the local folder, in one interpreter.
COMPARE_CONFIGS = r"""
import hashlib, json, sys
import datasets

def rows(ds):
    out = {}
    for split, d in ds.items():
        raw = d.cast_column("image", datasets.Image(decode=False))
        out[split] = [{**r, "image": hashlib.sha256(r["image"]["bytes"]).hexdigest()} for r in raw]
    return out

result = {}
for config in ("default", "deduplicated", "harmonised"):
    remote, local = datasets.load_dataset(sys.argv[1], config), datasets.load_dataset(sys.argv[2], config)
    assert {s: d.features for s, d in remote.items()} == {s: d.features for s, d in local.items()}, config
    assert rows(remote) == rows(local), config
    result[config] = {s: d.num_rows for s, d in remote.items()}
    result[config + "_labels"] = remote["train"].features["label"].names
print(json.dumps(result))
"""


def test_push_then_load_every_config_by_repo_id(built: Path, run_with_hub, hub, tmp_path: Path) -> None:
    out = tmp_path / "mll23"
    shutil.copytree(built, out)
    pushed = run_with_hub(argv=["hema_dataset.py", "push", "--output-dir", str(out), "--repo-id", REPO_ID])
    assert f"load_dataset('{REPO_ID}')" in pushed.stdout
    loaded = run_with_hub(argv=["-c", COMPARE_CONFIGS, REPO_ID, str(out)])
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    info = read_build_info(out)
    assert result["default"] == info["splits"]
    assert sum(result["deduplicated"].values()) < info["images"]
    assert result["default_labels"] == list(CELL_CLASSES)
    card = (out / "README.md").read_text()
    assert f'load_dataset("{REPO_ID}")' in card and "ORG/mll23" not in card
    repo = hub.state.repos[("dataset", REPO_ID)]  # what the Hub holds: the folder, nothing else
    assert repo.commits[repo.branches["main"]].message == commit_message(info)
    files = repo.resolve("main").files
    assert sorted(set(files) - {".gitattributes"}) == sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert info["fingerprint"] in commit_message(info) and "SYNTHETIC" in commit_message(info)


def test_push_refuses_without_token_or_build(built: Path, run_with_hub, hub, tmp_path: Path) -> None:
    out = tmp_path / "mll23"
    shutil.copytree(built, out)
    result = run_with_hub(argv=["hema_dataset.py", "push", "--output-dir", str(out), "--repo-id", REPO_ID],
                          token=None, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no Hugging Face token found" in result.stderr.strip().splitlines()[-1]
    assert not any(r["method"] in ("POST", "PUT") for r in hub.requests)
    with pytest.raises(HemaError, match="not a dataset folder made by"):
        read_build_info(tmp_path)


def test_builder_without_data_dir_downloads_from_zenodo(zenodo, tmp_path: Path) -> None:
    for cell_class in CELL_CLASSES:
        zenodo.files[f"{cell_class}.zip"] = class_zip(cell_class, tiny_tifs(cell_class, 4))
    builder = hema_dataset.MLL23(cache_dir=str(tmp_path / "cache"))
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert sum(len(ds[s]) for s in SPLITS) == 4 * len(CELL_CLASSES)
    assert {i.split("/")[0] for s in SPLITS for i in ds[s]["image_id"]} == set(CELL_CLASSES)
