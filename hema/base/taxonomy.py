"""The harmonised labels: the 11 classes MLL23, Matek19 and Acevedo20 share (Shetab Boushehri et al.
2025, table of harmonised labels), in which builds of different sources are trained and evaluated
against each other. Each source's own classes, and how they map here, are declared with the source
(hema.dataset.sources).
"""

from __future__ import annotations

#: The 11 harmonised labels in ClassLabel order (alphabetical).
HARMONISED_CLASSES: tuple[str, ...] = (
    "basophil", "eosinophil", "erythroblast", "lymphocyte", "metamyelocyte", "monocyte", "myeloblast", "myelocyte",
    "neutrophil_band", "neutrophil_segmented", "promyelocyte",
)

#: Haematopoietic lineage of each harmonised label, for tables and model cards.
HARMONISED_LINEAGE: dict[str, str] = {
    "basophil": "granulocytic", "eosinophil": "granulocytic", "erythroblast": "erythroid", "lymphocyte": "lymphoid",
    "metamyelocyte": "granulocytic", "monocyte": "monocytic", "myeloblast": "myeloid precursor",
    "myelocyte": "granulocytic", "neutrophil_band": "granulocytic", "neutrophil_segmented": "granulocytic",
    "promyelocyte": "granulocytic",
}


def harmonised_id(name: str | None) -> int:
    """ClassLabel id of a harmonised label, or -1 for an image without one."""
    return -1 if name is None else HARMONISED_CLASSES.index(name)
