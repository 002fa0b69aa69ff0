"""Smear fields: which crops share part of one field, and the field_groups they make.

A scanner exports one crop per detected cell, so two cells within ~25 um give two crops that overlap:
the same red cells, at the same scale and orientation, moved by the distance between the two cells.
They are not duplicates (each shows its own cell), but they come from one smear, one patient; MLL23
publishes no patient or slide ids, so this is the one slide-level signal the data carries. Splits are
made on field_groups: the connected components of duplicate pairs and shared-field pairs.

1. `SignatureTable.field` (hema.dedup.signatures, in the decode workers): a 16 x 16 band-passed grey view
   of the whole crop (cells of 4 thumbnail px; the band keeps red-cell outlines and drops lighting).
2. Candidates: when b is a moved by d, with |dy| and |dx| at most 9/16 of the side, one of a's four
   7 x 7 corner windows lies wholly inside b. Every 7 x 7 window of every image is looked up among
   all corner windows (an inverted file over k-means centroids, matrix products); each image proposes
   the images most of its windows matched (one shared field matches at many offsets, a look-alike
   window at one), with the shift of the best match, to a cell.
3. Confirmation, coarse to fine: the field views of a and b are correlated over their overlap (at
   least a quarter of the crop) at the proposed shift; pairs above COARSE_MIN are correlated again,
   on the band-passed 32 x 32 views, within a cell of it. A pair shares a field when the overlap
   correlates at SHARED_MIN or more, and at BEYOND_CELLS_MIN or more away from both centred cells
   (two round cells laid on each other correlate well over a small overlap; two fields do only if
   they are one), at a shift beyond the duplicates' range.

The thresholds come from the real Acevedo20 sample (docs/dedup.md; bench/dedup_bench.py --part quality).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hema.base.forked import fork_map
from hema.dedup.components import components
from hema.dedup.correlation import masked_ncc
from hema.dedup.signatures import FIELD_GRID, THUMB, SignatureTable
from hema.dedup.vector_search import InvertedFile, principal_axes

WINDOW = 7  # side of a window of the field view; corner windows cover shifts up to (16 - 7) / 16
WINDOW_MIN = 0.75  # correlation of two windows that proposes a pair
PROPOSALS = 48  # per image: the best-matching other images proposed
PROBES = 8  # lists of corner windows each window is compared with
LIST_LENGTH = 256  # corner windows per list of the inverted file, at any n
PROBE_CELLS = 3  # coarse cells of the inverted file whose lists a probe ranks
SEARCH_DIMS = 16  # principal components the lists are found and probed in
VIEW = 32  # side of the confirmation view (the thumbnail pooled 2 x 2)
COARSE_MIN = 0.75  # overlap correlation of the field views at the proposed shift, to go on
COARSE_REFINE = 0  # cells searched around the proposed shift there
MIN_OVERLAP = 0.25  # share of the crop the two must overlap by
MIN_SHIFT = 0.1  # nearer than this (fraction of the side) is the duplicates' business (hema.dedup.duplicates)
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


def find_fields(
    sigs: SignatureTable, duplicates: Sequence[tuple[int, int]], num_proc: int | None = None
) -> FieldResult:
    """Shared-field pairs among the images (duplicates of each other left out: `duplicates`, the
    (a, b) of the duplicate pairs, link them already), and field groups of those links and the
    shared-field pairs. The search and the confirmation run in `num_proc` forked processes (all
    cores by default)."""
    dup_group = components(len(sigs), duplicates)
    pairs = [p for p in (shared_field_pairs(sigs, num_proc) if len(sigs) > 1 else [])
             if dup_group[p.a] != dup_group[p.b]]
    links = [*duplicates, *((p.a, p.b) for p in pairs)]
    return FieldResult(field_group=components(len(sigs), links), pairs=pairs)


def shared_field_pairs(sigs: SignatureTable, num_proc: int | None = None) -> list[FieldPair]:
    """Confirmed pairs of crops of one smear field (not near each other enough to be duplicates)."""
    coarse = sigs.field  # float16: each search converts what it reads
    proposed, shift = _proposals(coarse, num_proc)
    score, dy, dx, _ = confirm(coarse, proposed, shift, COARSE_REFINE, num_proc)  # cheap: 16 x 16
    go_on = score >= COARSE_MIN
    proposed, shift = proposed[go_on], np.stack([dy[go_on], dx[go_on]], axis=1)
    if len(proposed) == 0:
        return []
    involved, local = np.unique(proposed, return_inverse=True)  # the views of these images only
    views = _confirmation_views(sigs.thumb, involved)
    sigs.release_pages()  # the thumbnails read: needed no more
    local = local.reshape(proposed.shape)
    score, dy, dx, _ = confirm(views, local, shift * (VIEW // FIELD_GRID), VIEW // FIELD_GRID, num_proc)
    far = np.maximum(np.abs(dy), np.abs(dx)) >= MIN_SHIFT * VIEW
    keep = np.flatnonzero((score >= SHARED_MIN) & far)
    cells = sigs.cell[involved].astype(np.float32) * (VIEW / THUMB)
    beyond = np.full(len(keep), -1.0)
    for s in range(0, len(keep), _CHUNK):  # the rest of the pairs only, a chunk at a time
        k = keep[s : s + _CHUNK]
        a, b = local[k, 0], local[k, 1]
        beyond[s : s + _CHUNK] = _beyond_cells_ncc(views[a].astype(np.float32), views[b].astype(np.float32),
                                                   dy[k], dx[k], cells[a], cells[b])
    keep = keep[beyond >= BEYOND_CELLS_MIN]
    out = []
    for k in keep:
        a, b = proposed[k]
        height, width = sigs.size[a].tolist()
        px = (round(dy[k] * height / VIEW), round(dx[k] * width / VIEW))
        out.append(FieldPair(int(a), int(b), round(float(score[k]), 4), px))
    return out


def _confirmation_views(thumbs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The VIEW x VIEW views of the thumbnails' `rows`: each int8 thumbnail pooled by sums (exact in
    int16; the correlations do not see the scale), a quarter of float32 means' bytes."""
    views = np.empty((len(rows), VIEW, VIEW), dtype=np.int16)
    for s in range(0, len(rows), _CHUNK):
        chunk = thumbs[rows[s : s + _CHUNK]]
        block = chunk.shape[-1] // VIEW
        views[s : s + len(chunk)] = chunk.reshape(len(chunk), VIEW, block, VIEW, block).sum(axis=(2, 4), dtype=np.int16)
    return views


