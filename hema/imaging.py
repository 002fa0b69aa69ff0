"""Decoding cell images to RGB, and the per-image fingerprints the dataset publishes.

Every stored image decodes to exactly the pixels whose SHA-256 is published. RGB files already in a
compact format that PIL, torchvision.io.decode_image and browsers all read (JPEG, PNG, WebP) keep
their original bytes; everything else (the scanners' uncompressed TIFF, and L, LA, P, RGBA, CMYK or
16-bit images, converted to RGB first) is stored as lossless WebP, which measured smaller and faster
to encode and decode than PNG on real cells (bench/image_format_bench.py, README).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.fft
from PIL import Image, UnidentifiedImageError

# Scanner exports are large TIFFs; real cells never come near this, but do not let PIL refuse them.
Image.MAX_IMAGE_PIXELS = None

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
#: Formats published as they are (when RGB): compact, and decoded by PIL, torchvision and browsers.
KEPT_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
STORED_FORMAT = "WEBP"  # what every other image is re-encoded to, losslessly
STORED_SUFFIX = ".webp"


class BadImageError(ValueError):
    """A file that is not a decodable image (empty, truncated or another format)."""


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H x W x 3, uint8, C-contiguous
    keep_bytes: bool  # the original file is RGB in a KEPT_FORMATS format: published as is


def decode_rgb(data: bytes) -> DecodedImage:
    """Decode image bytes to RGB uint8, or raise BadImageError saying why in a few words."""
    if not data:
        raise BadImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd TIFF tags; the pixels are what matter
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                mode, fmt = im.mode, im.format
                rgb = _to_rgb(im)
    except UnidentifiedImageError:
        raise BadImageError("not an image") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports truncation and corruption so
        raise BadImageError(f"unreadable image ({exc})") from None
    return DecodedImage(rgb=np.ascontiguousarray(rgb), keep_bytes=mode == "RGB" and fmt in KEPT_FORMATS)


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode == "RGB":
        return np.asarray(im)
    if im.mode in _SIXTEEN_BIT_MODES:
        # PIL's convert("RGB") clips 16-bit values at 255; scale the full range down instead.
        grey = (np.asarray(im, dtype=np.float64) / 257.0).clip(0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def encode_stored(rgb: np.ndarray) -> bytes:
    """Lossless WebP at the fastest effort: on real cells 0.30x the TIFF's bytes, ~3 ms per cell."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=STORED_FORMAT, lossless=True, quality=0, method=0)
    return buf.getvalue()


def stored_bytes(data: bytes, decoded: DecodedImage) -> bytes:
    """What the dataset stores for a file with bytes `data` that decoded to `decoded`."""
    return data if decoded.keep_bytes else encode_stored(decoded.rgb)


def stored_name(file_name: str, decoded: DecodedImage) -> str:
    """The file name that goes with the stored bytes (the image cell's `path`)."""
    return file_name if decoded.keep_bytes else f"{file_name.rsplit('.', 1)[0]}{STORED_SUFFIX}"


def pixel_sha256(rgb: np.ndarray) -> str:
    """SHA-256 of the decoded RGB pixels (row-major H x W x 3 bytes): equal for re-encodings."""
    return hashlib.sha256(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()).hexdigest()


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash, bit for bit the definition of imagehash.phash (hex via phash_hex)."""
    grey = Image.fromarray(rgb).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    dct = scipy.fft.dct(scipy.fft.dct(np.asarray(grey, dtype=np.float64), axis=0), axis=1)
    low = dct[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def phash_hex(value: int) -> str:
    return f"{value:016x}"
