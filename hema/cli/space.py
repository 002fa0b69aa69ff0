"""hema-space: the Space demo (space/) — its example cells, and publishing it on the Hub.

    hema-space examples                                    # space/examples/<class>.png from the synthetic sample
    hema-space push --model ORG/vit-mll23 --space ORG/blood-cells [--private]

`push` checks the token first (as the other pushes do), copies the Space folder, points its README's
`models:` (which the app loads by default) at --model, and uploads it as a Gradio Space.
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from hema.cli import run
from hema.base.errors import HemaError

SPACE_DIR = Path(__file__).resolve().parents[2] / "space"  # the checkout's space/
EXAMPLE_SIDE = 128  # pixels: small files; the model resizes to its own input size anyway
EXAMPLES_PER_CLASS = 2


def _cmd_examples(args: argparse.Namespace) -> None:
    from hema.base.imaging import encode_stored
    from hema.synthetic.painter import iter_sample_files

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for name, data, planted in iter_sample_files(per_class=EXAMPLES_PER_CLASS + 2, seed=args.seed):
        cell_class = name.split("/")[0]
        if planted is not None or written.get(cell_class, 0) >= EXAMPLES_PER_CLASS:
            continue  # planted duplicates are copies of other cells: not examples
        with Image.open(io.BytesIO(data)) as image:
            small = image.convert("RGB").resize((EXAMPLE_SIDE, EXAMPLE_SIDE), Image.Resampling.LANCZOS)
        written[cell_class] = written.get(cell_class, 0) + 1
        (out / f"{cell_class}_{written[cell_class]}.png").write_bytes(encode_stored(np.asarray(small)))
    print(f"wrote {sum(written.values())} synthetic example cells ({EXAMPLES_PER_CLASS} per class) into {out}")


def _cmd_push(args: argparse.Namespace) -> None:
    from hema.base import hub

    source = Path(args.space_dir)
    if not (source / "app.py").is_file() or not (source / "README.md").is_file():
        raise HemaError(f"{source} is not the Space folder (app.py and README.md); pass --space-dir")
    token = hub.resolve_token(args.token)
    hub.check_write_access(args.space, token, repo_type="space")  # before anything is copied or uploaded
    with tempfile.TemporaryDirectory(prefix="hema-space-") as tmp:
        staging = Path(shutil.copytree(source, Path(tmp) / "space", ignore=shutil.ignore_patterns("__pycache__", ".*")))
        readme = staging / "README.md"
        readme.write_text(re.sub(r"(?m)^models:\n(  - .*\n)+", f"models:\n  - {args.model}\n", readme.read_text()))
        url = hub.push_folder(staging, args.space, repo_type="space", token=token, private=args.private,
                              commit_message=f"hema-space: the blood-cell classifier demo for {args.model}",
                              space_sdk="gradio")
    print(f"Pushed the Space to {url}; it serves {args.model}")


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("examples", help="draw one small synthetic example cell per class for the Space")
    p.add_argument("--output-dir", default=str(SPACE_DIR / "examples"))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_examples)
    p = sub.add_parser("push", help="publish the Space demo, serving --model")
    p.add_argument("--model", required=True, help="the model the Space serves: NAMESPACE/NAME on the Hub")
    p.add_argument("--space", required=True, help="the Space repository: NAMESPACE/NAME")
    p.add_argument("--space-dir", default=str(SPACE_DIR), help="the Space folder (default: the checkout's space/)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", help="Hub token (default: $HF_TOKEN, then `hf auth login`); never printed")
    p.set_defaults(func=_cmd_push)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv, prog)
    return run(args.func, args, interrupted="interrupted: nothing was pushed")
