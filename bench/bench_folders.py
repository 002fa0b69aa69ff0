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
    _claim(folder, drawing, "a bench input a bench drew")
    done.write_text(draw(folder))
    drawing.unlink()
    return folder


def fresh_scratch(folder: Path) -> Path:
    """`folder`, empty, for one run's output: a previous run's (it holds the scratch marker) is removed
    first; any other folder in the way is refused, never deleted."""
    _claim(folder, folder / ".bench-scratch", "a bench's scratch folder")
    return folder


def _claim(folder: Path, marker: Path, what: str) -> None:
    """`folder` empty but for `marker`: removed first when the marker proves a bench made it, refused
    when it holds anything else."""
    if marker.is_file():
        shutil.rmtree(folder)
    elif folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is in the way: not {what}; move it or pass another --root")
    folder.mkdir(parents=True, exist_ok=True)
    marker.touch()
