"""Writing outputs so that a failed or killed run leaves the previous output intact and no litter.

Three tools, used for every output hema writes:
- `replacing`, `write_text` / `write_bytes`: a file replaced in one `os.replace`;
- `replace_dir`: a finished staging folder swapped in for a target folder in one step where the
  kernel can (Linux's renameat2 RENAME_EXCHANGE: the target path always names a complete folder,
  the old one or the new one), else in two renames with the old one put back if the second fails
  (or, after a kill, by the next run);
- `scratch_dir`: a hidden working folder beside an output, held by an exclusive `flock` for as long
  as its process lives. The lock dies with the process (SIGKILL included), so the next run can tell
  an abandoned scratch folder from one a live run is using, and removes only the former.

What may be replaced is the caller's to prove (a build's build_info.json, a model folder's files):
these tools never judge whether a folder is theirs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

SCRATCH_MARK = ".hema-scratch-"
STAGING = "out"  # the new output, inside the scratch folder (after an exchange: the old one)
_LOCK_NAME = ".lock"
_PREVIOUS = "previous"  # the output being replaced, inside the scratch folder (two-rename swaps)
_CARRIED = "carried.json"  # entries of the old output moved into the new one before the swap


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


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (a copy where the file system has none): a staging folder
    that is to replace a folder reuses its unchanged files. Never write through such a link."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # linux/fcntl.h, linux/fs.h


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.3
    except (OSError, AttributeError):
        return None


def exchange(a: Path, b: Path) -> bool:
    """Swap the two existing paths `a` and `b` in one step; False where the kernel or file system
    cannot (not Linux, or a file system without RENAME_EXCHANGE), and nothing was changed."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(scratch: Path, target: Path, carry: Sequence[str] = ()) -> None:
    """Make the complete folder `scratch`/STAGING (`scratch` a scratch_dir) become `target`; if that
    fails, `target` is as it was.

    `carry` names entries of the old `target` that the new one keeps (a model folder's checkpoints):
    they are moved into the staging folder before the swap. A run killed on the way is mended by the
    next run's sweep: the old `target` is put back where it was moved aside, carried entries returned.
    """
    scratch, target = Path(scratch), Path(target)
    staging = scratch / STAGING
    if not target.exists():
        os.replace(staging, target)
        return
    _carry(target, staging, scratch, carry)
    try:
        if exchange(staging, target):
            shutil.rmtree(staging, ignore_errors=True)  # the old target, now
            return
        previous = scratch / _PREVIOUS
        os.replace(target, previous)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(previous, target)
            raise
    except BaseException:
        _return_carried(scratch, target)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _carry(target: Path, staging: Path, scratch: Path, names: Sequence[str]) -> None:
    present = [n for n in names if (target / n).exists() and not (staging / n).exists()]
    if not present:
        return
    (scratch / _CARRIED).write_text(json.dumps(present))  # before the first move: the sweep's record
    for name in present:
        os.replace(target / name, staging / name)


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

    An output such a run had moved aside and not yet replaced is put back first, and entries it had
    carried out of the output into its staging folder are returned to the output.
    """
    removed = []
    for folder in sorted(Path(parent).glob(f".*{SCRATCH_MARK}*")):
        if not folder.is_dir() or not (folder / _LOCK_NAME).exists() or _held_by_a_live_process(folder):
            continue
        target = folder.with_name(folder.name[1:].rsplit(SCRATCH_MARK, 1)[0])
        if (folder / _PREVIOUS).is_dir() and not target.exists():
            os.replace(folder / _PREVIOUS, target)
            logger.warning("put back %s, which a killed run had moved aside", target)
        _return_carried(folder, target)
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s, left by an earlier run that did not finish", folder)
        removed.append(folder)
    return removed


def _return_carried(folder: Path, target: Path) -> None:
    try:
        names = json.loads((folder / _CARRIED).read_text())
    except (OSError, ValueError):
        return
    for name in names:
        if (folder / STAGING / name).exists() and target.is_dir() and not (target / name).exists():
            os.replace(folder / STAGING / name, target / name)
            logger.warning("returned %s to %s, where a killed run had taken it from", name, target)


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
