"""Decoding cell images to RGB, storing them losslessly, and the per-image hashes the dataset publishes.

Every stored image decodes to exactly the pixels whose SHA-256 is published. RGB files already in a
compact format that PIL, torchvision.io.decode_image and browsers all read (JPEG, PNG, WebP) keep
their original bytes; everything else (the scanners' uncompressed TIFF, and L, LA, P, RGBA, CMYK or
16-bit images, converted to RGB first) is stored as PNG, written by fpng (Rich Geldreich's fast PNG
encoder): 0.40x the TIFF's bytes on real cells in 40 % less time than our own Up-filter + ISA-L
writer took for 0.38x, and 14x less than PIL's fastest PNG (bench/image_format_bench.py, README);
encoding is a large part of a build's time.

Decoding: a plain TIFF (uncompressed, interleaved 8-bit RGB, as MLL23's scanner writes them) is read
straight from its strips in 0.01 ms; PIL's Python TIFF parser took 0.3 ms of the 0.35 ms it spent on
one. Every other file, and any TIFF this reader is unsure of, goes to PIL.

One image never takes unbounded memory: `decode_rgb` refuses an image whose header declares more
pixels than its ImageLimits allow before any pixel is decoded (a 2.6 MB PNG can declare 30000 x 30000
pixels: 2.7 GB as RGB); the file's bytes are read within the limits' byte bound by
hema.base.files.read_regular_file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import fpng
import numpy as np
import scipy.fft
from PIL import Image, UnidentifiedImageError


#: Defaults of the per-image limits: cells are far below both (MLL23: 0.08 megapixels, 249 KB a TIFF).
MAX_MEGAPIXELS = 100.0
MAX_FILE_MB = 256.0

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
#: Formats published as they are (when RGB): compact, and decoded by PIL, torchvision and browsers.
KEPT_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
STORED_SUFFIX = ".png"


class BadImageError(ValueError):
    """A file that is not a decodable image (empty, truncated, too many pixels or another format)."""


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H x W x 3, uint8, C-contiguous (read-only when it views the file's bytes)
    keep_bytes: bool  # the original file is RGB in a KEPT_FORMATS format: published as is


@dataclass(frozen=True)
class ImageLimits:
    """What one image file may take: its bytes, and the pixels its header declares."""

    max_megapixels: float = MAX_MEGAPIXELS
    max_file_mb: float = MAX_FILE_MB

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)

    @property
    def max_bytes(self) -> int:
        return int(self.max_file_mb * 1e6)


def image_cell_bytes(cell: dict) -> bytes:
    """The encoded bytes of a datasets Image cell read undecoded ({"bytes", "path"}): its bytes, or
    those of its file when the dataset keeps only a path (image folders)."""
    return cell["bytes"] if cell.get("bytes") is not None else Path(cell["path"]).read_bytes()


def decode_rgb(data: bytes, limits: ImageLimits = ImageLimits()) -> DecodedImage:
    """Decode image bytes to RGB uint8, or raise BadImageError saying why in a few words."""
    if not data:
        raise BadImageError("empty file")
    plain = _plain_tiff_rgb(data, limits)
    if plain is not None:
        return DecodedImage(rgb=plain, keep_bytes=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd TIFF tags; the pixels are what matter
            with Image.open(io.BytesIO(data)) as im:
                _check_pixels(im.size, limits)  # from the header: nothing decoded yet
                im.load()
                mode, fmt = im.mode, im.format
                rgb = _to_rgb(im)
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError("not an image") from None
    except Image.DecompressionBombError as exc:  # past twice PIL's own limit (Image.MAX_IMAGE_PIXELS): PIL checks first
        raise BadImageError(f"too many pixels (PIL: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes: PIL's decoders fail in many ways, all "unreadable"
        raise BadImageError(f"unreadable image ({type(exc).__name__}: {exc})") from None
    return DecodedImage(rgb=np.ascontiguousarray(rgb), keep_bytes=mode == "RGB" and fmt in KEPT_FORMATS)


def _check_pixels(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise BadImageError(f"{width} x {height} pixels, over the limit of {limits.max_megapixels:g} megapixels")


# Baseline TIFF tags (TIFF 6.0, section 8), and the values that make a file plain: interleaved,
# uncompressed 8-bit RGB, what MLL23's scanner exports
_WIDTH, _HEIGHT, _STRIP_OFFSETS, _ROWS_PER_STRIP, _STRIP_BYTES, _PLANAR = 256, 257, 273, 278, 279, 284
_PLAIN = {258: (8, 8, 8), 259: (1,), 262: (2,), 277: (3,)}  # bits, compression, photometric, samples
_TIFF_TYPES = {3: "H", 4: "I"}  # SHORT, LONG: the only types these tags take


def _plain_tiff_rgb(data: bytes, limits: ImageLimits) -> np.ndarray | None:
    """The pixels of a plain TIFF, a read-only view of `data`'s strips; None for any other file (PIL
    decodes those)."""
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None:
        return None
    try:
        tags = _tiff_tags(data, order)
        width, height = tags[_WIDTH][0], tags[_HEIGHT][0]
        offsets, counts = tags[_STRIP_OFFSETS], tags[_STRIP_BYTES]
    except (KeyError, IndexError, struct.error):
        return None
    if any(tags.get(tag) != value for tag, value in _PLAIN.items()) or tags.get(_PLANAR, (1,)) != (1,):
        return None
    if width <= 0 or height <= 0:
        return None
    _check_pixels((width, height), limits)
    rows = min(tags.get(_ROWS_PER_STRIP, (height,))[0], height)
    if rows <= 0:
        return None
    row_bytes = width * 3
    sizes = [min(rows, height - y) * row_bytes for y in range(0, height, rows)]
    if list(counts) != sizes or len(offsets) != len(sizes) or offsets[-1] + sizes[-1] > len(data):
        return None
    if all(offsets[i + 1] == offsets[i] + sizes[i] for i in range(len(sizes) - 1)):  # back to back
        pixels = np.frombuffer(data, np.uint8, height * row_bytes, offsets[0])
    else:
        pixels = np.concatenate([np.frombuffer(data, np.uint8, n, at) for at, n in zip(offsets, sizes)])
    return pixels.reshape(height, width, 3)


def _tiff_tags(data: bytes, order: str) -> dict[int, tuple[int, ...]]:
    """The SHORT and LONG tags of a TIFF's first image file directory, as value tuples."""
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (entries,) = struct.unpack_from(order + "H", data, ifd)
    tags = {}
    for tag, kind, count, value in struct.iter_unpack(order + "HHI4s", data[ifd + 2 : ifd + 2 + 12 * entries]):
        code = _TIFF_TYPES.get(kind)
        if code is None:
            continue
        fmt = f"{order}{count}{code}"
        if struct.calcsize(fmt) <= 4:  # the values fit in the entry itself
            tags[tag] = struct.unpack_from(fmt, value)
        else:  # the entry holds their offset
            tags[tag] = struct.unpack_from(fmt, data, struct.unpack(order + "I", value)[0])
    return tags


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode == "RGB":
        return np.asarray(im)
    if im.mode in _SIXTEEN_BIT_MODES:
        # PIL's convert("RGB") clips 16-bit values at 255; scale the full range down instead.
        grey = (np.asarray(im, dtype=np.float64) / 257.0).clip(0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def encode_stored(rgb: np.ndarray) -> bytes:
    """Lossless 8-bit RGB PNG of an H x W x 3 uint8 image (fpng): any PNG decoder reads it."""
    return fpng.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8))


