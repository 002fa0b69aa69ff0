"""Reading a folder we were given as the hostile input it may be.

Nothing outside the folder's real path is read (`is_inside`: links are resolved), only regular files
are opened, without blocking (a FIFO would wait forever for a writer, a device never end), and never
more than a byte limit checked before reading. Names are shown by `printable`: bytes that are not
UTF-8 and control characters are escaped, so a file name cannot break a log line, a table or a card.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path


class UnusableFile(ValueError):
    """A file that cannot be used as input: not a regular file, too large, not decodable."""


def read_regular_file(path: os.PathLike | str, max_bytes: int) -> bytes:
    """The bytes of the regular file `path`, at most `max_bytes`, or UnusableFile saying why not
    (OSError when it cannot be opened or read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnusableFile(f"not a regular file ({file_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise UnusableFile(f"{info.st_size / 1e6:,.1f} MB, over the limit of {max_bytes / 1e6:g} MB a file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while we read it
        raise UnusableFile(f"over the limit of {max_bytes / 1e6:g} MB a file")
    return data


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in a word or two."""
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a link"))
    return next((name for test, name in kinds if test(mode)), "an unknown kind of file")


def real_root(folder: os.PathLike | str) -> Path:
    """The real path of a folder we were given: what every file read from it must lie within."""
    return Path(os.path.realpath(folder))


def is_inside(path: os.PathLike | str, root: Path) -> bool:
    """Whether the real path of `path` lies within `root` (a real_root)."""
    return os.path.commonpath([os.path.realpath(path), os.fspath(root)]) == os.fspath(root)


def first_names(names: Sequence[str], count: int = 3) -> str:
    """The first `count` names, made printable, comma-separated, and ", ..." when there are more: a
    one-line error's list (the names come from hostile folders)."""
    return ", ".join(printable(name) for name in names[:count]) + (", ..." if len(names) > count else "")


def printable(name: str) -> str:
    """`name` safe for one line of a log, a table or a card: bytes that are not UTF-8 (kept by Python
    as surrogates) as \\xNN, control characters escaped, `|` escaped for Markdown tables."""
    out = []
    for char in name:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape: one undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(repr(char)[1:-1] if char in "\n\r\t" else f"\\x{code:02x}")
        elif char == "|":
            out.append("\\|")
        else:
            out.append(char)
    return "".join(out)
