"""hema.base.imaging: every decoding path gives PIL's pixels, and plain scanner TIFFs skip PIL's parser."""

from __future__ import annotations

import hashlib
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hema.base import imaging
from hema.base.imaging import BadImageError, decode_rgb

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "acevedo20_sample"
RNG = np.random.default_rng(11)
PIXELS = RNG.integers(0, 256, (37, 29, 3), dtype=np.uint8)


def pil_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def hand_tiff(rgb: np.ndarray, order: str, rows_per_strip: int, gap: int = 0, **changed: tuple[int, ...]) -> bytes:
    """An RGB TIFF laid out by hand: `order` "<" or ">", strips of `rows_per_strip` rows, `gap` junk
    bytes between strips (so they are not back to back), tag values overridden by `changed` (e.g.
    t259=(5,))."""
    height, width, _ = rgb.shape
    strips = [rgb[y : y + rows_per_strip].tobytes() for y in range(0, height, rows_per_strip)]
    data = bytearray(b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 0)
    bits_at = len(data)
    data += struct.pack(order + "3H", 8, 8, 8)
    offsets = []
    for strip in strips:
        data += b"\xab" * gap
        offsets.append(len(data))
        data += strip
    lists_at = len(data)
    data += struct.pack(f"{order}{len(strips)}I", *offsets) + struct.pack(f"{order}{len(strips)}I", *map(len, strips))
    tags = {256: (4, (width,)), 257: (4, (height,)), 258: (3, (8, 8, 8)), 259: (3, (1,)), 262: (3, (2,)),
            273: (4, tuple(offsets)), 277: (3, (3,)), 278: (4, (rows_per_strip,)), 279: (4, tuple(map(len, strips))),
            284: (3, (1,))}
    for name, value in changed.items():
        tags[int(name[1:])] = (3, value)
    ifd = len(data)
    data += struct.pack(order + "H", len(tags))
    for tag, (kind, values) in sorted(tags.items()):
        code = "H" if kind == 3 else "I"
        if tag == 258 and values == (8, 8, 8):
            field = struct.pack(order + "I", bits_at)
        elif tag in (273, 279) and len(values) > 1:
            field = struct.pack(order + "I", lists_at + (0 if tag == 273 else 4 * len(strips)))
        else:
            field = struct.pack(f"{order}{len(values)}{code}", *values).ljust(4, b"\x00")
        data += struct.pack(order + "HHI", tag, kind, len(values)) + field
    data += struct.pack(order + "I", 0)
    data[4:8] = struct.pack(order + "I", ifd)
    return bytes(data)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(("rows", "gap"), [(37, 0), (8, 0), (8, 3), (1, 1), (100, 0)])
def test_plain_tiffs_decode_to_pils_pixels_without_pil(order: str, rows: int, gap: int) -> None:
    data = hand_tiff(PIXELS, order, rows, gap)
    assert np.array_equal(pil_pixels(data), PIXELS)  # the hand-made file is a valid TIFF
    assert imaging._plain_tiff_rgb(data, imaging.ImageLimits()) is not None
    decoded = decode_rgb(data)
    assert np.array_equal(decoded.rgb, PIXELS) and not decoded.keep_bytes


def test_tiffs_written_by_pil_take_the_plain_path() -> None:
    out = io.BytesIO()
    Image.fromarray(PIXELS).save(out, format="TIFF")
    assert imaging._plain_tiff_rgb(out.getvalue(), imaging.ImageLimits()) is not None
    assert np.array_equal(decode_rgb(out.getvalue()).rgb, PIXELS)


@pytest.mark.parametrize(
    ("mode", "save"),
    [("RGB", {"compression": "tiff_lzw"}), ("RGB", {"compression": "tiff_adobe_deflate"}), ("RGBA", {}),
     ("L", {}), ("CMYK", {}), ("I;16", {}), ("P", {})],
)
def test_other_tiffs_go_to_pil_and_decode_as_before(mode: str, save: dict) -> None:
    image = Image.fromarray(PIXELS).convert(mode) if mode != "I;16" else Image.fromarray(
        PIXELS[..., 0].astype(np.uint16) * 257)
    out = io.BytesIO()
    image.save(out, format="TIFF", **save)
    data = out.getvalue()
    assert imaging._plain_tiff_rgb(data, imaging.ImageLimits()) is None
    assert decode_rgb(data).rgb.shape == PIXELS.shape
    if mode in ("RGB", "RGBA", "CMYK"):
        assert np.array_equal(decode_rgb(data).rgb, pil_pixels(data))