def stored_bytes(data: bytes, decoded: DecodedImage) -> bytes:
    """What the dataset stores for a file with bytes `data` that decoded to `decoded`."""
    return data if decoded.keep_bytes else encode_stored(decoded.rgb)


def stored_name(file_name: str, decoded: DecodedImage) -> str:
    """The file name that goes with the stored bytes (the image cell's `path`)."""
    return file_name if decoded.keep_bytes else f"{file_name.rsplit('.', 1)[0]}{STORED_SUFFIX}"


def pixel_sha256(rgb: np.ndarray) -> str:
    """SHA-256 of the decoded RGB pixels (row-major H x W x 3 bytes): equal for re-encodings. Hashed
    from the array's own buffer: no copy of the pixels (0.02 of the 0.13 ms a 250 px cell took)."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(rgb, dtype=np.uint8))).hexdigest()


def phash(rgb: np.ndarray | Image.Image) -> int:
    """64-bit DCT perceptual hash, bit for bit the definition of imagehash.phash (hex via phash_hex):
    PIL's grey conversion, its LANCZOS resize to 32 x 32 (here as matrix products, `_lanczos_resize`),
    then the low 8 x 8 DCT coefficients against their median."""
    image = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    small = _lanczos_resize(np.asarray(image.convert("L")), _PHASH_SIDE)
    low = scipy.fft.dct(scipy.fft.dct(small, axis=0), axis=1)[:8, :8]
    middle = np.sort(low, axis=None)[31:33]  # np.median's two middle values, and their mean
    return int.from_bytes(np.packbits(low > (middle[0] + middle[1]) / 2).tobytes(), "big")


_PHASH_SIDE = 32
_PRECISION_BITS = 22  # PIL's fixed-point coefficients for 8-bit images (libImaging/Resample.c)


def _lanczos_resize(grey: np.ndarray, side: int) -> np.ndarray:
    """PIL's 8-bit LANCZOS resize of a grey image to side x side, to the bit, as float64 (uint8 values).

    PIL sums integer pixel x fixed-point coefficient products per pass (rows, then columns), adds a
    half, shifts and clips to 0..255. Those sums stay far below 2**53, so float64 matrix products
    give them exactly, 3x faster than PIL's loops over a 288 px cell's 55 taps.
    """
    rows = _clip8(grey.astype(np.float64) @ _lanczos_coefficients(grey.shape[1], side).T)
    return _clip8(_lanczos_coefficients(grey.shape[0], side) @ rows)


def _clip8(sums: np.ndarray) -> np.ndarray:
    return np.clip(np.floor((sums + 2.0 ** (_PRECISION_BITS - 1)) * 2.0**-_PRECISION_BITS), 0, 255)


@functools.cache
def _lanczos_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) fixed-point LANCZOS weights, as PIL computes them (precompute_coeffs and
    normalize_coeffs_8bpc, the same from Pillow 10 to 12): each output's taps, normalised to sum 1,
    times 2**22 rounded half away from zero."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support, inverse = 3.0 * filterscale, 1.0 / filterscale
    out = np.zeros((out_size, in_size))
    for xx in range(out_size):
        centre = (xx + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        last = min(int(centre + support + 0.5), in_size)
        weights = [_lanczos((x - centre + 0.5) * inverse) for x in range(first, last)]
        total = 0.0
        for w in weights:  # summed in order, as PIL does
            total += w
        if total != 0.0:
            weights = [w / total for w in weights]
        out[xx, first:last] = [int(w * (1 << _PRECISION_BITS) + (0.5 if w >= 0 else -0.5)) for w in weights]
    return out


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


def _sinc(x: float) -> float:
    return 1.0 if x == 0.0 else math.sin(x * math.pi) / (x * math.pi)


def phash_hex(value: int) -> str:
    return f"{value:016x}"
