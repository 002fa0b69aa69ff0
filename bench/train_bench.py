"""Our training input path and step against the usual recipe (../shared/bench/peer_recipe.py), in one run.

Both sides get the same images (the peer's own loader or synthetic drawer) on the same machine, and
the ratios are what to report, never an absolute number from another run.

On CPU: images/s of our input pipeline alone (gather from the decoded uint8 cache + batch crop,
flips, rotations, jitter, normalisation in torch, with N threads) against the peer's DataLoader alone
(per-image PIL decode + transforms, with N workers), for each N of --workers. Target: >= 3x.
On a GPU (or with --mode train): end-to-end training images/s of our loop (the steps of train_vit.py: index DataLoader
prepared by Accelerate, device-side augmentation, compiled ViT, bf16, fused AdamW) against the
peer's GPU-only ceiling (>= 0.95x) and the peer recipe at its best worker count (>= 1.5x).

  python bench/train_bench.py --synthetic 2048            # or --images DIR (class folders)
  options: --mode auto|train|pipeline --peer PATH --model base|tiny --batch-size N --steps N --workers 0,8,16 --compile auto|yes|no
           --repeats N --skip-peer --json OUT
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hema.model import classifier, inputs, optimisation  # noqa: E402

DEFAULT_PEER = REPO.parent / "shared" / "bench" / "peer_recipe.py"
IMAGE_SIZE = 224  # the peer's crop size
MEAN_STD = ([0.5] * 3, [0.5] * 3)  # the peer's normalisation


def load_peer(path: Path) -> ModuleType:
    if not path.is_file():
        sys.exit(f"error: no peer recipe at {path} (pass --peer PATH)")
    spec = importlib.util.spec_from_file_location("peer_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode_cache(blobs: list[bytes]) -> tuple[np.ndarray, float]:
    """The uint8 cache train_vit.py builds once per dataset; returns it and its images/s."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        array = np.stack(list(pool.map(lambda b: inputs.decode_resized(b, IMAGE_SIZE), blobs)))
    return array, len(blobs) / (time.perf_counter() - start)


def index_loader(accelerator, n: int, batch_size: int, seed: int = 0):
    """train_vit.py's training DataLoader: row numbers in a (seed, epoch) order, sharded by Accelerate."""
    sampler = inputs.EpochSampler(n, seed)
    loader = torch.utils.data.DataLoader(range(n), batch_size=batch_size, sampler=sampler, drop_last=True)
    return accelerator.prepare_data_loader(loader, device_placement=False)


def forever(loader):
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for position, rows in enumerate(loader):
            yield epoch, position, rows
        epoch += 1


