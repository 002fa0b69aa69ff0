"""The duplicate and shared-field candidate searches against faiss-cpu, on the same fingerprints, at equal recall.

The build's two searches (hema.dedup) are nearest-neighbour lookups done with numpy matrix products
over an inverted file (hema.dedup.vector_search). This bench signs a folder once (the build's decode
and signature pass; the arrays are cached under --root), then times each search and its recall
against the exact answer (faiss.IndexFlat, brute force), beside faiss's IVF and HNSW indexes tuned to
the same recall:

  duplicates  the 16 nearest of every image in the 24 principal components of the centred-cell
              embedding (hema.dedup.duplicates: NEIGHBOURS_CELL, SEARCH_DIMS); recall: the share of
              the exact 16-nearest pairs found
  fields      the best-correlated corner window (of all images' 4) of every 7 x 7 window of the
              sampled images' field views (hema.dedup.smear_fields.best_corners); recall: the share
              of windows whose exact best corner of another image, at WINDOW_MIN or more, is found

faiss is not a dependency of hema: `pip install faiss-cpu` to run this bench.

  python bench/search_bench.py --source bmc-replica --images 171375   # the replica of bench/bmc_replica.py
  python bench/search_bench.py --source real                          # the real Acevedo20 cells of ../shared
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from hema.dataset.catalog import decode_entries  # noqa: E402
from hema.dataset.scan import scan_class_folders  # noqa: E402
from hema.dedup import duplicates, smear_fields  # noqa: E402

ACEVEDO = REPO.parent / "shared" / "data" / "acevedo20_sample"


def fingerprints(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The searches' inputs of every image of the folder, signed once and cached."""
    cache = args.root / f"fingerprints-{args.source}-{args.images}.npz"
    if cache.is_file():
        with np.load(cache) as stored:
            return dict(stored)
    if args.source == "real":
        folder = ACEVEDO
    else:
        import bmc_replica

        folder = bmc_replica.ensure(args.root, args.images) / bmc_replica.FOLDER
    scan = scan_class_folders(folder, None)
    started = time.perf_counter()
    sigs = decode_entries(scan.entries, num_proc=args.num_proc).sigs
    print(f"signed {len(sigs):,} images in {time.perf_counter() - started:.0f} s", flush=True)
    arrays = {"embed_cell": sigs.embed_cell, "field": sigs.field}
    np.savez(cache, **arrays)
    return arrays


def timed(func, *args):
    started = time.perf_counter()
    out = func(*args)
    return out, time.perf_counter() - started


def pair_set(pairs: np.ndarray, n: int) -> np.ndarray:
    return np.unique(np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1]))


def knn_pairs(index, x: np.ndarray, k: int) -> np.ndarray:
    """(i, j) for j among the k nearest of i (itself left out), from a faiss index holding x."""
    _, found = index.search(x, k + 1)
    rows = np.repeat(np.arange(len(x)), k + 1)
    pairs = np.stack([rows, found.ravel()], axis=1)
    return pairs[(pairs[:, 1] >= 0) & (pairs[:, 0] != pairs[:, 1])]


def duplicates_search(embed_cell: np.ndarray, faiss) -> dict:
    embed = duplicates._principal(embed_cell)
    n, k = len(embed), duplicates.NEIGHBOURS_CELL
    exact_index = faiss.IndexFlatL2(embed.shape[1])
    exact_index.add(embed)
    exact, exact_s = timed(knn_pairs, exact_index, embed, k)
    truth = pair_set(exact, n)
    ours, ours_s = timed(duplicates._neighbour_pairs, embed, k)
    report = {"images": n, "exact_s": exact_s,
              "ours": {"seconds": ours_s, "recall": float(np.isin(truth, pair_set(ours, n)).mean())}}
    dims = embed.shape[1]
    faiss_indexes = (
        ("faiss_hnsw", faiss.IndexHNSWFlat(dims, 32), "efSearch", (16, 24, 32, 48, 64, 96, 128, 256)),
        ("faiss_ivf", faiss.IndexIVFFlat(faiss.IndexFlatL2(dims), dims, 4 * int(np.sqrt(n))), "nprobe",
         (1, 2, 4, 6, 8, 12, 16, 32, 64)),
    )
    for name, index, knob, values in faiss_indexes:
        report[name] = tuned(index, embed, knob, values, lambda index: knn_pairs(index, embed, k),
                             lambda found: float(np.isin(truth, pair_set(found, n)).mean()), report["ours"]["recall"])
    return report


