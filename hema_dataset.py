"""MLL23 as a Hugging Face dataset: the command line that builds and publishes it (hema-dataset).

    python hema_dataset.py sample --output-dir DIR      # synthetic sample in the MLL23 layout
    python hema_dataset.py build --data-dir DIR --output-dir OUT
    python -c "import datasets; print(datasets.load_dataset('OUT'))"

The same as the console script `hema-dataset` of `pip install .`; the logic is in the hema package
(the builder: hema.dataset.sources.mll23.MLL23, re-exported here for scripts that import it from this file).
"""

import sys

from hema.cli.dataset import main
from hema.dataset.sources.mll23 import FEATURES, MLL23, MLL23Config, build_dataset  # noqa: F401  (re-exported)

if __name__ == "__main__":
    sys.exit(main(prog="hema_dataset.py"))
