"""Signatures: the small summary of each image that the duplicate and shared-field searches use.

Computed where an image is decoded (~6.6 KB): `pixel_sha256` and `phash` (both published), a 64 x 64
band-passed grey thumbnail of the whole crop, the stained cell's centre and radius (mean shift on blue
minus green), 16 x 16 screening views (the ring around the cell at the cell's own scale, and the whole
crop), two 128-number embeddings (whole crop, cell-centred) invariant to the 8 rotations/mirrors (each
pixel orbit sorted), and the 16 x 16 field view hema.dedup.smear_fields searches for crops of one smear
field. hema.dedup.duplicates says how each of the others is used.

They are kept as a `SignatureTable`, one array per field: no Python object per image (a list of
per-image objects cost 8.2 KB an image, 1.4 GB at 171k, and forked workers copied the pages whose
reference counts they touched), and a search reads the column it needs as one array.

`signature_batch` takes many images at once: past the two resizes of each image, every step is one
numpy call over the whole batch (stacked matrix products, per-image reductions), where one image at a
time spent most of its ~1 ms in per-call overhead. Each image's result is its own: it does not depend
on the other images of its batch (tests/test_dedup.py checks this).
"""

from __future__ import annotations

import dataclasses
import functools
import mmap
import os
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from hema.base.imaging import phash, pixel_sha256

THUMB = 64  # side of the registration thumbnail (whole crop)
PATCH = 32  # side of the cell-centred patch
EMBED = 8  # side of the low-resolution grids behind the embeddings
EMBED_LENGTH = 8 * (EMBED // 2) ** 2  # an embedding: the 8 places of each pixel of a quadrant, sorted
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
    """What the grouping stage knows of one image: a row of a `SignatureTable` (its arrays are views)."""

    pixel_sha256: str
    phash: int
    thumb: np.ndarray  # THUMB x THUMB int8: band-passed grey of the whole crop, standardised
    screen_cell: np.ndarray  # 16 x 16 float16, unit norm: band-passed ring around the cell, cell-scaled
    screen_whole: np.ndarray  # 16 x 16 float16, unit norm: the band-passed whole crop
    embed_whole: np.ndarray  # EMBED_LENGTH float32, unit norm, invariant to rotations and mirrors
    embed_cell: np.ndarray  # the same for the cell-centred, cell-scaled view
    field: np.ndarray  # 16 x 16 float16: band-passed view of the whole crop, for hema.dedup.smear_fields
    cell: tuple[float, float, float]  # cell centre (y, x) and radius, in thumbnail pixels
    height: int
    width: int

    @property
    def nbytes(self) -> int:
        """Bytes of pixel data it carries."""
        arrays = (self.thumb, self.screen_cell, self.screen_whole, self.embed_whole, self.embed_cell, self.field)
        return sum(a.nbytes for a in arrays)


#: Each column of a SignatureTable: its dtype and the shape of one row.
COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "pixel_sha256": ("S64", ()), "phash": ("uint64", ()), "thumb": ("int8", (THUMB, THUMB)),
    "screen_cell": ("float16", (16, 16)), "screen_whole": ("float16", (16, 16)),
    "embed_whole": ("float32", (EMBED_LENGTH,)), "embed_cell": ("float32", (EMBED_LENGTH,)),
    "field": ("float16", (FIELD_GRID, FIELD_GRID)), "cell": ("float64", (3,)), "size": ("int32", (2,)),
}
ROW_BYTES = sum(np.dtype(dtype).itemsize * int(np.prod(shape)) for dtype, shape in COLUMNS.values())


