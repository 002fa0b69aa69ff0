"""The card templates (Jinja, rendered by huggingface_hub's card classes), shipped inside the package."""

from pathlib import Path

DATASET_CARD = Path(__file__).parent / "dataset_card.md.jinja"
MODEL_CARD = Path(__file__).parent / "model_card.md.jinja"
