"""Hostile inputs the tests make: files that are valid yet would cost a reader unbounded memory."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def black_png(path: Path, width: int, height: int) -> None:
    """A valid all-black greyscale PNG of width x height, written row by row (its pixels never in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (width + 1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
        f.write(chunk(b"IDAT", data) + chunk(b"IEND", b""))
