"""MLL23 (Shetab Boushehri et al., Scientific Data 12:1773, 2025): the source's builder.

41,621 expert-annotated peripheral-blood single-cell images in 18 classes, distributed as one zip
per class on Zenodo (record 14277609, CC BY 4.0). With no data_dir the builder downloads them.

    builder = MLL23(data_dir=DIR)            # or config_name="deduplicated" / "harmonised"
    builder.download_and_prepare()
    ds = builder.as_dataset()
"""

from __future__ import annotations

from pathlib import Path

import datasets

from hema import schema
from hema.builder import CellImageBuilder, CellImageConfig

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
HOMEPAGE = "https://doi.org/10.5281/zenodo.14277609"
LICENSE = "cc-by-4.0"
DESCRIPTION = (
    "MLL23: 41,621 expert-annotated peripheral-blood single-cell images (288x288 px, Pappenheim "
    "stain, Metafer scanner) in 18 classes from the Munich Leukemia Laboratory, with group-aware "
    "stratified splits and duplicate metadata."
)

MLL23Config = CellImageConfig  # the build parameters are the same for every source


class MLL23(CellImageBuilder):
    """MLL23 single-cell images from the raw class folders (`data_dir`), or downloaded from Zenodo."""

    VERSION = datasets.Version("1.0.0")

    @classmethod
    def dataset_info(cls) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=DESCRIPTION, features=schema.FEATURES, homepage=HOMEPAGE, license=LICENSE, citation=CITATION
        )

    def raw_data_dir(self, dl_manager: datasets.DownloadManager) -> Path:
        """Fetch the class zips from Zenodo into the datasets download cache (resumable)."""
        from hema.download import ZENODO_RECORD, download_mll23

        cache = Path(dl_manager.download_config.cache_dir or datasets.config.DOWNLOADED_DATASETS_PATH)
        return download_mll23(cache / f"mll23_zenodo_{ZENODO_RECORD}")


build_dataset = MLL23.build_folder
