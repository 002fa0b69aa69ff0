"""The build parameters: one config dataclass, shared by every source's builder and the command line.

`hema-dataset build` generates its options from BUILD_PARAMETERS (a field `val_size` is the option
`--val-size`, its metadata's help is the option's help), so a parameter is declared once, here.
"""

from __future__ import annotations

import dataclasses

import datasets

from hema.base.errors import HemaError
from hema.base.imaging import MAX_FILE_MB, MAX_MEGAPIXELS, ImageLimits
from hema.dataset.splits import check_fractions


@dataclasses.dataclass
class CellImageConfig(datasets.BuilderConfig):
    """Split parameters are part of the config: another seed is another dataset."""

    seed: int = dataclasses.field(default=42, metadata={"help": "split seed"})
    val_size: float = dataclasses.field(default=0.15, metadata={"help": "share of the images in validation"})
    test_size: float = dataclasses.field(default=0.15, metadata={"help": "share of the images in test"})
    strict: bool = dataclasses.field(default=False, metadata={"help": "unusable image files are an error, not a logged skip"})
    max_megapixels: float = dataclasses.field(
        default=MAX_MEGAPIXELS, metadata={"help": "an image whose header declares more pixels is skipped, undecoded"})
    max_file_mb: float = dataclasses.field(
        default=MAX_FILE_MB, metadata={"help": "a larger file is skipped, unread"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fractions(self.val_size, self.test_size)
        if self.max_megapixels <= 0 or self.max_file_mb <= 0:
            raise HemaError("max_megapixels and max_file_mb must be positive")

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(self.max_megapixels, self.max_file_mb)


#: The fields of CellImageConfig that are build parameters (not datasets' own BuilderConfig fields).
BUILD_PARAMETERS: tuple[dataclasses.Field, ...] = tuple(
    f for f in dataclasses.fields(CellImageConfig) if f.name not in {g.name for g in dataclasses.fields(datasets.BuilderConfig)}
)
