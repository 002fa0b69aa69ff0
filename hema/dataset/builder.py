"""The generic cell-image builder: raw class folders in, train/validation/test with duplicate metadata out.

As datasets' FolderBasedBuilder is to ImageFolder, `CellImageBuilder` does the work (scan, decode,
sign, dedup, group-aware split, generate, publish with a card) and a source's builder only declares
what differs: its Source and where its raw data comes from. The build parameters live in one config
dataclass (hema.dataset.parameters), from which the command line is generated too.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from hema.base.errors import HemaError
from hema.base.files import UnusableFile
from hema.base.imaging import BadImageError, stored_bytes
from hema.base.published import DEFAULT_CONFIG, SPLITS
from hema.dataset import schema
from hema.dataset.catalog import CatalogRow, make_catalog, read_image
from hema.dataset.configs import VIEWS
from hema.dataset.parameters import CellImageConfig
from hema.dataset.publish import BuildSummary, check_output_dir, publish
from hema.dataset.sources.declaration import Source


class CellImageBuilder(datasets.GeneratorBasedBuilder):
    """Cell images from raw class folders (`data_dir`); one builder config per published view.

    A subclass sets SOURCE (hema.dataset.sources.declaration.Source) and VERSION, and says where raw
    data comes from when no data_dir is given: downloaded (`raw_data_dir`) or, where no builder can
    download it, in words (WHERE_TO_GET).
    """

    SOURCE: Source
    WHERE_TO_GET = "the folder of raw class folders"
    BUILDER_CONFIG_CLASS = CellImageConfig
    BUILDER_CONFIGS = [CellImageConfig(name=v.name, description=v.description) for v in VIEWS.values()]
    DEFAULT_CONFIG_NAME = DEFAULT_CONFIG

    @classmethod
    def dataset_info(cls) -> datasets.DatasetInfo:
        """The source's description, features, homepage, licence and citation."""
        return cls.SOURCE.info()

    def _info(self) -> datasets.DatasetInfo:
        return self.dataset_info()

    def raw_data_dir(self, dl_manager: datasets.DownloadManager) -> Path:
        """Where the raw class folders are when no data_dir is given (a source that can, downloads them)."""
        raise HemaError(f"{type(self).__name__} needs data_dir: {self.WHERE_TO_GET}")

    @staticmethod
    def download_folder(dl_manager: datasets.DownloadManager, name: str) -> Path:
        """A folder for a source's raw download in the datasets download cache (kept: downloads resume)."""
        return Path(dl_manager.download_config.cache_dir or datasets.config.DOWNLOADED_DATASETS_PATH) / name

    def _split_generators(self, dl_manager):
        data_dir = Path(self.config.data_dir) if self.config.data_dir else self.raw_data_dir(dl_manager)
        catalog = make_catalog(self.SOURCE.scan(data_dir), self.config, self.SOURCE)
        view = VIEWS[self.config.name]
        return [
            datasets.SplitGenerator(
                name=split, gen_kwargs={"rows": [r for r in catalog.rows if r.split == split and view.keeps_row(r)]}
            )
            for split in SPLITS
        ]

    def _generate_examples(self, rows: list[CatalogRow]):
        limits = self.config.limits
        for row in rows:
            try:
                data, decoded = read_image(row.path, limits)
            except (OSError, UnusableFile, BadImageError) as exc:
                raise HemaError(f"{row.image_id} changed or became unreadable during the build ({exc})") from None
            yield row.image_id, schema.example(row, stored_bytes(data, decoded))

    @classmethod
    def build_folder(
        cls, data_dir: Path, output_dir: Path, *, num_proc: int | None = None, **parameters
    ) -> BuildSummary:
        """Build the hub-ready folder OUT (Parquet + card) from raw class folders; OUT is replaced only on success.

        `parameters` are CellImageConfig's build parameters (seed, val_size, test_size, strict).
        """
        data_dir, output_dir = Path(data_dir), Path(output_dir)
        config = cls.BUILDER_CONFIG_CLASS(name=DEFAULT_CONFIG, data_dir=str(data_dir), **parameters)
        check_output_dir(output_dir, data_dir)
        return publish(config, cls.SOURCE, output_dir, builder_id=f"{cls.__name__} {cls.VERSION}", num_proc=num_proc)
