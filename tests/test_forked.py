"""hema.forked: the forked workers see the parent's arrays without pickling them, and give the same
results, in order, as the in-process path."""

from __future__ import annotations

import os

import numpy as np

from hema.forked import fork_map


def test_fork_map_runs_in_workers_and_matches_the_in_process_path() -> None:
    shared = np.arange(100) * 3
    items = list(range(0, 100, 7))

    def look(arrays: np.ndarray, i: int) -> tuple[int, int]:  # a closure: only items are pickled
        return int(arrays[i]), os.getpid()

    forked = fork_map(look, shared, items, num_proc=2)
    local = fork_map(look, shared, items, num_proc=1)
    assert [v for v, _ in forked] == [v for v, _ in local] == [3 * i for i in items]
    assert {pid for _, pid in local} == {os.getpid()}
    assert os.getpid() not in {pid for _, pid in forked}


def test_tasks_run_with_one_blas_thread_in_workers_and_in_process() -> None:
    from threadpoolctl import threadpool_info

    def blas_threads(_: None, item: int) -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    before = blas_threads(None, 0)
    assert before  # numpy's BLAS is loaded and seen
    assert fork_map(blas_threads, None, [0, 1], num_proc=2) == [{1}, {1}]
    assert fork_map(blas_threads, None, [0], num_proc=1) == [{1}]
    assert blas_threads(None, 0) == before  # the parent's own setting is given back
