"""Which lossless format the dataset stores its images in: size and speed per image, measured.

On real cells (../shared/data/acevedo20_sample, centre-cut to MLL23's 288x288 and stored as the
scanner's uncompressed TIFF, as in the MLL23 layout) and on the synthetic sample, for each
candidate it reports the stored size as a fraction of the TIFF source, and the median encode and
decode time per image on one core. Every candidate is checked to decode to exactly the source
pixels.

  python bench/image_format_bench.py [--images 300]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hema.base.imaging import encode_stored  # noqa: E402
from hema.synthetic.painter import draw_sample  # noqa: E402

ACEVEDO = REPO.parent / "shared" / "data" / "acevedo20_sample"
SIDE = 288

def _pil(**options):
    def encode(rgb: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, **options)
        return buf.getvalue()

    return encode


CANDIDATES = {
    "TIFF (source)": _pil(format="TIFF"),
    "PNG, PIL level 1": _pil(format="PNG", compress_level=1),
    "PNG, PIL level 6": _pil(format="PNG", compress_level=6),
    "PNG, fpng (hema)": encode_stored,
    "WebP lossless, method 0": _pil(format="WEBP", lossless=True, method=0, quality=0),
    "WebP lossless, method 4": _pil(format="WEBP", lossless=True, method=4, quality=50),
}


def real_cells(limit: int) -> list[np.ndarray]:
    cells = []
    for path in sorted(ACEVEDO.glob("*/*.jpg"))[:: max(1, 3006 // limit)][:limit]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        top, left = (rgb.shape[0] - SIDE) // 2, (rgb.shape[1] - SIDE) // 2
        cells.append(np.ascontiguousarray(rgb[top : top + SIDE, left : left + SIDE]))
    return cells


def synthetic_cells(limit: int) -> list[np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        draw_sample(Path(tmp) / "s", per_class=max(1, limit // 18 + 1), seed=0)
        paths = sorted((Path(tmp) / "s").glob("*/*.TIF"))[:limit]
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def measure(cells: list[np.ndarray]) -> dict[str, tuple[float, float, float]]:
    """Per candidate: stored bytes / TIFF bytes, median encode ms, median decode ms."""
    out = {}
    tiff_bytes = None
    for name, encode in CANDIDATES.items():
        sizes, enc, dec = [], [], []
        for rgb in cells:
            t0 = time.perf_counter()
            data = encode(rgb)
            t1 = time.perf_counter()
            t2 = time.perf_counter()
            decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            t3 = time.perf_counter()
            if not np.array_equal(decoded, rgb):
                raise SystemExit(f"{name} is not lossless")
            sizes.append(len(data))
            enc.append(t1 - t0)
            dec.append(t3 - t2)
        total = sum(sizes)
        tiff_bytes = tiff_bytes or total
        out[name] = (total / tiff_bytes, 1e3 * statistics.median(enc), 1e3 * statistics.median(dec))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    sets = {"synthetic sample": synthetic_cells(args.images)}
    if ACEVEDO.is_dir():
        sets = {"real Acevedo20 cells": real_cells(args.images), **sets}
    print("| format | " + " | ".join(f"{s}: size vs TIFF, encode ms, decode ms" for s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    results = {s: measure(cells) for s, cells in sets.items()}
    for name in CANDIDATES:
        cols = [f"{r[name][0]:.2f}x, {r[name][1]:.1f}, {r[name][2]:.1f}" for r in results.values()]
        print(f"| {name} | " + " | ".join(cols) + " |")
    print(f"({', '.join(f'{len(c)} {s}' for s, c in sets.items())}, 288x288 RGB, one core)")


if __name__ == "__main__":
    main()
