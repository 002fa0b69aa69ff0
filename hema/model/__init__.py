"""The model wing: a ViT (or any transformers image classifier) fine-tuned on a published build,
evaluated honestly on imbalanced classes and across datasets, written as a model folder with its card.

`data` (the splits a model trains and is evaluated on), `inputs` (the decode-once cache, batch
transforms on the device, the evaluation transform), `classifier` (loading models, the compiled
forward), `optimisation` (loss weights, optimiser, the step), `checkpoints` (resumable state),
`evaluation` and `calibration` (the scores), `card` and `folder` (what is published); the metric
module (`metrics/`), the demo's config (`configs/`) and the card template (`templates/`) ship inside.
The loop itself is hema.cli.train.
"""
