"""Duplicates and look-alikes made on purpose, for tests/test_dedup.py and bench/dedup_bench.py.

Each near-duplicate kind is one transformation the dedup issue names (re-encoding, shifted crop,
re-lighting, rescaling, mirroring, rotation); NEAR_KINDS lists single kinds and the combinations the
bench plants. The negatives are a neighbour crop: two crops of one field centred ~45 % apart.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def reencode_png(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lossless re-encoding: an exact duplicate in another file format."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def jpeg(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def shift_crop(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop that loses 5-10 % of each side on one end: the cell moves off centre."""
    h, w = rgb.shape[:2]
    dy, dx = (rng.uniform(0.05, 0.10, 2) * (h, w)).astype(int)
    top, left = rng.integers(0, 2, 2)
    return rgb[top * dy : h - (1 - top) * dy, left * dx : w - (1 - left) * dx].copy()


def shift_crop_resize(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    return _resize(shift_crop(rgb, rng), h, w)


def shift_pad(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Same size, content moved by up to 10 % of the side, edges repeated into the gap."""
    h, w = rgb.shape[:2]
    dy, dx = (rng.uniform(-0.1, 0.1, 2) * (h, w)).astype(int)
    padded = np.pad(rgb, ((abs(dy),) * 2, (abs(dx),) * 2, (0, 0)), mode="edge")
    return padded[abs(dy) + dy : abs(dy) + dy + h, abs(dx) + dx : abs(dx) + dx + w].copy()


def relight(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    im = ImageEnhance.Brightness(Image.fromarray(rgb)).enhance(rng.uniform(0.9, 1.1))
    return np.asarray(ImageEnhance.Contrast(im).enhance(rng.uniform(0.9, 1.1)))


def rescale(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resized by up to +-5 %: a duplicate of another pixel size."""
    h, w = rgb.shape[:2]
    s = rng.uniform(0.95, 1.05)
    return _resize(rgb, round(h * s), round(w * s))


def zoom(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Content magnified by up to +-5 % about the centre, same pixel size."""
    h, w = rgb.shape[:2]
    s = rng.uniform(0.95, 1.05)
    big = _resize(rgb, round(h * s), round(w * s))
    if s >= 1:
        top, left = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
        return big[top : top + h, left : left + w].copy()
    py, px = h - big.shape[0], w - big.shape[1]
    return np.pad(big, ((py // 2, py - py // 2), (px // 2, px - px // 2), (0, 0)), mode="edge")


def mirror(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rgb[:, ::-1].copy()


def rotate(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.rot90(rgb, int(rng.integers(1, 4))).copy()


def _resize(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))


TRANSFORMS: dict[str, Transform] = {
    f.__name__: f
    for f in (jpeg, shift_crop, shift_crop_resize, shift_pad, relight, rescale, zoom, mirror, rotate)
}
NEAR_KINDS: tuple[tuple[str, ...], ...] = tuple((k,) for k in TRANSFORMS) + (
    ("shift_crop", "rotate"),
    ("rescale", "mirror"),
    ("relight", "shift_crop_resize"),
    ("zoom", "rotate"),
    ("shift_pad", "jpeg"),
    ("rotate", "mirror"),
    ("shift_crop", "rescale"),
    ("relight", "rotate"),
)


def near_copy(rgb: np.ndarray, kinds: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """The near duplicate made by applying `kinds` in order, then saving as JPEG (quality >= 70)."""
    for kind in kinds:
        rgb = TRANSFORMS[kind](rgb, rng)
    return jpeg(rgb, rng) if "jpeg" not in kinds else rgb


def neighbour_crops(rgb: np.ndarray, offset: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """Two crops of one field, `offset` of the crop side apart along the diagonal: they share
    background, not the centred cell."""
    h, w = rgb.shape[:2]
    side = int(min(h, w) / (1 + offset))
    step = int(side * offset)
    return rgb[:side, :side].copy(), rgb[step : step + side, step : step + side].copy()


# ../shared's Acevedo20 sample, reviewed by eye (docs/dedup.md): its real near duplicates (exact ones are
# found by their pixels), and its pairs of crops of one smear field, centred on two neighbouring cells.
REVIEWED_NEAR = (
    ("eosinophil/EO_246684.jpg", "eosinophil/EO_409717.jpg"),
    ("eosinophil/EO_354514.jpg", "eosinophil/EO_400135.jpg"),
    ("eosinophil/EO_464387.jpg", "eosinophil/EO_800344.jpg"),
    ("erythroblast/ERB_287222.jpg", "erythroblast/ERB_984537.jpg"),
    ("ig/IG_101958.jpg", "ig/IG_957559.jpg"),
    ("ig/IG_466905.jpg", "ig/IG_855229.jpg"),
    ("monocyte/MO_231316.jpg", "monocyte/MO_415531.jpg"),
    ("platelet/PLATELET_237971.jpg", "platelet/PLATELET_368551.jpg"),
)
REVIEWED_SHARED = (
    ("erythroblast/ERB_445589.jpg", "erythroblast/ERB_880363.jpg"),
    ("erythroblast/ERB_608578.jpg", "erythroblast/ERB_653702.jpg"),
    ("erythroblast/ERB_740140.jpg", "erythroblast/ERB_910470.jpg"),
    ("lymphocyte/LY_609104.jpg", "monocyte/MO_74720.jpg"),
    ("eosinophil/EO_621854.jpg", "monocyte/MO_418203.jpg"),  # 62 % apart at 288 px: beyond reach there
)