def peer_loader_images_per_second(peer: ModuleType, blobs: list[bytes], batch_size: int, workers: int,
                                  steps: int, warmup: int = 2) -> float:
    """The peer's DataLoader alone: per-image PIL decode and transforms in `workers` processes.

    The main process gets max(1, workers) torch threads, as our side does (with 0 workers it does the
    transforms itself, and more threads than that only make its small tensor ops wait on each other).
    """
    torch.set_num_threads(max(1, workers))
    loader = torch.utils.data.DataLoader(peer.BlobDataset(blobs), batch_size=batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    batches = (b for _ in iter(int, 1) for b in loader)
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * batch_size / (time.perf_counter() - start)


def our_pipeline_images_per_second(accelerator, array: np.ndarray, batch_size: int, threads: int,
                                   steps: int, warmup: int = 2) -> float:
    """Our input path alone, with `threads` torch threads: gather from the cache + batch transform."""
    torch.set_num_threads(threads)
    images = inputs.DeviceImages(array, accelerator.device)
    transform = inputs.BatchTransform(*MEAN_STD)
    batches = forever(index_loader(accelerator, len(array), batch_size))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        epoch, position, rows = next(batches)
        transform.train(images.gather(rows), inputs.batch_generator(0, epoch, position, 0))
    return steps * batch_size / (time.perf_counter() - start)


def our_training_images_per_second(accelerator, peer: ModuleType, array: np.ndarray, args) -> float:
    """End to end: train_vit.py's step on the peer's model, fed by our input path; timed like the peer."""
    from transformers import get_scheduler

    device = accelerator.device
    model = peer.build_model(args.model, device)
    net = classifier.classifier_module(model)
    optimizer = optimisation.make_optimizer(net, 1e-4, 0.01)
    scheduler = get_scheduler("constant", optimizer)
    net, optimizer, scheduler = accelerator.prepare(net, optimizer, scheduler)
    images = inputs.DeviceImages(array, device)
    targets = torch.arange(len(array), device=device) % 18  # the peer's labels
    transform = inputs.BatchTransform(*MEAN_STD)
    batches = forever(index_loader(accelerator, len(array), args.batch_size))
    cuda = device.type == "cuda"
    warmup = 5  # the first step compiles
    for step in range(warmup + args.steps):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        epoch, position, rows = next(batches)
        with accelerator.accumulate(net):
            pixel_values = transform.train(images.gather(rows), inputs.batch_generator(0, epoch, position, 0))
            optimisation.training_step(accelerator, net, optimizer, scheduler, pixel_values,
                                   targets[rows.to(device)], None, 0.0, 1.0)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    accelerator.free_memory(net, optimizer, scheduler)
    return args.steps * args.batch_size / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of class subfolders of images")
    src.add_argument("--synthetic", type=int, help="number of random 288x288 PNG images (the peer's drawer)")
    ap.add_argument("--peer", type=Path, default=DEFAULT_PEER, help=f"peer_recipe.py (default: {DEFAULT_PEER})")
    ap.add_argument("--model", choices=["base", "tiny"], help="default: base on CUDA, tiny on CPU")
    ap.add_argument("--batch-size", type=int, help="default: 128 on CUDA, 32 on CPU")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", help="comma list; default 0,8,16 on CUDA, 0,2 on CPU")
    ap.add_argument("--limit", type=int, default=4096, help="at most this many images")
    ap.add_argument("--compile", choices=["auto", "yes", "no"], default="auto", help="auto: on CUDA only")
    ap.add_argument("--compile-mode", default=None)
    ap.add_argument("--mode", choices=["auto", "train", "pipeline"], default="auto",
                    help="train: end to end against the peer's ceiling and recipe; pipeline: input paths alone "
                         "(auto: train on CUDA, pipeline on CPU)")
    ap.add_argument("--repeats", type=int, default=3, help="CPU: interleaved rounds, best of each side")
    ap.add_argument("--skip-peer", action="store_true", help="time our side only")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    from accelerate import Accelerator
    from accelerate.utils import TorchDynamoPlugin

    peer = load_peer(args.peer)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    args.model = args.model or ("base" if cuda else "tiny")
    args.batch_size = args.batch_size or (128 if cuda else 32)
    workers = [int(w) for w in (args.workers or ("0,8,16" if cuda else "0,2")).split(",")]
    compiled = args.compile == "yes" or (args.compile == "auto" and cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    accelerator = Accelerator(
        mixed_precision="bf16" if cuda else "no",
        dynamo_plugin=TorchDynamoPlugin(backend="inductor" if compiled else "no", fullgraph=True, dynamic=False,
                                        mode=args.compile_mode))
    blobs = peer.load_blobs(args.images, args.limit) if args.images else peer.synthetic_blobs(args.synthetic)
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu", "cpus": os.cpu_count(), "model": args.model,
           "batch_size": args.batch_size, "images": len(blobs), "compiled": compiled, "torch": torch.__version__}
    array, res["ours_decode_once_images_per_s"] = decode_cache(blobs)
    report = lambda key, value: (res.__setitem__(key, round(value, 1)), print(f"{key} images/s {value:.1f}", flush=True))

    if args.mode == "train" or (args.mode == "auto" and cuda):
        report("ours_train", our_training_images_per_second(accelerator, peer, array, args))
        if not args.skip_peer:
            report("peer_gpu_ceiling", peer.gpu_ceiling(blobs, args, device))
            for w in workers:
                report(f"peer_workers{w}", peer.peer(blobs, args, device, w))
            best = max(res[f"peer_workers{w}"] for w in workers)
            res["ratio_ours_vs_ceiling"] = round(res["ours_train"] / res["peer_gpu_ceiling"], 3)
            res["ratio_ours_vs_peer_best"] = round(res["ours_train"] / best, 3)
            res["ratio_ours_vs_peer_workers0"] = round(res["ours_train"] / res.get("peer_workers0", float("nan")), 3)
    else:
        # Interleaved rounds, best of each: a shared CPU slows whichever side it happens to hit.
        for w in workers:
            ours, theirs = [], []
            for _ in range(args.repeats):
                ours.append(our_pipeline_images_per_second(accelerator, array, args.batch_size, max(1, w), args.steps))
                if not args.skip_peer:
                    theirs.append(peer_loader_images_per_second(peer, blobs, args.batch_size, w, args.steps))
            report(f"ours_pipeline_threads{max(1, w)}", max(ours))
            if theirs:
                report(f"peer_loader_workers{w}", max(theirs))
                res[f"ratio_pipeline_workers{w}"] = round(max(ours) / max(theirs), 2)
    print(json.dumps(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