def _windows(views: np.ndarray, offsets: Sequence[tuple[int, int]] | np.ndarray) -> np.ndarray:
    """(n, len(offsets), WINDOW**2) unit-normalised, mean-free windows of the field views."""
    out = np.stack([views[:, y : y + WINDOW, x : x + WINDOW].reshape(len(views), -1) for y, x in offsets], 1)
    out = out.astype(np.float32, copy=False)
    out -= out.mean(axis=2, keepdims=True)
    out /= np.maximum(np.linalg.norm(out, axis=2, keepdims=True), 1e-6)
    return out


@dataclass(frozen=True)
class _CornerIndex:
    """Every image's corner windows, filed in an inverted file (in principal components) and stored
    in its list order, so each list's corners are one slice."""

    views: np.ndarray  # the field views of all images
    corner: np.ndarray  # (4n, WINDOW**2) corner windows, in list order
    corner_img: np.ndarray  # the image of each
    corner_pos: np.ndarray  # its offset in the view
    basis: np.ndarray  # principal axes the lists are found and probed in
    lists: InvertedFile

    @classmethod
    def build(cls, views: np.ndarray) -> _CornerIndex:
        n = len(views)
        corner = _windows(views, _CORNERS).reshape(n * len(_CORNERS), -1)
        rng = np.random.default_rng(0)  # the principal axes of a sample
        basis = principal_axes(corner[rng.choice(len(corner), min(len(corner), 32768), replace=False)], SEARCH_DIMS)
        lists = InvertedFile.build(corner @ basis, LIST_LENGTH, PROBE_CELLS)
        order = lists.order
        return cls(views, corner[order], np.repeat(np.arange(n), len(_CORNERS))[order],
                   np.tile(np.array(_CORNERS), (n, 1))[order], basis, lists)


