"""Fragmentation while work waits: free GPUs that no waiting job could start on.

At a sample, a pool's free GPUs (healthy, not in use, not drained) are *fragmented* when jobs
wait and none of them could start a slot there now: too few free GPUs for its gang or for one
replica, the wrong GPU type or workload, outside its residency or latency SLO, or no power
headroom at the site (the engine's own ``pool_feasible`` for that job). A job that may split
across pools (non-gang training) can use any free GPU of a pool it is eligible for. With no
job waiting nothing is fragmented: idle capacity nobody asks for is not lost to anyone.

The raw ledger usage is checked, not the holds a queue pass builds: a GPU that is free but
held for a higher tier is still usable by that tier's waiting job.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from grid_scheduler.engine.feasibility import Unit, compute_checks
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.model import JobSpec, Policy

BoolArray = npt.NDArray[np.bool_]


def usable_pools(index: GridIndex, usage: Usage, policy: Policy, waiting: Iterable[JobSpec]) -> BoolArray:
    """Pools where at least one of the ``waiting`` jobs could start now."""
    usable = np.zeros(len(index.pool_ids), dtype=np.bool_)
    seen: set[int] = set()
    for spec in waiting:
        if id(spec) in seen:  # a queue of equal jobs shares one spec object (workload.py)
            continue
        seen.add(id(spec))
        checks = compute_checks(index, usage, spec, policy)
        if checks.unit is Unit.SPLIT:
            usable |= checks.pool_eligible & (checks.pool_free_gpus > 0)
        else:
            usable |= checks.pool_feasible
        if usable.all():
            break
    return usable


def fragmented_gpus(index: GridIndex, usage: Usage, policy: Policy, waiting: Iterable[JobSpec]) -> int:
    """Free GPUs in pools where none of the ``waiting`` jobs could start (0 when none wait)."""
    specs = list(waiting)
    if not specs:
        return 0
    free = np.where(usage.pool_drained, 0, np.maximum(index.pool_healthy_gpus - usage.pool_used_gpus, 0))
    usable = usable_pools(index, usage, policy, specs)
    return int(free[~usable].sum())
