"""hema: blood-cell image datasets (MLL23) on the Hugging Face Hub, and ViT fine-tuning on them.

The library under two command lines, `hema-dataset` (hema.cli.dataset: sample, build, dedup,
download, push) and `hema-train` (hema.cli.train), which the checkout's hema_dataset.py and
train_vit.py also run. One small module per job; each is importable and tested on its own.
"""

__version__ = "0.2.0"
