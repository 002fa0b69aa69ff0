"""Benchmark hema.dedup.duplicates and hema.dedup.smear_fields: quality on real cells with planted cases, speed at MLL23's scale.

quality  ../shared/data/acevedo20_sample (3,006 real Acevedo20 JPEGs with the dataset's own duplicates
         and shared fields), in --layout acevedo20 (the sample's 360 px crops), mll23 (their centre
         288 x 288, as MLL23 would hold them) or both, plus planted cases: exact copies (lossless
         re-encoding), near copies (every kind of tests/dedup_cases, alone and in pairs), near copies
         of the images with the barest fields, and neighbour crops (two crops of one field ~45 %
         apart: not duplicates, but one field). The truth for the real images is the reviewed lists
         of tests/dedup_cases (REVIEWED_NEAR, REVIEWED_SHARED; each pair seen by eye), not what the
         detector finds. Prints the real duplicates found and any that contradict the review, pair
         recall for exact and near (per kind), pair precision, the distributions of the confirmation
         scores that chose the thresholds (all pairs and sparse fields: docs/dedup.md), and for shared
         fields: the reviewed and planted pairs that share a field_group, field-group pair precision,
         and the coarse scores of the proposals.
         Targets: exact recall 1.0, near recall >= 0.95, precision >= 0.99; shared-field recall >= 0.9.
scale    --images synthetic 288x288 cells (default 41,621, MLL23's size): each pastes the centre of one
         real image on the field of another (random rotation/mirror/shift), so hashes and embeddings
         are distributed like real cells and every centred cell recurs ~14 times on other fields (a
         harder case for the candidate search than real data); --planted of them are near copies of
         others. Fingerprints are computed in a pool of --workers processes (the build's decode
         workers); the timed parts are find_duplicates and find_fields (the whole duplicate stage),
         and find_duplicates' peak allocation is printed too. Target: the stage <= 60 s on 2 cores.

  python bench/dedup_bench.py                  # both parts
  python bench/dedup_bench.py --part quality   # ~1 min on 2 cores
  python bench/dedup_bench.py --part scale     # ~4 min: drawing + fingerprints ~2-3 min, stage ~30 s
  python bench/dedup_bench.py --part scale --images 5000 --planted 100
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import tracemalloc
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hema.base.imaging import decode_rgb  # noqa: E402
from hema.dedup import duplicates as dedup  # noqa: E402
from hema.dedup import signatures  # noqa: E402
from hema.dedup import smear_fields as fields  # noqa: E402
from hema.dedup.components import components  # noqa: E402
from tests.dedup_cases import (  # noqa: E402
    NEAR_KINDS, REVIEWED_NEAR, REVIEWED_SHARED, near_copy, neighbour_crops, reencode_png,
)

SAMPLE = REPO.parent / "shared" / "data" / "acevedo20_sample"
SIDE = 288


def load_sample(layout: str = "acevedo20") -> tuple[list[str], list[str], list[np.ndarray]]:
    """The sample as Acevedo20 holds it (360 x 363 JPEGs), or as MLL23 would (the centre 288 x 288)."""
    files = sorted(p for p in SAMPLE.glob("*/*") if p.is_file())
    names = [f"{p.parent.name}/{p.name}" for p in files]
    images = [decode_rgb(p.read_bytes()).rgb for p in files]
    if layout == "mll23":
        images = [_centre_cut(rgb, SIDE) for rgb in images]
    return names, [p.parent.name for p in files], images


def _centre_cut(rgb: np.ndarray, side: int) -> np.ndarray:
    top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
    return np.ascontiguousarray(rgb[top : top + side, left : left + side])


def _reviewed_origin(names: list[str], prints: signatures.SignatureTable) -> np.ndarray:
    """Truth for the real images: groups of identical pixels and of the reviewed near pairs."""
    index = {name: i for i, name in enumerate(names)}
    pairs = [dedup.DupPair(index[a], index[b], "near", 1.0) for a, b in REVIEWED_NEAR]
    by_sha: dict[str, int] = {}
    for i, fp in enumerate(prints):
        first = by_sha.setdefault(fp.pixel_sha256, i)
        if first != i:
            pairs.append(dedup.DupPair(first, i, "exact", 1.0))
    return dedup.group_pairs(len(names), pairs).dup_group


def quality(per_kind: int, seed: int, layout: str) -> None:
    if not SAMPLE.is_dir():
        print(f"quality: skipped, {SAMPLE} is absent (needs ../shared next to the repository)")
        return
    names, labels, images = load_sample(layout)
    t0 = time.perf_counter()
    prints = signatures.signature_batch(images)
    per_image_ms = (time.perf_counter() - t0) / len(images) * 1000
    classes = sorted(set(labels))
    real = dedup.find_duplicates(prints, [classes.index(x) for x in labels])
    side = "x".join(map(str, images[0].shape[:2]))
    print(f"real sample, {layout} layout: {len(images)} images, fingerprint {per_image_ms:.2f} ms/image "
          f"({side})")
    for p in real.pairs:
        cross = " CROSS-LABEL" if labels[p.a] != labels[p.b] else ""
        print(f"  {p.kind:5s} {names[p.a]:32s} {names[p.b]:32s} score {p.score:.4f} "
              f"shift {p.shift} {p.transform}{cross}")
    kinds = Counter(p.kind for p in real.pairs)
    print(f"  real pairs: {kinds['exact']} exact, {kinds['near']} near, "
          f"{sum(labels[p.a] != labels[p.b] for p in real.pairs)} across labels; "
          f"{int(real.label_conflict.sum())} images in conflicting groups")

    truth = _reviewed_origin(names, prints)
    sizes = np.bincount(truth)[truth]
    wrong_real = [p for p in real.pairs if truth[p.a] != truth[p.b]]
    missed_real = int((sizes > 1).sum() - (real.group_sizes[sizes > 1] > 1).sum())
    print(f"  against the reviewed pairs: {len(wrong_real)} wrong real pairs, {missed_real} real "
          "duplicate images missed")
    for p in wrong_real:
        print(f"    wrong: {names[p.a]} ~ {names[p.b]}")
    singles = np.flatnonzero((real.group_sizes == 1) & (sizes == 1))

    # Plant copies of sources that are not in a real group; every planted image knows its source.
    rng = np.random.default_rng(seed)
    cases = [("exact", ("png",))] * per_kind + [("near", k) for k in NEAR_KINDS for _ in range(per_kind)]
    sources = rng.choice(singles, len(cases) + per_kind, replace=False)
    origin = list(truth)  # truth: images of one origin are duplicates
    kind_of: list[str] = ["real"] * len(images)
    planted = []
    for (kind, steps), src in zip(cases, sources):
        copy = reencode_png(images[src], rng) if kind == "exact" else near_copy(images[src], steps, rng)
        planted.append(copy)
        origin.append(origin[src])
        kind_of.append(kind if kind == "exact" else "+".join(steps))
    # and near copies of the images with the barest fields, where the surround has least to say
    texture = np.array([_surround_texture(fp) for fp in prints[: len(images)]])
    bare = [i for i in singles[np.argsort(texture[singles], kind="stable")] if i not in set(sources)]
    for k, src in enumerate(bare[: 2 * per_kind]):
        steps = NEAR_KINDS[k % len(NEAR_KINDS)]
        planted.append(near_copy(images[src], steps, rng))
        origin.append(origin[src])
        kind_of.append("bare field, any kind")
    for src in sources[len(cases):]:  # neighbour crops: each its own origin
        for crop in neighbour_crops(images[src]):
            planted.append(crop)
            origin.append(len(origin) + 10**6)
            kind_of.append("neighbour")
    prints = signatures.SignatureTable.concat([prints, signatures.signature_batch(planted)])

    t0 = time.perf_counter()
    found = dedup.find_duplicates(prints)
    print(f"\nplanted: {len(prints) - len(images)} images added; find_duplicates on {len(prints)} "
          f"took {time.perf_counter() - t0:.1f} s")
    origin_arr, group = np.asarray(origin), found.dup_group
    hits: dict[str, list[bool]] = {}
    for i in range(len(images), len(prints)):
        if kind_of[i] in ("neighbour",):
            continue
        src = np.flatnonzero(origin_arr[: len(images)] == origin_arr[i])
        hits.setdefault(kind_of[i], []).extend(group[src] == group[i])
    exact = hits.pop("exact")
    near = [h for v in hits.values() for h in v]
    print(f"  exact pair recall {np.mean(exact):.4f} ({sum(exact)}/{len(exact)})")
    print(f"  near pair recall  {np.mean(near):.4f} ({sum(near)}/{len(near)})")
    for kind, v in hits.items():
        print(f"    {kind:28s} {np.mean(v):.3f}")
    _pair_precision("pair precision   ", group, origin_arr, lambda i: f"{i} ({kind_of[i]})")
    neighbours = [i for i, k in enumerate(kind_of) if k == "neighbour"]
    merged = sum(group[i] == group[j] for i, j in zip(neighbours[::2], neighbours[1::2]))
    print(f"  neighbour crops merged: {merged}/{len(neighbours) // 2}")
    _score_distributions(prints, origin_arr)
    _shared_fields(prints, found, origin_arr, list(zip(neighbours[::2], neighbours[1::2])), names)


def _shared_fields(prints, found: dedup.DedupResult, origin: np.ndarray, neighbours, names: list[str]) -> None:
    """Field groups against the truth: one field per origin, per planted neighbour pair, per reviewed
    shared-field pair of the sample; and the confirmation scores that chose SHARED_MIN."""
    t0 = time.perf_counter()
    result = fields.find_fields(prints, [(p.a, p.b) for p in found.pairs])
    took = time.perf_counter() - t0
    index = {name: i for i, name in enumerate(names)}
    reviewed = [(index[a], index[b]) for a, b in REVIEWED_SHARED]
    first = {}
    links = [(first.setdefault(o, i), i) for i, o in enumerate(origin)] + list(neighbours) + reviewed
    truth = components(len(prints), links)
    group = result.field_group
    print(f"\nshared fields: find_fields took {took:.1f} s; {len(result.pairs)} shared-field pairs")
    for title, pairs in (("reviewed real pairs", reviewed), ("planted neighbour crops", neighbours)):
        hit = [group[a] == group[b] for a, b in pairs]
        print(f"  {title} sharing a field_group: {sum(hit)}/{len(hit)}")
        for (a, b), h in zip(pairs, hit):
            if not h and a < len(names) and b < len(names):
                print(f"    missed: {names[a]} ~ {names[b]}")
    _pair_precision("field-group pair precision", group, truth, lambda i: names[i] if i < len(names) else str(i))
    dup = found.dup_group
    inside = all(len(set(group[dup == g])) == 1 for g in np.unique(dup))
    print(f"  every duplicate group inside one field group: {inside}")
    coarse = prints.field.astype(np.float32)
    proposed, shift = fields._proposals(coarse)
    score = fields.confirm(coarse, proposed, shift, fields.COARSE_REFINE)[0]
    same = truth[proposed[:, 0]] == truth[proposed[:, 1]]
    print(f"  proposals: {len(proposed)} pairs ({int(same.sum())} of one field); coarse score of one field "
          f"min {_percentiles(score[same], [0])}, others p99/p99.9/max {_percentiles(score[~same], [99, 99.9, 100])}")


def _pair_precision(title: str, group: np.ndarray, truth: np.ndarray, describe) -> None:
    """Share of the pairs within predicted groups that one truth group holds; the others, described."""
    predicted = [(i, j) for g in _groups(group) for i, j in combinations(g, 2)]
    right = sum(truth[i] == truth[j] for i, j in predicted)
    print(f"  {title} {right / max(len(predicted), 1):.4f} ({right}/{len(predicted)})")
    for i, j in predicted:
        if truth[i] != truth[j]:
            print(f"    wrong: {describe(i)} ~ {describe(j)}")


def _groups(group: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(group, kind="stable")
    cuts = np.flatnonzero(np.diff(group[order])) + 1
    return [g for g in np.split(order, cuts) if len(g) > 1]


def _score_distributions(prints: signatures.SignatureTable, origin: np.ndarray) -> None:
    """Confirmation scores of screened candidates, duplicates vs not: what chose the thresholds."""
    cand, margin, orient = dedup.near_candidates(prints)
    same = origin[cand[:, 0]] == origin[cand[:, 1]]
    print(f"\ncandidates: {len(cand)} pairs, {int((margin >= 0).sum())} pass the screen "
          f"(duplicates among candidates: {int(same.sum())}, of which screened out "
          f"{int((same & (margin < 0)).sum())})")
    keep = margin >= 0
    scores = dedup.registration_scores(prints, cand[keep], orient[keep])
    pos = same[keep]
    texture = np.array([_surround_texture(fp) for fp in prints])
    sparse = texture[cand[keep]].min(axis=1) < SPARSE_TEXTURE
    for title, rows in (("all screened pairs", np.ones(len(pos), bool)),
                        (f"sparse fields (surround texture < {SPARSE_TEXTURE})", sparse)):
        print(f"  {title}: {int((rows & pos).sum())} duplicates, {int((rows & ~pos).sum())} others")
        for col, name in enumerate(("whole", "centre", "surround")):
            dup = _percentiles(scores[rows & pos, col], [0, 1, 5, 50])
            other = _percentiles(scores[rows & ~pos, col], [50, 99, 99.9, 100])
            print(f"    {name:8s} duplicates min/p1/p5/p50 {dup}   others p50/p99/p99.9/max {other}")


SPARSE_TEXTURE = 0.2  # mean square band-pass (standardised) beyond the cell: a nearly bare field


def _surround_texture(fp: signatures.ImageSignature) -> float:
    """How much smear field an image shows beyond its cell (where dedup's surround score looks)."""
    cy, cx, radius = fp.cell
    yy, xx = np.mgrid[0 : signatures.THUMB, 0 : signatures.THUMB]
    beyond = (yy - cy) ** 2 + (xx - cx) ** 2 > dedup.surround_reach(radius) ** 2
    return float(((fp.thumb[beyond] / signatures.QUANT) ** 2).mean()) if beyond.any() else 0.0


def _percentiles(values: np.ndarray, q: list[float]) -> np.ndarray | str:
    return np.percentile(values, q).round(3) if len(values) else "-"


def _synthetic_prints(tasks: list[tuple[int, int, tuple[str, ...]]]) -> signatures.SignatureTable:
    """Fingerprints of a batch of synthetic images, as a decode worker takes them: per (index, seed,
    kinds), image `index`, or a near copy of it when `kinds` is not empty."""
    images = []
    for index, seed, kinds in tasks:
        rgb = _synthetic(index, seed)
        images.append(near_copy(rgb, kinds, np.random.default_rng([seed, index, 1])) if kinds else rgb)
    return signatures.signature_batch(images)


def _synthetic(index: int, seed: int) -> np.ndarray:
    """One synthetic 288x288 cell: the centre of one real image on the field of another."""
    rng = np.random.default_rng([seed, index])
    cell, field = (_POOL[k] for k in rng.choice(len(_POOL), 2, replace=False))
    field = np.rot90(field, int(rng.integers(4)))[:, :: rng.choice([-1, 1])]
    top, left = rng.integers(0, np.array(field.shape[:2]) - SIDE + 1)
    out = field[top : top + SIDE, left : left + SIDE].astype(np.float32)
    cell = np.rot90(cell, int(rng.integers(4)))
    ch, cw = cell.shape[0] // 2, cell.shape[1] // 2
    yy, xx = np.mgrid[-SIDE // 2 : SIDE // 2, -SIDE // 2 : SIDE // 2]
    alpha = np.clip((0.3 * SIDE - np.hypot(yy, xx)) / 8, 0, 1)[..., None]
    centre = cell[ch - SIDE // 2 : ch + SIDE // 2, cw - SIDE // 2 : cw + SIDE // 2].astype(np.float32)
    return (alpha * centre + (1 - alpha) * out).round().astype(np.uint8)


_POOL: list[np.ndarray] = []


def _init_pool(images: list[np.ndarray]) -> None:
    _POOL[:] = images


def scale(n_images: int, n_planted: int, workers: int, seed: int) -> None:
    if SAMPLE.is_dir():
        pool_images = load_sample()[2]
    else:
        print(f"scale: {SAMPLE} is absent: random-noise fields instead of real cells (timing only; "
              "the recall printed below means nothing)")
        rng = np.random.default_rng(seed)
        pool_images = [(rng.random((360, 360, 3)) * 255).astype(np.uint8) for _ in range(64)]
    _init_pool(pool_images)
    probes = [_synthetic(i, seed + 1) for i in range(200)]
    t0 = time.perf_counter()
    signatures.signature_batch(probes)
    fp_ms = (time.perf_counter() - t0) / len(probes) * 1000
    n_base = n_images - n_planted  # the last n_planted images are near copies of the first ones
    tasks = [(i, seed, ()) for i in range(n_base)]
    tasks += [(i, seed, NEAR_KINDS[i % len(NEAR_KINDS)]) for i in range(n_planted)]
    t0 = time.perf_counter()
    batches = [tasks[s : s + signatures.BATCH] for s in range(0, len(tasks), signatures.BATCH)]
    with multiprocessing.get_context("fork").Pool(workers, _init_pool, (pool_images,)) as pool:
        prints = signatures.SignatureTable.concat(pool.map(_synthetic_prints, batches, chunksize=8))
    fp_s = time.perf_counter() - t0
    del pool_images, probes
    _POOL.clear()
    t0 = time.perf_counter()
    result = dedup.find_duplicates(prints)
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shared = fields.find_fields(prints, [(p.a, p.b) for p in result.pairs])
    fields_s = time.perf_counter() - t0
    tracemalloc.start()  # a second, traced run: what find_duplicates allocates at its peak
    dedup.find_duplicates(prints)
    added = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    size = prints[0].nbytes
    print(f"scale: {n_images} synthetic {SIDE}x{SIDE} images")
    print(f"  fingerprint: {fp_ms:.2f} ms/image on one core; {size / 1024:.1f} KB of arrays each "
          f"({size * n_images / 2**20:.0f} MB in all); generate+fingerprint with {workers} workers "
          f"{fp_s:.1f} s")
    print(f"  find_duplicates (candidates + confirmation): {search_s:.1f} s")
    print(f"  find_fields (shared-field pairs + field groups): {fields_s:.1f} s, {len(shared.pairs)} pairs; "
          f"the whole duplicate stage {search_s + fields_s:.1f} s (target < 60 s)")
    print(f"  memory: find_duplicates allocates {added:.0f} MB at its peak, beyond the fingerprints")
    group = result.dup_group
    found = np.mean([group[i] == group[n_base + i] for i in range(n_planted)])
    planted = {(i, n_base + i) for i in range(n_planted)}
    others = [p for p in result.pairs if (p.a, p.b) not in planted]
    print(f"  planted near copies found: {found:.3f} of {n_planted}; other pairs: {len(others)}")
    for p in others[:5]:  # the generator can paste one cell on one field twice: look at them
        print(f"    {p.a} ~ {p.b}: score {p.score:.3f} shift {p.shift} {p.transform}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("quality", "scale", "both"), default="both")
    parser.add_argument("--per-kind", type=int, default=20, help="planted copies per duplicate kind")
    parser.add_argument("--images", type=int, default=41_621, help="images in the scale part")
    parser.add_argument("--planted", type=int, default=340, help="near copies among the scale part's images")
    parser.add_argument("--workers", type=int, default=2, help="fingerprint processes in the scale part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=("acevedo20", "mll23", "both"), default="both",
                        help="quality part: the sample's own 360 px crops, MLL23's 288 px centre, or both")
    args = parser.parse_args()
    if args.part in ("quality", "both"):
        for layout in ("acevedo20", "mll23") if args.layout == "both" else (args.layout,):
            quality(args.per_kind, args.seed, layout)
    if args.part in ("scale", "both"):
        scale(args.images, args.planted, args.workers, args.seed)


if __name__ == "__main__":
    main()
