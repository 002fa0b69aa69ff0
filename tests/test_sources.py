"""The sister sources in the MLL23 schema: Acevedo20 from its real layout, Matek19 and BMC from their TCIA layouts."""

from __future__ import annotations

import logging
import re
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
    assert sorted(BUILDERS) == ["acevedo20", "bmc", "matek19", "mll23"]
    shared = {"image", "label", "image_id", "pixel_sha256", "phash", "dup_group", "dup_group_size", "dup_kind",
              "label_conflict", "dup_representative", "harmonised_label"}
    for builder in BUILDERS.values():
        features = builder.dataset_info().features
        assert shared <= set(features), builder
        assert features["harmonised_label"].names == list(HARMONISED_CLASSES)
        size = builder.SOURCE.pixel_size_um  # microns per pixel, recorded for field matching where published
        assert 0.05 < size < 0.2 if builder.SOURCE.name != "bmc" else size is None


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


#: The Acevedo20 prefix whose cells stand in for each BMC code in the stand-in below.
BMC_STAND_INS = {"BA": "BAS", "EO": "EOS", "ERB": "EBO", "LY": "LYT", "MO": "MON", "SNE": "NGS", "BNE": "NGB",
                 "MY": "MYB", "MMY": "MMZ", "PMY": "PMO", "IG": "BLA", "PLATELET": "ART", "NEUTROPHIL": "NIF"}


def stand_in_bmc(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """TCIA's BMC layout with real cells: BM_cytomorphology_data/<CODE>/<CODE>_NNNNN.jpg at 250x250, the
    files of a class numbered from 990 so that they cross from its 0001-1000 subfolder into 1001-2000 (as
    the larger classes' files are stored), flat in small classes, beside abbreviations.csv.

    Every third Acevedo20 cell, and the two files that are one image under two labels. Returns image_id -> code
    and Acevedo20 file name -> image_id.
    """
    from hema.dataset.sources.bmc import MEANING

    cells = sorted(ACEVEDO.glob("*/*.jpg"))[::3] + [ACEVEDO / "eosinophil/EO_225902.jpg",
                                                     ACEVEDO / "neutrophil/BNE_191112.jpg"]
    folder, expected, origin, numbers = root / "BM_cytomorphology_data", {}, {}, defaultdict(lambda: 990)
    for path in dict.fromkeys(cells):
        code = BMC_STAND_INS[path.name.split("_")[0]]
        numbers[code] += 1
        n = numbers[code]
        ranged = code in {"NGS", "EOS", "EBO", "LYT"}
        block = f"{(n - 1) // 1000 * 1000 + 1:04d}-{((n - 1) // 1000 + 1) * 1000:04d}/" if ranged else ""
        image_id = f"{code}/{block}{code}_{n:05d}.jpg"
        rgb = Image.open(path).convert("RGB")
        left, top = (rgb.width - 250) // 2, (rgb.height - 250) // 2
        target = folder / image_id
        target.parent.mkdir(parents=True, exist_ok=True)
        rgb.crop((left, top, left + 250, top + 250)).save(target, quality=95)
        expected[image_id], origin[path.name] = code, image_id
    (folder / "abbreviations.csv").write_text("Abbreviation,Meaning\n" + "".join(f"{c},{m}\n" for c, m in MEANING.items()))
    return expected, origin


@needs_acevedo
def test_bmc_from_its_tcia_layout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from hema.dataset.sources.bmc import BMC, CODES as BMC_CODES, HARMONISED as BMC_HARMONISED

    raw, out = tmp_path / "bmc", tmp_path / "out"
    expected, origin = stand_in_bmc(raw)
    with caplog.at_level(logging.INFO, logger="hema.stages"):
        summary = BMC.build_folder(raw, out)
    logged = [r.getMessage() for r in caplog.records if r.name == "hema.stages"]
    assert [m.split(":")[0] for m in logged] == [f"stage {s}" for s in ("scan", "decode", "duplicates", "fields",
                                                                          "splits", "parquet", "card")]
    assert all(re.match(r"stage \w+: [\d.]+ s wall, [\d.]+ s CPU, [\d.]+ s system", m) for m in logged)  # as bench/build_bench.py reads them
    rows, features = rows_of(out)
    assert features["label"].names == list(BMC_CODES) and len(BMC_CODES) == 21
    assert sorted(rows) == sorted(expected)  # every file one row, its id the path inside BM_cytomorphology_data
    assert any("/1001-2000/" in i for i in rows) and any("/0001-1000/" in i for i in rows)
    for image_id, row in rows.items():
        code = expected[image_id]
        assert features["label"].int2str(row["label"]) == code
        harmonised = BMC_HARMONISED.get(code)
        assert row["harmonised_label"] == (-1 if harmonised is None else HARMONISED_CLASSES.index(harmonised))
    a, b = rows[origin["EO_225902.jpg"]], rows[origin["BNE_191112.jpg"]]
    assert a["dup_group"] == b["dup_group"] and a["dup_kind"] == "exact" and a["label_conflict"]  # one image, two codes
    assert summary.duplicates["exact_groups"] >= 1
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0" and card.data.hema == {"source": "bmc", "pixel_size_um": None}
    text = (out / "README.md").read_text()
    for words in ("Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer", "10.7937/TCIA.AXH3-T579", "CC BY 4.0",
                  "not published by the source", "PEB, an earlier erythroid stage"):
        assert words in text, words
    again = tmp_path / "again"  # the inner folder itself: the same ids
    BMC.build_folder(raw / "BM_cytomorphology_data", again)
    assert sorted(rows_of(again)[0]) == sorted(rows)


def test_bmc_without_its_download_says_where_to_get_it(tmp_path: Path) -> None:
    from hema.dataset.sources.bmc import BMC

    with pytest.raises(HemaError, match="TCIA"):
        BMC(cache_dir=str(tmp_path / "cache")).download_and_prepare()
    (tmp_path / "download" / "BM_cytomorphology_data").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, str(REPO / "hema_dataset.py"), "build", "--source", "bmc", "--data-dir",
         str(tmp_path / "download"), "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "BM_cytomorphology_data/<CODE>" in last and "10.7937/TCIA.AXH3-T579" in last
    misplaced = tmp_path / "misplaced" / "BAS"
    misplaced.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(misplaced / "NGS_00001.jpg")
    with pytest.raises(HemaError, match="BAS/NGS_00001.jpg"):
        BMC.build_folder(tmp_path / "misplaced", tmp_path / "out")


@pytest.mark.parametrize("source", ["bmc", "matek19"])
def test_an_image_folder_that_links_out_of_the_data_folder_is_refused(tmp_path: Path, source: str) -> None:
    """TCIA's downloads hold their images one folder down; that folder, linked elsewhere, is not read."""
    from hema.dataset.sources.bmc import BMC
    from hema.dataset.sources.matek19 import ANNOTATIONS, IMAGES, Matek19

    elsewhere, raw = tmp_path / "elsewhere", tmp_path / "raw"
    (elsewhere / "BAS").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(elsewhere / "BAS" / "BAS_00001.jpg")
    raw.mkdir()
    if source == "bmc":
        builder, inner = BMC, raw / "BM_cytomorphology_data"
    else:
        builder, inner = Matek19, raw / IMAGES
        (raw / ANNOTATIONS).write_text("")
    inner.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(HemaError, match="outside the data folder"):
        builder.build_folder(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
