"""Signatures: the small summary of each image that the duplicate and shared-field searches use.

Computed where an image is decoded (~6.5 KB, pickled to the parent and kept for every image):
`pixel_sha256` and `phash` (both published), a 64 x 64 band-passed grey thumbnail of the whole crop,
the stained cell's centre and radius (mean shift on blue minus green), 16 x 16 screening views (the
ring around the cell at the cell's own scale, and the whole crop), two 64-number embeddings (whole
crop, cell-centred) invariant to the 8 rotations/mirrors (each pixel orbit sorted), and the 16 x 16
field view hema.dedup.smear_fields searches for crops of one smear field. hema.dedup.duplicates says
how each of the others is used.

`signature_batch` takes many images at once: past the two resizes of each image, every step is one
numpy call over the whole batch (stacked matrix products, per-image reductions), where one image at a
time spent most of its ~1 ms in per-call overhead. Each image's result is its own: it does not depend
on the other images of its batch (tests/test_dedup.py checks this).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from hema.base.imaging import phash, pixel_sha256

THUMB = 64  # side of the registration thumbnail (whole crop)
PATCH = 32  # side of the cell-centred patch
EMBED = 8  # side of the low-resolution grids behind the embeddings (8 x 8 = 64 numbers)
BAND = (1.0, 4.0)  # difference-of-Gaussians band (thumbnail px): red-cell edges, not illumination
QUANT = 32.0  # int8 storage: value = round(standardised intensity * QUANT), clipped to +-127
CELL_REACH = 2.5  # the centred patch spans the cell centre +- CELL_REACH radii
SCREEN_RING = 0.6  # the screening ring starts at this fraction of the cell patch's half side (~1.5 radii)
FIELD_GRID = 16  # side of the field view (hema.dedup.smear_fields), in cells of THUMB / FIELD_GRID thumbnail px
FIELD_BAND = (1.5, 6.0)  # its difference-of-Gaussians band (thumbnail px): red-cell outlines
BATCH = 32  # images computed together: their arrays stay in a core's cache

_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# the cell patch's ring beyond ~1.5 radii: the cell itself is excluded from screening (cells look alike)
_RING = np.hypot(*(np.mgrid[0:PATCH, 0:PATCH] - (PATCH - 1) / 2)) > SCREEN_RING * PATCH / 2

DIHEDRAL_NAMES = ("identity", "mirror", "rot90", "rot90+mirror", "rot180", "rot180+mirror", "rot270",
                  "rot270+mirror")


@dataclass(frozen=True, eq=False)
class ImageSignature:
    """What the grouping stage knows of one image (computed once, where it is decoded)."""

    pixel_sha256: str
    phash: int
    thumb: np.ndarray  # THUMB x THUMB int8: band-passed grey of the whole crop, standardised
    screen_cell: np.ndarray  # 16 x 16 float16, unit norm: band-passed ring around the cell, cell-scaled
    screen_whole: np.ndarray  # 16 x 16 float16, unit norm: the band-passed whole crop
    embed_whole: np.ndarray  # EMBED**2 float32, unit norm, invariant to rotations and mirrors
    embed_cell: np.ndarray  # the same for the cell-centred, cell-scaled view
    field: np.ndarray  # 16 x 16 float16: band-passed view of the whole crop, for hema.dedup.smear_fields
    cell: tuple[float, float, float]  # cell centre (y, x) and radius, in thumbnail pixels
    height: int
    width: int

    @property
    def nbytes(self) -> int:
        """Bytes of pixel data it carries (it is pickled from the workers and kept for every image)."""
        arrays = (self.thumb, self.screen_cell, self.screen_whole, self.embed_whole, self.embed_cell, self.field)
        return sum(a.nbytes for a in arrays)


def signature(rgb: np.ndarray) -> ImageSignature:
    """The signature of one H x W x 3 uint8 image."""
    return signature_batch([rgb])[0]


def signature_batch(images: Sequence[np.ndarray]) -> list[ImageSignature]:
    """The signatures of H x W x 3 uint8 images (of any sizes), in order, BATCH at a time."""
    return [sig for start in range(0, len(images), BATCH) for sig in _signature_chunk(images[start : start + BATCH])]


def _signature_chunk(images: Sequence[np.ndarray]) -> list[ImageSignature]:
    pictures = [Image.fromarray(rgb) for rgb in images]
    colour = np.stack([np.asarray(p.resize((THUMB, THUMB), Image.Resampling.BOX)) for p in pictures]).astype(np.float32)
    grey = colour @ _GREY
    cy, cx, radius = _locate_cells(colour)
    smooth = _blur(grey, BAND[1])  # also the embeddings' anti-aliasing (8 px cells)
    band = _standardise(_blur(grey, BAND[0]) - smooth)
    reach = np.clip(CELL_REACH * radius, 0.2 * THUMB, 0.6 * THUMB)
    centre = np.full(len(images), (THUMB - 1) / 2)
    patch = _sample_squares(band, cy, cx, reach, PATCH) * _RING
    screen_cell = _unit(pool2(patch)).astype(np.float16)
    screen_whole = _unit(pool2(pool2(band))).astype(np.float16)
    embed_whole = _orbit_embeddings(_sample_squares(smooth, centre, centre, np.full(len(images), THUMB / 2), EMBED))
    embed_cell = _orbit_embeddings(_sample_squares(smooth, cy, cx, reach, EMBED))
    thumb, field = _quantise(band), _field_views(grey)
    return [
        ImageSignature(
            pixel_sha256=pixel_sha256(rgb),
            phash=phash(picture),
            thumb=thumb[i],
            screen_cell=screen_cell[i],
            screen_whole=screen_whole[i],
            embed_whole=embed_whole[i],
            embed_cell=embed_cell[i],
            field=field[i],
            cell=(float(cy[i]), float(cx[i]), float(radius[i])),
            height=int(rgb.shape[0]),
            width=int(rgb.shape[1]),
        )
        for i, (rgb, picture) in enumerate(zip(images, pictures))
    ]


def _field_views(grey: np.ndarray) -> np.ndarray:
    """FIELD_GRID x FIELD_GRID float16 band-passes of (B, THUMB, THUMB) grey thumbnails, standardised."""
    band = _blur(grey, FIELD_BAND[0]) - _blur(grey, FIELD_BAND[1])
    cell = grey.shape[-1] // FIELD_GRID
    view = band.reshape(len(grey), FIELD_GRID, cell, FIELD_GRID, cell).mean(axis=(2, 4))
    view = view - view.mean(axis=(1, 2), keepdims=True)
    return (view / np.maximum(view.std(axis=(1, 2), keepdims=True), 1e-6)).astype(np.float16)


@functools.cache
def _blur_matrix(sigma: float, n: int) -> np.ndarray:
    """M with M @ x == ndimage.gaussian_filter1d(x, sigma) (mode "reflect") for length-n columns x."""
    return ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0).astype(np.float32)


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """ndimage.gaussian_filter of each square image (B, n, n), as two small matrix products."""
    m = _blur_matrix(sigma, images.shape[-1])
    return m @ images @ m.T


def _locate_cells(colour: np.ndarray, reach: float = 0.3, steps: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (y, x) and radius of the stained cell nearest each image's centre, in thumbnail pixels.

    Mean shift from the centre on blue minus green (nuclei and granules are blue-violet, red cells and
    background are not), weighted above its 75th percentile: weights scale with contrast and ignore
    brightness, so the centre is the same on re-lit copies and follows the cell on shifted crops. An
    image with no weight left in reach gets the image centre and a sixth of the side.
    """
    stain = colour[..., 2] - colour[..., 1]
    weight = np.maximum(stain - _upper_quartiles(stain)[:, None, None], 0.0) ** 2
    side = np.arange(THUMB, dtype=np.float32)
    cy = cx = np.full(len(colour), (THUMB - 1) / 2, dtype=np.float32)
    lost = np.zeros(len(colour), dtype=bool)
    for _ in range(steps + 1):
        d2 = ((side - cy[:, None]) ** 2)[:, :, None] + ((side - cx[:, None]) ** 2)[:, None, :]  # rows plus columns
        w = weight * (d2 < (reach * THUMB) ** 2)
        rows, cols = w.sum(axis=2), w.sum(axis=1)
        total = rows.sum(axis=1)
        lost |= total <= 0
        total = np.where(lost, 1.0, total).astype(np.float32)
        radius = np.sqrt((w * d2).sum(axis=(1, 2)) / total)
        cy, cx = rows @ side / total, cols @ side / total
    middle = (THUMB - 1) / 2  # float64 out: the float32 values, exactly
    return (np.where(lost, middle, cy.astype(np.float64)), np.where(lost, middle, cx.astype(np.float64)),
            np.where(lost, THUMB / 6, np.maximum(radius, 2.0).astype(np.float64)))