def tuned(index, x: np.ndarray, knob: str, values, search, recall, target: float) -> dict:
    """Fill a faiss index with x, then time `search` with `knob` at each value, cheapest first, until
    recall(what it found) reaches `target` (ours): that setting's time and recall."""
    built_s = timed(_fill, index, x)[1]
    for value in values:
        setattr(index if knob == "nprobe" else index.hnsw, knob, value)
        found, search_s = timed(search, index)
        report = {"seconds": built_s + search_s, "build_s": built_s, knob: value, "recall": recall(found)}
        if report["recall"] >= target:
            break
    return report


def _fill(index, x: np.ndarray) -> None:
    index.train(x)
    index.add(x)


def fields_search(field: np.ndarray, sample: int, faiss) -> dict:
    """Every window of `sample` images against all images' corner windows."""
    views = field.astype(np.float32)
    index, build_s = timed(smear_fields._CornerIndex.build, views)
    rng = np.random.default_rng(0)
    imgs = np.sort(rng.choice(len(views), min(sample, len(views)), replace=False))
    offsets = smear_fields._OFFSETS
    queries = smear_fields._windows(views[imgs], offsets).reshape(len(imgs) * len(offsets), -1)
    query_img = np.repeat(imgs, len(offsets))
    corners = np.ascontiguousarray(index.corner)
    exact_index = faiss.IndexFlatIP(corners.shape[1])
    exact_index.add(corners)
    (sims, found), exact_s = timed(exact_index.search, queries, 8)
    other = index.corner_img[found] != query_img[:, None]  # its own corners do not count
    best = np.where(other, sims, -np.inf).argmax(axis=1)
    best_sim = sims[np.arange(len(queries)), best]
    wanted = best_sim >= smear_fields.WINDOW_MIN
    truth = np.flatnonzero(wanted) * len(corners) + found[np.arange(len(queries)), best][wanted]

    def recall(q: np.ndarray, m: np.ndarray) -> float:
        return float(np.isin(truth, q * len(corners) + m).mean()) if len(truth) else 1.0

    (q, m, _), ours_s = timed(smear_fields.best_corners, index, queries)
    report = {"corners": len(corners), "query_windows": len(queries), "windows_with_a_match": int(wanted.sum()),
              "exact_s": exact_s, "ours": {"seconds": build_s + ours_s, "build_s": build_s, "recall": recall(q, m)}}
    dims = corners.shape[1]
    faiss_indexes = (
        ("faiss_hnsw", faiss.IndexHNSWFlat(dims, 32, faiss.METRIC_INNER_PRODUCT), "efSearch", (16, 32, 64, 128, 256)),
        ("faiss_ivf", faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, 4 * int(np.sqrt(len(corners))),
                                         faiss.METRIC_INNER_PRODUCT), "nprobe", (1, 2, 4, 8, 16, 32)),
    )

    def found_recall(found: tuple[np.ndarray, np.ndarray]) -> float:
        sims, best = found
        keep = (sims >= smear_fields.WINDOW_MIN) & (best >= 0)
        return recall(np.nonzero(keep)[0], best[keep])

    for name, index, knob, values in faiss_indexes:
        report[name] = tuned(index, corners, knob, values, lambda index: index.search(queries, 4), found_recall,
                             report["ours"]["recall"])
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/hema-bench"))
    ap.add_argument("--source", choices=["bmc-replica", "real"], default="bmc-replica")
    ap.add_argument("--images", type=int, default=171_375, help="bmc-replica size")
    ap.add_argument("--field-sample", type=int, default=2000, help="images whose windows the field search looks up")
    ap.add_argument("--num-proc", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    try:
        import faiss
    except ImportError:
        raise SystemExit("this bench compares with faiss: pip install faiss-cpu") from None
    arrays = fingerprints(args)
    report = {"source": args.source, "images": len(arrays["embed_cell"]), "threads": faiss.omp_get_max_threads(),
              "duplicates": duplicates_search(arrays["embed_cell"], faiss)}
    print(json.dumps(report["duplicates"]), flush=True)
    report["fields"] = fields_search(arrays["field"], args.field_sample, faiss)
    print(json.dumps(report["fields"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
