"""What clients this project did not write see in a build: every config is a set of whole files.

The ground truth is the files each config's `data_files` names, read with pyarrow and no filters,
as the Hub's dataset viewer copies and counts them. datasets (this one and 3.1, loading and
streaming), polars, pandas and DuckDB on the card's globs, and the card's split sizes must all
agree with it. The stored images must decode to the source pixels and be compact.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import datasets
import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from PIL import Image

import hema_dataset
from hema.dataset import shards
from hema.base.imaging import pixel_sha256
from hema.base.published import SPLITS

REPO = Path(__file__).resolve().parents[1]
DATASETS31 = REPO / ".venv-datasets31" / "bin" / "python"
ACEVEDO = REPO.parent / "shared" / "data" / "acevedo20_sample"


def card_configs(out: Path) -> tuple[list[dict], dict[str, dict[str, int]]]:
    data = DatasetCard.load(out / "README.md").data.to_dict()
    sizes = {i["config_name"]: {s["name"]: s["num_examples"] for s in i["splits"]} for i in data["dataset_info"]}
    return data["configs"], sizes


def file_rows(out: Path, config: dict) -> dict[str, list[str]]:
    """image_id per split of a config, from the files its data_files names (what the viewer reads)."""
    return {
        entry["split"]: [i for path in entry["path"] for i in pq.read_table(out / path, columns=["image_id"])["image_id"].to_pylist()]
        for entry in config["data_files"]
    }


def glob_of(out: Path, config: str, split: str) -> str:
    """The config's file pattern as the card's table gives it for train, for another split."""
    text = (out / "README.md").read_text()
    line = next(l for l in text.splitlines() if l.startswith(f"| `{config}` |"))
    return str(out / line.rsplit("`", 2)[-2].replace("data/train-", f"data/{split}-"))


def check_clients_agree(out: Path) -> None:
    configs, sizes = card_configs(out)
    assert [c["config_name"] for c in configs] == ["default", "deduplicated", "harmonised"]
    every_file = sorted(p.name for p in (out / "data").iterdir())
    for config in configs:
        assert set(config) <= {"config_name", "data_files", "default"}  # no filters: nothing to ignore
        name = config["config_name"]
        truth = file_rows(out, config)
        loaded = datasets.load_dataset(str(out), name)
        assert set(truth) == set(loaded) == set(SPLITS)
        for split, ids in truth.items():
            assert loaded[split]["image_id"] == ids, (name, split)
            assert sizes[name][split] == len(ids), (name, split)
            pattern = glob_of(out, name, split)
            assert sorted(pl.scan_parquet(pattern).select("image_id").collect()["image_id"].to_list()) == sorted(ids)
            assert duckdb.sql(f"select count(*) from read_parquet('{pattern}')").fetchall() == [(len(ids),)]
            files = [out / p for p in next(e["path"] for e in config["data_files"] if e["split"] == split)]
            assert pd.concat([pd.read_parquet(f, columns=["image_id"]) for f in files])["image_id"].tolist() == ids
    for name in every_file:
        meta = pq.ParquetFile(out / "data" / name).metadata
        assert meta.num_rows > 0 and (out / "data" / name).stat().st_size <= shards.MAX_BYTES_PER_FILE, name
    default = file_rows(out, configs[0])
    assert sorted(i for ids in default.values() for i in ids) == sorted(
        i for f in every_file for i in pq.read_table(out / "data" / f, columns=["image_id"])["image_id"].to_pylist()
    )  # every file belongs to the default config, and no image is stored twice


def test_every_config_is_whole_files_for_every_reader(built: Path) -> None:
    check_clients_agree(built)
    _, sizes = card_configs(built)
    assert sum(sizes["deduplicated"].values()) < sum(sizes["default"].values())
    assert sum(sizes["harmonised"].values()) < sum(sizes["default"].values())


def test_many_files_per_part_and_no_empty_file(sample_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(shards, "MAX_ROWS_PER_FILE", 7)
    out = tmp_path / "out"
    hema_dataset.build_dataset(sample_dir, out)
    names = sorted(p.name for p in (out / "data").iterdir())
    assert sum("-00001-of-" in n for n in names) >= 4  # parts were cut into several files
    assert all(pq.ParquetFile(out / "data" / n).metadata.num_rows <= 7 for n in names)
    check_clients_agree(out)


@pytest.mark.skipif(not DATASETS31.exists(), reason="no .venv-datasets31: run tests/envs/make.sh")
def test_datasets_3_1_loads_and_streams_the_same_rows(built: Path) -> None:
    result = subprocess.run(
        [str(DATASETS31), str(REPO / "tests" / "envs" / "read_configs.py"), str(built)],
        capture_output=True, text=True, timeout=600, cwd=built.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    assert seen["datasets"] == "3.1.0"
    configs, _ = card_configs(built)
    for config in configs:
        truth = file_rows(built, config)
        got = seen["configs"][config["config_name"]]
        assert set(got) == set(truth)
        for split, ids in truth.items():
            assert got[split]["loaded"] == got[split]["streamed"] == ids
            assert got[split]["mode"] == "RGB"


def check_images(out: Path, source: Path, max_ratio: float) -> None:
    """Every stored image decodes to its source's pixels; together they take <= max_ratio of the source bytes."""
    stored = source_bytes = 0
    for path in sorted((out / "data").iterdir()):
        table = pq.read_table(path, columns=["image", "image_id", "pixel_sha256"]).to_pylist()
        for row in table:
            data = row["image"]["bytes"]
            with Image.open(io.BytesIO(data)) as im:
                assert im.format in ("WEBP", "PNG", "JPEG"), row["image_id"]
                pixels = np.asarray(im.convert("RGB"))
            original = source / row["image_id"]
            assert pixel_sha256(pixels) == row["pixel_sha256"] == pixel_sha256(np.asarray(Image.open(original).convert("RGB")))
            if original.suffix.upper() == ".TIF" and Image.open(original).format == "TIFF":
                assert Image.open(io.BytesIO(data)).format == "PNG" and row["image"]["path"].endswith(".png")
            stored += len(data)
            source_bytes += original.stat().st_size
    assert stored <= max_ratio * source_bytes, stored / source_bytes


def test_every_stored_image_decodes_to_the_source_pixels(sample_dir: Path, built: Path) -> None:
    check_images(built, sample_dir, max_ratio=0.65)  # the synthetic cells compress less than real ones


@pytest.mark.skipif(not ACEVEDO.is_dir(), reason="../shared/data/acevedo20_sample is absent")
def test_real_cells_as_scanner_tiffs_are_stored_lossless_and_compact(tmp_path: Path) -> None:
    """Real cells cut to MLL23's 288 px and saved as its uncompressed TIFFs: <= 0.6x the bytes, exact pixels."""
    data = tmp_path / "mll23_layout"
    for i, path in enumerate(sorted(ACEVEDO.glob("*/*.jpg"))[::25]):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        top, left = (rgb.shape[0] - 288) // 2, (rgb.shape[1] - 288) // 2
        cell_class = ["basophil", "eosinophil", "lymphocyte", "monocyte"][i % 4]
        target = data / cell_class / f"{cell_class}_{i:04d}.TIF"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[top : top + 288, left : left + 288]).save(target, format="TIFF")
    out = tmp_path / "out"
    hema_dataset.build_dataset(data, out)
    check_images(out, data, max_ratio=0.6)
    shutil.rmtree(data)
    check_clients_agree(out)
