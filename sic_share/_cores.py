"""How many cores this process may use."""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """The cores this process may run on (``os.sched_getaffinity``), else ``os.cpu_count()``.

    Under SLURM (``--cpus-per-task``), taskset or a container's cpuset the affinity is
    the allocation; ``os.cpu_count()`` is the whole node's count and would oversubscribe it.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
