"""Benchmark hema-benchmark's costly parts: feature extraction against DinoBloom's loader, and the probes.

Extraction, on the same images in one process, alternating, --repeats times, the same frozen model on
the same device and precision:

  dinobloom  DinoBloom's extraction loop (marrlab/DinoBloom, dinov2/eval/extract_patch_features.py):
             a torch DataLoader whose workers open each file with PIL, convert to RGB, resize to
             224 x 224 (LANCZOS), ToTensor + Normalize (written here with numpy: no torchvision
             matches the pinned torch), batches of --batch-size
  ours-cold  hema's path with an empty image cache: the split decoded once into the uint8 cache
             (forked workers), then batches resized and normalised on the device
  ours-warm  the same with the image cache present: what a second backbone, or a rerun whose
             feature cache misses, pays

The images: the real Acevedo20 cells of ../shared (built once with the acevedo20 source under
--root), else a synthetic MLL23 sample; --images takes the first N rows of the build. DinoBloom's loop
reads the raw files, ours the built dataset (the same pixels, stored as PNG).

Then the classifiers on frozen features of MLL23's size: --probe-rows x --probe-dim float32 features
with MLL23's class proportions (41,621 x 1,024 by default: ViT-L's width), a 80/20 split, and the
time to fit DinoBloom's probe (LogisticRegression, lbfgs, max_iter 1000), to predict with kNN
(k = 20, scikit-learn's brute force) and with DINO's cosine kNN, each once.

  python bench/benchmark_bench.py                           # CPU: a small ViT, 1,024 images
  python bench/benchmark_bench.py --model small --images 3006 --device cuda --workers 8
  python bench/benchmark_bench.py --skip-extraction         # the classifiers only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hema.benchmark import backbones, features, protocols  # noqa: E402
from hema.benchmark.features import FeatureSet  # noqa: E402
from hema.dataset import BUILDERS  # noqa: E402
from hema.dataset.sources.mll23 import PUBLISHED_COUNTS  # noqa: E402
from hema.model.inputs import decoded_images  # noqa: E402

ACEVEDO = REPO.parent / "shared" / "data" / "acevedo20_sample"
MODELS = {  # DINOv2 shapes: "small" is DinoBloom-S's ViT-S/14; "tiny" one a 2-core CPU runs in seconds;
    # "none" the mean colour of each image: the data path alone, what a fast GPU leaves of the cost
    "tiny": {"hidden_size": 192, "num_hidden_layers": 4, "num_attention_heads": 3},
    "small": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6},
    "none": None,
}


class MeanColour(torch.nn.Module):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.mean(dim=(2, 3))


def dataset(root: Path):
    """The built images (all splits, in one Dataset) and the folder of their raw files."""
    import datasets

    if ACEVEDO.is_dir():
        raw, source = ACEVEDO, "acevedo20"
    else:
        from hema.synthetic import draw_sample

        raw, source = root / "sample", "mll23"
        if not raw.is_dir():
            draw_sample(raw, per_class=60)
    built = root / f"built-{source}"
    if not (built / "build_info.json").is_file():
        BUILDERS[source].build_folder(raw, built)
    ds = datasets.load_dataset(str(built), cache_dir=str(root / "hf"))
    return datasets.concatenate_datasets([ds[s] for s in ("train", "validation", "test")]), raw


def backbone_folder(root: Path, size: str) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    folder = root / f"dinov2-{size}"
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        Dinov2Model(Dinov2Config(image_size=224, patch_size=14, **MODELS[size])).save_pretrained(folder)
    return folder


class DinoBloomFiles(torch.utils.data.Dataset):
    """DinoBloom's CustomImageDataset: PIL open, RGB, resize to 224 x 224 LANCZOS, ToTensor, Normalize."""

    def __init__(self, paths: list[Path], mean, std):
        self.paths = paths
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = Image.open(self.paths[i]).convert("RGB").resize((224, 224), Image.Resampling.LANCZOS)
        tensor = np.asarray(image, np.float32).transpose(2, 0, 1) / 255  # ToTensor
        return torch.from_numpy((tensor - self.mean) / self.std)  # Normalize


