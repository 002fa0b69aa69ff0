"""Benchmark `hema_dataset.py build` against the plain imagefolder route, on the same files.

Three inputs:
  --source replica      MLL23's real class counts (41,621 synthetic 288x288 TIFs, ~10 GB at full size,
                        drawn once with hema.synthetic.painter and cached under --root; --images scales it)
  --source real         the real Acevedo20 cells of ../shared (3,006), centre-cut to MLL23's 288 px and
                        saved as its uncompressed TIFFs in MLL23 class folders (made once under --root)
  --source bmc-replica  BMC's layout and size (bench/bmc_replica.py: 171,375 JPEGs at 250 px, ~1.7 GB),
                        built with --source bmc at each of --sizes (default 41,621 and 171,375: MLL23's
                        and BMC's), and the growth from the first size to the last: time per image of
                        every stage of the build (its `stage` log lines: wall, CPU and the kernel's
                        share of that CPU, reading and writing files), peak memory and output bytes.
                        Goals (issue 25): per-image time at the last size within 1.15x of the first
                        for every stage, peak memory under 3 GB, build <= 1.0x the baseline.

In paired runs (--repeats, alternating, each from a cold page cache when this process may drop it:
root) it times:

  baseline  load_dataset("imagefolder", data_dir=...), the image embedding push_to_hub does
            (datasets.table.embed_table_storage), then Dataset.to_parquet: the cheapest route to a
            publishable Parquet (decodes nothing, finds no duplicates, stores the TIFF bytes)
  build     python hema_dataset.py build (decode, signatures, dedup, shared fields,
            splits, PNG, Parquet, card)

and prints the medians of wall time and peak memory (PSS summed over the process tree, sampled every
SAMPLE_EVERY s: pages that forked workers share with their parent count once), and the median of the
paired ratios. Target (issue 9): build <= 1.5x the baseline.

Sampling is not free: the kernel walks every page table of a process to sum its PSS, ~10 ms of CPU
per sample of a full build's three processes. Every 50 ms that took 28 s of this 2-core machine's
CPU during a 130 s build, from the command it measured (the same build sampled every second: 105 s).
Each run reports the CPU the sampler took (sampler_cpu_s), so its share stays in view.

  python bench/build_bench.py                                # replica, full size
  python bench/build_bench.py --source real --repeats 3      # the real cells
  python bench/build_bench.py --images 4000                  # a quicker replica, same class proportions
  python bench/build_bench.py --source bmc-replica           # the scale table: 41,621 and 171,375 images
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import re
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

from bench_folders import drawn_once, fresh_scratch  # noqa: E402
from hema.synthetic.painter import render_cell  # noqa: E402
from hema.dataset.sources.mll23 import CELL_CLASSES, PUBLISHED_COUNTS  # noqa: E402

ACEVEDO = REPO.parent / "shared" / "data" / "acevedo20_sample"
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
    return drawn_once(root / f"replica-{total}", lambda replica: _draw_replica(replica, total))


def _draw_replica(replica: Path, total: int) -> str:
    counts = class_counts(total)
    print(f"drawing a replica of {sum(counts.values()):,} images into {replica} (once; cached)", flush=True)
    jobs = [(replica / c, c, n, 0) for c, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        pool.map(_draw_class, jobs, chunksize=1)
    return json.dumps(counts)


def ensure_real_cells(root: Path) -> Path:
    """The real Acevedo20 cells as MLL23 would hold them: 288x288 uncompressed TIFFs in class folders."""
    if not ACEVEDO.is_dir():
        raise SystemExit(f"--source real needs {ACEVEDO}")
    return drawn_once(root / "real-acevedo20-288", _cut_real_cells)


def _cut_real_cells(folder: Path) -> str:
    paths = sorted(ACEVEDO.glob("*/*.jpg"))
    for i, path in enumerate(paths):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        top, left = (rgb.shape[0] - 288) // 2, (rgb.shape[1] - 288) // 2
        cell_class = CELL_CLASSES[i % len(CELL_CLASSES)]  # labels play no part in the timing
        target = folder / cell_class / f"{cell_class}_{i:05d}.TIF"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb[top : top + 288, left : left + 288]).save(target, format="TIFF")
    return str(len(paths))


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


SAMPLE_EVERY = 0.5  # seconds between memory samples (a forked worker lives for seconds at least)


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command from cold files; wall time and peak memory of its whole process tree."""
    cold = drop_page_cache()
    cpu_before = os.times()
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
            stop.wait(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.communicate()[0]
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    cpu_after = os.times()
    sampler_cpu = cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system
    command_cpu = (cpu_after.children_user - cpu_before.children_user
                   + cpu_after.children_system - cpu_before.children_system)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(command_cpu, 1), "cold_page_cache": cold,
            "peak_memory_gb": round(peak / 1e9, 2), "sampler_cpu_s": round(sampler_cpu, 1), "stages": stages(output),
            "log": [line for line in output.splitlines()
                    if line.startswith(("INFO", "Built", "  duplicate")) or "rows" in line]}


