"""hema.base.forked: the forked workers see the parent's arrays without pickling them, and give the same
results, in order, as the in-process path; a streamed map gives them as they come, and a worker's
error reaches the caller."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hema.base.forked import fork_imap, fork_map


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


@pytest.mark.parametrize("num_proc", [1, 2])
def test_fork_imap_streams_results_in_order_and_raises_a_workers_error(num_proc: int) -> None:
    with fork_imap(lambda i: (i * i, os.getpid()), range(50), num_proc) as results:
        got = list(results)
    assert [v for v, _ in got] == [i * i for i in range(50)]
    assert (os.getpid() in {pid for _, pid in got}) == (num_proc == 1)

    def fail(i: int) -> int:
        if i == 3:
            raise ValueError("bad item 3")
        return i

    with pytest.raises(ValueError, match="bad item 3"), fork_imap(fail, range(6), num_proc) as results:
        list(results)
