"""The model's input path: decode every image once, then transform whole batches on the device; and
the evaluation transform, here alone, for training, evaluation and the saved image processor.

The usual recipe decodes and augments each image with PIL in DataLoader workers at every epoch, and
the GPU waits for it. Here each split is decoded once into a uint8 array (N x 3 x S x S, S = the
model's image size), memory-mapped from a cache file keyed by the dataset's fingerprint and S, and
reused across epochs and runs. A training batch is a gather of rows from that array followed by
random resized crop, flips, rotations by 90 degrees, colour jitter and normalisation done in torch
on the training device; the evaluation transform is the deterministic part only (resize to S x S
with PIL's bilinear filter at decode time, rescale, normalise), which is exactly what the saved
ViTImageProcessor does, so `pipeline` sees the same inputs as the evaluation.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hema.base import atomic
from hema.base.errors import HemaError
from hema.base.imaging import BadImageError, decode_rgb, image_cell_bytes

_DECODE_CHUNK = 256
#: How the evaluation transform resizes: PIL's bilinear filter, as transformers' ViTImageProcessor does.
EVAL_RESAMPLE = Image.Resampling.BILINEAR


def decode_resized(data: bytes, size: int, crop: float = 1.0) -> np.ndarray:
    """One image as 3 x size x size uint8: the centre `crop` of its side (a field of view, 1: all of
    it), resized as the saved image processor resizes (`image_processor`). BadImageError if undecodable."""
    rgb = decode_rgb(data).rgb
    if crop < 1.0:
        h, w = rgb.shape[:2]
        ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
        top, left = (h - ch) // 2, (w - cw) // 2
        rgb = rgb[top : top + ch, left : left + cw]
    resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((size, size), EVAL_RESAMPLE)
    return np.asarray(resized).transpose(2, 0, 1)


def image_processor(size: int, mean: Sequence[float], std: Sequence[float]):
    """The transformers image processor of a trained model: the evaluation transform (resize, rescale,
    normalise), so that `pipeline` sees the inputs the model was evaluated on."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=int(EVAL_RESAMPLE),
                             do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                             image_mean=list(mean), image_std=list(std))


def _write_cache(dataset, image_column: str, size: int, crop: float, target: Path) -> None:
    """Decode all images of `dataset` into `target` (written under a temporary name, then renamed)."""
    from datasets import Image as ImageFeature

    raw = dataset.select_columns([image_column]).cast_column(image_column, ImageFeature(decode=False))

    def decode_row(item: tuple[int, dict]) -> np.ndarray:
        row, cell = item
        try:
            return decode_resized(image_cell_bytes(cell), size, crop)
        except BadImageError as exc:
            raise HemaError(f"row {row} of the dataset ({len(raw)} rows) is not a decodable image ({exc})") from None

    with atomic.replacing(target) as partial:
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(raw), 3, size, size))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL decodes without the GIL
            start = 0
            for chunk in raw.iter(batch_size=_DECODE_CHUNK):
                cells = chunk[image_column]
                array[start : start + len(cells)] = np.stack(list(pool.map(decode_row, enumerate(cells, start))))
                start += len(cells)
        array.flush()
        del array


