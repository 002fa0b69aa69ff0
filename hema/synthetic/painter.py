"""An offline, procedurally drawn sample of MLL23 in exactly its raw layout: the embedded default.

The real data (~10 GB, 41,621 TIFs) cannot ship with the code, yet the demo, the tests and the notebooks
need images whose classes differ the way real cells do. This module paints them: May-Grünwald-Giemsa
(Pappenheim) stained smears at MLL23's scale (288 x 288 px, 11.52 px per µm, a 25 µm field), a pale
pink-beige background with red cells, and one centred leukocyte whose nucleus shape, chromatin,
cytoplasm colour and granules follow its cell class. Stain, size, position, rotation, blur and noise vary
per image, so a classifier must learn shapes and textures rather than one colour.

Painting works in optical density (Beer-Lambert): every structure adds absorbance, the image is the
background light times exp(-density), so overlapping cells darken the way stained ones do.

Planted duplicates (declared in the hidden marker DIR/.hema_sample.json) give the duplicate detection
something known to find. They replace drawn images, so every class holds exactly `per_class` files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from hema.base import atomic
from hema.base.cache import cache_root
from hema.base.errors import HemaError
from hema.synthetic.manifest import MARKER, PlantedPair, SampleManifest, read_manifest

SIDE = 288  # MLL23 image side in pixels
PX_PER_UM = 11.52  # MLL23 scale: a 25 µm field
VERSION = 1  # bump when the painting changes: cached samples are keyed by it

_PAD = 32  # extra canvas around images whose planted copy is a shifted or rescaled view
_BACKGROUND_RGB = np.array([251.0, 231.0, 208.0], dtype=np.float32)  # plasma-free slide, light
_TABLE = 720  # samples of a polar outline r(phi)
_BANK = 640  # side of the precomputed texture fields; larger than any canvas
_RED_CELL_SPRITES = 32

# Classes whose mix-up is a plausible label conflict; the cross-class duplicate is one of these.
_CONFUSABLE = (
    ("neutrophil_band", "neutrophil_segmented"),
    ("myelocyte", "metamyelocyte"),
    ("promyelocyte", "promyelocyte_atypical"),
    ("lymphocyte", "lymphocyte_neoplastic"),
)
_RAREST_CLASS = "lymphocyte_reactive"  # 33 real images: a plant there would unbalance its splits
_EXACT_ENCODINGS = ("copy", "tiff_lzw", "png_in_tif")
_NEAR_TRANSFORMS = ("jpeg", "shift", "relight", "rescale", "mirror", "rotate")


# ----------------------------------------------------------------------------------------------
# Geometry: signed distances (negative inside) on a pixel grid, in pixels


@dataclass(frozen=True)
class _Grid:
    """Pixel centres (canvas coordinates) of the window where one object is painted."""

    yy: np.ndarray
    xx: np.ndarray
    box: tuple[slice, slice]  # where the window lies on the canvas

    @classmethod
    def around(cls, cy: float, cx: float, reach: float, size: int) -> _Grid:
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, size)
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, size)
        yy, xx = np.mgrid[y0 : max(y1, y0), x0 : max(x1, x0)].astype(np.float32)
        return cls(yy, xx, (slice(y0, max(y1, y0)), slice(x0, max(x1, x0))))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.yy.shape

    def local(self, cy: float, cx: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates in a shape's own frame: origin at its centre, u along its rotated axis."""
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = self.xx - cx, self.yy - cy
        return c * dx + s * dy, -s * dx + c * dy

    def dist(self, cy: float, cx: float) -> np.ndarray:
        return np.hypot(self.yy - cy, self.xx - cx)


def _phi_samples() -> np.ndarray:
    return np.linspace(-math.pi, math.pi, _TABLE, endpoint=False, dtype=np.float32)


def _outline(
    rng: np.random.Generator, radius: float, aspect: float, roughness: float, kmax: int = 6
) -> np.ndarray:
    """Radius table r(phi) of an ellipse (area of a circle of `radius`) with a wavy contour."""
    phi = _phi_samples()
    a, b = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
    r = a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
    for k in range(2, kmax + 1):
        r *= 1 + roughness * rng.normal() / k * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    return r


