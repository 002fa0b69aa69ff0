"""What each stage of a long command cost: wall time and CPU, its forked workers' included.

A stage logs one INFO line, `stage NAME: W s wall, C s CPU (what it did)`, which bench/build_bench.py
reads to tell which stage grows faster than the data. CPU is this process's and its finished
children's (the forked pools of hema.base.forked end with their stage, so their CPU lands in it).
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("hema.stages")


def cpu_seconds() -> float:
    """User and system CPU of this process and of the children it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def stage(name: str) -> Iterator[list[str]]:
    """Time the block as stage `name`; what it appends to the yielded list is logged with it."""
    notes: list[str] = []
    wall, cpu = time.perf_counter(), cpu_seconds()
    yield notes
    logger.info("stage %s: %.1f s wall, %.1f s CPU%s", name, time.perf_counter() - wall, cpu_seconds() - cpu,
                f" ({'; '.join(notes)})" if notes else "")