STAGE = re.compile(r"stage (\w+): ([\d.]+) s wall, ([\d.]+) s CPU, ([\d.]+) s system")


def stages(output: str) -> dict[str, dict[str, float]]:
    """The build's `stage NAME: W s wall, C s CPU, S s system` lines (hema.base.stages)."""
    return {m[1]: {"wall_s": float(m[2]), "cpu_s": float(m[3]), "system_s": float(m[4])}
            for m in STAGE.finditer(output)}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


BASELINE = """
import sys, datasets
from datasets.table import embed_table_storage
ds = datasets.load_dataset("imagefolder", data_dir=sys.argv[1], cache_dir=sys.argv[2], split="train")
ds = ds.with_format("arrow").map(embed_table_storage, batched=True, batch_size=100,
                                 num_proc=int(sys.argv[4]), cache_file_name=sys.argv[2] + "/embedded.arrow")
ds.with_format(None).to_parquet(sys.argv[3])
print(len(ds), "rows")
"""


def run_pair(data: Path, source: str, args: argparse.Namespace) -> dict:
    """--repeats alternating runs of the baseline and the build on `data`: every run, and their medians."""
    work = args.root / "runs"
    commands = {
        "baseline": [sys.executable, "-c", BASELINE, str(data), str(work / "hf-cache"), str(work / "out.parquet"),
                     str(args.num_proc)],
        "build": [sys.executable, "hema_dataset.py", "build", "--source", source, "--data-dir", str(data),
                  "--output-dir", str(work / "built"), "--num-proc", str(args.num_proc)],
    }
    outputs = {"baseline": work / "out.parquet", "build": work / "built"}
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            fresh_scratch(work)  # each run starts on the same disk: no earlier output to flush
            runs[name].append({**measure(cmd), "output_bytes": folder_bytes(outputs[name])})
            print(name, {k: v for k, v in runs[name][-1].items() if k != "log"}, flush=True)
    shutil.rmtree(work)  # the last run's scratch, which fresh_scratch made
    ratios = [b["wall_s"] / a["wall_s"] for a, b in zip(runs["baseline"], runs["build"])]
    builds = runs["build"]
    summary = {
        "source": args.source,
        "images": sum(1 for p in data.rglob("*") if p.suffix.lower() in (".tif", ".jpg")),
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        **{f"{name}_{key}": median([r[key] for r in rs]) for name, rs in runs.items()
           for key in ("wall_s", "cpu_s", "peak_memory_gb", "output_bytes")},
        "build_over_baseline": round(statistics.median(ratios), 2),
        "stages": {stage: {key: median([r["stages"][stage][key] for r in builds])
                           for key in ("wall_s", "cpu_s", "system_s")}
                   for stage in builds[0]["stages"]},
    }
    print(json.dumps(summary))
    return {"summary": summary, "runs": runs}


def median(values: list) -> float | int:
    """statistics.median, an int for ints (bytes), else to two decimals: the report stays readable."""
    middle = statistics.median(values)
    return int(middle) if all(isinstance(v, int) for v in values) else round(middle, 2)


def growth(small: dict, large: dict) -> dict:
    """Per-image time at the large size over that at the small, for every stage and the whole build
    (None where the small size's time rounds to 0)."""
    def ratio(seconds_large: float, seconds_small: float) -> float | None:
        return round(seconds_large / large["images"] / (seconds_small / small["images"]), 2) if seconds_small else None

    table = {stage: {key: ratio(large["stages"][stage][key], small["stages"][stage][key])
                     for key in ("wall_s", "cpu_s", "system_s")}
             for stage in small["stages"]}
    for name in ("build", "baseline"):
        table[name] = {key: ratio(large[f"{name}_{key}"], small[f"{name}_{key}"]) for key in ("wall_s", "cpu_s")}
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/hema-bench"), help="inputs and outputs (~30 GB at full size)")
    ap.add_argument("--source", choices=["replica", "real", "bmc-replica"], default="replica")
    ap.add_argument("--images", type=int, default=sum(PUBLISHED_COUNTS.values()), help="replica size")
    ap.add_argument("--sizes", default="41621,171375", help="bmc-replica: the sizes to build, smallest first")
    ap.add_argument("--repeats", type=int, default=1, help="paired runs; medians are reported")
    ap.add_argument("--num-proc", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.source == "bmc-replica":
        import bmc_replica

        results = {int(n): run_pair(bmc_replica.ensure(args.root, int(n)), "bmc", args) for n in args.sizes.split(",")}
        sizes = sorted(results)
        report = {"sizes": results, "growth": growth(results[sizes[0]]["summary"], results[sizes[-1]]["summary"])}
        print("per-image time at", sizes[-1], "over", sizes[0], json.dumps(report["growth"]))
    else:
        data = ensure_real_cells(args.root) if args.source == "real" else ensure_replica(args.root, args.images)
        report = run_pair(data, "mll23", args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
