"""The sister sources in the MLL23 schema: Acevedo20 from its real layout, Matek19 from its TCIA layout."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard
from PIL import Image

from hema.base.errors import HemaError
from hema.base.imaging import pixel_sha256
from hema.dataset import BUILDERS
from hema.dataset.sources.acevedo20 import Acevedo20
from hema.dataset.sources.matek19 import CODES, Matek19
from hema.base.published import SPLITS
from hema.base.taxonomy import HARMONISED_CLASSES

REPO = Path(__file__).resolve().parents[1]
ACEVEDO = REPO.parent / "shared" / "data" / "acevedo20_sample"
needs_acevedo = pytest.mark.skipif(not ACEVEDO.is_dir(), reason="../shared/data/acevedo20_sample is absent")

# What each Acevedo20 file-name prefix must give (fine_label, harmonised_label), from the dataset's
# documentation and the MLL23 authors' harmonisation table.
ACEVEDO_EXPECTED = {
    "BA": ("basophil", "basophil"), "EO": ("eosinophil", "eosinophil"), "ERB": ("erythroblast", "erythroblast"),
    "IG": ("unspecified_immature_granulocytes", None), "MY": ("myelocyte", "myelocyte"),
    "MMY": ("metamyelocyte", "metamyelocyte"), "PMY": ("promyelocyte", "promyelocyte"),
    "LY": ("lymphocyte", "lymphocyte"), "MO": ("monocyte", "monocyte"),
    "SNE": ("neutrophil_segmented", "neutrophil_segmented"), "BNE": ("neutrophil_band", "neutrophil_band"),
    "NEUTROPHIL": ("unspecified_neutrophils", None), "PLATELET": ("platelet", None),
}


def rows_of(out: Path) -> tuple[dict[str, dict], datasets.Features]:
    ds = datasets.load_dataset(str(out))
    return {r["image_id"]: r for s in SPLITS for r in ds[s].remove_columns("image")}, ds["train"].features


def test_every_source_has_a_builder_with_the_shared_columns() -> None:
    assert sorted(BUILDERS) == ["acevedo20", "matek19", "mll23"]
    shared = {"image", "label", "image_id", "pixel_sha256", "phash", "dup_group", "dup_group_size", "dup_kind",
              "label_conflict", "dup_representative", "harmonised_label"}
    for builder in BUILDERS.values():
        features = builder.dataset_info().features
        assert shared <= set(features), builder
        assert features["harmonised_label"].names == list(HARMONISED_CLASSES)
        assert 0.05 < builder.SOURCE.pixel_size_um < 0.2  # microns per pixel, recorded for field matching


@needs_acevedo
def test_acevedo20_from_its_real_layout(tmp_path: Path) -> None:
    out = tmp_path / "acevedo20"
    summary = Acevedo20.build_folder(ACEVEDO, out)
    rows, features = rows_of(out)
    files = sorted(p.relative_to(ACEVEDO).as_posix() for p in ACEVEDO.glob("*/*.jpg"))
    assert sorted(rows) == files  # one row per file, the id its path in the source layout
    for image_id, row in rows.items():
        folder, name = image_id.split("/")
        fine, harmonised = ACEVEDO_EXPECTED[name.split("_")[0]]
        assert features["label"].int2str(row["label"]) == folder
        assert features["fine_label"].int2str(row["fine_label"]) == fine
        assert row["harmonised_label"] == (-1 if harmonised is None else HARMONISED_CLASSES.index(harmonised))
    # The real duplicates: an exact copy across two labels is one group, flagged, and dropped by deduplicated.
    a, b = rows["eosinophil/EO_225902.jpg"], rows["neutrophil/BNE_191112.jpg"]
    assert a["dup_group"] == b["dup_group"] and a["dup_kind"] == "exact" and a["label_conflict"] and b["label_conflict"]
    assert summary.duplicates["exact_groups"] >= 17 and summary.duplicates["near_groups"] >= 1
    groups = defaultdict(set)
    for r in rows.values():
        groups[r["dup_group"]].add(r["image_id"].split("/")[1].split("_")[0])
    assert sum(len(g) > 1 for g in groups.values()) <= 2  # look-alikes of other classes are not merged
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.hema == {"source": "acevedo20", "pixel_size_um": 0.1}
    text = (out / "README.md").read_text()
    assert "Acevedo20" in text and "10.17632/snkd93bnjr.1" in text and "CC BY 4.0" in text


def stand_in_matek19(root: Path) -> dict[str, tuple[str, list[str]]]:
    """The TCIA layout with real cells in stand-in classes: 400x400 RGBA TIFFs, annotations.dat with re-annotations.

    Returns image_id -> (code, re-annotations) as the annotations say.
    """
    cells = sorted(ACEVEDO.glob("*/*.jpg"))[::40][:45]
    expected, lines = {}, []
    for i, path in enumerate(cells):
        code = CODES[i % 5]  # BAS EBO EOS KSC LYA: 9 cells each
        rgb = np.asarray(Image.open(path).convert("RGB").resize((400, 400)))
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
        name = f"{code}/{code}_{i:04d}.tiff"
        stored = f"{name}.tiff" if i == 7 else name  # the file TCIA stores with a doubled extension
        target = root / "AML-Cytomorphology_LMU" / stored
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba, "RGBA").save(target, format="TIFF")
        again = ["MYO", "MON"] if i % 9 == 0 else (["NGS"] if i % 9 == 1 else [])
        lines.append(" ".join([f"AML-Cytomorphology_LMU/{name}", code, *again]))
        expected[f"AML-Cytomorphology_LMU/{stored}"] = (code, again)
    (root / "annotations.dat").write_text("\n".join(lines) + "\n")
    return expected


@needs_acevedo
def test_matek19_from_its_tcia_layout(tmp_path: Path) -> None:
    raw, out = tmp_path / "matek19", tmp_path / "out"
    expected = stand_in_matek19(raw)
    Matek19.build_folder(raw, out)
    ds = datasets.load_dataset(str(out))
    features = ds["train"].features
    assert features["label"].names == list(CODES)
    seen = {}
    for split in SPLITS:
        for row in ds[split]:
            seen[row["image_id"]] = row
            assert row["image"].mode == "RGB" and row["image"].size == (400, 400)
            source = np.asarray(Image.open(raw / row["image_id"]).convert("RGB"))
            assert pixel_sha256(np.asarray(row["image"])) == row["pixel_sha256"] == pixel_sha256(source)
    assert set(seen) == set(expected)
    assert any(i.endswith(".tiff.tiff") for i in seen)  # the doubled extension matched its annotation
    for image_id, (code, again) in expected.items():
        row = seen[image_id]
        assert features["label"].int2str(row["label"]) == code
        names = [features[c].int2str(row[c]) if row[c] >= 0 else None for c in ("first_reannotation", "second_reannotation")]
        assert names == (again + [None, None])[:2]
        harmonised = {"BAS": "basophil", "EBO": "erythroblast", "EOS": "eosinophil"}.get(code)
        assert row["harmonised_label"] == (-1 if harmonised is None else HARMONISED_CLASSES.index(harmonised))
    text = (out / "README.md").read_text()
    assert "10.7937/tcia.2019.36f5o9ld" in text and "Matek19" in text


def test_matek19_without_its_download_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(HemaError, match="TCIA"):
        Matek19(cache_dir=str(tmp_path / "cache")).download_and_prepare()
    (tmp_path / "download").mkdir()
    result = subprocess.run(
        [sys.executable, str(REPO / "hema_dataset.py"), "build", "--source", "matek19", "--data-dir",
         str(tmp_path / "download"), "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "annotations.dat" in last and "10.7937/tcia.2019.36f5o9ld" in last


def test_acevedo20_file_of_another_folder_is_one_clear_error(tmp_path: Path) -> None:
    raw = tmp_path / "acevedo"
    for folder, name in (("basophil", "BA_1.jpg"), ("basophil", "SNE_2.jpg")):
        (raw / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(raw / folder / name)
    with pytest.raises(HemaError, match="basophil/SNE_2.jpg"):
        Acevedo20.build_folder(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    shutil.rmtree(raw)
