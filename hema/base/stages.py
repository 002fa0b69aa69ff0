"""What each stage of a long command cost: wall time and CPU, its forked workers' included.

A stage logs one INFO line, `stage NAME: W s wall, C s CPU, S s system (what it did)`, which
bench/build_bench.py reads to tell which stage grows faster than the data. CPU is this process's and
its finished children's (the forked pools of hema.base.forked end with their stage, so their CPU
lands in it); S is the part of it spent in the kernel (reading and writing files, faulting pages in),
which grows with the machine's page cache and disk rather than with the build's algorithms.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("hema.stages")


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU of this process and of the children it has waited for: (both, system)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    system = own.ru_stime + children.ru_stime
    return own.ru_utime + children.ru_utime + system, system


@contextmanager
def stage(name: str) -> Iterator[list[str]]:
    """Time the block as stage `name`; what it appends to the yielded list is logged with it."""
    notes: list[str] = []
    wall, (cpu, system) = time.perf_counter(), cpu_seconds()
    yield notes
    cpu_after, system_after = cpu_seconds()
    logger.info("stage %s: %.1f s wall, %.1f s CPU, %.1f s system%s", name, time.perf_counter() - wall,
                cpu_after - cpu, system_after - system, f" ({'; '.join(notes)})" if notes else "")