def _bumps(phi0: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Sum of angular Gaussian bumps on the phi table (indentations when height < 0)."""
    d = np.angle(np.exp(1j * (_phi_samples()[:, None] - phi0[None, :])))  # wrapped difference
    return (height[None, :] * np.exp(-0.5 * (d / width[None, :]) ** 2)).sum(axis=1)


def _polar_sdf(u: np.ndarray, v: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Approximate signed distance (px, negative inside) to a star-shaped outline r(phi)."""
    idx = ((np.arctan2(v, u) + math.pi) * (_TABLE / (2 * math.pi))).astype(np.int32) % _TABLE
    return np.hypot(u, v) - table[idx]


def _capsule_sdf(g: _Grid, p0: tuple[float, float], p1: tuple[float, float], radius: float) -> np.ndarray:
    """Signed distance to a thick segment: chromatin strands between lobes, Auer rods."""
    (y0, x0), (y1, x1) = p0, p1
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((g.yy - y0) * dy + (g.xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
    return np.hypot(g.yy - (y0 + t * dy), g.xx - (x0 + t * dx)) - radius


def _coverage(sdf: np.ndarray, edge: float = 1.5) -> np.ndarray:
    """Anti-aliased inside-ness in [0, 1] from a signed distance."""
    return np.clip(0.5 - sdf / (2 * edge), 0.0, 1.0)


@cache
def _texture_bank(sigma: float) -> np.ndarray:
    """A fixed field of smoothed noise (unit variance) that textures are cut from: filtering fresh
    noise for every image would cost more than painting the rest of it."""
    field = ndimage.gaussian_filter(
        np.random.default_rng(0x7E47).standard_normal((_BANK, _BANK), dtype=np.float32), sigma, mode="wrap"
    )
    field /= field.std()
    field.setflags(write=False)  # shared by every image: callers get views
    return field


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance texture with grain of about `sigma` pixels (a random cut of the bank)."""
    bank = _texture_bank(float(sigma))
    if rng.random() < 0.5:
        bank = bank.T
    y, x = rng.integers(0, _BANK - max(shape) + 1, 2)
    return bank[y : y + shape[0], x : x + shape[1]]


def _od(rgb: tuple[float, float, float]) -> np.ndarray:
    """Optical density of a colour seen on the standard background (negative = bluer than it)."""
    return -np.log(np.asarray(rgb, dtype=np.float32) / _BACKGROUND_RGB)


def _pick(rng: np.random.Generator, where: np.ndarray, g: _Grid) -> tuple[float, float] | None:
    """A random pixel (canvas coordinates) where `where` holds, or None if nowhere."""
    inside = np.flatnonzero(where)
    if not len(inside):
        return None
    k = inside[rng.integers(len(inside))]
    return float(g.yy.flat[k]), float(g.xx.flat[k])


# ----------------------------------------------------------------------------------------------
# Cell classes: what a haematologist would name in each


@dataclass(frozen=True)
class Granules:
    rgb: tuple[float, float, float]  # colour of a saturated granule
    count: tuple[int, int]  # per 10,000 px of the area they lie on
    radius: float  # px
    over_nucleus: bool  # basophil and azurophil granules lie on the nucleus too
    strength: float = 1.0


@dataclass(frozen=True)
class Recipe:
    diameter_um: tuple[float, float]
    nucleus: str  # key of _NUCLEI
    nucleus_size: tuple[float, float]  # nucleus (or lobe) scale relative to the cell radius
    chromatin: tuple[float, float, float]  # (stain density, texture contrast, grain in px)
    cytoplasm_rgb: tuple[float, float, float]
    cell_aspect: tuple[float, float] = (1.0, 1.12)
    eccentric: tuple[float, float] = (0.0, 0.08)  # nucleus offset relative to the cell radius
    outline: str = "smooth"  # smooth | scalloped | hairy | none
    nucleoli: tuple[int, int] = (0, 0)
    granules: tuple[Granules, ...] = ()
    vacuoles: tuple[int, int] = (0, 0)
    halo: bool = False  # perinuclear Golgi zone (plasma cell)
    auer_rods: tuple[int, int] = (0, 0)


_NUCLEAR_RGB = (72.0, 30.0, 128.0)  # dense azure-stained chromatin
_RED_CELL_RGB = (214.0, 178.0, 182.0)
_AUER_RGB = (165.0, 35.0, 105.0)
_PLATELET_RGB = (130.0, 70.0, 160.0)
_NEUTROPHILIC = Granules((205, 160, 190), (120, 180), 1.0, over_nucleus=False, strength=0.6)
_AZUROPHIL_RGB = (150.0, 45.0, 120.0)

# fmt: off
RECIPES: dict[str, Recipe] = {
    "basophil": Recipe(
        (10, 13), "lobed_blur", (0.55, 0.65), (0.55, 0.2, 2.0), (215, 190, 210),
        granules=(Granules((55, 18, 95), (110, 150), 2.6, over_nucleus=True, strength=1.1),),
    ),
    "eosinophil": Recipe(
        (12, 15), "bilobed", (0.3, 0.36), (1.0, 0.35, 2.0), (232, 185, 170),
        granules=(Granules((230, 140, 115), (450, 600), 2.0, over_nucleus=False, strength=0.8),),
    ),
    "hairy_cell": Recipe(
        (11, 15), "oval", (0.5, 0.6), (0.75, 0.22, 1.5), (196, 192, 222),
        outline="hairy", eccentric=(0.05, 0.2),
    ),
    "lymphocyte": Recipe(
        (7.5, 10), "round", (0.82, 0.9), (1.15, 0.35, 2.5), (165, 170, 218),
        eccentric=(0.03, 0.12),
    ),
    "lymphocyte_large_granular": Recipe(
        (11, 14), "round", (0.5, 0.6), (1.05, 0.35, 2.5), (205, 200, 228),
        eccentric=(0.1, 0.3),
        granules=(Granules((160, 40, 115), (3, 6), 2.0, over_nucleus=False, strength=1.2),),
    ),
    "lymphocyte_neoplastic": Recipe(
        (9, 12.5), "cleaved", (0.8, 0.88), (1.05, 0.3, 2.0), (160, 165, 215),
    ),
    "lymphocyte_reactive": Recipe(
        (13, 18), "oval", (0.4, 0.5), (0.95, 0.3, 2.5), (115, 125, 200),
        outline="scalloped", eccentric=(0.15, 0.3),
    ),
    "metamyelocyte": Recipe(
        (11, 14), "kidney", (0.55, 0.62), (0.95, 0.35, 2.2), (232, 198, 202),
        eccentric=(0.05, 0.15), granules=(_NEUTROPHILIC,),
    ),
    "monocyte": Recipe(
        (15, 19), "folded", (0.58, 0.68), (0.75, 0.3, 1.8), (195, 188, 212),
        cell_aspect=(1.0, 1.3), outline="scalloped", vacuoles=(2, 6),
    ),
    "myeloblast": Recipe(
        (14, 18), "round", (0.76, 0.84), (0.62, 0.14, 1.0), (168, 172, 216),
        nucleoli=(1, 3), eccentric=(0.02, 0.1),
    ),
    "myelocyte": Recipe(
        (12, 16), "oval", (0.55, 0.62), (0.95, 0.32, 2.2), (228, 190, 200),
        eccentric=(0.2, 0.3), granules=(_NEUTROPHILIC,),
    ),
    "neutrophil_band": Recipe(
        (11, 14), "band", (0.5, 0.58), (1.0, 0.35, 2.2), (232, 203, 208),
        granules=(_NEUTROPHILIC,),
    ),
    "neutrophil_segmented": Recipe(
        (11, 14), "segmented", (0.26, 0.31), (1.05, 0.35, 2.2), (232, 203, 208),
        granules=(_NEUTROPHILIC,),
    ),
    "normoblast": Recipe(
        (8, 11), "dense", (0.5, 0.62), (1.55, 0.08, 1.5), (200, 158, 176),
        eccentric=(0.05, 0.25),
    ),
    "plasma_cell": Recipe(
        (9, 13), "round", (0.48, 0.56), (1.1, 0.45, 2.8), (100, 112, 185),
        cell_aspect=(1.2, 1.45), eccentric=(0.35, 0.45), halo=True,
    ),
    "promyelocyte": Recipe(
        (15, 19), "oval", (0.6, 0.68), (0.7, 0.15, 1.3), (190, 185, 218),
        nucleoli=(1, 2), eccentric=(0.15, 0.3),
        granules=(Granules(_AZUROPHIL_RGB, (35, 55), 1.5, over_nucleus=True),),
    ),
    "promyelocyte_atypical": Recipe(
        (15, 19), "butterfly", (0.62, 0.7), (0.7, 0.15, 1.3), (200, 180, 212),
        nucleoli=(0, 1), auer_rods=(1, 4),
        granules=(Granules(_AZUROPHIL_RGB, (60, 90), 1.8, over_nucleus=True, strength=1.2),),
    ),
    "smudge_cell": Recipe(
        (12, 20), "smudge", (0.8, 0.95), (0.5, 0.3, 1.5), (251, 231, 208),  # no cytoplasm
        outline="none",
    ),
}
# fmt: on

#: The classes painted, in ClassLabel order: MLL23's 18 (tests/test_sample.py checks they are the same).
PAINTED_CLASSES: tuple[str, ...] = tuple(sorted(RECIPES))


def image_id(cell_class: str, index: int) -> str:
    """MLL23 file naming: <class>/<class>_NNNN.TIF, NNNN 1-based."""
    return f"{cell_class}/{cell_class}_{index + 1:04d}.TIF"


@dataclass(frozen=True)
class _Cell:
    """Where the leukocyte (or its nucleus) lies on the canvas: centre, radius (px), rotation."""

    cy: float
    cx: float
    radius: float
    angle: float


def _any_angle(rng: np.random.Generator) -> float:
    return float(rng.uniform(0, 2 * math.pi))


def _round_nucleus(
    rng: np.random.Generator, g: _Grid, cell: _Cell, size: float, aspect: tuple[float, float] = (1.0, 1.12)
) -> np.ndarray:
    u, v = g.local(cell.cy, cell.cx, _any_angle(rng))
    return _polar_sdf(u, v, _outline(rng, size * cell.radius, rng.uniform(*aspect), 0.08))


def _oval_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    return _round_nucleus(rng, g, cell, size, aspect=(1.15, 1.4))


def _dense_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Normoblast: small, perfectly round, pyknotic."""
    u, v = g.local(cell.cy, cell.cx, 0.0)
    return _polar_sdf(u, v, _outline(rng, size * cell.radius, rng.uniform(1.0, 1.08), 0.02))


def _dented_nucleus(
    rng: np.random.Generator,
    g: _Grid,
    cell: _Cell,
    size: float,
    aspect: tuple[float, float],
    roughness: float,
    dents: list[tuple[float, float, float]],
) -> np.ndarray:
    """An oval with angular indentations (angle, width, depth as a fraction of the radius)."""
    u, v = g.local(cell.cy, cell.cx, _any_angle(rng))
    table = _outline(rng, size * cell.radius, rng.uniform(*aspect), roughness, kmax=7)
    phi0, width, depth = (np.array(x, dtype=np.float32) for x in zip(*dents))
    return _polar_sdf(u, v, table * (1 - _bumps(phi0, width, depth)))


def _kidney_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Metamyelocyte: bean shape, one indentation of a third of the radius."""
    return _dented_nucleus(rng, g, cell, size, (1.3, 1.5), 0.05, [(math.pi / 2, 0.5, rng.uniform(0.3, 0.42))])


def _butterfly_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Atypical (APL) promyelocyte: bilobed, butterfly-like, two opposite indentations."""
    dents = [(s * math.pi / 2, 0.35, rng.uniform(0.3, 0.45)) for s in (-1, 1)]
    return _dented_nucleus(rng, g, cell, size, (1.2, 1.4), 0.06, dents)


def _cleaved_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Neoplastic lymphocyte: round nucleus notched by a narrow, deep cleft."""
    return _dented_nucleus(
        rng, g, cell, size, (1.0, 1.15), 0.08, [(0.0, rng.uniform(0.06, 0.1), rng.uniform(0.45, 0.65))]
    )


def _folded_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Monocyte: large, irregular, with a shallow notch and folds (darkened later as a crease)."""
    dents = [(rng.uniform(-math.pi, math.pi), w, rng.uniform(0.12, 0.3)) for w in (0.35, 0.25)]
    return _dented_nucleus(rng, g, cell, size, (1.15, 1.45), 0.22, dents)


def _band_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Band neutrophil: a C or U of even thickness (a thick circular arc)."""
    u, v = g.local(cell.cy, cell.cx, _any_angle(rng))
    arc_r = size * cell.radius
    u = (u + 0.35 * arc_r) / rng.uniform(1.0, 1.35)  # centre the mass; stretch a C into a U
    half = math.radians(rng.uniform(105, 145))
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    ends = [(arc_r * math.cos(s * half), arc_r * math.sin(s * half)) for s in (-1, 1)]
    to_end = np.minimum(*[np.hypot(u - eu, v - ev) for eu, ev in ends])
    dist = np.where(np.abs(phi) <= half, np.abs(rho - arc_r), to_end)
    return dist - rng.uniform(0.2, 0.26) * cell.radius


def _lobes(
    rng: np.random.Generator,
    g: _Grid,
    cell: _Cell,
    centres: list[tuple[float, float]],
    lobe_r: float,
    strand_r: float,
) -> np.ndarray:
    """Union of oval lobes at `centres` (relative to the cell, px) chained by thin strands."""
    points = [(cell.cy + dy, cell.cx + dx) for dy, dx in centres]
    sdf = np.full(g.shape, np.inf, np.float32)
    for k, (py, px) in enumerate(points):
        u, v = g.local(py, px, _any_angle(rng))
        table = _outline(rng, lobe_r * rng.uniform(0.85, 1.15), rng.uniform(1.1, 1.4), 0.1)
        sdf = np.minimum(sdf, _polar_sdf(u, v, table))
        if k:
            sdf = np.minimum(sdf, _capsule_sdf(g, points[k - 1], (py, px), strand_r))
    return sdf


def _segmented_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Segmented neutrophil: 3-5 lobes around the cell centre joined by filaments."""
    n = int(rng.integers(3, 6))
    angles = _any_angle(rng) + np.linspace(0, math.radians(rng.uniform(220, 290)), n)
    angles += rng.normal(0, 0.12, n)
    ring = rng.uniform(0.34, 0.42) * cell.radius
    centres = [(ring * math.sin(a), ring * math.cos(a)) for a in angles]
    return _lobes(rng, g, cell, centres, size * cell.radius, rng.uniform(1.2, 2.2))


def _bilobed_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Eosinophil: two round lobes like spectacles."""
    a = _any_angle(rng)
    sep = rng.uniform(0.3, 0.38) * cell.radius
    centres = [(s * sep * math.sin(a), s * sep * math.cos(a)) for s in (-1, 1)]
    return _lobes(rng, g, cell, centres, size * cell.radius, rng.uniform(2.0, 3.0))


def _lobed_blur_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Basophil: a pale, vaguely lobed nucleus (mostly hidden under the granules)."""
    u, v = g.local(cell.cy, cell.cx, _any_angle(rng))
    return _polar_sdf(u, v, _outline(rng, size * cell.radius, rng.uniform(1.1, 1.4), 0.3, kmax=4))


def _smudge_nucleus(rng: np.random.Generator, g: _Grid, cell: _Cell, size: float) -> np.ndarray:
    """Smudge cell: a smeared, torn chromatin blob without a membrane, along the smear direction."""
    u, v = g.local(cell.cy, cell.cx, cell.angle)
    return _polar_sdf(u, v, _outline(rng, size * cell.radius, rng.uniform(1.1, 1.6), 0.3, kmax=8))


_NUCLEI: dict[str, Callable[[np.random.Generator, _Grid, _Cell, float], np.ndarray]] = {
    "round": _round_nucleus,
    "oval": _oval_nucleus,
    "dense": _dense_nucleus,
    "kidney": _kidney_nucleus,
    "butterfly": _butterfly_nucleus,
    "cleaved": _cleaved_nucleus,
    "folded": _folded_nucleus,
    "band": _band_nucleus,
    "segmented": _segmented_nucleus,
    "bilobed": _bilobed_nucleus,
    "lobed_blur": _lobed_blur_nucleus,
    "smudge": _smudge_nucleus,
}


def _cell_outline(rng: np.random.Generator, recipe: Recipe, radius: float) -> np.ndarray:
    """Radius table of the cell membrane: smooth, scalloped (around red cells) or hairy."""
    aspect = rng.uniform(*recipe.cell_aspect)
    if recipe.outline == "scalloped":
        return _outline(rng, radius, aspect, 0.3, kmax=7)
    table = _outline(rng, radius, aspect, 0.05)
    if recipe.outline == "hairy":
        n = int(rng.integers(20, 40))
        hairs = _bumps(
            rng.uniform(-math.pi, math.pi, n), rng.uniform(0.015, 0.035, n), rng.uniform(0.05, 0.2, n)
        )
        table = table + radius * hairs
    return table


# ----------------------------------------------------------------------------------------------
# Painting (optical densities, then light)


def _scatter(rng: np.random.Generator, where: np.ndarray, per_10k: float, radius: float) -> np.ndarray:
    """Granule density map: round granules of `radius` px dropped at random where `where` > 0.5."""
    n = int(rng.poisson(per_10k * float(where.sum()) / 10_000))
    ys = rng.integers(0, where.shape[0], max(4 * n, 1))
    xs = rng.integers(0, where.shape[1], max(4 * n, 1))
    keep = where[ys, xs] > 0.5
    impulses = np.zeros(where.shape, np.float32)
    np.add.at(impulses, (ys[keep][:n], xs[keep][:n]), 1.0)
    sigma = 0.7 * radius
    return np.clip(ndimage.gaussian_filter(impulses, sigma) * (2 * math.pi * sigma**2) * 1.3, 0, 1.2)


def _leukocyte(
    rng: np.random.Generator, recipe: Recipe, g: _Grid, cell: _Cell, outline: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The white cell's coverage and optical density (window-sized, 3 channels)."""
    u, v = g.local(cell.cy, cell.cx, cell.angle)
    body = _coverage(_polar_sdf(u, v, outline), 1.3)
    offset, towards = rng.uniform(*recipe.eccentric) * cell.radius, _any_angle(rng)
    centre = replace(cell, cy=cell.cy + offset * math.sin(towards), cx=cell.cx + offset * math.cos(towards))
    nucleus_sdf = _NUCLEI[recipe.nucleus](rng, g, centre, rng.uniform(*recipe.nucleus_size))
    smudged = recipe.outline == "none"
    nucleus = _coverage(nucleus_sdf, 4.0 if smudged else 1.2)
    if smudged:  # torn: holes and streaks across the smear direction
        across = g.local(cell.cy, cell.cx, cell.angle)[1]
        streaks = sum(np.sin(across * rng.uniform(0.3, 0.9) + rng.uniform(0, 6.3)) for _ in range(3))
        nucleus *= np.clip(0.75 + 0.06 * streaks + 0.2 * _noise(rng, g.shape, 3.0), 0, 1)
        body = nucleus
    grain = _noise(rng, g.shape, recipe.chromatin[2])

    layers = [  # (stain density map, colour)
        (_cytoplasm(rng, recipe, g, cell, body, nucleus_sdf, nucleus), recipe.cytoplasm_rgb),
        (nucleus * _chromatin(rng, recipe, g, cell, nucleus_sdf, nucleus, grain), _NUCLEAR_RGB),
    ]
    for gr in recipe.granules:
        where = body if gr.over_nucleus else body * (1 - nucleus)
        layers.append((gr.strength * _scatter(rng, where, rng.uniform(*gr.count), gr.radius), gr.rgb))
    rods = _auer_rods(rng, recipe, g, body, nucleus_sdf)
    if rods is not None:
        layers.append((rods, _AUER_RGB))
    return body, _mix(layers)


def _mix(layers: list[tuple[np.ndarray, tuple[float, float, float]]]) -> np.ndarray:
    """Optical density (H x W x 3) of stain density maps, each in its own colour."""
    maps = np.stack([m for m, _ in layers], axis=-1)
    return maps @ np.stack([_od(rgb) for _, rgb in layers])


def _auer_rods(
    rng: np.random.Generator, recipe: Recipe, g: _Grid, body: np.ndarray, nucleus_sdf: np.ndarray
) -> np.ndarray | None:
    """Needle-shaped azurophil crystals in the cytoplasm of atypical promyelocytes."""
    n = int(rng.integers(recipe.auer_rods[0], recipe.auer_rods[1] + 1))
    if not n:
        return None
    rods = np.zeros(g.shape, np.float32)
    for _ in range(n):
        spot = _pick(rng, (nucleus_sdf > 6) & (body > 0.9), g)
        if spot is not None:
            a, half = _any_angle(rng), rng.uniform(1.0, 2.0) * PX_PER_UM
            p0 = (spot[0] - half * math.sin(a), spot[1] - half * math.cos(a))
            p1 = (spot[0] + half * math.sin(a), spot[1] + half * math.cos(a))
            rods = np.maximum(rods, 1.2 * _coverage(_capsule_sdf(g, p0, p1, rng.uniform(1.0, 1.8)), 0.8))
    return rods * body  # crystals stay inside the cell


def _chromatin(
    rng: np.random.Generator,
    recipe: Recipe,
    g: _Grid,
    cell: _Cell,
    nucleus_sdf: np.ndarray,
    nucleus: np.ndarray,
    grain: np.ndarray,
) -> np.ndarray:
    """Nuclear stain density: clumped or fine texture, condensed at the membrane, pale nucleoli."""
    density, contrast, _ = recipe.chromatin
    stain = density * np.clip(1 + contrast * grain, 0.2, 2.0)
    if contrast > 0.2:  # clumped chromatin condenses along the nuclear membrane
        stain *= 1 + 0.25 * (nucleus - _coverage(nucleus_sdf + 3.5, 1.5))
    if recipe.nucleus == "folded":  # the fold shows as a darker crease across the nucleus
        u, v = g.local(cell.cy, cell.cx, _any_angle(rng))
        crease = np.abs(v - rng.uniform(-0.25, 0.25) * cell.radius - 0.004 * rng.normal() * u * u)
        stain *= 1 + 0.35 * _coverage(crease - 1.5, 2.0)
    for _ in range(int(rng.integers(recipe.nucleoli[0], recipe.nucleoli[1] + 1))):
        spot = _pick(rng, nucleus_sdf < -0.25 * cell.radius, g)
        if spot is not None:
            r = rng.uniform(0.5, 0.9) * PX_PER_UM
            stain *= 1 - 0.45 * _coverage(g.dist(*spot) - r, 2.0)
    return stain


def _cytoplasm(
    rng: np.random.Generator,
    recipe: Recipe,
    g: _Grid,
    cell: _Cell,
    body: np.ndarray,
    nucleus_sdf: np.ndarray,
    nucleus: np.ndarray,
) -> np.ndarray:
    """Cytoplasm stain density: a little mottled, with a Golgi halo or vacuoles where the class has them."""
    cyto = body * np.clip(1 + 0.12 * _noise(rng, g.shape, 2.0), 0.5, 1.5)
    if recipe.halo:  # pale zone hugging the nucleus on the cell-centre side
        halo = _coverage(nucleus_sdf - 0.22 * cell.radius, 3.0) * (1 - nucleus)
        side = np.clip(2.5 * (1 - g.dist(cell.cy, cell.cx) / cell.radius), 0, 1)
        cyto *= 1 - 0.5 * halo * side
    for _ in range(int(rng.integers(recipe.vacuoles[0], recipe.vacuoles[1] + 1))):
        spot = _pick(rng, (nucleus_sdf > 4) & (body > 0.9), g)
        if spot is not None:
            r = rng.uniform(0.25, 0.7) * PX_PER_UM
            cyto *= 1 - 0.85 * _coverage(g.dist(*spot) - r, 1.0)
    return cyto


@cache
def _red_cell_sprites() -> tuple[tuple[float, np.ndarray], ...]:
    """(radius, stain density) of a fixed set of erythrocytes: ~7.5 µm discs with central pallor.
    Painted once and then placed, turned and flipped on every image: painting each red cell anew
    cost more than the white cell."""
    rng = np.random.default_rng(0xE7)
    sprites = []
    for _ in range(_RED_CELL_SPRITES):
        r = float(rng.normal(3.75, 0.3) * PX_PER_UM)
        half = int(r) + 4
        yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
        u, v = _Grid(yy, xx, (slice(None), slice(None))).local(0.0, 0.0, rng.uniform(0, math.pi))
        squash = math.sqrt(rng.uniform(1.0, 1.18))
        rho = np.hypot(u / squash, v * squash)
        pallor = rng.uniform(0.5, 0.8) * _coverage(rho - rng.uniform(0.3, 0.45) * r, 0.12 * r)
        rim = 0.12 * np.exp(-(((rho - 0.8 * r) / (0.12 * r)) ** 2))
        sprite = _coverage(rho - r, 1.2) * (1 - pallor + rim)
        sprite.setflags(write=False)
        sprites.append((r, sprite))
    return tuple(sprites)


def _paste(canvas: np.ndarray, sprite: np.ndarray, cy: float, cx: float) -> None:
    """Add `sprite` centred at (cy, cx), clipped at the canvas border."""
    y0, x0 = round(cy) - sprite.shape[0] // 2, round(cx) - sprite.shape[1] // 2
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + sprite.shape[0], canvas.shape[0]), min(x0 + sprite.shape[1], canvas.shape[1])
    if ys < ye and xs < xe:
        canvas[ys:ye, xs:xe] += sprite[ys - y0 : ye - y0, xs - x0 : xe - x0]


def _red_cells(rng: np.random.Generator, size: int, cell: _Cell) -> np.ndarray:
    """Stain density of the erythrocytes around the white cell, some overlapping or cut by the edge."""
    od = np.zeros((size, size), np.float32)
    sprites = _red_cell_sprites()
    placed: list[tuple[float, float, float]] = []
    target = int(rng.integers(5, 11))
    for _ in range(60):
        if len(placed) == target:
            break
        r, sprite = sprites[int(rng.integers(len(sprites)))]
        cy, cx = rng.uniform(-0.5 * r, size + 0.5 * r, 2)
        if math.hypot(cy - cell.cy, cx - cell.cx) < cell.radius + 0.55 * r:
            continue
        if any(math.hypot(cy - py, cx - px) < 1.55 * min(r, pr) for py, px, pr in placed):
            continue
        placed.append((cy, cx, r))
        turned = np.rot90(sprite, int(rng.integers(4)))
        _paste(od, turned[:, ::-1] if rng.random() < 0.5 else turned, cy, cx)
    return od


def _platelets(rng: np.random.Generator, size: int, cell: _Cell) -> np.ndarray:
    """Occasional platelets: small purple granular specks beside the cells."""
    od = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(0, 3))):
        cy, cx = rng.uniform(0, size, 2)
        if math.hypot(cy - cell.cy, cx - cell.cx) < cell.radius + 10:
            continue
        r = rng.uniform(0.8, 1.4) * PX_PER_UM
        g = _Grid.around(cy, cx, r + 4, size)
        speckle = 0.6 + 0.4 * rng.random(g.shape, dtype=np.float32)
        od[g.box] += _coverage(g.dist(cy, cx) - r, 1.5) * speckle
    return od


def render_cell(rng: np.random.Generator, cell_class: str, size: int = SIDE) -> np.ndarray:
    """Paint one stained field of `size` px with a `cell_class` leukocyte near its centre (RGB uint8)."""
    recipe = RECIPES[cell_class]
    radius = rng.uniform(*recipe.diameter_um) * PX_PER_UM / 2
    jitter = rng.normal(0, 0.035 * SIDE, 2)
    cell = _Cell(size / 2 + jitter[0], size / 2 + jitter[1], radius, _any_angle(rng))
    outline = _cell_outline(rng, recipe, radius)
    reach = 2.0 * radius if recipe.outline == "none" else float(outline.max())
    g = _Grid.around(cell.cy, cell.cx, reach + 8, size)
    body, cell_od = _leukocyte(rng, recipe, g, cell, outline)
    focus = rng.uniform(0.4, 1.1)  # blur where it matters; the red cells are painted soft already

    red = _red_cells(rng, size, cell) * np.float32(rng.uniform(0.85, 1.15))
    red[g.box] *= 1 - 0.9 * body  # the white cell lies on top
    od = _mix([(red, _RED_CELL_RGB), (_platelets(rng, size, cell), _PLATELET_RGB)])
    od[g.box] += ndimage.gaussian_filter(cell_od, (focus, focus, 0), truncate=3.0)
    return _stain_and_camera(rng, od)


def _stain_and_camera(rng: np.random.Generator, od: np.ndarray) -> np.ndarray:
    """Slide-to-slide stain variation, uneven light and sensor noise."""
    size = od.shape[0]
    mix = (np.diag(rng.uniform(0.85, 1.15, 3)) + rng.normal(0, 0.04, (3, 3))) * rng.uniform(0.88, 1.12)
    log_img = (od.reshape(-1, 3) @ (-mix).astype(np.float32)).reshape(size, size, 3)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    tilt = rng.normal(0, 0.015, 2).astype(np.float32)
    log_img += (tilt[0] * ramp[:, None] + tilt[1] * ramp[None, :])[..., None]  # uneven illumination
    log_img += np.log(_BACKGROUND_RGB * (1 + rng.normal(0, 0.015, 3)).astype(np.float32))
    img = np.exp(log_img, out=log_img)
    y, x = rng.integers(0, _BANK - size + 1, 2)
    img += _sensor_bank()[y : y + size, x : x + size] * np.float32(rng.uniform(1.0, 3.0))
    img += 0.5
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


@cache
def _sensor_bank() -> np.ndarray:
    """Fixed white noise (unit variance, 3 channels) that each image's sensor noise is cut from."""
    bank = np.random.default_rng(0x5E45).standard_normal((_BANK, _BANK, 3), dtype=np.float32)
    bank.setflags(write=False)
    return bank


# ----------------------------------------------------------------------------------------------
# Planting duplicates


@dataclass(frozen=True)
class _Plant:
    source: tuple[str, int]  # (class, index) of the image copied
    target: tuple[str, int]  # (class, index) whose drawn image the copy replaces
    kind: str
    method: str  # one of _EXACT_ENCODINGS or _NEAR_TRANSFORMS; cross-class copies are "copy"


def _plan_plants(per_class: int, seed: int) -> list[_Plant]:
    """Where duplicates go: each within-class pair in its own class, one cross-class copy."""
    rng = np.random.default_rng([seed, 0x5A4D])
    cross = _CONFUSABLE[int(rng.integers(len(_CONFUSABLE)))]
    if rng.random() < 0.5:
        cross = cross[::-1]
    eligible = [c for c in PAINTED_CLASSES if c not in cross and c != _RAREST_CLASS]
    methods = [("exact", m) for m in _EXACT_ENCODINGS] + [("near", m) for m in _NEAR_TRANSFORMS]
    classes = rng.choice(eligible, size=len(methods), replace=False)
    plants = []
    for cls, (kind, method) in zip(classes, methods):
        a, b = rng.choice(per_class, size=2, replace=False)
        plants.append(_Plant((str(cls), int(a)), (str(cls), int(b)), kind, method))
    a, b = rng.integers(per_class, size=2)
    plants.append(_Plant((cross[0], int(a)), (cross[1], int(b)), "exact", "copy"))
    return plants


def _near_copy(rng: np.random.Generator, canvas: np.ndarray, method: str) -> tuple[np.ndarray, str]:
    """The near-duplicate pixels of the image cut from `canvas`, and how they were made."""
    image = _centre(canvas)
    if method == "jpeg":
        q = int(rng.integers(70, 96))
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=q)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), f"jpeg q={q}"
    if method == "shift":
        dy, dx = rng.integers(10, 29, 2) * rng.choice([-1, 1], 2)
        window = canvas[_PAD + dy : _PAD + dy + SIDE, _PAD + dx : _PAD + dx + SIDE]
        return window, f"shift dy={dy} dx={dx}"
    if method == "relight":
        b, c = rng.uniform(0.04, 0.1, 2) * rng.choice([-1, 1], 2)
        mean = image.mean()
        out = (image.astype(np.float32) - mean) * (1 + c) + mean * (1 + b)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), f"relight brightness={b:+.0%} contrast={c:+.0%}"
    if method == "rescale":
        f = float(rng.uniform(0.03, 0.05) * rng.choice([-1, 1]) + 1)
        n = round(canvas.shape[0] * f)
        big = np.asarray(Image.fromarray(canvas).resize((n, n), Image.Resampling.BICUBIC))
        top = (n - SIDE) // 2
        return big[top : top + SIDE, top : top + SIDE], f"rescale x{f:.3f}"
    if method == "mirror":
        axis = int(rng.integers(2))
        return np.flip(image, axis=axis), "mirror " + ("vertical" if axis == 0 else "horizontal")
    k = int(rng.integers(1, 4))
    return np.rot90(image, k), f"rotate {90 * k}"


