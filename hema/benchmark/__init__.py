"""Which representation reads blood cells best: frozen backbones scored by kNN and linear probes,
leakage-aware (hema-benchmark).

`backbones` (transformers vision models, hema-train's model folders, DINOv2-format checkpoints such as
DinoBloom's, via `dinov2_weights`), `features` (each split's features extracted once and cached),
`protocols` (fixed split, few-shot, image-level and group-aware cross-validation, cross-dataset),
`scoring` (scikit-learn's metrics, intervals from a bootstrap over field groups), `results` (the tidy
table, its files, the results dataset on the Hub, the model card), `run` (one benchmark run).
"""

from hema.benchmark.backbones import FEATURES as BACKBONE_FEATURES
from hema.benchmark.run import PROTOCOLS, Plan, Tally
from hema.benchmark.run import run as run_benchmark

__all__ = ["BACKBONE_FEATURES", "PROTOCOLS", "Plan", "Tally", "run_benchmark"]