_CHUNK = 1024  # images whose windows are looked up together, at least
QUERIES_PER_LIST = 1024  # and as many more as give each list about this many windows to rank
_OFFSETS = np.array([(y, x) for y in range(FIELD_GRID - WINDOW + 1) for x in range(FIELD_GRID - WINDOW + 1)])


def _proposals(views: np.ndarray, num_proc: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (a < b) and the shift (dy, dx), in field cells, that lays b on a."""
    found = _window_matches(views, num_proc)
    if not found:
        return np.empty((0, 2), dtype=np.int64), np.empty((0, 2), dtype=np.int64)
    a, b, shift = (np.concatenate(x) for x in zip(*found))
    swap = a > b  # as (low, high), with the shift that lays high on low
    low, high = np.minimum(a, b), np.maximum(a, b)
    shift = np.where(swap[:, None], -shift, shift)
    _, first = np.unique(low.astype(np.int64) * len(views) + high, return_index=True)  # proposed from both sides: once
    return np.stack([low[first], high[first]], axis=1).astype(np.int64), shift[first].astype(np.int64)


def _window_matches(views: np.ndarray, num_proc: int | None) -> list[tuple]:
    """(a, b, shift) proposed by every image's windows, in forked tasks; the index lives only here, so
    its memory is free before the matches are joined."""
    index = _CornerIndex.build(views)
    step = max(_CHUNK, -(-QUERIES_PER_LIST * index.lists.lists // (len(_OFFSETS) * PROBES)))
    tasks = [range(s, min(len(views), s + step)) for s in range(0, len(views), step)]
    return [f for f in fork_map(_chunk_proposals, index, tasks, num_proc) if f]


def _chunk_proposals(index: _CornerIndex, images: range) -> tuple | None:
    """(a, b, shift) proposed by the windows of the images (None when nothing). A task takes more
    images as the index holds more lists, so that each list's product stays large: the (task, list)
    loops grow as n, not n**2."""
    n = len(index.views)
    imgs = np.arange(images.start, images.stop)
    queries = _windows(index.views[imgs], _OFFSETS).reshape(len(imgs) * len(_OFFSETS), -1)
    q, m, sim = best_corners(index, queries)
    b, a = imgs[q // len(_OFFSETS)], index.corner_img[m]
    other = a != b  # an image's corner windows find themselves: dropped here, cheaper than masking
    q, m, b, a, sim = q[other], m[other], b[other], a[other], sim[other]
    if len(q) == 0:
        return None
    # a's window at p shows what b shows at u: b's content lies at (p - u) in a
    shift = index.corner_pos[m] - _OFFSETS[q % len(_OFFSETS)]
    return _best_per_image(b, a, sim, shift, n)


def best_corners(index: _CornerIndex, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each query window and each of its PROBES nearest lists, the list's best-correlated corner
    window where it correlates at WINDOW_MIN or more: (query, corner, correlation)."""
    match_q, match_m, match_sim = [], [], []
    for qs, _, rows in index.lists.probed_lists(index.lists.probe(queries @ index.basis, PROBES)):
        sim = queries[qs] @ index.corner[rows].T
        top = sim.argmax(axis=1)  # a window's best corner per list only: the match counts stay linear in n
        best = sim[np.arange(len(qs)), top]
        good = best >= WINDOW_MIN
        match_q.append(qs[good])
        match_m.append(rows.start + top[good])
        match_sim.append(best[good])
    q, m = np.concatenate(match_q or [[]]).astype(np.int64), np.concatenate(match_m or [[]]).astype(np.int64)
    return q, m, np.concatenate(match_sim or [[]])


_SPAN = 2 * (FIELD_GRID - WINDOW) + 1  # shifts per axis a match can propose
_SIM_BITS = 23  # a float32 correlation in [WINDOW_MIN, 1.5) is its bit pattern less WINDOW_MIN's: exact, in order
_SIM_FLOOR = int(np.float32(WINDOW_MIN).view(np.uint32))


def _best_per_image(b, a, sim, shift, n: int):
    """The PROPOSALS best-matching distinct images a of each query image b (of n), ranked by how many
    of b's windows matched a corner of a at one shift (one shared field matches at many offsets, and
    they agree on the shift; a look-alike window matches at one), then by the best such match.

    Each match is one uint64, (b, a, shift) above the correlation's bits, so one value sort (several
    times faster than an argsort and its gathers) groups the matches of each (b, a, shift) with their
    best last. The query images b are taken as many at a time as that key has bits for."""
    group_bits = (n - 1).bit_length() + (_SPAN**2 - 1).bit_length() + _SIM_BITS
    width = 1 << max(0, 63 - group_bits)  # query images one key can tell apart
    lo, hi = int(b.min()), int(b.max()) + 1
    if hi - lo <= width:
        return _ranked_proposals(b - lo, a, sim, shift, n, lo)
    parts = [_ranked_proposals(b[s] - start, a[s], sim[s], shift[s], n, start)
             for start in range(lo, hi, width) for s in [(b >= start) & (b < start + width)] if s.any()]
    return tuple(np.concatenate(x) for x in zip(*parts))


def _ranked_proposals(b, a, sim, shift, n: int, first: int):
    """_best_per_image of matches whose query images are `first` + b."""
    code = (shift + FIELD_GRID - WINDOW).astype(np.uint64) @ np.array([_SPAN, 1], np.uint64)
    key = ((b.astype(np.uint64) * n + a.astype(np.uint64)) * _SPAN**2 + code) << _SIM_BITS
    key |= sim.astype(np.float32).view(np.uint32) - np.uint32(_SIM_FLOOR)
    key.sort()
    group = key >> _SIM_BITS  # (b, a, shift), its best match last
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], len(key)]
    # votes (at most 4: one per corner of a), then the best match, as one integer in their order
    score = ((ends - starts).astype(np.uint64) << _SIM_BITS) | (key[ends - 1] & np.uint64((1 << _SIM_BITS) - 1))
    pair, code = np.divmod(group[starts], _SPAN**2)  # groups are in pair order
    firsts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    top = np.repeat(np.maximum.reduceat(score, firsts), np.diff(np.r_[firsts, len(pair)]))
    winners = np.flatnonzero(score == top)  # each (b, a) at its most-voted shift (the first of ties)
    winners = winners[np.r_[True, pair[winners[1:]] != pair[winners[:-1]]]]
    b, a = np.divmod(pair[winners], n)
    by_score = (b << 32) | (np.uint64(2**32 - 1) - score[winners])  # per b, the best first; ties in a's order
    order = np.argsort(by_score, kind="stable")
    b, a, code = b[order], a[order], code[winners][order]
    keep = np.arange(len(b)) - np.searchsorted(b, b) < PROPOSALS
    shift = np.stack(np.divmod(code[keep].astype(np.int64), _SPAN), axis=1) - (FIELD_GRID - WINDOW)
    # kept as int32 and int8 (shifts are within +-FIELD_GRID): a quarter of int64s
    return a[keep].astype(np.int32), (first + b[keep].astype(np.int64)).astype(np.int32), shift.astype(np.int8)


