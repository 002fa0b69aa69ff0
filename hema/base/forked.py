"""Work split over forked processes that read the same large arrays: only the items and the results
are pickled, the arrays are inherited (copy-on-write) from the parent's memory.

Every task runs with one BLAS thread, in a worker or in this process: the processes are the
parallelism (a threaded BLAS in each worker oversubscribed the cores and took 3x longer), and a
task's floating-point result never depends on how many processes ran it. Workers keep the memory
their tasks free for the next task (glibc), rather than taking fresh zero-filled pages each time.

Nothing waits forever: the pool is the standard library's ProcessPoolExecutor, which notices a
worker that died (the OOM killer's SIGKILL included) and ends the map with one HemaError. Workers
ignore SIGINT, so Ctrl-C reaches this process alone, which then ends every worker before the
KeyboardInterrupt goes on; and a worker dies with this process when it is killed (Linux's
parent-death signal), where it would otherwise wait for work forever: no orphan, no worker tracebacks.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import itertools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from hema.base.errors import HemaError

Item = TypeVar("Item")
Result = TypeVar("Result")

_inherited: Callable[[Any], Any] | None = None  # the function of the map under way, inherited by its workers
_IN_FLIGHT_PER_PROCESS = 4  # tasks submitted ahead per process: results wait in memory only that far
_GRACE_S = 5.0  # seconds a terminated worker has to exit before it is killed


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
        with _pool(procs) as pool:
            yield _in_order(pool, items, procs * _IN_FLIGHT_PER_PROCESS)
    finally:
        _inherited = None


def _in_order(pool: ProcessPoolExecutor, items: Sequence[Any], ahead: int) -> Iterator[Any]:
    """Results of _call(item) in order, with at most `ahead` tasks submitted and not yet consumed."""
    upcoming = iter(items)
    try:
        pending = collections.deque(pool.submit(_call, item) for item in itertools.islice(upcoming, ahead))
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(_call, item) for item in itertools.islice(upcoming, 1))
            yield result
    except BrokenProcessPool:
        raise _worker_died() from None


def _result(future: Future) -> Any:
    try:
        return future.result()
    except BrokenProcessPool:
        raise _worker_died() from None


def _worker_died() -> HemaError:
    return HemaError(
        "a worker process died (killed from outside, or by the system for lack of memory); "
        "try fewer processes (--num-proc) or free some memory"
    )


@contextlib.contextmanager
def _pool(procs: int) -> Iterator[ProcessPoolExecutor]:
    """A fork pool of `procs` workers that are all gone when the context ends, however it ends."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # the current mask, unchanged
    pool = ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork"), initializer=_set_up_worker,
                               initargs=(mask, os.getpid()))
    try:
        # The workers are forked on the first submit: with SIGINT blocked until they ignore it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pool.submit(int).result()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C held back is raised here
        yield pool
    except BaseException:
        _end_workers(pool)
        raise
    pool.shutdown(wait=True)


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel what waits and end the workers now (on an error or Ctrl-C, not after their tasks)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # Python < 3.14 has no terminate_workers()
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(_GRACE_S)
        if worker.is_alive():
            worker.kill()
            worker.join()


@contextlib.contextmanager
def in_background(func: Callable[..., Any], *args: Any) -> Iterator[Callable[[], Any]]:
    """func(*args) in one forked process while this one goes on. The context gives a function that
    waits for it and returns its result, re-raising what it raised (a HemaError when the process
    died); the process ends with the context."""
    global _inherited
    _inherited = lambda _: func(*args)  # noqa: E731  (the one task takes no item)
    try:
        with _pool(1) as pool:
            future = pool.submit(_call, None)
            yield lambda: _result(future)
    finally:
        _inherited = None


def _set_up_worker(mask: set[signal.Signals], parent: int) -> None:
    """For the rest of the worker's life: death with its parent, no SIGINT (the parent handles
    Ctrl-C), one BLAS thread, and freed memory kept for the next task."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    threadpool_limits(limits=1, user_api="blas")
    _keep_freed_memory()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent: int) -> None:
    """Have the kernel SIGKILL this process when `parent` ends (Linux; elsewhere nothing)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the request took effect
        os._exit(1)


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
