"""Acevedo20 (PBC; Acevedo et al., Data in Brief 30:105474, 2020): the source's declaration and builder.

17,092 JPEG images (360x363 px, a few 366x369) of normal peripheral-blood cells, CellaVision DM96,
May Grünwald-Giemsa, in 8 folders: <folder>/<PREFIX>_<n>.jpg. `label` is the folder, as the dataset
is commonly used; the file-name prefix carries a finer class (ig: IG, MY, MMY, PMY; neutrophil: SNE,
BNE, NEUTROPHIL), published as `fine_label`, and the harmonised label is derived from it (the MLL23
authors' table): SNE segmented, BNE band, MY myelocyte, MMY metamyelocyte, PMY promyelocyte; IG,
NEUTROPHIL and platelets have none. Mendeley Data doi 10.17632/snkd93bnjr.1, CC BY 4.0.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import datasets

from hema.dataset.builder import CellImageBuilder
from hema.dataset.download import download_mendeley_archive
from hema.base.errors import HemaError
from hema.base.files import first_names
from hema.dataset.scan import Scan, scan_class_folders
from hema.dataset.sources.declaration import Source

CITATION = """\
@article{acevedo2020pbc,
  title   = {A dataset of microscopic peripheral blood cell images for development of automatic recognition systems},
  author  = {Acevedo, Andrea and Merino, Anna and Alf{\\'e}rez, Santiago and Molina, {\\'A}ngel and
             Bold{\\'u}, Laura and Rodellar, Jos{\\'e}},
  journal = {Data in Brief},
  volume  = {30},
  pages   = {105474},
  year    = {2020},
  doi     = {10.1016/j.dib.2020.105474}
}
"""

MENDELEY_DATASET, MENDELEY_VERSION = "snkd93bnjr", 1  # doi 10.17632/snkd93bnjr.1

FOLDERS = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")

#: File-name prefix -> (its folder, the finer class it names).
PREFIXES: dict[str, tuple[str, str]] = {
    "BA": ("basophil", "basophil"),
    "EO": ("eosinophil", "eosinophil"),
    "ERB": ("erythroblast", "erythroblast"),
    "IG": ("ig", "unspecified_immature_granulocytes"),
    "MY": ("ig", "myelocyte"),
    "MMY": ("ig", "metamyelocyte"),
    "PMY": ("ig", "promyelocyte"),
    "LY": ("lymphocyte", "lymphocyte"),
    "MO": ("monocyte", "monocyte"),
    "SNE": ("neutrophil", "neutrophil_segmented"),
    "BNE": ("neutrophil", "neutrophil_band"),
    "NEUTROPHIL": ("neutrophil", "unspecified_neutrophils"),
    "PLATELET": ("platelet", "platelet"),
}
FINE_CLASSES: tuple[str, ...] = tuple(sorted({fine for _, fine in PREFIXES.values()}))

#: Finer class -> harmonised label (labels_harmonised.csv of the MLL23 authors); the rest have none.
HARMONISED = {
    "basophil": "basophil",
    "eosinophil": "eosinophil",
    "erythroblast": "erythroblast",
    "lymphocyte": "lymphocyte",
    "metamyelocyte": "metamyelocyte",
    "monocyte": "monocyte",
    "myelocyte": "myelocyte",
    "neutrophil_band": "neutrophil_band",
    "neutrophil_segmented": "neutrophil_segmented",
    "promyelocyte": "promyelocyte",
}

LINEAGE = {
    "basophil": "granulocytic", "eosinophil": "granulocytic", "erythroblast": "erythroid",
    "ig": "granulocytic", "lymphocyte": "lymphoid", "monocyte": "monocytic", "neutrophil": "granulocytic",
    "platelet": "megakaryocytic",
}

FINE_LABEL = datasets.ClassLabel(names=list(FINE_CLASSES))


def scan(data_dir: Path) -> Scan:
    """<folder>/<PREFIX>_<n>.jpg: the folder is the label, the prefix the finer class."""
    found = scan_class_folders(data_dir, FOLDERS)
    entries, wrong = [], []
    for entry in found.entries:
        prefix = Path(entry.image_id).name.split("_")[0].upper()
        folder, fine = PREFIXES.get(prefix, (None, None))
        if folder != entry.cell_class:
            wrong.append(entry.image_id)
            continue
        entries.append(dataclasses.replace(entry, harmonised=HARMONISED.get(fine), extra={"fine_label": FINE_LABEL.str2int(fine)}))
    if wrong:
        raise HemaError(
            f"{len(wrong)} file(s) whose name prefix is not one of their folder's ({first_names(wrong)}); "
            "Acevedo20 names files <PREFIX>_<n>.jpg with PREFIX in "
            f"{', '.join(PREFIXES)}"
        )
    return dataclasses.replace(found, entries=entries)


SOURCE = Source(
    name="acevedo20",
    title="Acevedo20",
    pretty_name="Acevedo20 (PBC): normal peripheral blood cell images (8 classes)",
    summary=(
        "Acevedo20 (PBC): 17,092 images of normal peripheral-blood cells (360x363 px JPEG, May Grünwald-Giemsa, "
        "CellaVision DM96) in 8 classes from the Hospital Clinic of Barcelona, with finer classes from the file "
        "names, group-aware stratified splits and duplicate metadata."
    ),
    homepage="https://doi.org/10.17632/snkd93bnjr.1",
    license="cc-by-4.0",
    citation=CITATION,
    pixel_size_um=36 / 360,  # a ~36 um field across 360 px
    classes=FOLDERS,
    lineage=LINEAGE,
    scan=scan,
    card_intro=(
        "Acevedo20 (the PBC dataset; Acevedo et al., *Data in Brief* 30:105474, 2020) holds 17,092 images of\n"
        "individual normal peripheral-blood cells from the Hospital Clinic of Barcelona, acquired with a\n"
        "CellaVision DM96 analyser from May Grünwald-Giemsa-stained smears: 360×363 px JPEG (a few 366×369),\n"
        "about 36 µm across (0.1 µm/px). `label` is one of its 8 folders; `fine_label` is the finer class that\n"
        "the file-name prefix gives (immature granulocytes and neutrophils are subdivided)."
    ),
    card_origin=(
        "Images and labels: Mendeley Data, doi [10.17632/snkd93bnjr.1](https://doi.org/10.17632/snkd93bnjr.1),\n"
        "by A. Acevedo, A. Merino, S. Alférez, Á. Molina, L. Boldú and J. Rodellar, licensed **CC BY 4.0**:\n"
        "credit the authors (citation below) when you use or redistribute them."
    ),
    image_id_example="neutrophil/SNE_100000.jpg",
    extra_features={"fine_label": FINE_LABEL},
    extra_columns_doc={"fine_label": "the finer class of the file-name prefix: " + ", ".join(FINE_CLASSES)},
)


def download(
    output_dir: Path, *, base_url: str | None = None, retries: int = 5, sleep: Callable[[float], None] = time.sleep
) -> Path:
    """Download Acevedo20 (the PBC dataset) from Mendeley Data into output_dir/<folder>/ (resumable, verified)."""
    return download_mendeley_archive(output_dir, MENDELEY_DATASET, MENDELEY_VERSION, base_url=base_url,
                                     retries=retries, sleep=sleep)


class Acevedo20(CellImageBuilder):
    """Acevedo20 single-cell images from the dataset's own 8 folders (`data_dir`), or downloaded from Mendeley Data."""

    VERSION = datasets.Version("1.0.0")
    SOURCE = SOURCE

    def raw_data_dir(self, dl_manager: datasets.DownloadManager) -> Path:
        """Fetch the PBC zip from Mendeley Data into the datasets download cache (resumable, verified)."""
        return download(self.download_folder(dl_manager, f"acevedo20_mendeley_{MENDELEY_DATASET}"))
