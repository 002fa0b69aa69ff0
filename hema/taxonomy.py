"""The MLL23 cell classes: the one source of truth for names, counts, lineages and harmonisation.

Class names are the folder names of the Zenodo record 14277609; ClassLabel ids are their
alphabetical order. The harmonised labels are the 11 classes MLL23 shares with Matek19 and
Acevedo20 (Shetab Boushehri et al. 2025, table of harmonised labels).
"""

from __future__ import annotations

# Published image counts per class (labels_MLL23.csv of the dataset's authors).
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

#: MLL23 class -> harmonised label shared with Matek19 and Acevedo20 (only normoblast is renamed).
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

#: The 11 harmonised labels in ClassLabel order (alphabetical).
HARMONISED_CLASSES: tuple[str, ...] = tuple(sorted(set(HARMONISED.values())))

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

TOTAL_IMAGES = sum(PUBLISHED_COUNTS.values())  # 41,621


def class_id(cell_class: str) -> int:
    """ClassLabel id of an MLL23 class name."""
    return CELL_CLASSES.index(cell_class)


def harmonised_id(cell_class: str) -> int:
    """ClassLabel id of a class's harmonised label, or -1 for the 7 MLL23-only classes."""
    name = HARMONISED.get(cell_class)
    return -1 if name is None else HARMONISED_CLASSES.index(name)
