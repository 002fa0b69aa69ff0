"""The shared base both wings stand on: nothing here knows a dataset source or a model.

`errors` (the one-line user error), `files` (reading a folder we were given as hostile input),
`atomic` (writes and folder swaps a kill cannot half-do), `forked` (work over forked processes that
never hangs), `imaging` (decoding, lossless storing, per-image hashes), `figures` (every published
figure), `hub` (Hub ids and pushes), `taxonomy` (the harmonised classes), `published` (what a
published build is, as both wings read it), `cache` (where rebuildable things are kept), `stages`
(what each stage of a long command cost, logged).
"""

from hema.base.errors import HemaError
from hema.base.published import DEFAULT_CONFIG, LABEL_COLUMNS, SPLITS, DatasetFacts, dataset_facts

__all__ = ["DEFAULT_CONFIG", "DatasetFacts", "HemaError", "LABEL_COLUMNS", "SPLITS", "dataset_facts"]
