"""The dataset wing: raw class folders of a source in, a hub-ready dataset out (Parquet files with
duplicate- and smear-field-aware splits, a generated card), published to the Hub.

In the order a build runs: `sources` (what each dataset declares, and its download) and `download`;
`scan` (the raw folder, read as hostile input); `parameters` (the build parameters, one config
dataclass); `catalog` (every image decoded once, signed, grouped by hema.dedup, split by `splits`);
`configs` (the published configs) and `schema` (the columns); `shards` (the Parquet files); `card`
(the dataset card); `publish` (a build swapped into OUT, and pushed); `builder` (the generic
datasets builder the sources subclass).
"""

from hema.dataset.builder import CellImageBuilder
from hema.dataset.parameters import BUILD_PARAMETERS, CellImageConfig
from hema.dataset.publish import BuildSummary, push_build
from hema.dataset.sources.acevedo20 import Acevedo20
from hema.dataset.sources.bmc import BMC
from hema.dataset.sources.declaration import Source
from hema.dataset.sources.matek19 import Matek19
from hema.dataset.sources.mll23 import MLL23

#: --source value -> builder class.
BUILDERS: dict[str, type[CellImageBuilder]] = {b.SOURCE.name: b for b in (MLL23, Acevedo20, Matek19, BMC)}
DEFAULT_SOURCE = "mll23"

__all__ = ["BMC", "BUILDERS", "BUILD_PARAMETERS", "DEFAULT_SOURCE", "Acevedo20", "BuildSummary", "CellImageBuilder",
           "CellImageConfig", "MLL23", "Matek19", "Source", "push_build"]