def _upper_quartiles(x: np.ndarray) -> np.ndarray:
    """np.percentile of each image at 75, to the bit (its linear interpolation), from a partial sort."""
    flat = x.reshape(len(x), -1)
    at = 0.75 * (flat.shape[1] - 1)
    lo = int(at)
    hi = min(lo + 1, flat.shape[1] - 1)
    part = np.partition(flat, (lo, hi), axis=1)
    step, t = part[:, hi] - part[:, lo], at - lo
    return part[:, lo] + step * t if t < 0.5 else part[:, hi] - step * (1 - t)  # numpy's two-sided lerp


def _sample_squares(images: np.ndarray, cy: np.ndarray, cx: np.ndarray, half: np.ndarray, n: int) -> np.ndarray:
    """n x n bilinear samples of each square centre +- half (edge pixels repeat outside the image), as
    ndimage.map_coordinates(order=1, mode="nearest") gives them: the grid is separable, so each is two
    small matrix products, in float64."""
    lin = (np.arange(n) + 0.5) / n * 2 - 1
    size = images.shape[-1]
    rows = _bilinear_weights(cy[:, None] + lin * half[:, None], size)
    cols = _bilinear_weights(cx[:, None] + lin * half[:, None], size)
    return (rows @ images.astype(np.float64) @ cols.transpose(0, 2, 1)).astype(np.float32)


