"""Work split over forked processes that read the same large arrays: only the items and the results
are pickled, the arrays are inherited (copy-on-write) from the parent's memory.

Every task runs with one BLAS thread, in a worker or in this process: the processes are the
parallelism (a threaded BLAS in each worker oversubscribed the cores and took 3x longer), and a
task's floating-point result never depends on how many processes ran it."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

Item = TypeVar("Item")
Result = TypeVar("Result")

_inherited: tuple[Callable[[Any, Any], Any], Any] | None = None  # (func, shared), set around a map


def fork_map(
    func: Callable[[Any, Item], Result], shared: Any, items: Sequence[Item], num_proc: int | None = None
) -> list[Result]:
    """[func(shared, item) for item in items], in up to `num_proc` forked processes (all cores by
    default; in this process when one is enough)."""
    global _inherited
    procs = min(num_proc or os.cpu_count() or 1, len(items))
    if procs <= 1:
        with threadpool_limits(limits=1, user_api="blas"):
            return [func(shared, item) for item in items]
    _inherited = (func, shared)
    try:
        with multiprocessing.get_context("fork").Pool(procs, initializer=_one_blas_thread) as pool:
            return pool.map(_call, items, chunksize=1)
    finally:
        _inherited = None


def _one_blas_thread() -> None:
    threadpool_limits(limits=1, user_api="blas")  # for the rest of the worker's life


def _call(item: Any) -> Any:
    func, shared = _inherited
    return func(shared, item)
