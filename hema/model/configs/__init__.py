"""Model configurations shipped with hema."""

from pathlib import Path

#: The offline demo's small ViT: config.json and preprocessor_config.json only (random initialisation).
VIT_TINY_DEMO = Path(__file__).parent / "vit-tiny-demo"
