"""The folders the benches make under --root: inputs drawn once and cached, and scratch for runs.
Each is deleted only when its marker proves a bench made it; anything else in the way is refused."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path


def drawn_once(folder: Path, draw: Callable[[Path], str]) -> Path:
    """`folder`, drawn by draw(folder) unless a finished one is there; what draw returns is kept in
    the marker. A half-drawn one (a killed run's: it holds the drawing marker) is drawn again; any
    other folder in the way is refused, never deleted."""
    done, drawing = folder / ".complete", folder / ".drawing"
    if done.is_file():
        return folder
    if drawing.is_file():
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is in the way: not a bench input a bench drew; move it or pass another --root")
    folder.mkdir(parents=True, exist_ok=True)
    drawing.touch()
    done.write_text(draw(folder))
    drawing.unlink()
    return folder


def fresh_scratch(folder: Path) -> Path:
    """`folder`, empty, for one run's output: a previous run's (it holds the scratch marker) is removed
    first; any other folder in the way is refused, never deleted."""
    marker = folder / ".bench-scratch"
    if marker.is_file():
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is in the way: not a bench's scratch folder; move it or pass another --root")
    folder.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return folder