def _bilinear_weights(at: np.ndarray, size: int) -> np.ndarray:
    """(B, n, size) linear-interpolation weights of the positions `at` (B, n), clamped to the image."""
    at = np.clip(at, 0, size - 1)[..., None]
    lo = np.floor(at)
    pixels = np.arange(size)
    return (1 - (at - lo)) * (pixels == lo) + (at - lo) * (pixels == np.minimum(lo + 1, size - 1))


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=(1, 2), keepdims=True)
    return x / np.maximum(x.std(axis=(1, 2), keepdims=True), 1e-6)


def _quantise(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * QUANT), -127, 127).astype(np.int8)


def dihedral(x: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations/mirrors of the last two axes, in the order of `DIHEDRAL_NAMES`."""
    out = []
    for k in range(4):
        turned = np.rot90(x, k, axes=(-2, -1))
        out += [turned, turned[..., ::-1]]
    return out


@functools.cache
def _orbits(n: int) -> np.ndarray:
    """(n/2 * n/2, 8) flat indices into an n x n grid: each pixel of the top-left quadrant and where
    the 8 rotations/mirrors take it (one gather per embedding instead of 8 turned copies)."""
    half = n // 2
    return np.stack(dihedral(np.arange(n * n).reshape(n, n)), axis=-1)[:half, :half].reshape(half * half, 8)


def _orbit_embeddings(grids: np.ndarray) -> np.ndarray:
    """Sorted values of each dihedral orbit of each grid's pixels: unchanged by any rotation/mirror."""
    flat = grids.reshape(len(grids), -1)
    orbits = np.sort(np.take(flat, _orbits(grids.shape[-1]), axis=1), axis=-1).reshape(len(grids), -1)
    orbits = orbits - orbits.mean(axis=1, keepdims=True)
    return (orbits / np.maximum(np.linalg.norm(orbits, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def pool2(x: np.ndarray) -> np.ndarray:
    """Means of 2 x 2 blocks over the last two axes."""
    x = x.astype(np.float32, copy=False)
    return 0.25 * (x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2])


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=(1, 2), keepdims=True, dtype=np.float32)
    return x / np.maximum(np.sqrt((x * x).sum(axis=(1, 2), keepdims=True)), 1e-6)
