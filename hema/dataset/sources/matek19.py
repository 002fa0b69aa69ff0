"""Matek19 (AML_Cytomorphology_LMU; Matek et al. 2019): the source's declaration and builder.

18,365 single-cell TIFF images (400x400 px RGBA, 100x oil immersion, M8 scanner) of 200 patients
from the Munich University Hospital, in 15 morphological classes. TCIA serves it through its own
download tools (doi 10.7937/tcia.2019.36f5o9ld), so the builder takes the downloaded folder:
DIR/AML-Cytomorphology_LMU/<CODE>/<CODE>_NNNN.tiff beside DIR/annotations.dat, whose lines are
`path annotation [first_reannotation [second_reannotation]]`. One file is stored as `.tiff.tiff`
while annotations.dat names it once; both spellings are accepted.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import datasets

from hema.dataset.builder import CellImageBuilder
from hema.base.errors import HemaError
from hema.base.files import is_inside, real_root
from hema.dataset.scan import Scan, scan_class_folders
from hema.dataset.sources.declaration import Source

logger = logging.getLogger(__name__)

CITATION = """\
@misc{matek2019amlcytomorphology,
  title     = {Data from: Human-level recognition of blast cells in acute myeloid leukemia with convolutional neural networks},
  author    = {Matek, Christian and Schwarz, Simone and Marr, Carsten and Spiekermann, Karsten},
  publisher = {The Cancer Imaging Archive},
  year      = {2019},
  doi       = {10.7937/tcia.2019.36f5o9ld}
}
"""

IMAGES = "AML-Cytomorphology_LMU"
ANNOTATIONS = "annotations.dat"

#: The 15 codes, with the harmonised label of those that have one (labels_harmonised.csv).
CODES = ("BAS", "EBO", "EOS", "KSC", "LYA", "LYT", "MMZ", "MOB", "MON", "MYB", "MYO", "NGB", "NGS", "PMB", "PMO")
HARMONISED = {
    "BAS": "basophil", "EBO": "erythroblast", "EOS": "eosinophil", "LYT": "lymphocyte", "MMZ": "metamyelocyte",
    "MON": "monocyte", "MYB": "myelocyte", "MYO": "myeloblast", "NGB": "neutrophil_band",
    "NGS": "neutrophil_segmented", "PMO": "promyelocyte",
}
MEANING = {
    "BAS": "basophil", "EBO": "erythroblast", "EOS": "eosinophil", "KSC": "smudge cell", "LYA": "atypical lymphocyte",
    "LYT": "typical lymphocyte", "MMZ": "metamyelocyte", "MOB": "monoblast", "MON": "monocyte", "MYB": "myelocyte",
    "MYO": "myeloblast", "NGB": "band neutrophil", "NGS": "segmented neutrophil", "PMB": "bilobed promyelocyte",
    "PMO": "promyelocyte",
}
LINEAGE = {
    "BAS": "granulocytic", "EBO": "erythroid", "EOS": "granulocytic", "KSC": "other", "LYA": "lymphoid",
    "LYT": "lymphoid", "MMZ": "granulocytic", "MOB": "monocytic", "MON": "monocytic", "MYB": "granulocytic",
    "MYO": "myeloid precursor", "NGB": "granulocytic", "NGS": "granulocytic", "PMB": "granulocytic",
    "PMO": "granulocytic",
}
REANNOTATION = datasets.ClassLabel(names=list(CODES))
REANNOTATIONS = ("first_reannotation", "second_reannotation")


def read_annotations(path: Path) -> dict[str, list[str]]:
    """annotations.dat: image path (as written there) -> [annotation, re-annotations...]."""
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        codes = [f.upper() for f in fields[1:4]]
        unknown = [c for c in codes if c not in CODES]
        if not codes or unknown:
            raise HemaError(f"{path}:{number}: expected `path code [code [code]]` with codes in {', '.join(CODES)}, "
                            f"got {line.strip()!r}")
        table[_key(fields[0])] = codes
    return table


def _key(image_path: str) -> str:
    """The path an annotation names, relative to the image folder and with one .tiff: the doubled extension undone."""
    key = image_path.replace("\\", "/").removeprefix("./").removeprefix(f"{IMAGES}/")
    return key[: -len(".tiff")] if key.lower().endswith(".tiff.tiff") else key


def scan(data_dir: Path) -> Scan:
    """DIR/AML-Cytomorphology_LMU/<CODE>/<files> labelled by DIR/annotations.dat (the folder where it is silent)."""
    images, annotations = Path(data_dir) / IMAGES, Path(data_dir) / ANNOTATIONS
    if not images.is_dir() or not annotations.is_file():
        raise HemaError(
            f"{data_dir} is not the Matek19 layout: expected {IMAGES}/<CODE>/<CODE>_NNNN.tiff beside {ANNOTATIONS} "
            "(download the collection from TCIA, https://doi.org/10.7937/tcia.2019.36f5o9ld)"
        )
    if not is_inside(annotations, real_root(data_dir)):
        raise HemaError(f"{annotations} is a link to a place outside {data_dir}: refusing to read it")
    table = read_annotations(annotations)
    found = scan_class_folders(images, CODES, within=data_dir)
    entries = []
    for entry in found.entries:
        codes = table.pop(_key(entry.image_id), None)
        if codes is None:
            logger.warning("%s is not in %s: labelled by its folder", entry.image_id, ANNOTATIONS)
            codes = [entry.cell_class]
        label, *again = codes
        entries.append(dataclasses.replace(
            entry, image_id=f"{IMAGES}/{entry.image_id}", cell_class=label, harmonised=HARMONISED.get(label),
            extra={name: REANNOTATION.str2int(again[i]) if i < len(again) else -1 for i, name in enumerate(REANNOTATIONS)},
        ))
    for missing in sorted(table)[:5]:
        logger.warning("%s names %s, which is not in %s", ANNOTATIONS, missing, IMAGES)
    skipped = [dataclasses.replace(s, image_id=f"{IMAGES}/{s.image_id}") for s in found.skipped]
    return dataclasses.replace(found, entries=entries, skipped=skipped)


SOURCE = Source(
    name="matek19",
    title="Matek19",
    pretty_name="Matek19 (AML_Cytomorphology_LMU): peripheral blood single-cell images (15 classes)",
    summary=(
        "Matek19 (AML_Cytomorphology_LMU): 18,365 expert-annotated peripheral-blood single-cell images (400x400 px, "
        "100x oil immersion, M8 scanner) of 200 patients in 15 classes, with re-annotations, group-aware stratified "
        "splits and duplicate metadata."
    ),
    homepage="https://doi.org/10.7937/tcia.2019.36f5o9ld",
    license="cc-by-3.0",  # the TCIA collection page's licence
    citation=CITATION,
    pixel_size_um=29 / 400,  # a ~29 um field across 400 px
    classes=CODES,
    lineage=LINEAGE,
    scan=scan,
    card_intro=(
        "Matek19 (AML_Cytomorphology_LMU; Matek et al., *Nature Machine Intelligence* 1:538, 2019) holds 18,365\n"
        "expert-annotated single white blood cells from peripheral-blood smears of 200 patients (100 with AML)\n"
        "of the Munich University Hospital, scanned with an M8 digital microscope at 100× oil immersion:\n"
        "400×400 px TIFF, about 29 µm across (0.0725 µm/px), RGBA in the source (stored here as RGB). `label` is\n"
        "the morphological code of `annotations.dat` (" + ", ".join(f"{c} {MEANING[c]}" for c in CODES) + ");\n"
        "re-annotated images carry the second and third experts' codes."
    ),
    card_origin=(
        "Images and labels: The Cancer Imaging Archive, collection AML-Cytomorphology_LMU,\n"
        "doi [10.7937/tcia.2019.36f5o9ld](https://doi.org/10.7937/tcia.2019.36f5o9ld), licensed **CC BY 3.0**\n"
        "under TCIA's data usage policy: cite the collection (citation below) when you use or redistribute it."
    ),
    image_id_example=f"{IMAGES}/BAS/BAS_0001.tiff",
    extra_features={name: REANNOTATION for name in REANNOTATIONS},
    extra_columns_doc={
        "first_reannotation": "the code a second expert gave, for re-annotated images; -1 elsewhere",
        "second_reannotation": "the code a third expert gave, where there is one; -1 elsewhere",
    },
)


class Matek19(CellImageBuilder):
    """Matek19 single-cell images from the TCIA download (`data_dir`: the folder holding annotations.dat)."""

    VERSION = datasets.Version("1.0.0")
    SOURCE = SOURCE
    WHERE_TO_GET = (
        "TCIA serves it through its own download tools; get the AML-Cytomorphology_LMU collection from "
        f"https://doi.org/10.7937/tcia.2019.36f5o9ld and pass the folder holding {ANNOTATIONS} and {IMAGES}/"
    )
