"""Duplicate detection: which images show the same cell, grouped into dup_groups.

Exact duplicates share their decoded pixels (`pixel_sha256`). Near duplicates are the same cell exported
again: re-encoded, shifted by up to ~10 % of the side, re-lit, rescaled, mirrored or rotated by a
multiple of 90°. A 64-bit phash cannot tell those from look-alike cells (distinct cells come within 6
bits, shifted copies sit at 10-12), nor can the centred cell (distinct lymphocytes correlate up to
0.977 once registered). What identifies one exported cell is its smear field: the red cells around it.

1. Signatures (hema.dedup.signatures, in the decode workers, ~6.6 KB each): a 64 x 64 band-passed grey
   thumbnail of the whole crop; the stained cell's centre and radius; 16 x 16 screening views (the
   ring around the cell at the cell's own scale, and the whole crop); two 128-number embeddings (whole
   crop, cell-centred) invariant to the 8 rotations/mirrors.
2. Candidates: nearest neighbours in both embeddings (inverted file over k-means cells, matrix
   products, no Python loop over pairs), screened by the best-of-8-orientations view correlation.
3. Registration, coarse to fine: b is turned to a's orientation, scaled about the centre (a grid up to
   1.1 either way and the cell-size ratio) and translated (FFT cross-correlation, sub-pixel peak,
   +-15 % of the side). A pair is a near duplicate when the band-passed correlation is high over the
   WHOLE overlap, around a's CENTRED CELL (a neighbour cropped from the same field fails here) and over
   the SURROUND beyond the cell and its band-pass halo (two look-alike cells on bare or similar
   background fail here).

Every threshold below was chosen from the distributions measured on the 3,006 real Acevedo20 images
with planted copies of every kind and the hardest look-alike candidates (docs/dedup.md has the numbers;
`python bench/dedup_bench.py --part quality` reproduces them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from hema.dedup.components import components
from hema.dedup.correlation import masked_ncc
from hema.dedup.signatures import BAND, DIHEDRAL_NAMES, THUMB, SignatureTable, dihedral, pool2
from hema.base.forked import fork_map
from hema.dedup.vector_search import InvertedFile, half_sq_dist, principal_axes

MAX_SHIFT = 0.15  # registration searches translations up to this fraction of the side
SCALE_STEP = 1.05  # scale hypotheses: SCALE_STEP**-2 .. SCALE_STEP**2, and the cell-size ratio
MAX_SCALE = 1.15  # crop-and-rescale copies change the content scale by at most this factor

# Candidate search and confirmation thresholds (measured, see docs/dedup.md).
NEIGHBOURS_CELL = 16  # neighbours per image in the centred-cell embedding
NEIGHBOURS_WHOLE = 4  # neighbours per image in the whole-crop embedding
SEARCH_DIMS = 24  # principal components of each embedding used for the neighbour search
SEARCH_PROBES = 16  # lists whose images each image is compared with
LIST_LENGTH = 128  # images per list of the inverted file, at any n
SEARCH_CELLS = 4  # coarse cells of the inverted file whose lists a probe ranks
SCREEN_CELL_MIN = 0.78  # screening (16 x 16 views): best-orientation correlation of the ring around
SCREEN_WHOLE_MIN = 0.70  # the cell, or of the whole crop, that a candidate needs to be registered
WHOLE_MIN = 0.85  # registered band-passed correlation of the whole crop
CENTRE_MIN = 0.92  # the same around each crop's centre (its centred cell)
SURROUND_MIN = 0.75  # the same beyond the cell: the smear field around it
CENTRE_HALF = 0.2  # the centred-cell window: an image centre +- this fraction of the side
SURROUND_FROM = 2.0  # the surround starts this many (RMS stain) radii from a's cell centre,
SURROUND_HALO = 2.5  # and beyond the cell's band-pass halo: its radius plus this many BAND[1] sigmas
SURROUND_MIN_REACH = 0.15  # and at least this fraction of the side


@dataclass(frozen=True)
class DupPair:
    """A confirmed duplicate pair, by row of the signature table (a < b)."""

    a: int
    b: int
    kind: str  # "exact" or "near"
    score: float  # similarity in [0, 1]; 1.0 for identical pixels
    shift: tuple[int, int] = (0, 0)  # (dy, dx) in pixels of a that registers b onto a
    transform: str = "identity"  # how b was turned (np.rot90, then left-right) and scaled onto a,
    # e.g. "rot90+mirror x1.05"


@dataclass
class DedupResult:
    dup_group: np.ndarray  # int64 group id per image, numbered by first member
    dup_kind: list[str]  # per image: "unique", "exact" or "near"
    pairs: list[DupPair]
    label_conflict: np.ndarray | None = None  # per image: its group holds more than one label

    @property
    def group_sizes(self) -> np.ndarray:
        return np.bincount(self.dup_group)[self.dup_group]


def find_duplicates(
    sigs: SignatureTable, labels: Sequence[int] | None = None, num_proc: int | None = None
) -> DedupResult:
    """Exact and near-duplicate groups of the images signed (labels only mark conflicts).

    Registration of the candidate pairs, the costly part, runs in `num_proc` processes (all cores by
    default).
    """
    by_sha: dict[bytes, list[int]] = defaultdict(list)
    for i, sha in enumerate(sigs.pixel_sha256.tolist()):
        by_sha[sha].append(i)
    pairs = [DupPair(m[0], j, "exact", 1.0) for m in by_sha.values() for j in m[1:]]
    distinct = np.array([m[0] for m in by_sha.values()], dtype=np.int64)  # ascending: first of each
    if len(distinct) > 1:
        pairs += _near_pairs(sigs, distinct, num_proc)
    return group_pairs(len(sigs), pairs, labels)


def _near_pairs(sigs: SignatureTable, rows: np.ndarray, num_proc: int | None) -> list[DupPair]:
    """Confirmed near-duplicate pairs among the table's `rows` (images with distinct pixels)."""
    cand, margin, orient = near_candidates(sigs, rows, num_proc)
    keep = margin >= 0
    cand, orient = cand[keep], orient[keep]
    scores = registration_scores(sigs, cand, orient, num_proc)
    out = []
    for (a, b), g, (whole, centre, surround, scale, dy, dx) in zip(cand, orient, scores):
        if whole >= WHOLE_MIN and centre >= CENTRE_MIN and surround >= SURROUND_MIN:
            height, width = sigs.size[a].tolist()
            name = DIHEDRAL_NAMES[g] + ("" if abs(scale - 1) < 0.005 else f" x{scale:.2f}")
            shift = (round(dy * height / THUMB), round(dx * width / THUMB))
            out.append(DupPair(int(a), int(b), "near", round(float(whole), 4), shift, name))
    return out


