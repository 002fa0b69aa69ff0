"""Decoding cell images to RGB, and the per-image fingerprints the dataset publishes.

Every stored image decodes to exactly the pixels whose SHA-256 is published. RGB files already in a
compact format that PIL, torchvision.io.decode_image and browsers all read (JPEG, PNG, WebP) keep
their original bytes; everything else (the scanners' uncompressed TIFF, and L, LA, P, RGBA, CMYK or
16-bit images, converted to RGB first) is stored as PNG. The PNG is written here rather than by PIL:
the Up filter on every row (vectorised in numpy), deflated by ISA-L (isal) at level 1, measured 0.38x
the TIFF's bytes in 0.6 ms on real cells, against 0.37x in 1.7 ms for zlib-ng at level 2, 0.40x in
4.4 ms for PIL at its fastest level and 0.30x in 2.8 ms for lossless WebP
(bench/image_format_bench.py, README); encoding was the largest part of a build's time.

Decoding: a plain TIFF (uncompressed, interleaved 8-bit RGB, as MLL23's scanner writes them) is read
straight from its strips in 0.01 ms; PIL's Python TIFF parser took 0.3 ms of the 0.35 ms it spent on
one. Every other file, and any TIFF this reader is unsure of, goes to PIL.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft
from PIL import Image, UnidentifiedImageError
from isal import isal_zlib

# Scanner exports are large TIFFs; real cells never come near this, but do not let PIL refuse them.
Image.MAX_IMAGE_PIXELS = None

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
#: Formats published as they are (when RGB): compact, and decoded by PIL, torchvision and browsers.
KEPT_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
STORED_FORMAT = "PNG"  # what every other image is re-encoded to, losslessly
STORED_SUFFIX = ".png"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_UP = 2  # PNG filter type: each byte minus the byte above it
_DEFLATE_LEVEL = 1  # ISA-L's levels 1 and 2 compress alike here; 0 is weaker (0.48x on real cells)


class BadImageError(ValueError):
    """A file that is not a decodable image (empty, truncated or another format)."""


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # H x W x 3, uint8, C-contiguous (read-only when it views the file's bytes)
    keep_bytes: bool  # the original file is RGB in a KEPT_FORMATS format: published as is


def decode_rgb(data: bytes) -> DecodedImage:
    """Decode image bytes to RGB uint8, or raise BadImageError saying why in a few words."""
    if not data:
        raise BadImageError("empty file")
    plain = _plain_tiff_rgb(data)
    if plain is not None:
        return DecodedImage(rgb=plain, keep_bytes=False)
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


# Baseline TIFF tags (TIFF 6.0, section 8), and the values that make a file plain: interleaved,
# uncompressed 8-bit RGB, what MLL23's scanner exports
_WIDTH, _HEIGHT, _STRIP_OFFSETS, _ROWS_PER_STRIP, _STRIP_BYTES, _PLANAR = 256, 257, 273, 278, 279, 284
_PLAIN = {258: (8, 8, 8), 259: (1,), 262: (2,), 277: (3,)}  # bits, compression, photometric, samples
_TIFF_TYPES = {3: "H", 4: "I"}  # SHORT, LONG: the only types these tags take


def _plain_tiff_rgb(data: bytes) -> np.ndarray | None:
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


def _deflate(data: bytes) -> bytes:
    return isal_zlib.compress(data, _DEFLATE_LEVEL)


def encode_stored(rgb: np.ndarray, deflate: Callable[[bytes], bytes] = _deflate) -> bytes:
    """Lossless 8-bit RGB PNG: every row Up-filtered, then `deflate`d into a zlib stream (ISA-L by
    default; bench/image_format_bench.py passes others). Any PNG decoder reads it."""
    height, width, _ = rgb.shape
    rows = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = _PNG_UP
    filtered[0, 1:] = rows[0]  # the row above the first is zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    return b"".join((
        _PNG_SIGNATURE,
        _png_chunk(b"IHDR", header),
        _png_chunk(b"IDAT", deflate(filtered.tobytes())),
        _png_chunk(b"IEND", b""),
    ))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    crc = isal_zlib.crc32(data, isal_zlib.crc32(tag))  # zlib's CRC-32, 10x faster than the stdlib's
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def stored_bytes(data: bytes, decoded: DecodedImage) -> bytes:
    """What the dataset stores for a file with bytes `data` that decoded to `decoded`."""
    return data if decoded.keep_bytes else encode_stored(decoded.rgb)


def stored_name(file_name: str, decoded: DecodedImage) -> str:
    """The file name that goes with the stored bytes (the image cell's `path`)."""
    return file_name if decoded.keep_bytes else f"{file_name.rsplit('.', 1)[0]}{STORED_SUFFIX}"


def pixel_sha256(rgb: np.ndarray) -> str:
    """SHA-256 of the decoded RGB pixels (row-major H x W x 3 bytes): equal for re-encodings."""
    return hashlib.sha256(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()).hexdigest()


def phash(rgb: np.ndarray | Image.Image) -> int:
    """64-bit DCT perceptual hash, bit for bit the definition of imagehash.phash (hex via phash_hex)."""
    image = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    grey = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    dct = scipy.fft.dct(scipy.fft.dct(np.asarray(grey, dtype=np.float64), axis=0), axis=1)
    low = dct[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def phash_hex(value: int) -> str:
    return f"{value:016x}"
