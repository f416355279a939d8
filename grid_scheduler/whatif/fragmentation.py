"""Fragmentation while work waits: free GPUs that no waiting job could start on.

At a sample, a pool's free GPUs (healthy, not in use, not drained) are *fragmented* when jobs
wait and none of them could start a slot there now: too few free GPUs for its gang or for one
replica, the wrong GPU type or workload, outside its residency or latency SLO, or no power
headroom at the site (the engine's own ``pool_feasible`` for that job). A job that may split
across pools (non-gang training) can use any free GPU of a pool it is eligible for. With no
job waiting nothing is fragmented: idle capacity nobody asks for is not lost to anyone.

Domain constraints count (topology inside pools, issue 11): in a pool where a waiting job asking
for whole interconnect domains or slices could start, only the GPUs its mode can use there are
usable by it (whole free domains; whole slices per domain); the free GPUs of broken domains no
waiting job can use stay fragmented. ``domain_fragmented_gpus`` is the engine's own metric
(engine/topology.py): free GPUs in partly used domains, whether or not anything waits.

The raw ledger usage is checked, not the holds a queue pass builds: a GPU that is free but
held for a higher tier is still usable by that tier's waiting job.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from grid_scheduler.engine.feasibility import Unit, compute_checks
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.model import JobSpec, Policy, TopologyMode

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def usable_gpus(index: GridIndex, usage: Usage, policy: Policy, waiting: Iterable[JobSpec]) -> IntArray:
    """Per pool, the most free GPUs one of the ``waiting`` jobs could use there now (0 where none could start)."""
    free = _free(index, usage)
    usable = np.zeros(len(index.pool_ids), dtype=np.int64)
    seen: set[int] = set()
    for spec in waiting:
        if id(spec) in seen:  # a queue of equal jobs shares one spec object (workload.py)
            continue
        seen.add(id(spec))
        checks = compute_checks(index, usage, spec, policy)
        starts = (checks.pool_eligible & (checks.pool_free_gpus > 0) if checks.unit is Unit.SPLIT
                  else checks.pool_feasible)
        if spec.topology.mode is TopologyMode.NONE:
            can_use = free
        else:  # compute_checks counted only the GPUs its mode can use (whole domains, whole slices)
            view = checks.domain_view
            can_use = checks.pool_free_gpus if view is None else view.pool_usable_gpus(
                spec.topology, np.flatnonzero(starts))
        np.maximum(usable, np.where(starts, np.minimum(can_use, free), 0), out=usable)
        if np.array_equal(usable, free):
            break
    return usable


def usable_pools(index: GridIndex, usage: Usage, policy: Policy, waiting: Iterable[JobSpec]) -> BoolArray:
    """Pools where at least one of the ``waiting`` jobs could start now."""
    return np.asarray(usable_gpus(index, usage, policy, waiting) > 0)


def _free(index: GridIndex, usage: Usage) -> IntArray:
    free = np.where(usage.pool_drained, 0, np.maximum(index.pool_healthy_gpus - usage.pool_used_gpus, 0))
    nodes = usage.nodes(index)
    if nodes is not None:  # a node out of service has no free GPUs
        free = np.minimum(free, nodes.pool_free_gpus)
    return np.asarray(free, dtype=np.int64)


def fragmented_gpus(index: GridIndex, usage: Usage, policy: Policy, waiting: Iterable[JobSpec]) -> int:
    """Free GPUs no waiting job could use (0 when none wait): in pools where none could start,
    and, in a pool where only whole-domain or slice jobs could, the free GPUs their modes cannot use."""
    specs = list(waiting)
    if not specs:
        return 0
    return int((_free(index, usage) - usable_gpus(index, usage, policy, specs)).sum())


def domain_fragmented_gpus(index: GridIndex, usage: Usage) -> int:
    """Free GPUs in partly used interconnect domains (the engine's metric; 0 without node detail)."""
    nodes = usage.nodes(index)
    return 0 if nodes is None else int(nodes.pool_fragmented_gpus.sum())
