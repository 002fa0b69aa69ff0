"""Benchmark `hema_dataset.py build` against the plain imagefolder route, on a full-size replica.

The replica has MLL23's real class counts (41,621 synthetic 288x288 TIFs, ~10 GB, drawn once with
hema.sample and cached under --root). In one run, on the same files, it times:

  baseline        load_dataset("imagefolder", data_dir=...) then Dataset.to_parquet: stores file
                  paths only (the issue's literal baseline; nothing is read, nothing decoded)
  baseline-embed  the same with the image bytes embedded in the Parquet, as push_to_hub does:
                  the cheapest route to a publishable Parquet (still decodes nothing)
  build           python hema_dataset.py build (decode, fingerprints, dedup, splits, Parquet, card)

and prints wall time and peak memory (PSS summed over the whole process tree, sampled every 50 ms:
pages that forked workers share with their parent count once).
Each command starts with the page cache dropped (when this process may: root), so none reads files
the previous one left in memory. Targets (issue 2): build <= 2x the baseline's wall time, peak
memory < 3 GB.

  python bench/build_bench.py                       # full size: 41,621 images
  python bench/build_bench.py --images 4000         # quicker, same class proportions
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hema.sample import render_cell  # noqa: E402
from hema.taxonomy import CELL_CLASSES, PUBLISHED_COUNTS  # noqa: E402

EXACT_COPIES_PER_MILLE = 5  # planted exact duplicates, so the dedup stage has groups to form


def class_counts(total: int) -> dict[str, int]:
    """Real MLL23 proportions scaled to `total` images (at least 3 per class)."""
    scale = total / sum(PUBLISHED_COUNTS.values())
    return {c: max(3, round(PUBLISHED_COUNTS[c] * scale)) for c in CELL_CLASSES}


def _draw_class(job: tuple[Path, str, int, int]) -> None:
    folder, cell_class, count, seed = job
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, CELL_CLASSES.index(cell_class)])
    copies = count * EXACT_COPIES_PER_MILLE // 1000
    for i in range(count - copies):
        Image.fromarray(render_cell(rng, cell_class)).save(folder / f"{cell_class}_{i + 1:04d}.TIF")
    for j in range(copies):  # exact copies of earlier images, as exported twice
        src = folder / f"{cell_class}_{int(rng.integers(count - copies)) + 1:04d}.TIF"
        shutil.copyfile(src, folder / f"{cell_class}_{count - copies + j + 1:04d}.TIF")


def ensure_replica(root: Path, total: int) -> Path:
    replica = root / f"replica-{total}"
    marker = replica / ".complete"
    if marker.is_file():
        return replica
    shutil.rmtree(replica, ignore_errors=True)
    counts = class_counts(total)
    print(f"drawing a replica of {sum(counts.values()):,} images into {replica} (once; cached)", flush=True)
    jobs = [(replica / c, c, n, 0) for c, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(_draw_class, jobs, chunksize=1)
    marker.write_text(json.dumps(counts))
    return replica


def _pss(process: psutil.Process) -> int:
    """Proportional set size: forked workers share their parent's pages, which RSS would count twice."""
    try:
        return process.memory_full_info().pss
    except (psutil.AccessDenied, AttributeError):
        return process.memory_info().rss


def drop_page_cache() -> bool:
    """Start each command with cold files, so no run reads what the previous one left in memory."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command from cold files; wall time and peak memory of its whole process tree."""
    cold = drop_page_cache()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                peak = max(peak, sum(_pss(p) for p in procs if p.is_running()))
            except psutil.Error:
                pass
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    return {"wall_s": round(wall, 1), "cold_page_cache": cold, "peak_memory_gb": round(peak / 1e9, 2), "log": [
        line for line in output.splitlines() if line.startswith(("INFO", "Built", "  duplicate")) or "rows" in line]}


BASELINE = """
import sys, datasets
from datasets.table import embed_table_storage
ds = datasets.load_dataset("imagefolder", data_dir=sys.argv[1], cache_dir=sys.argv[2], split="train")
if sys.argv[4] == "embed":
    ds = ds.with_format("arrow").map(embed_table_storage, batched=True, batch_size=100,
                                     num_proc=int(sys.argv[5]), cache_file_name=sys.argv[2] + "/embedded.arrow")
    ds = ds.with_format(None)
ds.to_parquet(sys.argv[3])
print(len(ds), "rows")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/hema-bench"), help="replica and outputs (~30 GB at full size)")
    ap.add_argument("--images", type=int, default=sum(PUBLISHED_COUNTS.values()))
    ap.add_argument("--num-proc", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    replica = ensure_replica(args.root, args.images)
    work = args.root / "runs"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = {"images": sum(1 for _ in replica.glob("*/*.TIF")), "cpus": os.cpu_count(), "num_proc": args.num_proc}
    commands = {
        "baseline": [sys.executable, "-c", BASELINE, str(replica), str(work / "hf-cache"),
                     str(work / "out.parquet"), "paths", str(args.num_proc)],
        "baseline-embed": [sys.executable, "-c", BASELINE, str(replica), str(work / "hf-cache"),
                           str(work / "out.parquet"), "embed", str(args.num_proc)],
        "build": [sys.executable, "hema_dataset.py", "build", "--data-dir", str(replica),
                  "--output-dir", str(work / "built"), "--num-proc", str(args.num_proc)],
    }
    for name, cmd in commands.items():
        results[name] = measure(cmd)
        print(name, results[name], flush=True)
        shutil.rmtree(work)  # each run starts on the same disk: no earlier output left to flush
        work.mkdir()
    for name in ("baseline", "baseline-embed"):
        results[f"build_over_{name}"] = round(results["build"]["wall_s"] / results[name]["wall_s"], 2)
    summary = {k: v for k, v in results.items() if not isinstance(v, dict)}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