_CONFIRM_CHUNK = 16384  # pairs a forked confirmation task takes


def confirm(views: np.ndarray, pairs: np.ndarray, shift: np.ndarray, refine: int, num_proc: int | None = None):
    """`_confirm` of the pairs in chunks, in `num_proc` forked processes (each pair's result is its own)."""
    tasks = [(pairs[s : s + _CONFIRM_CHUNK], shift[s : s + _CONFIRM_CHUNK], refine)
             for s in range(0, len(pairs), _CONFIRM_CHUNK)]
    if not tasks:
        return _confirm(views, (pairs, shift, refine))
    return tuple(np.concatenate(x) for x in zip(*fork_map(_confirm, views, tasks, num_proc)))


def _confirm(views: np.ndarray, task: tuple[np.ndarray, np.ndarray, int]):
    """Best overlap correlation of b laid on a within `refine` pixels of each proposed shift:
    (score, dy, dx, overlap share) per pair; overlaps under MIN_OVERLAP score -1.

    Pairs are taken in groups that share a proposed shift: at each shift a group's overlaps are the
    same slices of a and b, so no pixel is gathered pair by pair. `task` is (pairs, shift, refine)."""
    pairs, shift, refine = task
    n = views.shape[-1]
    steps = [(y, x) for y in range(-refine, refine + 1) for x in range(-refine, refine + 1)]
    out = np.full((len(pairs), 4), -1.0)
    key = (shift[:, 0] + n) * (3 * n) + shift[:, 1] + n  # shifts lie within +-n
    order = np.argsort(key, kind="stable")
    for group in np.split(order, np.flatnonzero(np.diff(key[order])) + 1):
        if len(group) == 0:
            continue
        a, b = views[pairs[group, 0]].astype(np.float32), views[pairs[group, 1]].astype(np.float32)
        best = out[group]
        for sy, sx in steps:  # in order, the first best kept
            dy, dx = int(shift[group[0], 0]) + sy, int(shift[group[0], 1]) + sx
            y0, y1, x0, x1 = max(0, dy), min(n, n + dy), max(0, dx), min(n, n + dx)
            share = max(y1 - y0, 0) * max(x1 - x0, 0) / n**2
            if share < MIN_OVERLAP:
                continue
            score = _ncc(a[:, y0:y1, x0:x1], b[:, y0 - dy : y1 - dy, x0 - dx : x1 - dx])
            better = score > best[:, 0]
            best[better, 0] = score[better]
            best[better, 1:] = dy, dx, share
        out[group] = best
    return out[:, 0], out[:, 1].astype(np.int64), out[:, 2].astype(np.int64), out[:, 3]


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correlation of each a with its b (P, h, w; slices of larger views), from its five sums, each
    one pass over the slices in place: no centred copies."""
    count = a.shape[1] * a.shape[2]
    sum_a, sum_b = np.einsum("pij->p", a), np.einsum("pij->p", b)
    covariance = np.einsum("pij,pij->p", a, b) - sum_a * sum_b / count
    spread_a = np.einsum("pij,pij->p", a, a) - sum_a * sum_a / count
    spread_b = np.einsum("pij,pij->p", b, b) - sum_b * sum_b / count
    return covariance / np.maximum(np.sqrt(np.maximum(spread_a, 0) * np.maximum(spread_b, 0)), 1e-6)


def _laid_on(a: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a[y + dy, x + dx] on b's grid (P, n, n), and where that falls inside a."""
    n = a.shape[-1]
    ya = np.arange(n)[None, :] + dy[:, None]  # a's row under each of b's rows
    xa = np.arange(n)[None, :] + dx[:, None]
    inside = ((ya >= 0) & (ya < n))[:, :, None] & ((xa >= 0) & (xa < n))[:, None, :]
    rows = np.arange(len(a))[:, None, None]
    return a[rows, np.clip(ya, 0, n - 1)[:, :, None], np.clip(xa, 0, n - 1)[:, None, :]], inside


def _beyond_cells_ncc(a, b, dy, dx, cell_a, cell_b) -> np.ndarray:
    """The overlap's correlation away from both centred cells (CELL_CLEAR radii each): the red cells
    around them. Two round cells laid on each other correlate well; two fields do only if shared."""
    moved, inside = _laid_on(a, dy, dx)
    yy, xx = np.mgrid[0 : a.shape[-1], 0 : a.shape[-1]].astype(np.float32)

    def clear(cell: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.hypot(y - cell[:, 0, None, None], x - cell[:, 1, None, None]) > CELL_CLEAR * cell[:, 2, None, None]

    in_a = yy[None] + dy[:, None, None], xx[None] + dx[:, None, None]  # b's pixels' places in a
    return masked_ncc(moved, b, inside & clear(cell_b, yy[None], xx[None]) & clear(cell_a, *in_a))
