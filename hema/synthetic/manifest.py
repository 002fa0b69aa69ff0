"""The hidden marker of a synthetic sample (DIR/.hema_sample.json): that the data is synthetic, how
it was drawn, and which duplicates were planted.

The painter (hema.synthetic.painter) writes it; the scan of a raw folder (hema.dataset.scan) reads it,
so a build of the sample says SYNTHETIC in its card and its build_info.json, whoever runs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hema.base.errors import HemaError
from hema.base.files import UnusableFile, is_inside, read_regular_file, real_root

MARKER = ".hema_sample.json"  # hidden, so the builder's folder scan ignores it
GENERATOR = "hema.sample"  # written into every marker: unchanged since the first samples
_MAX_MARKER_BYTES = 64 << 20


@dataclass(frozen=True)
class PlantedPair:
    """A planted duplicate: `b` was made from `a` (image ids relative to the sample folder)."""

    a: str
    b: str
    kind: str  # "exact" (identical pixels) or "near"
    transform: str  # how b was made, e.g. "tiff_lzw", "jpeg q=83", "rotate 90"

    @property
    def cross_class(self) -> bool:
        return self.a.split("/")[0] != self.b.split("/")[0]


@dataclass(frozen=True)
class SampleManifest:
    """What the hidden marker declares: the data is synthetic, how it was drawn, what was planted."""

    per_class: int
    seed: int
    planted: tuple[PlantedPair, ...]
    version: int  # of the painter (hema.synthetic.painter.VERSION): cached samples are keyed by it
    synthetic: bool = True
    generator: str = GENERATOR

    def to_json(self) -> str:
        return json.dumps(
            {
                "synthetic": self.synthetic,
                "generator": self.generator,
                "version": self.version,
                "per_class": self.per_class,
                "seed": self.seed,
                "planted": [
                    {"a": p.a, "b": p.b, "kind": p.kind, "transform": p.transform} for p in self.planted
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> SampleManifest:
        raw = json.loads(text)
        return cls(
            per_class=int(raw["per_class"]),
            seed=int(raw["seed"]),
            planted=tuple(
                PlantedPair(a=p["a"], b=p["b"], kind=p["kind"], transform=p["transform"])
                for p in raw["planted"]
            ),
            synthetic=bool(raw["synthetic"]),
            generator=str(raw["generator"]),
            version=int(raw["version"]),
        )


def read_manifest(data_dir: Path) -> SampleManifest | None:
    """The sample marker of a data folder, or None for real data (no marker)."""
    path = Path(data_dir) / MARKER
    if not path.is_file() or not is_inside(path, real_root(data_dir)):
        return None
    try:
        return SampleManifest.from_json(read_regular_file(path, _MAX_MARKER_BYTES).decode("utf-8"))
    except (OSError, UnusableFile, ValueError, KeyError, TypeError) as exc:
        raise HemaError(f"{path} is not a valid hema sample marker ({type(exc).__name__}: {exc})") from None
