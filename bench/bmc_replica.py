"""A BMC-sized synthetic replica in BMC's TCIA layout, for bench/build_bench.py --source bmc-replica.

171,375 JPEGs (the collection's count) at 250x250 px in BM_cytomorphology_data/<CODE>/, classes of
more than a thousand files in subfolders of a thousand (<CODE>/0001-1000/<CODE>_00001.jpg), with the
class proportions of Matek et al. 2021 (Table 1) and 5 per mille exact copies, as exports twice hold
them. Drawn once with hema.synthetic.painter (each code painted as the MLL23 class nearest to it) and
cached; a smaller replica is a proportional subset of the full one, hard-linked, so both sizes hold
the same kind of images.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from bench_folders import drawn_once
from hema.dataset.sources.bmc import CODES, FOLDER
from hema.synthetic.painter import render_cell

FULL = 171_375  # the TCIA collection's image count
SIDE = 250
QUALITY = 90
EXACT_COPIES_PER_MILLE = 5
#: Images per code in Matek et al., Blood 138:1917 (2021), Table 1: the proportions (they sum to 171,374).
PAPER_COUNTS = {
    "ABE": 8, "ART": 19_630, "BAS": 441, "BLA": 11_973, "EBO": 27_395, "EOS": 5_883, "FGC": 47, "HAC": 409,
    "KSC": 42, "LYI": 65, "LYT": 26_242, "MMZ": 3_055, "MON": 4_040, "MYB": 6_557, "NGB": 9_968, "NGS": 29_424,
    "NIF": 3_538, "OTH": 294, "PEB": 2_740, "PLM": 7_629, "PMO": 11_994,
}
#: The painter's class each code is drawn as (the painter knows MLL23's classes).
PAINTED_AS = {
    "ABE": "eosinophil", "ART": "smudge_cell", "BAS": "basophil", "BLA": "myeloblast", "EBO": "normoblast",
    "EOS": "eosinophil", "FGC": "promyelocyte_atypical", "HAC": "hairy_cell", "KSC": "smudge_cell",
    "LYI": "lymphocyte_neoplastic", "LYT": "lymphocyte", "MMZ": "metamyelocyte", "MON": "monocyte",
    "MYB": "myelocyte", "NGB": "neutrophil_band", "NGS": "neutrophil_segmented", "NIF": "smudge_cell",
    "OTH": "plasma_cell", "PEB": "normoblast", "PLM": "plasma_cell", "PMO": "promyelocyte",
}


def class_counts(total: int) -> dict[str, int]:
    """The paper's proportions scaled to exactly `total` images (largest remainders; at least 1 per code)."""
    paper = sum(PAPER_COUNTS.values())
    exact = {c: PAPER_COUNTS[c] * total / paper for c in CODES}
    counts = {c: max(1, int(v)) for c, v in exact.items()}
    for c in sorted(CODES, key=lambda c: exact[c] - int(exact[c]), reverse=True)[: total - sum(counts.values())]:
        counts[c] += 1
    return counts


def relative_path(code: str, number: int, count: int) -> str:
    """Where BMC keeps file `number` (1-based) of a class of `count` files."""
    if count <= 1000:
        return f"{code}/{code}_{number:05d}.jpg"
    low = (number - 1) // 1000 * 1000
    return f"{code}/{low + 1:04d}-{low + 1000:04d}/{code}_{number:05d}.jpg"


def _draw_class(job: tuple[Path, str, int]) -> None:
    root, code, count = job
    rng = np.random.default_rng([7, CODES.index(code)])
    for n in range(1, count + 1):
        target = root / relative_path(code, n, count)
        target.parent.mkdir(parents=True, exist_ok=True)
        if n % (1000 // EXACT_COPIES_PER_MILLE) == 0:  # an exact copy of an earlier file (subsets keep the share)
            shutil.copyfile(root / relative_path(code, int(rng.integers(1, n)), count), target)
        else:
            Image.fromarray(render_cell(rng, PAINTED_AS[code], size=SIDE)).save(target, quality=QUALITY)


def ensure(root: Path, total: int = FULL) -> Path:
    """The replica of `total` images under `root` (the folder holding BM_cytomorphology_data), made once."""
    return drawn_once(root / f"bmc-replica-{total}", lambda replica: _draw(replica, root, total))


def _draw(replica: Path, root: Path, total: int) -> str:
    counts = class_counts(total)
    if total == FULL:
        print(f"drawing the BMC replica of {total:,} JPEGs into {replica} (once; cached)", flush=True)
        jobs = [(replica / FOLDER, c, n) for c, n in sorted(counts.items(), key=lambda kv: -kv[1])]
        with multiprocessing.Pool(os.cpu_count()) as pool:
            pool.map(_draw_class, jobs, chunksize=1)
    else:  # the first files of each class of the full replica, in the same layout for the smaller count
        full, full_counts = ensure(root) / FOLDER, class_counts(FULL)
        for code, count in counts.items():
            for n in range(1, count + 1):
                target = replica / FOLDER / relative_path(code, n, count)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(full / relative_path(code, n, full_counts[code]), target)
    return json.dumps(counts)
