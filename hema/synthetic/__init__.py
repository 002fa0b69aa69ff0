"""The offline sample: procedurally painted cells in MLL23's raw layout, the embedded default of the
demo, the tests and the notebooks.

- `painter`: draws the cells and the sample folder (`draw_sample`, `ensure_sample` for the cache);
- `manifest`: the sample's hidden marker (synthetic, how drawn, which duplicates were planted), which
  every build of the sample reads, so its card says SYNTHETIC.
"""

from hema.synthetic.manifest import MARKER, PlantedPair, SampleManifest, read_manifest
from hema.synthetic.painter import PAINTED_CLASSES, draw_sample, ensure_sample, iter_sample_files, render_cell

__all__ = ["MARKER", "PAINTED_CLASSES", "PlantedPair", "SampleManifest", "draw_sample", "ensure_sample",
           "iter_sample_files", "read_manifest", "render_cell"]
