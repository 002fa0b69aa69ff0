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
