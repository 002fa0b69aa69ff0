"""Our evaluate metrics as local modules (evaluate.load of a Hub metric needs the network)."""

from pathlib import Path

#: evaluate.load(str(CELL_CLASSIFICATION)): accuracy, balanced accuracy, macro/weighted F1, per class, confusion.
CELL_CLASSIFICATION = Path(__file__).parent / "cell_classification"