def near_candidates(
    sigs: SignatureTable, rows: np.ndarray | None = None, num_proc: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (i < j, rows of the table) among `rows` (ascending; all by default) from both
    embeddings, their screening margin and best orientation. The two neighbour searches, and the
    screening in chunks, run in `num_proc` forked processes."""
    rows = np.arange(len(sigs)) if rows is None else rows
    searches = [(_principal(sigs.embed_cell[rows]), NEIGHBOURS_CELL),
                (_principal(sigs.embed_whole[rows]), NEIGHBOURS_WHOLE)]
    cand = np.unique(np.concatenate(fork_map(_neighbour_search, searches, range(len(searches)), num_proc)), axis=0)
    views = (_flat_views(sigs.screen_cell[rows]), _flat_views(sigs.screen_whole[rows]))
    screened = fork_map(_screen, views, [cand[s : s + _SCREEN_CHUNK] for s in range(0, len(cand), _SCREEN_CHUNK)],
                        num_proc)
    margin, orient = (np.concatenate(x) for x in zip(*screened)) if screened else (np.empty(0, np.float32),) * 2
    return rows[cand].reshape(-1, 2), margin, orient.astype(np.int64)


def _principal(embed: np.ndarray) -> np.ndarray:
    """The embedding's first SEARCH_DIMS principal components: a cheaper all-pairs product."""
    centred = embed - embed.mean(axis=0)
    return np.ascontiguousarray(centred @ principal_axes(embed, SEARCH_DIMS), dtype=np.float32)


_REGISTRATION_CHUNK = 256  # pairs a task registers: its arrays stay in a core's cache


def registration_scores(
    sigs: SignatureTable, cand: np.ndarray, orient: np.ndarray, num_proc: int | None = None
) -> np.ndarray:
    """Per candidate pair: (whole, centre, surround, scale, dy, dx) of b registered onto a."""
    chunks = [(cand[s : s + _REGISTRATION_CHUNK], orient[s : s + _REGISTRATION_CHUNK])
              for s in range(0, len(cand), _REGISTRATION_CHUNK)]
    scores = fork_map(_register_chunk, sigs, chunks, num_proc)  # a chunk gathers its own thumbnails: no copy of all
    return np.concatenate(scores) if scores else np.empty((0, 6), dtype=np.float64)


def _neighbour_search(searches: list[tuple[np.ndarray, int]], which: int) -> np.ndarray:
    return _neighbour_pairs(*searches[which])


def _neighbour_pairs(embed: np.ndarray, k: int) -> np.ndarray:
    """(i, j) pairs, i < j, where j is among the k nearest of i (Euclidean), found with an inverted
    file: each image is compared only with those filed under its SEARCH_PROBES nearest lists of about
    LIST_LENGTH images (exact when that is all of them)."""
    n = len(embed)
    k = min(k, n - 1)
    index = InvertedFile.build(embed, LIST_LENGTH, SEARCH_CELLS)
    probes = index.probe(embed, SEARCH_PROBES)
    found = np.full((n, probes.shape[1], k), -1, dtype=np.int64)  # per query and probed list: its k nearest
    dist = np.full(found.shape, np.inf, dtype=np.float32)
    for queries, rank, rows in index.probed_lists(probes):
        members = index.order[rows]  # ascending
        d = half_sq_dist(embed[queries], embed[members])
        at = np.minimum(np.searchsorted(members, queries), len(members) - 1)
        itself = members[at] == queries  # a query filed here is one of the members: not its own neighbour
        d[np.flatnonzero(itself), at[itself]] = np.inf
        take = min(k, len(members))
        best = np.argpartition(d, take - 1, axis=1)[:, :take]
        found[queries, rank, :take] = members[best]
        dist[queries, rank, :take] = np.take_along_axis(d, best, axis=1)
    found, dist = found.reshape(n, -1), dist.reshape(n, -1)
    best = np.argpartition(dist, k - 1, axis=1)[:, :k]  # the k nearest over all its lists
    q, m = np.repeat(np.arange(n), k), found[np.arange(n)[:, None], best].ravel()
    keep = np.isfinite(dist[np.arange(n)[:, None], best].ravel())
    return np.stack([np.minimum(q[keep], m[keep]), np.maximum(q[keep], m[keep])], axis=1)


_SCREEN_CHUNK = 4096  # candidate pairs a screening task takes
# where each of the 8 rotations/mirrors of a flattened 16 x 16 view takes its pixels from
_TURNS = np.stack([turned.ravel() for turned in dihedral(np.arange(16 * 16).reshape(16, 16))])


def _flat_views(views: np.ndarray) -> np.ndarray:
    return views.astype(np.float32).reshape(len(views), -1)


def _screen(views: tuple[np.ndarray, np.ndarray], cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Screening margin and orientation of candidate pairs: the best-of-8-orientations correlation
    of the cell patches' ring (the cell itself excluded: distinct cells look alike) or of the whole
    crops, above its threshold. `views` are both kinds of (flattened) view of every image, each
    unit-normalised, as they stay under rotation and mirroring."""
    a, b = cand[:, 0], cand[:, 1]
    best = None
    for view, floor in zip(views, (SCREEN_CELL_MIN, SCREEN_WHOLE_MIN)):
        va, vb = view[a], view[b]
        corr = np.stack([np.einsum("pk,pk->p", va, np.take(vb, turn, axis=1)) for turn in _TURNS]) - floor
        best = corr if best is None else np.maximum(best, corr)
    return best.max(axis=0), best.argmax(axis=0)


def _register_chunk(sigs: SignatureTable, pairs: tuple[np.ndarray, np.ndarray]):
    """Coarse to fine: every scale hypothesis is registered at half resolution, the best one again at
    full resolution, where the three scores are taken. `pairs` are a chunk of candidates and their
    orientations."""
    cand, orient = pairs
    a_img = sigs.thumb[cand[:, 0]].astype(np.float32)
    b_img = sigs.thumb[cand[:, 1]].astype(np.float32)
    for g in range(1, 8):  # turn b into a's orientation
        sel = orient == g
        if sel.any():
            b_img[sel] = dihedral(b_img[sel])[g]
    cell_a = sigs.cell[cand[:, 0]].astype(np.float32)
    cell_b = sigs.cell[cand[:, 1]].astype(np.float32)
    # scale hypotheses: a fixed grid (1 for resized whole images, up to 1.1 either way for crops of a
    # field) and the cell-size ratio, which lands between grid steps
    ratio = np.clip(cell_a[:, 2] / cell_b[:, 2], 1 / MAX_SCALE, MAX_SCALE)
    a_half, b_half = pool2(a_img), pool2(b_img)
    a_spectrum = _spectrum(a_half)
    best_whole, best_scale = np.full(len(cand), -np.inf), np.ones(len(cand))
    for scale in [np.full(len(cand), SCALE_STEP**k) for k in range(-2, 3)] + [ratio]:
        dy, dx = _fft_shift(a_spectrum, b_half, scale)
        warped, valid = _warp(b_half, scale, dy, dx)
        whole = masked_ncc(a_half, warped, valid)
        better = whole > best_whole
        best_whole[better], best_scale[better] = whole[better], scale[better]
    dy, dx = _fft_shift(_spectrum(a_img), b_img, best_scale)
    whole, centre, surround = _registered_scores(a_img, b_img, best_scale, dy, dx, cell_a)
    return np.stack([whole, centre, surround, best_scale, dy, dx], axis=1)


def _spectrum(img: np.ndarray) -> np.ndarray:
    size = _fft_size(img.shape[-1])
    return scipy.fft.rfft2(img - img.mean(axis=(1, 2), keepdims=True), s=(size, size))


def _reach(n: int) -> int:
    return int(np.ceil(MAX_SHIFT * n))


def _fft_size(n: int) -> int:
    return scipy.fft.next_fast_len(n + _reach(n) + 2, real=True)  # no wrap-around within reach


def _resample_matrix(scale: np.ndarray, shift: np.ndarray, n: int) -> np.ndarray:
    """(P, n, n) linear-interpolation matrices: out = M @ x scales by `scale` about the centre, then
    moves the content by `shift` pixels; rows that fall outside the input are zero."""
    c = (n - 1) / 2
    src = (np.arange(n)[None, :] - c - shift[:, None]) / scale[:, None] + c  # (P, n)
    lo = np.floor(src)
    frac = (src - lo).astype(np.float32)
    m = np.zeros((len(scale), n, n), dtype=np.float32)
    p, i = np.meshgrid(np.arange(len(scale)), np.arange(n), indexing="ij")
    for idx, w in ((lo, 1 - frac), (lo + 1, frac)):
        ok = (idx >= 0) & (idx <= n - 1)
        m[p[ok], i[ok], idx[ok].astype(np.int64)] = w[ok]
    return m


def _warp(img: np.ndarray, scale: np.ndarray, dy: np.ndarray, dx: np.ndarray):
    """img (P, n, n) scaled about the centre and shifted; returns the image and its validity mask."""
    n = img.shape[-1]
    return _resample(img, _resample_matrix(scale, dy, n), _resample_matrix(scale, dx, n))


def _resample(img: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """img (P, n, n) through row and column interpolation matrices; and where all of a pixel's
    weight fell inside the image."""
    valid = (rows.sum(axis=2)[:, :, None] > 0.999) & (cols.sum(axis=2)[:, None, :] > 0.999)
    return rows @ img @ cols.transpose(0, 2, 1), valid


def _fft_shift(a_spectrum: np.ndarray, b_img: np.ndarray, scale: np.ndarray):
    """Sub-pixel translation (dy, dx) within +-MAX_SHIFT that best lays scaled b onto a."""
    n = b_img.shape[-1]
    size, reach = _fft_size(n), _reach(n)
    about_centre = _resample_matrix(scale, np.zeros(len(scale)), n)  # the same for rows and columns
    b_scaled, valid = _resample(b_img, about_centre, about_centre)
    b_mean = (b_scaled * valid).sum(axis=(1, 2), keepdims=True) / np.maximum(
        valid.sum(axis=(1, 2), keepdims=True, dtype=np.float32), 1
    )  # float32 throughout: single-precision FFTs are 3-5x faster, and the peak moves < 1e-5 px
    b_spectrum = scipy.fft.rfft2(np.where(valid, b_scaled - b_mean, 0), s=(size, size))
    # xcorr[d] = sum_y a[y + d] b[y]: b's content moved by d lands on a
    xcorr = scipy.fft.irfft2(a_spectrum * np.conj(b_spectrum), s=(size, size))
    offsets = np.r_[size - reach : size, 0 : reach + 1]  # shifts -reach..reach in order
    window = xcorr[:, offsets][:, :, offsets]
    iy, ix = np.unravel_index(window.reshape(len(window), -1).argmax(axis=1), window.shape[1:])
    rows, last = np.arange(len(window)), len(offsets) - 1
    up, down = np.maximum(iy - 1, 0), np.minimum(iy + 1, last)
    left, right = np.maximum(ix - 1, 0), np.minimum(ix + 1, last)
    peak = window[rows, iy, ix]
    sub_y = _parabola(window[rows, up, ix], peak, window[rows, down, ix])
    sub_x = _parabola(window[rows, iy, left], peak, window[rows, iy, right])
    shifts = np.arange(-reach, reach + 1)  # the shift each position of `offsets` stands for
    return shifts[iy] + sub_y, shifts[ix] + sub_x


def _parabola(left: np.ndarray, mid: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Sub-sample offset of a peak from its two neighbours (0 where the fit is degenerate)."""
    den = left - 2 * mid + right
    return np.where(den < 0, np.clip(0.5 * (left - right) / np.where(den < 0, den, -1), -0.5, 0.5), 0.0)


def _registered_scores(a_img, b_img, scale, dy, dx, cell_a):
    """Masked correlations of a and registered b: the whole overlap; the centred cell, as the worse of
    the squares +-CENTRE_HALF around a's image centre and around b's (where it lands on a): each crop
    is centred on its cell, so a crop of the same field centred on another cell fails one of them; and
    the surround, the overlap beyond a's stained cell."""
    warped, valid = _warp(b_img, scale, dy, dx)
    yy, xx = np.mgrid[0:THUMB, 0:THUMB].astype(np.float32)
    centre, half = (THUMB - 1) / 2, CENTRE_HALF * THUMB
    around_a = (np.abs(yy - centre) <= half) & (np.abs(xx - centre) <= half)
    around_b = (np.abs(yy[None] - centre - dy[:, None, None]) <= half) & (
        np.abs(xx[None] - centre - dx[:, None, None]) <= half
    )
    off_y = yy[None] - cell_a[:, 0, None, None]
    off_x = xx[None] - cell_a[:, 1, None, None]
    beyond = off_y**2 + off_x**2 > surround_reach(cell_a[:, 2])[:, None, None] ** 2
    centred = np.minimum(
        masked_ncc(a_img, warped, valid & around_a), masked_ncc(a_img, warped, valid & around_b)
    )
    return masked_ncc(a_img, warped, valid), centred, masked_ncc(a_img, warped, valid & beyond)


def surround_reach(radius: np.ndarray | float) -> np.ndarray | float:
    """Where the surround starts, in thumbnail px from the cell centre: past the cell and its band-pass
    halo (on a bare field the halo is all a lone cell shows, and two platelets matched there)."""
    return np.maximum(np.maximum(SURROUND_FROM * radius, radius + SURROUND_HALO * BAND[1]), SURROUND_MIN_REACH * THUMB)


def group_pairs(n: int, pairs: Sequence[DupPair], labels: Sequence[int] | None = None) -> DedupResult:
    """Connected components of the pair graph; ids numbered in order of each group's first image."""
    dup_group = components(n, [(p.a, p.b) for p in pairs])
    near_groups = {dup_group[p.a] for p in pairs if p.kind == "near"}
    sizes = np.bincount(dup_group, minlength=1)
    kinds = [
        "unique" if sizes[g] == 1 else ("near" if g in near_groups else "exact") for g in dup_group
    ]
    conflict = None
    if labels is not None:
        label_arr = np.asarray(labels, dtype=np.int64)
        first = np.full(len(sizes), -1, dtype=np.int64)
        first[dup_group[::-1]] = label_arr[::-1]  # some label of each group
        mixed = np.zeros(len(sizes), dtype=bool)
        np.logical_or.at(mixed, dup_group, label_arr != first[dup_group])
        conflict = mixed[dup_group]
    return DedupResult(
        dup_group=dup_group.astype(np.int64), dup_kind=kinds, pairs=list(pairs), label_conflict=conflict
    )
