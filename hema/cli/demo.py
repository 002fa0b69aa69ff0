"""The offline demo's dataset: the synthetic sample, drawn and built once into the cache.

It needs the painter (hema.synthetic) and the MLL23 builder (hema.dataset), so it lives with the
command lines, the one layer above both.
"""

from __future__ import annotations

from hema.base.cache import cache_root
from hema.dataset.publish import not_a_build
from hema.dataset.sources.mll23 import MLL23
from hema.synthetic.painter import ensure_sample


def demo_dataset(per_class: int) -> str:
    """The built folder of the synthetic sample (`per_class` images per class), made on first use."""
    sample = ensure_sample(per_class=per_class, seed=0)
    built = cache_root() / "demo-build" / f"mll23-synthetic-{sample.name}"
    if not_a_build(built):
        print(f"demo: building the synthetic sample {sample} into {built}")
        print(MLL23.build_folder(sample, built).describe())
    else:
        print(f"demo: the synthetic sample's dataset is {built} (load it: datasets.load_dataset({str(built)!r}))")
    return str(built)