@dataclass(frozen=True, eq=False)
class SignatureTable:
    """The signatures of many images, one array per field, row i for image i (see ImageSignature).

    A build keeps its table in files of its scratch folder, memory-mapped (`allocate` with a folder):
    forked workers read the same pages, and `release_pages` hands back what a stage has read, so the
    parent's memory does not hold every image's 6.6 KB between the stages that read them."""

    pixel_sha256: np.ndarray  # (n,) S64: the hex digest in ASCII
    phash: np.ndarray  # (n,) uint64
    thumb: np.ndarray  # (n, THUMB, THUMB) int8
    screen_cell: np.ndarray  # (n, 16, 16) float16
    screen_whole: np.ndarray  # (n, 16, 16) float16
    embed_whole: np.ndarray  # (n, EMBED_LENGTH) float32
    embed_cell: np.ndarray  # (n, EMBED_LENGTH) float32
    field: np.ndarray  # (n, FIELD_GRID, FIELD_GRID) float16
    cell: np.ndarray  # (n, 3) float64: centre (y, x) and radius
    size: np.ndarray  # (n, 2) int32: height and width of the decoded image
    mapped: tuple[mmap.mmap, ...] = dataclasses.field(default=(), repr=False)  # the file-backed columns' maps

    @classmethod
    def allocate(cls, n: int, folder: Path | None = None) -> SignatureTable:
        """Room for n rows (filled with `put`): in memory, or in new files `signatures.<column>` of
        `folder` (a folder of this process's own making), memory-mapped."""
        if folder is None or n == 0:
            return cls(**{name: np.empty((n, *shape), dtype) for name, (dtype, shape) in COLUMNS.items()})
        columns, mapped = {}, []
        for name, (dtype, shape) in COLUMNS.items():
            size = n * np.dtype(dtype).itemsize * int(np.prod(shape))
            fd = os.open(folder / f"signatures.{name}", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _reserve(fd, size)
                mapped.append(mmap.mmap(fd, size))
            finally:
                os.close(fd)
            columns[name] = np.frombuffer(mapped[-1], dtype).reshape(n, *shape)
        return cls(**columns, mapped=tuple(mapped))

    @classmethod
    def concat(cls, tables: Sequence[SignatureTable]) -> SignatureTable:
        """One table (in memory) of the tables' rows, in order."""
        out = cls.allocate(sum(len(t) for t in tables))
        start = 0
        for table in tables:
            out.put(start, table)
            start += len(table)
        return out

    def put(self, start: int, rows: SignatureTable) -> None:
        """Write `rows` into rows start, start + 1, ... of this table."""
        for name in COLUMNS:
            getattr(self, name)[start : start + len(rows)] = getattr(rows, name)

    def take(self, rows: np.ndarray | slice) -> SignatureTable:
        """The table of these rows (a slice gives views, no copy)."""
        return SignatureTable(**{name: getattr(self, name)[rows] for name in COLUMNS},
                              mapped=self.mapped if isinstance(rows, slice) else ())

    def release_pages(self) -> None:
        """Unmap this process's pages of the file-backed columns: they stay in the page cache (the
        kernel may write them out and drop them), and a later read maps them again. Called after each
        stage that read the table, so that what it read stops counting as this process's memory."""
        for pages in self.mapped:
            pages.madvise(mmap.MADV_DONTNEED)

    def __len__(self) -> int:
        return len(self.phash)

    @typing.overload
    def __getitem__(self, i: int) -> ImageSignature: ...
    @typing.overload
    def __getitem__(self, i: slice) -> SignatureTable: ...

    def __getitem__(self, i: int | slice) -> ImageSignature | SignatureTable:
        """Row i, as an ImageSignature; or the table of a slice of rows (views, no copy)."""
        if isinstance(i, slice):
            return self.take(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        height, width = self.size[i].tolist()
        return ImageSignature(self.pixel_sha256[i].decode(), int(self.phash[i]), self.thumb[i], self.screen_cell[i],
                              self.screen_whole[i], self.embed_whole[i], self.embed_cell[i], self.field[i],
                              tuple(self.cell[i].tolist()), height, width)

    def __iter__(self) -> Iterator[ImageSignature]:
        return (self[i] for i in range(len(self)))


def _reserve(fd: int, size: int) -> None:
    """Give the file `size` bytes of disk now: a full disk is an OSError here, where writing into a
    sparse file's mapped pages would kill the process (SIGBUS)."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    else:
        os.ftruncate(fd, size)


def signature(rgb: np.ndarray) -> ImageSignature:
    """The signature of one H x W x 3 uint8 image."""
    return signature_batch([rgb])[0]


def signature_batch(images: Sequence[np.ndarray]) -> SignatureTable:
    """The signatures of H x W x 3 uint8 images (of any sizes), in order, BATCH at a time."""
    table = SignatureTable.allocate(len(images))
    for start in range(0, len(images), BATCH):
        table.put(start, _signature_chunk(images[start : start + BATCH]))
    return table


def _signature_chunk(images: Sequence[np.ndarray]) -> SignatureTable:
    pictures = [Image.fromarray(rgb) for rgb in images]
    colour = np.stack([np.asarray(p.resize((THUMB, THUMB), Image.Resampling.BOX)) for p in pictures]).astype(np.float32)
    grey = colour @ _GREY
    cy, cx, radius = _locate_cells(colour)
    smooth = _blur(grey, BAND[1])  # also the embeddings' anti-aliasing (8 px cells)
    band = _standardise(_blur(grey, BAND[0]) - smooth)
    reach = np.clip(CELL_REACH * radius, 0.2 * THUMB, 0.6 * THUMB)
    centre = np.full(len(images), (THUMB - 1) / 2)
    patch = _sample_squares(band, cy, cx, reach, PATCH) * _RING
    return SignatureTable(
        pixel_sha256=np.array([pixel_sha256(rgb) for rgb in images], dtype="S64"),
        phash=np.array([phash(picture) for picture in pictures], dtype=np.uint64),
        thumb=_quantise(band),
        screen_cell=_unit(pool2(patch)).astype(np.float16),
        screen_whole=_unit(pool2(pool2(band))).astype(np.float16),
        embed_whole=_orbit_embeddings(_sample_squares(smooth, centre, centre, np.full(len(images), THUMB / 2), EMBED)),
        embed_cell=_orbit_embeddings(_sample_squares(smooth, cy, cx, reach, EMBED)),
        field=_field_views(grey),
        cell=np.stack([cy, cx, radius], axis=1).astype(np.float64),
        size=np.array([rgb.shape[:2] for rgb in images], dtype=np.int32).reshape(len(images), 2),
    )


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
