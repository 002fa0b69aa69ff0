"""Fine-tune a ViT on MLL23 cell classes with Accelerate (hema-train): the script, from a checkout.

    python train_vit.py                                   # the offline demo
    accelerate launch train_vit.py --dataset ORG/mll23 --model google/vit-base-patch16-224-in21k --output-dir OUT

The same as the console script `hema-train` of `pip install .`; the training loop is
hema/cli/train.py, one readable script.
"""

import sys

from hema.cli.train import main

if __name__ == "__main__":
    sys.exit(main(prog="train_vit.py"))
