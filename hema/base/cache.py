"""Where hema keeps what it can rebuild: the drawn sample, the demo's build, decoded images."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$HEMA_CACHE, else ~/.cache/hema."""
    return Path(os.environ.get("HEMA_CACHE") or Path.home() / ".cache" / "hema")
