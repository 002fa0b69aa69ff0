"""Work split over forked processes that read the same large arrays: only the items and the results
are pickled, the arrays are inherited (copy-on-write) from the parent's memory.

Every task runs with one BLAS thread, in a worker or in this process: the processes are the
parallelism (a threaded BLAS in each worker oversubscribed the cores and took 3x longer), and a
task's floating-point result never depends on how many processes ran it. Workers keep the memory
their tasks free for the next task (glibc), rather than taking fresh zero-filled pages each time."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

Item = TypeVar("Item")
Result = TypeVar("Result")

_inherited: Callable[[Any], Any] | None = None  # the function of the map under way, inherited by its workers


def fork_map(
    func: Callable[[Any, Item], Result], shared: Any, items: Sequence[Item], num_proc: int | None = None
) -> list[Result]:
    """[func(shared, item) for item in items], in up to `num_proc` forked processes (all cores by
    default; in this process when one is enough)."""
    with fork_imap(functools.partial(func, shared), items, num_proc) as results:
        return list(results)


@contextlib.contextmanager
def fork_imap(
    func: Callable[[Item], Result], items: Sequence[Item], num_proc: int | None = None
) -> Iterator[Iterator[Result]]:
    """An iterator of func(item) for the items, in order, as they are done: in up to `num_proc`
    forked processes (all cores by default; in this process when one is enough). `func` is
    inherited, not pickled (a closure will do); the processes end with the context."""
    global _inherited
    procs = min(num_proc or os.cpu_count() or 1, len(items))
    if procs <= 1:
        with threadpool_limits(limits=1, user_api="blas"):
            yield map(func, items)
        return
    _inherited = func
    try:
        with multiprocessing.get_context("fork").Pool(procs, initializer=_set_up_worker) as pool:
            yield pool.imap(_call, items)
    finally:
        _inherited = None


def _set_up_worker() -> None:
    """For the rest of the worker's life: one BLAS thread, and freed memory kept for the next task."""
    threadpool_limits(limits=1, user_api="blas")
    _keep_freed_memory()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit systems


def _keep_freed_memory() -> None:
    """Serve allocations below 32 MB from the heap and keep what is freed there (glibc).

    By default glibc maps large blocks afresh and returns freed heap to the kernel, so the numpy
    temporaries of every task (MBs each) were new zero-filled pages again: a fifth of the decode
    stage's time went to page faults. Elsewhere (macOS, musl) this does nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    mallopt(_M_TRIM_THRESHOLD, 16 * _MMAP_THRESHOLD_MAX)


def _call(item: Any) -> Any:
    return _inherited(item)
