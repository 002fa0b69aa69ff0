"""Logic behind the MLL23 tools: one small module per job.

hema_dataset.py (build, sample, dedup, download, push) and train_vit.py are thin command lines over
these modules; each module is importable and tested on its own.
"""

__version__ = "0.1.0"
