"""MLL23 (Shetab Boushehri et al., Scientific Data 12:1773, 2025): the source's declaration and builder.

41,621 expert-annotated peripheral-blood single-cell images in 18 classes, distributed as one zip
per class on Zenodo (record 14277609, CC BY 4.0), laid out as <class>/<class>_NNNN.TIF. With no
data_dir the builder downloads them. Class names are the record's folder names; ClassLabel ids are
their alphabetical order.

    builder = MLL23(data_dir=DIR)            # or config_name="deduplicated" / "harmonised"
    builder.download_and_prepare()
    ds = builder.as_dataset()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets

from hema.dataset import schema
from hema.dataset.builder import CellImageBuilder
from hema.dataset.download import download_zenodo_classes
from hema.dataset.scan import Scan, scan_class_folders
from hema.dataset.sources.declaration import Source

ZENODO_RECORD = "14277609"

#: Published image counts per class (labels_MLL23.csv of the dataset's authors).
PUBLISHED_COUNTS: dict[str, int] = {
    "myeloblast": 8606,
    "neutrophil_segmented": 7170,
    "lymphocyte": 5532,
    "hairy_cell": 3265,
    "monocyte": 2510,
    "eosinophil": 2448,
    "normoblast": 2071,
    "promyelocyte_atypical": 2033,
    "lymphocyte_large_granular": 1849,
    "plasma_cell": 1658,
    "smudge_cell": 988,
    "myelocyte": 747,
    "promyelocyte": 745,
    "neutrophil_band": 687,
    "basophil": 616,
    "metamyelocyte": 483,
    "lymphocyte_neoplastic": 180,
    "lymphocyte_reactive": 33,
}

#: The 18 cell classes in ClassLabel order (alphabetical folder names).
CELL_CLASSES: tuple[str, ...] = tuple(sorted(PUBLISHED_COUNTS))

#: MLL23 class -> its harmonised label (hema.base.taxonomy; only normoblast is renamed); 7 classes have none.
HARMONISED: dict[str, str] = {
    "basophil": "basophil",
    "eosinophil": "eosinophil",
    "lymphocyte": "lymphocyte",
    "metamyelocyte": "metamyelocyte",
    "monocyte": "monocyte",
    "myeloblast": "myeloblast",
    "myelocyte": "myelocyte",
    "neutrophil_band": "neutrophil_band",
    "neutrophil_segmented": "neutrophil_segmented",
    "normoblast": "erythroblast",
    "promyelocyte": "promyelocyte",
}

#: Haematopoietic lineage of each class, for grouping in tables and figures.
LINEAGE: dict[str, str] = {
    "basophil": "granulocytic",
    "eosinophil": "granulocytic",
    "metamyelocyte": "granulocytic",
    "myeloblast": "myeloid precursor",
    "myelocyte": "granulocytic",
    "neutrophil_band": "granulocytic",
    "neutrophil_segmented": "granulocytic",
    "promyelocyte": "granulocytic",
    "promyelocyte_atypical": "granulocytic",
    "monocyte": "monocytic",
    "lymphocyte": "lymphoid",
    "lymphocyte_large_granular": "lymphoid",
    "lymphocyte_neoplastic": "lymphoid",
    "lymphocyte_reactive": "lymphoid",
    "hairy_cell": "lymphoid",
    "plasma_cell": "lymphoid",
    "normoblast": "erythroid",
    "smudge_cell": "other",
}

CITATION = """\
@article{shetabboushehri2025mll23,
  title   = {A large expert-annotated single-cell peripheral blood dataset for hematological disease diagnostics},
  author  = {Shetab Boushehri, Sayedali and Kazeminia, Salome and Gruber, Armin and Matek, Christian and
             Spiekermann, Karsten and Pohlkamp, Christian and Haferlach, Torsten and Marr, Carsten},
  journal = {Scientific Data},
  volume  = {12},
  number  = {1},
  pages   = {1773},
  year    = {2025},
  doi     = {10.1038/s41597-025-06223-x}
}
"""


def scan(data_dir: Path) -> Scan:
    """<class>/<class>_NNNN.TIF: the folder is the label."""
    return scan_class_folders(data_dir, CELL_CLASSES, HARMONISED)


SOURCE = Source(
    name="mll23",
    title="MLL23",
    pretty_name="MLL23: peripheral blood single-cell images (18 classes)",
    summary=(
        "MLL23: 41,621 expert-annotated peripheral-blood single-cell images (288x288 px, Pappenheim "
        "stain, Metafer scanner) in 18 classes from the Munich Leukemia Laboratory, with group-aware "
        "stratified splits and duplicate metadata."
    ),
    homepage="https://doi.org/10.5281/zenodo.14277609",
    license="cc-by-4.0",
    citation=CITATION,
    pixel_size_um=25 / 288,  # a 25 um field across 288 px
    classes=CELL_CLASSES,
    lineage=LINEAGE,
    scan=scan,
    card_intro=(
        "MLL23 is the largest public expert-annotated set of peripheral-blood single-cell images: 41,621\n"
        "images in 18 classes from the Munich Leukemia Laboratory (Shetab Boushehri et al., *Scientific Data*\n"
        "12:1773, 2025). Each image is a 288×288 px RGB crop (25 µm field, 11.52 px/µm) centred on one\n"
        "leukocyte of a Pappenheim-stained blood smear, scanned with a Metafer system."
    ),
    card_origin=(
        "Images and labels: Zenodo record [14277609](https://doi.org/10.5281/zenodo.14277609) by the Munich\n"
        "Leukemia Laboratory and Helmholtz Munich, licensed **CC BY 4.0**: credit the authors (citation\n"
        "below) when you use or redistribute them."
    ),
    image_id_example="basophil/basophil_0001.TIF",
)


FEATURES = schema.features(SOURCE)


def download(
    output_dir: Path, classes: Sequence[str] | None = None, *, base_url: str | None = None, retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download MLL23 (all classes or `classes`) from Zenodo into output_dir/<class>/ (resumable)."""
    return download_zenodo_classes(output_dir, ZENODO_RECORD, CELL_CLASSES, classes, base_url=base_url,
                                   retries=retries, sleep=sleep)


class MLL23(CellImageBuilder):
    """MLL23 single-cell images from the raw class folders (`data_dir`), or downloaded from Zenodo."""

    VERSION = datasets.Version("1.0.0")
    SOURCE = SOURCE

    def raw_data_dir(self, dl_manager: datasets.DownloadManager) -> Path:
        """Fetch the class zips from Zenodo into the datasets download cache (resumable)."""
        return download(self.download_folder(dl_manager, f"mll23_zenodo_{ZENODO_RECORD}"))


MLL23Config = MLL23.BUILDER_CONFIG_CLASS
build_dataset = MLL23.build_folder
