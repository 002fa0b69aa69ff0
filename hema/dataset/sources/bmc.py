"""BMC (Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer; Matek et al., Blood 138:1917, 2021):
the source's declaration and builder.

171,374 JPEG single-cell images (250x250 px) from bone-marrow smears of 945 patients of the Munich
Leukemia Laboratory, May-Grünwald-Giemsa/Pappenheim stain, 40x oil immersion, in 21 classes named by
three-letter codes. TCIA serves it (doi 10.7937/TCIA.AXH3-T579, CC BY 4.0) through IBM Aspera, so the
builder takes the downloaded folder: BM_cytomorphology_data/<CODE>/<CODE>_NNNNN.jpg, where the larger
classes split their files into subfolders of a thousand (<CODE>/0001-1000/...), beside the
collection's abbreviations table. `label` is the code; the harmonised label follows the class
definitions where they match the harmonised classes one to one (HARMONISED, with the reasons in the
card).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import datasets

from hema.base.errors import HemaError
from hema.base.files import first_names
from hema.dataset.builder import CellImageBuilder
from hema.dataset.scan import Scan, scan_class_folders
from hema.dataset.sources.declaration import Source

CITATION = """\
@article{matek2021bonemarrow,
  title   = {Highly accurate differentiation of bone marrow cell morphologies using deep neural networks on a large image data set},
  author  = {Matek, Christian and Krappe, Sebastian and M{\\"u}nzenmayer, Christian and Haferlach, Torsten and Marr, Carsten},
  journal = {Blood},
  volume  = {138},
  number  = {20},
  pages   = {1917--1927},
  year    = {2021},
  doi     = {10.1182/blood.2020010568}
}
@misc{matek2021bonemarrowdata,
  title     = {An Expert-Annotated Dataset of Bone Marrow Cytology in Hematologic Malignancies},
  author    = {Matek, Christian and Krappe, Sebastian and M{\\"u}nzenmayer, Christian and Haferlach, Torsten and Marr, Carsten},
  publisher = {The Cancer Imaging Archive},
  year      = {2021},
  doi       = {10.7937/TCIA.AXH3-T579}
}
"""

DOI = "10.7937/TCIA.AXH3-T579"
FOLDER = "BM_cytomorphology_data"  # what TCIA's download holds; the builder also takes that folder itself

#: The collection's abbreviations table: code -> the class it names.
MEANING = {
    "ABE": "abnormal eosinophil", "ART": "artefact", "BAS": "basophil", "BLA": "blast", "EBO": "erythroblast",
    "EOS": "eosinophil", "FGC": "faggot cell", "HAC": "hairy cell", "KSC": "smudge cell", "LYI": "immature lymphocyte",
    "LYT": "lymphocyte", "MMZ": "metamyelocyte", "MON": "monocyte", "MYB": "myelocyte", "NGB": "band neutrophil",
    "NGS": "segmented neutrophil", "NIF": "not identifiable", "OTH": "other cell", "PEB": "proerythroblast",
    "PLM": "plasma cell", "PMO": "promyelocyte",
}
CODES: tuple[str, ...] = tuple(MEANING)

#: Codes whose class is one of the harmonised classes (hema.base.taxonomy), one to one.
HARMONISED = {
    "BAS": "basophil", "EBO": "erythroblast", "EOS": "eosinophil", "LYT": "lymphocyte", "MMZ": "metamyelocyte",
    "MON": "monocyte", "MYB": "myelocyte", "NGB": "neutrophil_band", "NGS": "neutrophil_segmented",
    "PMO": "promyelocyte",
}
#: Why the other codes have no harmonised label (the card says so).
NOT_HARMONISED = {
    "BLA": "blasts of every lineage in one class: not the myeloblasts the harmonised `myeloblast` holds",
    "PEB": "an earlier erythroid stage than the (normo)blasts of the harmonised `erythroblast`",
    "ABE": "abnormal (inv(16)-type) eosinophils, kept apart from `eosinophil` by the annotators",
    "LYI": "immature lymphocytes, kept apart from `lymphocyte` by the annotators",
    "HAC": "hairy cells: MLL23 has them too, but outside the 11 harmonised classes",
    "PLM": "plasma cells: MLL23 has them too, but outside the 11 harmonised classes",
    "KSC": "smudge cells: outside the 11 harmonised classes",
    "FGC": "faggot cells: no counterpart", "ART": "artefacts: not cells", "NIF": "not identifiable",
    "OTH": "other cells",
}
LINEAGE = {
    "ABE": "granulocytic", "ART": "other", "BAS": "granulocytic", "BLA": "blast", "EBO": "erythroid",
    "EOS": "granulocytic", "FGC": "myeloid precursor", "HAC": "lymphoid", "KSC": "other", "LYI": "lymphoid",
    "LYT": "lymphoid", "MMZ": "granulocytic", "MON": "monocytic", "MYB": "granulocytic", "NGB": "granulocytic",
    "NGS": "granulocytic", "NIF": "other", "OTH": "other", "PEB": "erythroid", "PLM": "lymphoid",
    "PMO": "granulocytic",
}


def images_folder(data_dir: Path) -> Path:
    """The folder of the 21 class folders: DIR itself, or DIR/BM_cytomorphology_data as TCIA's download holds it."""
    nested = Path(data_dir) / FOLDER
    return nested if nested.is_dir() and not (Path(data_dir) / CODES[0]).exists() else Path(data_dir)


def scan(data_dir: Path) -> Scan:
    """<CODE>/[<range>/]<CODE>_NNNNN.jpg: the folder is the label; a file named for another code is refused.
    image_id is the path inside BM_cytomorphology_data, however the folder was passed."""
    images = images_folder(data_dir)
    if not any((images / code).is_dir() for code in CODES):
        raise HemaError(
            f"{data_dir} is not the BMC layout: expected {FOLDER}/<CODE>/<CODE>_NNNNN.jpg with CODE in "
            f"{', '.join(CODES)} (download the collection from TCIA, https://doi.org/{DOI})"
        )
    found = scan_class_folders(images, CODES, within=data_dir)
    wrong = [e.image_id for e in found.entries if Path(e.image_id).name.split("_")[0].upper() != e.cell_class]
    if wrong:
        raise HemaError(
            f"{len(wrong)} file(s) in a class folder that is not their code's ({first_names(wrong)}); "
            "BMC names files <CODE>_NNNNN.jpg inside <CODE>/"
        )
    entries = [dataclasses.replace(e, harmonised=HARMONISED.get(e.cell_class)) for e in found.entries]
    return dataclasses.replace(found, entries=entries)


SOURCE = Source(
    name="bmc",
    title="BMC",
    pretty_name="BMC (Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer): bone-marrow single-cell images (21 classes)",
    summary=(
        "BMC (Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer): 171,374 expert-annotated single-cell images "
        "(250x250 px JPEG, May-Grünwald-Giemsa/Pappenheim, 40x oil immersion) from bone-marrow smears of 945 patients "
        "in 21 classes, with group-aware stratified splits and duplicate metadata."
    ),
    homepage=f"https://doi.org/{DOI}",
    license="cc-by-4.0",
    citation=CITATION,
    pixel_size_um=None,  # the collection and its paper state the magnification, not the pixel size
    classes=CODES,
    lineage=LINEAGE,
    scan=scan,
    card_intro=(
        "BMC (Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer; Matek et al., *Blood* 138:1917, 2021) holds\n"
        "171,374 expert-annotated single cells from bone-marrow smears of 945 patients of the Munich Leukemia\n"
        "Laboratory (May-Grünwald-Giemsa/Pappenheim stain, brightfield microscope at 40× with oil immersion,\n"
        "scanning hardware from Fraunhofer IIS): 250×250 px JPEG, the largest public cytomorphology set.\n"
        "`label` is the annotators' code: " + ", ".join(f"{c} {MEANING[c]}" for c in CODES) + ".\n\n"
        "`harmonised` maps " + ", ".join(f"{c} → {h}" for c, h in HARMONISED.items()) + " (the class definitions\n"
        "match one to one); the rest stay -1: " + "; ".join(f"{c}, {why}" for c, why in NOT_HARMONISED.items())
        + ".\n\nThe collection states the magnification but not the pixel size, so this build records none: a model\n"
        "trained on BMC is evaluated on other datasets' images as stored, without field-of-view matching.\n"
        "DinoBloom's fixed BMC test split (34,266 cells, `splits/bm_test.csv` of github.com/marrlab/DinoBloom)\n"
        "is not published here; select its file names from `image_id` to reproduce it."
    ),
    card_origin=(
        "Images and labels: The Cancer Imaging Archive, collection Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer,\n"
        f"doi [{DOI}](https://doi.org/{DOI}), licensed **CC BY 4.0** under TCIA's data usage policy:\n"
        "cite the paper and the collection (citation below) when you use or redistribute them."
    ),
    image_id_example="NGS/0001-1000/NGS_00001.jpg",
)


class BMC(CellImageBuilder):
    """BMC single-cell images from the TCIA download (`data_dir`: BM_cytomorphology_data or the folder holding it)."""

    VERSION = datasets.Version("1.0.0")
    SOURCE = SOURCE
    WHERE_TO_GET = (
        "TCIA serves it through IBM Aspera; get the Bone-Marrow-Cytomorphology_MLL_Helmholtz_Fraunhofer collection "
        f"from https://doi.org/{DOI} and pass the folder holding {FOLDER}/"
    )
