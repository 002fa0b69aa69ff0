"""Writing outputs so that a failed or killed run leaves the previous output intact and no litter.

Three tools, used for every output hema writes:
- `replacing`, `write_text` / `write_bytes`: a file replaced in one `os.replace`;
- `replace_dir`: a finished staging folder swapped in for a target folder, the old one put back if
  the swap fails half way (or, after a kill, by the next run);
- `scratch_dir`: a hidden working folder beside an output, held by an exclusive `flock` for as long
  as its process lives. The lock dies with the process (SIGKILL included), so the next run can tell
  an abandoned scratch folder from one a live run is using, and removes only the former.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

SCRATCH_MARK = ".hema-scratch-"
_LOCK_NAME = ".lock"
_PREVIOUS = "previous"  # the output being replaced, inside the scratch folder


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; it replaces `path` in one step if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step: readers see the old file or the new one, never a part."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def replace_dir(staging: Path, target: Path, scratch: Path) -> None:
    """Make the complete folder `staging` become `target`; if that fails, `target` is as it was.

    The old `target` waits in `scratch` (a `scratch_dir`) until the new one is in place, so a run
    killed between the two renames is undone by the next run's sweep.
    """
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    previous = Path(scratch) / _PREVIOUS
    os.replace(target, previous)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(previous, target)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _held_by_a_live_process(folder: Path) -> bool:
    try:
        fd = os.open(folder / _LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:  # created but not yet locked, or being removed: leave it alone
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def sweep_abandoned(parent: Path) -> list[Path]:
    """Remove the scratch folders in `parent` whose run no longer lives; return what was removed.

    An output such a run had moved aside and not yet replaced is put back first.
    """
    removed = []
    for folder in sorted(Path(parent).glob(f".*{SCRATCH_MARK}*")):
        if not folder.is_dir() or not (folder / _LOCK_NAME).exists() or _held_by_a_live_process(folder):
            continue
        target = folder.with_name(folder.name[1:].rsplit(SCRATCH_MARK, 1)[0])
        if (folder / _PREVIOUS).is_dir() and not target.exists():
            os.replace(folder / _PREVIOUS, target)
            logger.warning("put back %s, which a killed run had moved aside", target)
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s, left by an earlier run that did not finish", folder)
        removed.append(folder)
    return removed


@contextlib.contextmanager
def scratch_dir(beside: Path) -> Iterator[Path]:
    """A locked, hidden working folder next to `beside` (same file system, so moves out are renames).

    Abandoned scratch of earlier runs next to it is removed first; this one is removed on exit.
    """
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    sweep_abandoned(beside.parent)
    folder = beside.with_name(f".{beside.name}{SCRATCH_MARK}{os.getpid()}")
    shutil.rmtree(folder, ignore_errors=True)  # our own pid: a dead run's, since we are alive
    folder.mkdir()
    # Lock under another name, then rename: a sweeper never sees an unlocked `.lock`.
    fd = os.open(folder / f"{_LOCK_NAME}.new", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(folder / f"{_LOCK_NAME}.new", folder / _LOCK_NAME)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)
