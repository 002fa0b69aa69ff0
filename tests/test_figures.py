"""The card's pair sheets: every image shown pixel for pixel, large ones fitted."""

from __future__ import annotations

import numpy as np
from PIL import Image

from hema.base import figures


def _where(sheet: np.ndarray, image: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners at which `image` lies, exactly, in `sheet`."""
    h, w, _ = image.shape
    ys, xs = np.nonzero((sheet[: 1 - h or None, : 1 - w or None] == image[0, 0]).all(axis=-1))
    return [(y, x) for y, x in zip(ys, xs) if np.array_equal(sheet[y : y + h, x : x + w], image)]


def test_image_pairs_show_each_image_pixel_for_pixel(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 30), (40, 30), (24, 36), (20, 20)]]
    pairs = [(images[0], images[1], "a.TIF\nblast | b.TIF\nmonocyte"), (images[2], images[3], "c.TIF\nx | d.TIF\ny")]
    figures.image_pairs(pairs, tmp_path / "pairs.png", "Duplicates with conflicting labels (2 pairs)")
    sheet = np.asarray(Image.open(tmp_path / "pairs.png").convert("RGB"))
    corners = [_where(sheet, image) for image in images]
    assert all(len(c) == 1 for c in corners), corners
    (a,), (b,), (c,), (d,) = corners
    assert a[0] == b[0] < c[0] and a[1] < b[1]  # pairs side by side, one row each, in order
    assert abs(c[0] - d[0]) < 20 and c[1] < d[1]


def test_image_pairs_fit_large_images(tmp_path):
    large = np.full((1000, 1000, 3), 200, dtype=np.uint8)
    figures.image_pairs([(large, large, "big.png\nx | big2.png\ny")], tmp_path / "pairs.png", "title", max_pairs=8)
    width, height = Image.open(tmp_path / "pairs.png").size
    assert 2 * figures.PAIR_CELL <= width < 2 * figures.PAIR_CELL + 100
    assert figures.PAIR_CELL <= height < figures.PAIR_CELL + 150