def decoded_images(dataset, image_column: str, size: int, cache_dir: Path, crop: float = 1.0) -> np.ndarray:
    """The split's images as an N x 3 x size x size uint8 memory map, decoded at most once: each the
    centre `crop` of its side (a field of view; 1: all of it), resized as the evaluation transform does.

    The file name holds the dataset fingerprint (which changes with the data files and any filter),
    the size and the crop, so a changed dataset or transform gets its own file and an unchanged one
    is reused.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    cropped = f"-crop{crop:.4f}" if crop < 1.0 else ""
    target = cache_dir / f"{dataset._fingerprint}-{size}px{cropped}.npy"
    shape = (len(dataset), 3, size, size)
    if not target.exists() or np.load(target, mmap_mode="r").shape != shape:
        _write_cache(dataset, image_column, size, crop, target)
    return np.load(target, mmap_mode="c")  # copy-on-write: torch can wrap it, the file stays as is


@dataclass(frozen=True)
class Augmentation:
    """Strength of the training augmentation (the evaluation transform uses none of it).

    Cells are centred in their crops, so the crop keeps at least `min_scale` of the area (torchvision's
    0.08 would often cut the cell away). Stain jitter scales each channel on its own, the way smears
    differ between labs.
    """

    min_scale: float = 0.5
    max_log_ratio: float = math.log(4 / 3)
    brightness: float = 0.1
    contrast: float = 0.1
    stain: float = 0.05


class BatchTransform:
    """uint8 batches -> normalised float pixel_values, on the device the batch lives on."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], augmentation: Augmentation | None = None):
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.augmentation = augmentation or Augmentation()

    def evaluate(self, images: torch.Tensor) -> torch.Tensor:
        """Deterministic: rescale and normalise, as the saved image processor does."""
        scale = (1 / (255 * self.std)).to(images.device).view(1, 3, 1, 1)
        bias = (-self.mean / self.std).to(images.device).view(1, 3, 1, 1)
        return images.float().mul_(scale).add_(bias)  # in place: mixed-dtype ops are slow on CPU

    def train(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random resized crop, dihedral flip/rotation and colour jitter, then normalise.

        Parameters are drawn on the CPU from `generator`, so a batch's augmentation depends on the
        generator's seed only, not on the device or on what ran before (resumed runs replay it).
        """
        size = images.shape[-1]
        boxes, dihedral = self._crops(images.shape[0], size, generator)
        scale, bias = self._colour(images.shape[0], generator)
        if not images.is_cuda:
            return _augment_per_image(images, boxes, dihedral, scale, bias, size)
        crops = _crop_resize_grid(images.float(), boxes, dihedral, size)
        return crops.mul_(scale.to(images.device)).add_(bias.to(images.device))

    def _crops(self, n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer crop boxes (x, y, w, h) as RandomResizedCrop draws them, and a dihedral code 0..7."""
        aug = self.augmentation
        u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
        area = aug.min_scale + (1 - aug.min_scale) * u[:, 0]
        log_ratio = (2 * u[:, 1] - 1) * aug.max_log_ratio
        w = (size * torch.sqrt(area * torch.exp(log_ratio))).round().clamp(1, size)
        h = (size * torch.sqrt(area / torch.exp(log_ratio))).round().clamp(1, size)
        x = (u[:, 2] * (size - w + 1)).floor().clamp(max=size - w)
        y = (u[:, 3] * (size - h + 1)).floor().clamp(max=size - h)
        dihedral = torch.randint(0, 8, (n,), generator=generator)
        return torch.stack([x, y, w, h], 1).long(), dihedral

    def _colour(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Brightness, contrast and stain jitter folded with normalisation into one affine map per channel.

        pixel/255 * brightness * stain_c, contrasted around the channel's mean, then (v - mean) / std.
        """
        aug = self.augmentation
        u = torch.rand(n, 5, generator=generator) * 2 - 1
        gain = (1 + aug.brightness * u[:, :1]) * (1 + aug.stain * u[:, 2:5])  # n x 3
        contrast = 1 + aug.contrast * u[:, 1:2]
        scale = contrast * gain / (255 * self.std)
        bias = ((1 - contrast) * self.mean - self.mean) / self.std
        return scale.view(n, 3, 1, 1), bias.expand(n, 3).reshape(n, 3, 1, 1).contiguous()


def _augment_per_image(images: torch.Tensor, boxes: torch.Tensor, dihedral: torch.Tensor, scale: torch.Tensor,
                       bias: torch.Tensor, size: int) -> torch.Tensor:
    """CPU: crop, resize (torch's uint8 bilinear kernel, several times faster than float grid_sample),
    then the colour map, image by image, spread over the torch threads with each op single-threaded.

    Small ops on a batch each open an OpenMP region, and on a busy machine every region waits for a
    descheduled thread (measured on 2 shared cores: 600 ms instead of 8 ms for the crops of 32 images).
    """
    out = torch.empty((images.shape[0], 3, size, size), dtype=torch.float32)
    jobs = list(enumerate(zip(boxes.tolist(), dihedral.tolist())))

    def augment(job: tuple[int, tuple[list[int], int]]) -> None:
        i, ((x, y, w, h), code) = job
        crop = _dihedral(images[i : i + 1, :, y : y + h, x : x + w], code)
        resized = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
        out[i].copy_(resized[0]).mul_(scale[i]).add_(bias[i])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if threads > 1:
            list(_thread_pool(threads).map(augment, jobs))
        else:
            for job in jobs:
                augment(job)
    finally:
        torch.set_num_threads(threads)
    return out


@functools.lru_cache(maxsize=None)
def _thread_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hema-augment")


def _dihedral(crop: torch.Tensor, code: int) -> torch.Tensor:
    """Bit 0 flips left-right, bit 1 flips up-down, bit 2 transposes (with the flips: all 8 symmetries)."""
    if code & 4:
        crop = crop.transpose(-1, -2)
    dims = [d for bit, d in ((1, -1), (2, -2)) if code & bit]
    return crop.flip(dims).contiguous() if dims else crop.contiguous()


def _crop_resize_grid(images: torch.Tensor, boxes: torch.Tensor, dihedral: torch.Tensor, size: int) -> torch.Tensor:
    """GPU: the same crops and symmetries as one batched grid_sample (bilinear, align_corners=False).

    Equal to the CPU path up to uint8 rounding, except that edge pixels blend in the half pixel just
    outside the crop where the CPU path repeats the crop's border.
    """
    n = images.shape[0]
    b = boxes.to(torch.float64)
    cx, cy = (2 * b[:, 0] + b[:, 2]) / size - 1, (2 * b[:, 1] + b[:, 3]) / size - 1
    sx, sy = b[:, 2] / size, b[:, 3] / size
    # Output coordinates (u, v) pass through the symmetry first: transpose swaps them, flips negate them.
    transpose = (dihedral & 4) > 0
    flip_x = torch.where((dihedral & 1) > 0, -1.0, 1.0).to(torch.float64)
    flip_y = torch.where((dihedral & 2) > 0, -1.0, 1.0).to(torch.float64)
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = torch.where(transpose, 0.0, sx * flip_x)
    theta[:, 0, 1] = torch.where(transpose, sx * flip_y, 0.0)
    theta[:, 1, 0] = torch.where(transpose, sy * flip_x, 0.0)
    theta[:, 1, 1] = torch.where(transpose, 0.0, sy * flip_y)
    theta[:, 0, 2], theta[:, 1, 2] = cx, cy
    grid = F.affine_grid(theta.to(images.device, torch.float32), [n, 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def batch_generator(*seed_parts: int) -> torch.Generator:
    """A CPU generator seeded from e.g. (seed, epoch, batch, process): augmentation a resumed run replays."""
    seed = np.random.SeedSequence([int(x) for x in seed_parts]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(seed) & (2**63 - 1))


class EpochSampler(torch.utils.data.Sampler[int]):
    """Row order for one epoch, a pure function of (seed, epoch): a resumed run replays it exactly.

    With `weights`, rows are drawn with replacement in proportion to them (the balanced sampler);
    otherwise each epoch is a permutation. All processes draw the same order; Accelerate shards it.
    """

    def __init__(self, num_rows: int, seed: int, weights: np.ndarray | None = None):
        self.num_rows, self.seed, self.epoch = num_rows, seed, 0
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            return iter(torch.randperm(self.num_rows, generator=generator).tolist())
        return iter(torch.multinomial(self.weights, self.num_rows, replacement=True, generator=generator).tolist())


class DeviceImages:
    """A split's decoded images where batches are gathered from: on the GPU when they fit, else host memory."""

    def __init__(self, array: np.ndarray, device: torch.device, max_device_fraction: float = 0.3):
        self.device, self.array = device, array
        self.on_device = None
        if device.type == "cuda" and array.nbytes < max_device_fraction * torch.cuda.mem_get_info(device)[0]:
            self.on_device = torch.from_numpy(array).to(device)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """uint8 images of `rows` (a CPU tensor of row numbers) on the training device."""
        if self.on_device is not None:
            return self.on_device[rows.to(self.device, non_blocking=True)]
        batch = torch.from_numpy(self.array[rows.numpy()])  # numpy's gather: no OpenMP region
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch
