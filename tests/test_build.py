"""The builder end to end: sample -> build -> load_dataset, on every config, and every bad input."""

from __future__ import annotations

import csv
import io
import logging
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from huggingface_hub import DatasetCard
from PIL import Image

import hema_dataset
from hema.base.errors import HemaError
from hema.base.imaging import pixel_sha256
from hema.base.published import SPLITS
from hema.base.taxonomy import HARMONISED_CLASSES, harmonised_id
from hema.dataset.sources.mll23 import CELL_CLASSES, HARMONISED

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ("default", "deduplicated", "harmonised")


def load(out: Path, config: str = "default") -> datasets.DatasetDict:
    return datasets.load_dataset(str(out), config)


def parquet_rows(out: Path) -> dict[str, list[dict]]:
    """What the Parquet files hold (no images), straight from pyarrow: the ground truth to load against."""
    rows = {}
    for split in SPLITS:
        files = sorted((out / "data").glob(f"{split}-*.parquet"))
        rows[split] = [r for f in files for r in pq.read_table(f, columns=["image_id", "label", "dup_group"]).to_pylist()]
    return rows


def test_round_trip_columns_and_pixels(sample_dir: Path, built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "published"
    shutil.copytree(built, copy)  # load from a copy: the source images play no part in loading
    ds = load(copy)
    assert set(ds) == set(SPLITS)
    assert ds["train"].features == hema_dataset.FEATURES
    assert ds["train"].features["label"].names == list(CELL_CLASSES)
    assert ds["train"].features["harmonised_label"].names == list(HARMONISED_CLASSES)
    source_ids = sorted(p.relative_to(sample_dir).as_posix() for p in sample_dir.glob("*/*.TIF"))
    loaded_ids = sorted(i for s in SPLITS for i in ds[s]["image_id"])
    assert loaded_ids == source_ids
    for row in ds["validation"]:
        image = row["image"]
        assert image.mode == "RGB" and image.size == (288, 288)
        assert pixel_sha256(np.asarray(image)) == row["pixel_sha256"]
        source = np.asarray(Image.open(sample_dir / row["image_id"]).convert("RGB"))
        assert pixel_sha256(source) == row["pixel_sha256"]
        assert CELL_CLASSES[row["label"]] == row["image_id"].split("/")[0]
        assert row["harmonised_label"] == harmonised_id(HARMONISED.get(CELL_CLASSES[row["label"]]))
        assert len(row["phash"]) == 16 and int(row["phash"], 16) >= 0


def test_groups_never_straddle_splits_and_every_class_in_every_split(built: Path) -> None:
    ds = load(built)
    split_of_group, split_of_field, field_of_group = defaultdict(set), defaultdict(set), defaultdict(set)
    for split in SPLITS:
        for g, f in zip(ds[split]["dup_group"], ds[split]["field_group"]):
            split_of_group[g].add(split)
            split_of_field[f].add(split)
            field_of_group[g].add(f)
    assert all(len(s) == 1 for s in split_of_group.values())
    assert all(len(s) == 1 for s in split_of_field.values())
    assert all(len(f) == 1 for f in field_of_group.values())  # a duplicate group lies in one field group
    for split in SPLITS:
        assert set(ds[split]["label"]) == set(range(len(CELL_CLASSES))), split


def test_planted_duplicates_are_grouped_and_conflicts_flagged(built: Path, sample_manifest) -> None:
    rows = {r["image_id"]: r for s in SPLITS for r in load(built)[s].remove_columns("image")}
    assert {p.kind for p in sample_manifest.planted} == {"exact", "near"}
    for pair in sample_manifest.planted:
        a, b = rows[pair.a], rows[pair.b]
        assert a["dup_group"] == b["dup_group"] and a["dup_group_size"] >= 2, pair
        assert (a["pixel_sha256"] == b["pixel_sha256"]) == (pair.kind == "exact"), pair
        assert a["dup_kind"] == b["dup_kind"] == pair.kind, pair
        assert a["label_conflict"] == b["label_conflict"] == pair.cross_class
    conflicted = {r["dup_group"] for r in rows.values() if r["label_conflict"]}
    assert conflicted == {rows[p.a]["dup_group"] for p in sample_manifest.planted if p.cross_class}
    planted_groups = {rows[p.a]["dup_group"] for p in sample_manifest.planted}
    assert {r["dup_group"] for r in rows.values() if r["dup_group_size"] > 1} == planted_groups  # nothing else merged
    by_group = defaultdict(list)
    for r in rows.values():
        by_group[r["dup_group"]].append(r)
    for members in by_group.values():
        assert all(m["dup_group_size"] == len(members) for m in members)
        labels = {m["label"] for m in members}
        assert all(m["label_conflict"] == (len(labels) > 1) for m in members)
        representatives = sum(m["dup_representative"] for m in members)
        assert representatives == (0 if len(labels) > 1 else 1)
        kinds = {m["dup_kind"] for m in members}
        assert kinds == ({"unique"} if len(members) == 1 else kinds - {"unique"}) and len(kinds) == 1


def test_configs_filter_the_same_files(built: Path) -> None:
    full = {s: load(built)[s].remove_columns("image") for s in SPLITS}
    dedup = load(built, "deduplicated")
    harm = load(built, "harmonised")
    for s in SPLITS:
        assert dedup[s]["image_id"] == [r["image_id"] for r in full[s] if r["dup_representative"]]
        assert harm[s]["image_id"] == [r["image_id"] for r in full[s] if r["harmonised_label"] >= 0]
        assert harm[s].features["harmonised_label"].names == list(HARMONISED_CLASSES)
    assert sum(len(dedup[s]) for s in SPLITS) < sum(len(full[s]) for s in SPLITS)
    assert {CELL_CLASSES[label] for s in SPLITS for label in harm[s]["label"]} == {
        c for c in CELL_CLASSES if c in HARMONISED
    }


def test_builder_class_used_directly(sample_dir: Path, tmp_path: Path) -> None:
    builder = hema_dataset.MLL23(data_dir=str(sample_dir), cache_dir=str(tmp_path), config_name="deduplicated")
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert set(ds) == set(SPLITS)
    assert all(ds[s]["dup_representative"] == [True] * len(ds[s]) for s in SPLITS)
    assert ds["train"].features["label"].names == list(CELL_CLASSES)


def test_card_yaml_is_valid_for_the_hub(built: Path) -> None:
    card = DatasetCard.load(built / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0"
    assert data["task_categories"] == ["image-classification"]
    assert data["size_categories"] == ["n<1K"]
    assert data["annotations_creators"] and data["language"] == ["en"]
    assert data["pretty_name"] and "synthetic" in data["tags"]
    assert [c["config_name"] for c in data["configs"]] == list(CONFIGS)
    for config in data["configs"]:
        for entry in config["data_files"]:
            assert entry["split"] in SPLITS
            assert all((built / path).is_file() for path in entry["path"]), entry
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    for name in CONFIGS:
        ds = load(built, name)
        assert {s["name"]: s["num_examples"] for s in infos[name]["splits"]} == {s: len(ds[s]) for s in SPLITS}
    text = (built / "README.md").read_text()
    assert "SYNTHETIC" in text and "10.1038/s41597-025-06223-x" in text and "not be used for diagnosis" in text.replace("\n  ", " ")
    assert "(class_distribution.png)" in text and (built / "class_distribution.png").is_file()
    assert (built / "conflicting_pairs.png").is_file()
    assert "---" not in yaml.safe_dump(data)  # the YAML itself parses back as one document


def test_deterministic_and_seed_dependent(sample_dir: Path, built: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    hema_dataset.build_dataset(sample_dir, again, num_proc=1)
    assert parquet_rows(again) == parquet_rows(built)
    assert sorted(p.name for p in (again / "data").iterdir()) == sorted(p.name for p in (built / "data").iterdir())
    other = tmp_path / "other"
    hema_dataset.build_dataset(sample_dir, other, seed=7)
    assert parquet_rows(other) != parquet_rows(built)


def test_rebuild_into_same_folder_never_serves_the_old_build(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    hema_dataset.build_dataset(sample_dir, out, seed=1)
    first = {s: load(out)[s]["image_id"] for s in SPLITS}
    hema_dataset.build_dataset(sample_dir, out, seed=2)
    second = {s: load(out)[s]["image_id"] for s in SPLITS}
    assert second != first
    assert second == {s: [r["image_id"] for r in rows] for s, rows in parquet_rows(out).items()}


# ------------------------------------------------------------------ bad input


def _write(path: Path, array: np.ndarray | None = None, mode: str | None = None, data: bytes | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        path.write_bytes(data)
    else:
        Image.fromarray(array, mode=mode).save(path, format="TIFF")


@pytest.fixture()
def messy_dir(sample_dir: Path, tmp_path: Path) -> Path:
    """The sample plus junk the Zenodo zips carry, broken files and unusual image modes."""
    d = tmp_path / "messy"
    shutil.copytree(sample_dir, d)
    shutil.rmtree(d / "smudge_cell")  # a missing class
    (d / "__MACOSX" / "basophil").mkdir(parents=True)
    (d / "__MACOSX" / "basophil" / "._basophil_0001.TIF").write_bytes(b"\x00\x05junk")
    (d / "basophil" / ".DS_Store").write_bytes(b"junk")
    (d / "basophil" / "Thumbs.db").write_bytes(b"junk")
    (d / "basophil" / "._basophil_0002.TIF").write_bytes(b"junk")
    (d / "eosinophil" / "eosinophil_9001.TIF").write_bytes(b"")  # zero bytes
    good = (d / "eosinophil" / "eosinophil_0001.TIF").read_bytes()
    (d / "eosinophil" / "eosinophil_9002.TIF").write_bytes(good[: len(good) // 2])  # truncated
    (d / "eosinophil" / "notes.txt").write_text("not an image")
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (288, 288), dtype=np.uint8)
    _write(d / "monocyte" / "monocyte_9001.TIF", grey, "L")
    _write(d / "monocyte" / "monocyte_9002.TIF", np.dstack([grey, grey, grey, np.full_like(grey, 255)]), "RGBA")
    Image.fromarray(grey, "L").convert("P").save(d / "monocyte" / "monocyte_9003.TIF", format="TIFF")
    Image.fromarray(np.dstack([grey] * 3), "RGB").convert("CMYK").save(d / "monocyte" / "monocyte_9004.TIF", format="TIFF")
    Image.fromarray(grey.astype(np.uint16) * 257).save(d / "monocyte" / "monocyte_9005.TIF", format="TIFF")  # 16-bit
    Image.fromarray(np.dstack([grey, grey]), "LA").save(d / "monocyte" / "monocyte_9006.png", format="PNG")
    return d


def test_messy_input_skips_converts_and_counts(messy_dir: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        summary = hema_dataset.build_dataset(messy_dir, out)
    warned = caplog.text
    for name in ("eosinophil/eosinophil_9001.TIF", "eosinophil/eosinophil_9002.TIF", "eosinophil/notes.txt"):
        assert name in warned
    assert "smudge_cell" in warned
    for junk in ("__MACOSX", ".DS_Store", "Thumbs.db", "._basophil"):
        assert junk not in warned
    assert summary.skipped == 3
    card = (out / "README.md").read_text()
    assert "3 file(s) of the source folder could not be used" in card and "eosinophil/notes.txt" in card
    ds = load(out)
    rows = {r["image_id"]: r for s in SPLITS for r in ds[s]}
    assert not any("__MACOSX" in i or "/." in i or i.endswith((".db", ".txt")) for i in rows)
    assert not any(i.startswith("smudge_cell/") for i in rows)
    assert ds["train"].features["label"].names[17] == "smudge_cell"  # keeps its id with 0 images
    for row in rows.values():  # the signatures of the files decoded after a skipped one are their own
        assert pixel_sha256(np.asarray(row["image"].convert("RGB"))) == row["pixel_sha256"], row["image_id"]
    grey = np.asarray(Image.open(messy_dir / "monocyte" / "monocyte_9001.TIF"))
    for name in ("9001.TIF", "9002.TIF", "9003.TIF", "9004.TIF", "9005.TIF", "9006.png"):
        row = rows[f"monocyte/monocyte_{name}"]
        image = row["image"]
        assert image.mode == "RGB"
        pixels = np.asarray(image)
        assert pixel_sha256(pixels) == row["pixel_sha256"]
        assert np.abs(pixels.astype(int) - grey[..., None]).max() <= 1, name  # converted, not clipped


def test_strict_makes_unusable_files_an_error(messy_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(HemaError, match="strict build: 3 unusable file"):
        hema_dataset.build_dataset(messy_dir, tmp_path / "out", strict=True)
    assert not (tmp_path / "out").exists()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "hema_dataset.py"), *args], capture_output=True, text=True, cwd=REPO
    )


def test_unknown_class_folder_exits_2_and_leaves_previous_build(sample_dir: Path, built: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(sample_dir, bad)
    (bad / "megakaryocyte").mkdir()
    out = tmp_path / "out"
    shutil.copytree(built, out)
    before = sorted((p.relative_to(out).as_posix(), p.stat().st_size) for p in out.rglob("*"))
    result = run_cli("build", "--data-dir", str(bad), "--output-dir", str(out))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "megakaryocyte" in message and "basophil" in message and "smudge_cell" in message
    assert sorted((p.relative_to(out).as_posix(), p.stat().st_size) for p in out.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out"]  # no staging left behind


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d / "absent", "does not exist"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no images found"),
        (lambda d: (d / "junk" / "basophil").mkdir(parents=True) or (d / "junk" / "basophil" / "x.TIF").write_bytes(b"") or d / "junk", "no decodable images"),
    ],
)
def test_unusable_data_dirs_give_one_clear_line(tmp_path: Path, make, expected: str) -> None:
    result = run_cli("build", "--data-dir", str(make(tmp_path)), "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert expected in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_a_folder_that_is_not_a_build(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(HemaError, match="not a previous build"):
        hema_dataset.build_dataset(sample_dir, out)
    with pytest.raises(HemaError, match="outside the data folder"):
        hema_dataset.build_dataset(sample_dir, sample_dir / "out")
    with pytest.raises(HemaError, match="must each be in"):
        hema_dataset.build_dataset(sample_dir, tmp_path / "o", val_size=0.6, test_size=0.5)
    assert (out / "thesis.tex").read_text() == "do not delete"


ACEVEDO = REPO.parent / "shared" / "data" / "acevedo20_sample"
# Acevedo20 folder (and file-name prefix) -> MLL23 class, after labels_harmonised.csv.
ACEVEDO_TO_MLL23 = {
    "basophil": "basophil", "eosinophil": "eosinophil", "erythroblast": "normoblast",
    "lymphocyte": "lymphocyte", "monocyte": "monocyte", "SNE": "neutrophil_segmented",
    "BNE": "neutrophil_band", "MY": "myelocyte", "MMY": "metamyelocyte", "PMY": "promyelocyte",
}


@pytest.mark.skipif(not ACEVEDO.is_dir(), reason="../shared/data/acevedo20_sample is absent")
def test_build_on_real_acevedo20_cells(tmp_path: Path) -> None:
    data = tmp_path / "acevedo_as_mll23"
    linked = 0
    for path in sorted(ACEVEDO.glob("*/*.jpg")):
        # ig/ and neutrophil/ hold several classes, told apart by the file-name prefix.
        cell_class = ACEVEDO_TO_MLL23.get(path.name.split("_")[0]) or ACEVEDO_TO_MLL23.get(path.parent.name)
        if cell_class is None:  # platelets, unspecified IG and unspecified neutrophils
            continue
        target = data / cell_class / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)  # a copy: links out of the data folder are never read
        linked += 1
    out = tmp_path / "out"
    hema_dataset.build_dataset(data, out)
    shutil.rmtree(data)
    ds = load(out)
    assert sum(len(ds[s]) for s in SPLITS) == linked
    row = ds["test"][0]
    assert row["image"].mode == "RGB" and row["image"].size[0] in (360, 366)
    assert Image.open(io.BytesIO(ds["test"].cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"])).format == "JPEG"
    for split in SPLITS:
        assert {CELL_CLASSES[label] for label in ds[split]["label"]} == set(ACEVEDO_TO_MLL23.values())
    # crops of one smear field: reported, grouped, drawn, and each field group in one split
    report = list(csv.DictReader(open(out / "dedup_report.csv")))
    shared = {(r["image_id_a"], r["image_id_b"]) for r in report if r["kind"] == "shared_field"}
    assert ("normoblast/ERB_445589.jpg", "normoblast/ERB_880363.jpg") in shared
    rows = {r["image_id"]: (r["field_group"], r["field_group_size"], split) for split in SPLITS
            for r in ds[split].select_columns(["image_id", "field_group", "field_group_size"])}
    assert all(rows[a][0] == rows[b][0] and rows[a][2] == rows[b][2] for a, b in shared)
    assert (out / "shared_fields.png").is_file()
    multi = {group for group, size, _ in rows.values() if size > 1}
    assert f"| field groups of more than one image | {len(multi)} |" in (out / "README.md").read_text()


# The Hub validates card metadata online only; these are its documented values (huggingface_hub
# DatasetCardData and the Hub's dataset-card spec), checked offline.
HUB_SIZE_CATEGORIES = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B"}
HUB_ANNOTATIONS_CREATORS = {"found", "crowdsourced", "expert-generated", "machine-generated", "no-annotation", "other"}
HUB_IMAGE_TASKS = {"image-classification", "image-segmentation", "object-detection", "image-feature-extraction"}


def test_card_metadata_uses_values_the_hub_accepts(built: Path) -> None:
    data = DatasetCard.load(built / "README.md").data.to_dict()
    assert data["license"] == "cc-by-4.0"  # an SPDX-style id from the Hub's license list
    assert set(data["size_categories"]) <= HUB_SIZE_CATEGORIES
    assert set(data["annotations_creators"]) <= HUB_ANNOTATIONS_CREATORS
    assert set(data["task_categories"]) <= HUB_IMAGE_TASKS
    assert data["source_datasets"] == ["original"]
    assert all(len(code) in (2, 3) and code.islower() for code in data["language"])
    assert sum(bool(c.get("default")) for c in data["configs"]) == 1
    for config in data["configs"]:
        assert set(config) <= {"config_name", "data_files", "default", "filters"}
        for column, op, _ in config.get("filters", []):
            assert column in hema_dataset.FEATURES and op in ("==", ">=")


def test_duplicate_groups_spread_over_the_splits_in_the_split_shares() -> None:
    """Multi-image groups (conflicting ones too) fall into train/validation/test as 70/15/15, each whole."""
    from hema.dataset.splits import assign_splits

    rng = np.random.default_rng(3)
    labels, groups, conflict = [], [], []
    for label in range(18):
        for _ in range(int(rng.integers(3, 400))):  # single images
            labels.append(label), groups.append(len(groups)), conflict.append(False)
    group = len(groups)
    for g in range(300):  # duplicate groups of 2-4 images, one in five with a label conflict
        size, label, conflicted = int(rng.integers(2, 5)), int(rng.integers(18)), g % 5 == 0
        for k in range(size):
            labels.append((label + k) % 18 if conflicted else label), groups.append(group), conflict.append(conflicted)
        group += 1
    labels, groups, conflict = np.array(labels), np.unique(groups, return_inverse=True)[1], np.array(conflict)
    split = assign_splits(labels, groups, seed=7, val_size=0.15, test_size=0.15, conflict=conflict)
    assert all(len(set(split[groups == g])) == 1 for g in np.unique(groups))  # every group whole
    sizes = np.bincount(groups)
    first = np.unique(groups, return_index=True)[1]
    for kind in (sizes[groups[first]] > 1, (sizes[groups[first]] > 1) & conflict[first]):
        share = np.bincount(split[first][kind], minlength=3) / kind.sum()
        assert np.abs(share - [0.7, 0.15, 0.15]).max() < 0.05, share
    for label in range(18):
        assert set(split[labels == label]) == {0, 1, 2}
    image_share = np.bincount(split, minlength=3) / len(split)
    assert np.abs(image_share - [0.7, 0.15, 0.15]).max() < 0.01
