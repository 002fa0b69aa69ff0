"""The dataset sources hema builds, one module each, all in one schema: `hema-dataset build --source NAME`."""

from __future__ import annotations

from hema.builder import CellImageBuilder
from hema.sources.acevedo20 import Acevedo20
from hema.sources.matek19 import Matek19
from hema.sources.mll23 import MLL23

#: --source value -> builder class.
BUILDERS: dict[str, type[CellImageBuilder]] = {b.SOURCE.name: b for b in (MLL23, Acevedo20, Matek19)}
DEFAULT_SOURCE = "mll23"