def dinobloom_loop(model, paths, backbone, device, dtype, batch_size: int, workers: int) -> np.ndarray:
    loader = torch.utils.data.DataLoader(DinoBloomFiles(paths, backbone.image_mean, backbone.image_std),
                                         batch_size=batch_size, shuffle=False, num_workers=workers)
    autocast = torch.autocast("cuda", dtype=dtype) if dtype != torch.float32 else torch.autocast("cpu", enabled=False)
    out = []
    with torch.inference_mode(), autocast:
        for batch in loader:
            out.append(model(batch.to(device)).float().cpu().numpy())
    return np.concatenate(out)


def ours(model, rows, backbone, device, dtype, batch_size: int, cache: Path) -> np.ndarray:
    images = decoded_images(rows, "image", backbone.image_size, cache)
    return features.extract(model, images, backbone, device, batch_size, dtype)


def extraction(args: argparse.Namespace, root: Path) -> dict:
    rows, raw = dataset(root)
    rows = rows.select(range(min(args.images, len(rows))))
    paths = [raw / image_id for image_id in rows["image_id"]]
    if args.model == "none":
        backbone = backbones.Backbone("none", "none", "none", "cls", 224, backbones.IMAGENET_MEAN, backbones.IMAGENET_STD,
                                      checkpoint=False)
        model = MeanColour()
    else:
        backbone = backbones.describe(str(backbone_folder(root, args.model)))
        model = backbones.load(backbone).to(args.device).eval()
    dtype = features.precision(args.device)
    cache = root / "decoded"
    timings: dict[str, list[float]] = {"dinobloom": [], "ours-cold": [], "ours-warm": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, seconds in timings.items():
            if name == "ours-cold":
                shutil.rmtree(cache, ignore_errors=True)
            started = time.perf_counter()
            if name == "dinobloom":
                outputs[name] = dinobloom_loop(model, paths, backbone, args.device, dtype, args.batch_size, args.workers)
            else:
                outputs[name] = ours(model, rows, backbone, args.device, dtype, args.batch_size, cache)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - started)
    a, b = outputs["dinobloom"], outputs["ours-warm"]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    report = {"images": len(rows), "model": args.model, "device": args.device, "precision": str(dtype),
              "workers": args.workers, "batch_size": args.batch_size,
              "feature_cosine_dinobloom_vs_ours": {"median": float(np.median(cosine)), "min": float(cosine.min())}}
    for name, seconds in timings.items():
        report[name] = {"median_s": statistics.median(seconds), "images_per_s": len(rows) / statistics.median(seconds)}
    for name in ("ours-cold", "ours-warm"):
        report[f"{name}_speedup"] = statistics.median(timings["dinobloom"]) / statistics.median(timings[name])
    return report


def classifiers(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    counts = np.array(list(PUBLISHED_COUNTS.values()), dtype=np.float64)
    labels = rng.choice(len(counts), size=args.probe_rows, p=counts / counts.sum())
    centres = rng.normal(size=(len(counts), args.probe_dim)).astype(np.float32)
    x = (centres[labels] * 0.06 + rng.normal(size=(args.probe_rows, args.probe_dim)).astype(np.float32))
    test = rng.random(args.probe_rows) < 0.2
    names = tuple(PUBLISHED_COUNTS)

    def subset(mask):
        rows = np.flatnonzero(mask)
        return FeatureSet(x[rows], labels[rows], rows, rows.astype(str), names, grouped=False)

    train, held = subset(~test), subset(test)
    report = {"train_rows": len(train.labels), "test_rows": len(held.labels), "dim": args.probe_dim,
              "threads": torch.get_num_threads()}
    for classifier in ("probe", "knn20", "knn20_cosine"):
        started = time.perf_counter()
        evaluation = protocols.fit_predict(classifier, train, held)
        report[classifier] = {"seconds": time.perf_counter() - started,
                              "accuracy": float((evaluation.predicted == evaluation.truth).mean())}
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path(os.environ.get("HEMA_BENCH_ROOT", Path.home() / ".cache/hema-bench/benchmark")))
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--model", choices=MODELS, default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--probe-rows", type=int, default=41_621)
    p.add_argument("--probe-dim", type=int, default=1_024)
    p.add_argument("--skip-extraction", action="store_true")
    p.add_argument("--skip-classifiers", action="store_true")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    report = {}
    if not args.skip_extraction:
        report["extraction"] = extraction(args, args.root)
        print(json.dumps(report["extraction"], indent=1), flush=True)
    if not args.skip_classifiers:
        report["classifiers"] = classifiers(args)
        print(json.dumps(report["classifiers"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
