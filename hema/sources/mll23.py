"""MLL23 (Shetab Boushehri et al., Scientific Data 12:1773, 2025): the source's declaration and builder.

41,621 expert-annotated peripheral-blood single-cell images in 18 classes, distributed as one zip
per class on Zenodo (record 14277609, CC BY 4.0), laid out as <class>/<class>_NNNN.TIF. With no
data_dir the builder downloads them.

    builder = MLL23(data_dir=DIR)            # or config_name="deduplicated" / "harmonised"
    builder.download_and_prepare()
    ds = builder.as_dataset()
"""

from __future__ import annotations

from pathlib import Path

import datasets

from hema import schema
from hema.builder import CellImageBuilder
from hema.scan import Scan, scan_class_folders
from hema.source import Source
from hema.taxonomy import CELL_CLASSES, HARMONISED, LINEAGE

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


class MLL23(CellImageBuilder):
    """MLL23 single-cell images from the raw class folders (`data_dir`), or downloaded from Zenodo."""

    VERSION = datasets.Version("1.0.0")
    SOURCE = SOURCE

    def raw_data_dir(self, dl_manager: datasets.DownloadManager) -> Path:
        """Fetch the class zips from Zenodo into the datasets download cache (resumable)."""
        from hema.download import ZENODO_RECORD, download_mll23

        return download_mll23(self.download_folder(dl_manager, f"mll23_zenodo_{ZENODO_RECORD}"))


MLL23Config = MLL23.BUILDER_CONFIG_CLASS
build_dataset = MLL23.build_folder
