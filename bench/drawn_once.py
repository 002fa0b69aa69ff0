"""Bench inputs drawn once and cached: a folder counts as drawn only once its marker says it was finished."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path


def drawn_once(folder: Path, draw: Callable[[Path], str]) -> Path:
    """`folder`, drawn by draw(folder) unless a finished one is there (a half-drawn one, from a killed
    run, is drawn again); what draw returns is kept in the marker."""
    marker = folder / ".complete"
    if not marker.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        summary = draw(folder)
        marker.write_text(summary)
    return folder