def _centre(canvas: np.ndarray) -> np.ndarray:
    off = (canvas.shape[0] - SIDE) // 2
    return canvas[off : off + SIDE, off : off + SIDE]


def _encode(rgb: np.ndarray, method: str = "copy") -> bytes:
    """File bytes: uncompressed TIFF like the scanner's, or the other lossless encodings planted."""
    buf = io.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(rgb))
    if method == "tiff_lzw":
        im.save(buf, format="TIFF", compression="tiff_lzw")
    elif method == "png_in_tif":
        im.save(buf, format="PNG")
    else:
        im.save(buf, format="TIFF")
    return buf.getvalue()


def iter_sample_files(per_class: int, seed: int) -> Iterator[tuple[str, bytes, PlantedPair | None]]:
    """Every file of a sample as (image id, bytes, the planted pair it completes or None), drawn
    one at a time so memory stays flat whatever `per_class` is."""
    plants = _plan_plants(per_class, seed)
    by_source = {p.source: p for p in plants}
    targets = {p.target for p in plants}
    for ci, cls in enumerate(PAINTED_CLASSES):
        for i in range(per_class):
            if (cls, i) in targets:  # written with its source
                continue
            rng = np.random.default_rng([seed, ci, i])
            plant = by_source.get((cls, i))
            needs_margin = plant is not None and plant.method in ("shift", "rescale")
            canvas = render_cell(rng, cls, SIDE + 2 * _PAD if needs_margin else SIDE)
            image = _centre(canvas)
            data = _encode(image)
            yield image_id(cls, i), data, None
            if plant is None:
                continue
            if plant.kind == "exact":
                copy, transform = (
                    (data if plant.method == "copy" else _encode(image, plant.method)),
                    plant.method,
                )
            else:
                near, transform = _near_copy(rng, canvas, plant.method)
                copy = _encode(near)
            b = image_id(*plant.target)
            yield b, copy, PlantedPair(image_id(cls, i), b, plant.kind, transform)


