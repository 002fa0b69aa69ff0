"""Smear fields: which crops share part of one field, and the field_groups they make.

A scanner exports one crop per detected cell, so two cells within ~25 um give two crops that overlap:
the same red cells, at the same scale and orientation, moved by the distance between the two cells.
They are not duplicates (each shows its own cell), but they come from one smear, one patient; MLL23
publishes no patient or slide ids, so this is the one slide-level signal the data carries. Splits are
made on field_groups: the connected components of duplicate pairs and shared-field pairs.

1. `Fingerprint.field` (hema.dedup, in the decode workers): a 16 x 16 band-passed grey view of the
   whole crop (cells of 4 thumbnail px; the band keeps red-cell outlines and drops lighting).
2. Candidates: when b is a moved by d, with |dy| and |dx| at most 9/16 of the side, one of a's four
   7 x 7 corner windows lies wholly inside b. Every 7 x 7 window of every image is looked up among
   all corner windows (an inverted file over k-means centroids, matrix products); a match proposes
   the pair and its shift, to a cell.
3. Confirmation, coarse to fine: the field views of a and b are correlated over their overlap (at
   least a quarter of the crop) within a cell of the proposed shift; pairs above COARSE_MIN are
   correlated again, on the band-passed 32 x 32 views, within a cell of the best shift. A pair shares
   a field when that correlates at SHARED_MIN or more, at a shift beyond the duplicates' range.

The thresholds come from the real Acevedo20 sample (docs/dedup.md; bench/dedup_bench.py --part fields).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import numpy as np

from hema.dedup import FIELD_GRID, THUMB, DupPair, Fingerprint, components, masked_ncc
from hema.vector_search import kmeans, nearest

WINDOW = 7  # side of a window of the field view; corner windows cover shifts up to (16 - 7) / 16
WINDOW_MIN = 0.8  # correlation of two windows that proposes a pair
PROPOSALS = 16  # per image: the best-matching other images proposed
PROBES = 2  # centroids each window is compared under
BEST_PER_WINDOW = 2  # corners kept per window and centroid
SEARCH_DIMS = 16  # principal components the centroids are found and probed in
VIEW = 32  # side of the confirmation view (the thumbnail pooled 2 x 2)
COARSE_MIN = 0.75  # overlap correlation of the field views at the proposed shift, to go on
COARSE_REFINE = 0  # cells searched around the proposed shift there
MIN_OVERLAP = 0.25  # share of the crop the two must overlap by
MIN_SHIFT = 0.1  # nearer than this (fraction of the side) is the duplicates' business (hema.dedup)
SHARED_MIN = 0.82  # overlap correlation of a confirmed shared field
CELL_CLEAR = 1.5  # the field score leaves out this many (RMS stain) radii around each centred cell
BEYOND_CELLS_MIN = 0.78  # and must correlate this well

_CORNERS = ((0, 0), (0, FIELD_GRID - WINDOW), (FIELD_GRID - WINDOW, 0), (FIELD_GRID - WINDOW,) * 2)


@dataclass(frozen=True)
class FieldPair:
    """Two crops of one smear field, by index (a < b)."""

    a: int
    b: int
    score: float  # correlation of the overlap
    shift: tuple[int, int]  # (dy, dx) in pixels of a: b's content lies there in a


@dataclass
class FieldResult:
    field_group: np.ndarray  # int64 per image, numbered by first member
    pairs: list[FieldPair]

    @property
    def group_sizes(self) -> np.ndarray:
        return np.bincount(self.field_group)[self.field_group]


def find_fields(prints: Sequence[Fingerprint], dup_pairs: Sequence[DupPair]) -> FieldResult:
    """Shared-field pairs among the images (duplicates of each other left out: those are
    dup_pairs already), and field groups of those and the duplicate pairs."""
    dup_group = components(len(prints), [(p.a, p.b) for p in dup_pairs])
    pairs = [p for p in (shared_field_pairs(prints) if len(prints) > 1 else [])
             if dup_group[p.a] != dup_group[p.b]]
    links = [(p.a, p.b) for p in dup_pairs] + [(p.a, p.b) for p in pairs]
    return FieldResult(field_group=components(len(prints), links), pairs=pairs)


def shared_field_pairs(prints: Sequence[Fingerprint]) -> list[FieldPair]:
    """Confirmed pairs of crops of one smear field (not near each other enough to be duplicates)."""
    coarse = np.stack([fp.field for fp in prints]).astype(np.float32)
    proposed, shift = _proposals(coarse)
    score, dy, dx, _ = _confirm(coarse, proposed, shift, COARSE_REFINE)  # cheap: 16 x 16
    go_on = score >= COARSE_MIN
    proposed, shift = proposed[go_on], np.stack([dy[go_on], dx[go_on]], axis=1)
    if len(proposed) == 0:
        return []
    involved, local = np.unique(proposed, return_inverse=True)  # the views of these images only
    thumbs = np.stack([prints[i].thumb for i in involved]).astype(np.float32)
    views = thumbs.reshape(len(thumbs), VIEW, -1, VIEW, thumbs.shape[-1] // VIEW).mean(axis=(2, 4))
    local = local.reshape(proposed.shape)
    score, dy, dx, _ = _confirm(views, local, shift * (VIEW // FIELD_GRID), VIEW // FIELD_GRID)
    cells = np.array([prints[i].cell for i in involved], dtype=np.float32) * (VIEW / THUMB)
    beyond = _beyond_cells_ncc(views[local[:, 0]], views[local[:, 1]], dy, dx, cells[local[:, 0]], cells[local[:, 1]])
    far = np.maximum(np.abs(dy), np.abs(dx)) >= MIN_SHIFT * VIEW
    keep = np.flatnonzero((score >= SHARED_MIN) & (beyond >= BEYOND_CELLS_MIN) & far)
    out = []
    for k in keep:
        a, b = proposed[k]
        fa = prints[a]
        px = (round(dy[k] * fa.height / VIEW), round(dx[k] * fa.width / VIEW))
        out.append(FieldPair(int(a), int(b), round(float(score[k]), 4), px))
    return out


def _windows(views: np.ndarray, offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """(n, len(offsets), WINDOW**2) unit-normalised, mean-free windows of the field views."""
    out = np.stack([views[:, y : y + WINDOW, x : x + WINDOW].reshape(len(views), -1) for y, x in offsets], 1)
    out -= out.mean(axis=2, keepdims=True)
    out /= np.maximum(np.linalg.norm(out, axis=2, keepdims=True), 1e-6)
    return out


def _proposals(views: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (a < b) and the shift (dy, dx), in field cells, that lays b on a."""
    n = len(views)
    corner = _windows(views, _CORNERS).reshape(n * len(_CORNERS), -1)
    corner_img = np.repeat(np.arange(n), len(_CORNERS))
    corner_pos = np.tile(np.array(_CORNERS), (n, 1))
    reach = FIELD_GRID - WINDOW
    offsets = [(y, x) for y in range(reach + 1) for x in range(reach + 1)]
    query_pos = np.array(offsets)
    rng = np.random.default_rng(0)  # centroids from a sample: the lists stay ~sqrt(n) long
    basis = _principal_axes(corner[rng.choice(len(corner), min(len(corner), 32768), replace=False)])
    centroids = kmeans(corner[rng.choice(len(corner), min(len(corner), 32768), replace=False)] @ basis,
                       max(1, int(np.sqrt(len(corner)))))
    home = nearest(corner @ basis, centroids, 1)[:, 0]
    by_home = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[by_home], np.arange(len(centroids) + 1))
    found_a, found_b, found_s = [], [], []
    for start in range(0, n, chunk):  # the windows of a chunk of images at a time
        imgs = np.arange(start, min(n, start + chunk))
        queries = _windows(views[imgs], offsets).reshape(len(imgs) * len(offsets), -1)
        probes = nearest(queries @ basis, centroids, min(PROBES, len(centroids))).ravel()
        q_of = np.repeat(np.arange(len(queries)), min(PROBES, len(centroids)))
        order = np.argsort(probes, kind="stable")
        q_bounds = np.searchsorted(probes[order], np.arange(len(centroids) + 1))
        match_q, match_m = [], []
        for c in range(len(centroids)):
            qs = q_of[order[q_bounds[c] : q_bounds[c + 1]]]
            ms = by_home[bounds[c] : bounds[c + 1]]
            if len(qs) == 0 or len(ms) == 0:
                continue
            sim = queries[qs] @ corner[ms].T
            for _ in range(min(BEST_PER_WINDOW, len(ms))):  # each window's best corners only: the
                top = sim.argmax(axis=1)  # match counts stay linear in n
                good = sim[np.arange(len(qs)), top] >= WINDOW_MIN
                match_q.append(qs[good])
                match_m.append(ms[top[good]])
                sim[np.arange(len(qs)), top] = -np.inf
        if not match_q:
            continue
        q, m = np.concatenate(match_q), np.concatenate(match_m)
        b, a = imgs[q // len(offsets)], corner_img[m]
        sim = np.einsum("ij,ij->i", queries[q], corner[m])
        # a's window at p shows what b shows at u: b's content lies at (p - u) in a
        shift = corner_pos[m] - query_pos[q % len(offsets)]
        keep = a != b
        a, b, sim, shift = _best_per_image(b[keep], a[keep], sim[keep], shift[keep])
        found_a.append(a), found_b.append(b), found_s.append(shift)
    if not found_a:
        return np.empty((0, 2), dtype=np.int64), np.empty((0, 2), dtype=np.int64)
    a, b, shift = np.concatenate(found_a), np.concatenate(found_b), np.concatenate(found_s)
    swap = a > b  # as (low, high), with the shift that lays high on low
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    shift = np.where(swap[:, None], -shift, shift)
    pairs, first = np.unique(pairs, axis=0, return_index=True)  # proposed from both sides: once
    return pairs, shift[first]


def _principal_axes(x: np.ndarray) -> np.ndarray:
    """The first SEARCH_DIMS principal axes of rows x: centroids are found and probed in them."""
    centred = x - x.mean(axis=0)
    _, axes = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues: the last are principal
    return np.ascontiguousarray(axes[:, ::-1][:, :SEARCH_DIMS], dtype=np.float32)


def _best_per_image(b, a, sim, shift):
    """The PROPOSALS best-matching distinct images a of each query image b (best match each)."""
    order = np.lexsort((-sim, a, b))
    b, a, sim, shift = b[order], a[order], sim[order], shift[order]
    first = np.ones(len(b), dtype=bool)
    first[1:] = (b[1:] != b[:-1]) | (a[1:] != a[:-1])
    b, a, sim, shift = b[first], a[first], sim[first], shift[first]
    order = np.lexsort((-sim, b))
    b, a, sim, shift = b[order], a[order], sim[order], shift[order]
    rank = np.arange(len(b)) - np.searchsorted(b, b)
    keep = rank < PROPOSALS
    return a[keep], b[keep], sim[keep], shift[keep]


def _confirm(views: np.ndarray, pairs: np.ndarray, shift: np.ndarray, refine: int, chunk: int = 2048):
    """Best overlap correlation of b laid on a within `refine` pixels of each proposed shift:
    (score, dy, dx, overlap share) per pair; overlaps under MIN_OVERLAP score -1."""
    n = views.shape[-1]
    steps = [(y, x) for y in range(-refine, refine + 1) for x in range(-refine, refine + 1)]
    out = np.full((len(pairs), 4), -1.0)
    for s in range(0, len(pairs), chunk):
        a, b = views[pairs[s : s + chunk, 0]], views[pairs[s : s + chunk, 1]]
        base = shift[s : s + chunk]
        best = np.full((len(a), 4), -1.0)
        for sy, sx in steps:
            dy, dx = base[:, 0] + sy, base[:, 1] + sx
            score, share = _overlap_ncc(a, b, dy, dx, n)
            score = np.where(share >= MIN_OVERLAP, score, -1.0)
            better = score > best[:, 0]
            best[better] = np.stack([score, dy, dx, share], axis=1)[better]
        out[s : s + chunk] = best
    return out[:, 0], out[:, 1].astype(np.int64), out[:, 2].astype(np.int64), out[:, 3]


def _overlap_ncc(a: np.ndarray, b: np.ndarray, dy: np.ndarray, dx: np.ndarray, n: int):
    """Correlation of a[y + dy, x + dx] with b[y, x] over their overlap, and its share of the crop."""
    yy = np.arange(n)
    ya = yy[None, :] + dy[:, None]  # a's row under each of b's rows
    xa = yy[None, :] + dx[:, None]
    ok_y, ok_x = (ya >= 0) & (ya < n), (xa >= 0) & (xa < n)
    mask = ok_y[:, :, None] & ok_x[:, None, :]
    rows = np.arange(len(a))[:, None, None]
    moved = a[rows, np.clip(ya, 0, n - 1)[:, :, None], np.clip(xa, 0, n - 1)[:, None, :]]
    w = mask.astype(np.float32)
    count = np.maximum(w.sum(axis=(1, 2)), 1.0)
    ma = (moved * w).sum(axis=(1, 2)) / count
    mb = (b * w).sum(axis=(1, 2)) / count
    da, db = (moved - ma[:, None, None]) * w, (b - mb[:, None, None]) * w
    den = np.sqrt((da * da).sum(axis=(1, 2)) * (db * db).sum(axis=(1, 2)))
    return (da * db).sum(axis=(1, 2)) / np.maximum(den, 1e-6), count / (n * n)


def _beyond_cells_ncc(a, b, dy, dx, cell_a, cell_b) -> np.ndarray:
    """The overlap's correlation away from both centred cells (CELL_CLEAR radii): the red cells
    around them. Two round cells laid on each other correlate well; two fields do only if shared."""
    n = a.shape[-1]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    ya, xa = yy[None] + dy[:, None, None], xx[None] + dx[:, None, None]  # b's pixel's place in a
    inside = (ya >= 0) & (ya < n) & (xa >= 0) & (xa < n)
    clear_b = np.hypot(yy[None] - cell_b[:, 0, None, None], xx[None] - cell_b[:, 1, None, None]) > (
        CELL_CLEAR * cell_b[:, 2, None, None])
    clear_a = np.hypot(ya - cell_a[:, 0, None, None], xa - cell_a[:, 1, None, None]) > (
        CELL_CLEAR * cell_a[:, 2, None, None])
    rows = np.arange(len(a))[:, None, None]
    moved = a[rows, np.clip(ya, 0, n - 1).astype(np.int64), np.clip(xa, 0, n - 1).astype(np.int64)]
    mask = inside & clear_a & clear_b
    return masked_ncc(moved, b, mask)