@pytest.mark.parametrize("changed", [{"t258": (16, 16, 16)}, {"t259": (5,)}, {"t262": (6,)}, {"t284": (2,)}])
def test_tags_outside_the_plain_layout_are_left_to_pil(changed: dict) -> None:
    assert imaging._plain_tiff_rgb(hand_tiff(PIXELS, "<", 8, **changed), imaging.ImageLimits()) is None


@pytest.mark.parametrize("writer", ["hand", "pil"])
@pytest.mark.parametrize("keep", [0.01, 0.1, 0.5, 0.99])
def test_truncated_tiffs_are_bad_images_not_crashes(writer: str, keep: float) -> None:
    """Cut in the header, the strips or the directory (the hand-made file has it last, PIL's first)."""
    if writer == "hand":
        data = hand_tiff(PIXELS, "<", 8)
    else:
        out = io.BytesIO()
        Image.fromarray(PIXELS).save(out, format="TIFF")
        data = out.getvalue()
    truncated = data[: int(len(data) * keep)]
    assert imaging._plain_tiff_rgb(truncated, imaging.ImageLimits()) is None
    with pytest.raises(BadImageError):
        decode_rgb(truncated)



def imagehash_phash(rgb: np.ndarray) -> int:
    """imagehash.phash's definition, through PIL's own resize: what `phash` must give, bit for bit."""
    import scipy.fft

    grey = Image.fromarray(rgb).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    low = scipy.fft.dct(scipy.fft.dct(np.asarray(grey, dtype=np.float64), axis=0), axis=1)[:8, :8]
    return int("".join("1" if b else "0" for b in (low > np.median(low)).ravel()), 2)


@pytest.mark.parametrize(("height", "width"), [(288, 288), (363, 360), (400, 400), (32, 32), (17, 45), (5, 3),
                                               (1000, 37)])
def test_lanczos_resize_is_pils_to_the_bit(height: int, width: int) -> None:
    """Shrinking, keeping and enlarging, on noise, smooth gradients and flat black and white."""
    rng = np.random.default_rng(height * 1000 + width)
    yy, xx = np.mgrid[0:height, 0:width]
    images = [rng.integers(0, 256, (height, width), dtype=np.uint8),
              ((yy * 7 + xx * 3) % 256).astype(np.uint8),
              np.zeros((height, width), np.uint8), np.full((height, width), 255, np.uint8)]
    for grey in images:
        want = np.asarray(Image.fromarray(grey).resize((32, 32), Image.Resampling.LANCZOS))
        assert np.array_equal(imaging._lanczos_resize(grey, 32), want)


def test_phash_is_imagehash_phash() -> None:
    """On noise, and on real cells (../shared's Acevedo20 JPEGs, 360 x 363) where present."""
    rng = np.random.default_rng(5)
    cells = [rng.integers(0, 256, (288, 288, 3), dtype=np.uint8), PIXELS,
             np.clip(rng.normal(180, 40, (360, 363, 3)), 0, 255).astype(np.uint8)]
    cells += [pil_pixels(path.read_bytes()) for path in sorted(SAMPLE.glob("*/*.jpg"))[::60]]
    for rgb in cells:
        assert imaging.phash(rgb) == imagehash_phash(rgb)
        assert imaging.phash(Image.fromarray(rgb)) == imagehash_phash(rgb)


def test_pixel_sha256_hashes_the_row_major_rgb_bytes_of_any_array() -> None:
    """Hashed from the array's buffer: the same digest as the bytes of a copy, for a plain TIFF's
    read-only view of its file, a non-contiguous slice and PIL's pixels."""
    tiff = hand_tiff(PIXELS, "<", rows_per_strip=37)
    views = [decode_rgb(tiff).rgb, PIXELS[::2, 1:], np.asarray(Image.fromarray(PIXELS)), PIXELS.transpose(1, 0, 2)]
    assert not views[0].flags.writeable and not views[1].flags.c_contiguous
    for rgb in views:
        assert imaging.pixel_sha256(rgb) == hashlib.sha256(np.array(rgb, order="C").tobytes()).hexdigest()
    assert imaging.pixel_sha256(views[0]) == imaging.pixel_sha256(PIXELS)