# ----------------------------------------------------------------------------------------------
# Writing


def draw_sample(
    output_dir: Path, per_class: int = 40, seed: int = 0, overwrite: bool = False
) -> SampleManifest:
    """Draw the synthetic MLL23 sample into `output_dir` (atomically) and return its manifest.

    Same (per_class, seed), same bytes (with the same Pillow, numpy and scipy); planted copies
    replace drawn images, so each of the 18 class folders holds exactly `per_class` TIFs. A folder
    that is not empty is replaced only with `overwrite`, and only when it holds a sample (its marker):
    hema replaces nothing it cannot tell is its own.
    """
    output_dir = Path(output_dir)
    if _non_empty(output_dir) and not overwrite:
        raise HemaError(f"{output_dir} is not empty; choose another folder or overwrite it")
    return _draw(output_dir, per_class, seed, replace=_own_sample)


def _own_sample(folder: Path) -> bool:
    try:
        return read_manifest(folder) is not None
    except HemaError:
        return False


def _draw(output_dir: Path, per_class: int, seed: int, replace: Callable[[Path], bool]) -> SampleManifest:
    """Draw into `output_dir`, which may be replaced when it is empty or `replace` says so."""
    if per_class < 2:
        raise HemaError(f"per-class must be at least 2 (duplicates are planted in pairs), got {per_class}")
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise HemaError(f"{output_dir} exists and is not a folder")

    def check() -> None:
        if _non_empty(output_dir) and not replace(output_dir):
            raise HemaError(f"{output_dir} is not empty and holds no sample drawn by hema ({MARKER}): "
                            "refusing to replace it; choose another folder")

    check()
    try:
        with atomic.scratch_dir(output_dir) as scratch:
            manifest = _write_sample(scratch / atomic.STAGING, per_class, seed)
            check()  # again: the folder may have been filled while we were drawing
            atomic.replace_dir(scratch, output_dir)
    except OSError as exc:
        raise HemaError(f"cannot write {output_dir}: {exc.strerror or exc}") from None
    return manifest


def _write_sample(folder: Path, per_class: int, seed: int) -> SampleManifest:
    """Write every file and the marker into the new folder `folder`."""
    folder.mkdir()
    for cls in PAINTED_CLASSES:
        (folder / cls).mkdir()
    planted = []
    for name, data, pair in iter_sample_files(per_class, seed):
        (folder / name).write_bytes(data)
        if pair is not None:
            planted.append(pair)
    manifest = SampleManifest(per_class=per_class, seed=seed, planted=tuple(planted), version=VERSION)
    (folder / MARKER).write_text(manifest.to_json() + "\n", encoding="utf-8")
    return manifest


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def default_sample_dir(per_class: int = 40, seed: int = 0) -> Path:
    """Cache folder of a drawn sample: $HEMA_CACHE (or ~/.cache/hema)/sample/v<version>-n<N>-s<seed>."""
    return cache_root() / "sample" / f"v{VERSION}-n{per_class}-s{seed}"


def ensure_sample(per_class: int = 40, seed: int = 0) -> Path:
    """The cached sample's folder, drawn on first use (the demo and notebooks start here)."""
    path = default_sample_dir(per_class, seed)
    if _is_current(path, per_class, seed):
        return path
    try:  # the cache folder is hema's own: a stale or broken one is replaced
        _draw(path, per_class, seed, replace=lambda _: True)
    except HemaError:
        if not _is_current(path, per_class, seed):  # not a concurrent drawer that won the race
            raise
    return path


def _is_current(path: Path, per_class: int, seed: int) -> bool:
    try:
        manifest = read_manifest(path)
    except HemaError:
        return False
    return manifest is not None and (manifest.version, manifest.per_class, manifest.seed) == (
        VERSION,
        per_class,
        seed,
    )
