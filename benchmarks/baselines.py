"""What an operator would otherwise run: first-fit, best-fit, Kubernetes-style spread and pack.

Each baseline takes the pending jobs in the same order as the greedy warm start (highest
priority first, then submission order, as a Kubernetes priority queue would) and places
each job on one pool chosen by its rule, among the pools that pass the engine's own hard
constraints (``compute_checks``: residency, GPU type, workload, health, latency SLO,
free GPUs, site power), re-evaluated after every placement. Training jobs are gangs in
one pool, as in the batch optimizer. Rules, per pool ``p`` in site ``s``:

- first-fit: the first feasible pool in grid order;
- best-fit: the pool left with the fewest free GPUs after placing (tightest fit);
- LeastAllocated (spread, Kubernetes' default scoring): the highest mean, over GPUs and
  site power, of ``(capacity - requested - used) / capacity``;
- MostAllocated (pack, the bin-packing strategy): the highest mean of ``(used + requested) / capacity``.

An inference deployment is placed replica by replica: first, for each demand endpoint not
yet served, a replica at a pool within its SLO chosen by the rule; then the remaining
replicas on any eligible pool, by the rule. If any replica cannot be placed, or an endpoint
stays unserved, the whole deployment is rolled back (all-or-nothing, like a gang).
Ties go to the pool listed first, so every baseline is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grid_scheduler.engine.batch import as_modelled
from grid_scheduler.engine.feasibility import compute_checks, latency_coverage
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.engine.online import build_placement
from grid_scheduler.engine.scoring import pool_costs
from grid_scheduler.model import JobSpec, Placement, Policy

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PoolState:
    """What a rule sees: per pool free GPUs and capacity, per pool's site headroom and envelope."""

    free: IntArray
    capacity: IntArray
    headroom_kw: FloatArray  # of the pool's site
    envelope_kw: FloatArray  # of the pool's site
    need_gpus: int
    need_kw: FloatArray  # per pool


# A rule scores candidate pools; the highest score wins (ties: first in grid order).
Rule = Callable[[PoolState, IntArray], FloatArray]


def first_fit(state: PoolState, pools: IntArray) -> FloatArray:
    return np.zeros(len(pools), dtype=np.float64)


def best_fit(state: PoolState, pools: IntArray) -> FloatArray:
    return np.asarray(-(state.free[pools] - state.need_gpus), dtype=np.float64)


def _free_shares(state: PoolState, pools: IntArray) -> FloatArray:
    gpu = (state.free[pools] - state.need_gpus) / np.maximum(state.capacity[pools], 1)
    power = (state.headroom_kw[pools] - state.need_kw[pools]) / np.maximum(state.envelope_kw[pools], 1e-9)
    return np.asarray((gpu + power) / 2.0, dtype=np.float64)


def least_allocated(state: PoolState, pools: IntArray) -> FloatArray:
    return _free_shares(state, pools)


def most_allocated(state: PoolState, pools: IntArray) -> FloatArray:
    return np.asarray(1.0 - _free_shares(state, pools), dtype=np.float64)


BASELINES: dict[str, Rule] = {
    "first-fit": first_fit,
    "best-fit": best_fit,
    "least-allocated": least_allocated,
    "most-allocated": most_allocated,
}


def place_all(
    index: GridIndex, usage: Usage, jobs: Sequence[tuple[str, JobSpec]], policy: Policy, rule: Rule
) -> dict[str, Placement]:
    running = Usage(usage.pool_used_gpus.copy(), usage.site_used_kw.copy(), usage.pool_drained.copy())
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][1].priority)
    placements: dict[str, Placement] = {}
    for i in order:
        job_id, spec = jobs[i]
        placement = place_one(index, running, as_modelled(spec), policy, rule)
        if placement is None:
            continue
        placements[job_id] = placement
        for a in placement.assignments:
            p = index.pool_index[a.pool_id]
            running.pool_used_gpus[p] += a.gpus
            running.site_used_kw[index.pool_site[p]] += a.power_kw
    return placements


def place_one(index: GridIndex, usage: Usage, spec: JobSpec, policy: Policy, rule: Rule) -> Placement | None:
    checks = compute_checks(index, usage, spec, policy)
    costs = pool_costs(index, checks, spec, policy)  # only to report the score terms of the placement
    site = index.pool_site
    free = checks.pool_free_gpus.copy()
    headroom = checks.site_headroom_kw.copy()
    capacity = np.maximum(index.pool_healthy_gpus, 1)
    envelope = index.site_envelope_kw[site]

    def pick(allowed: BoolArray) -> int | None:
        power_ok = headroom[site] + 1e-6 >= checks.pool_need_kw
        ok = allowed & checks.pool_eligible & (free >= checks.need_gpus) & power_ok
        pools = np.flatnonzero(ok)
        if pools.size == 0:
            return None
        state = PoolState(free, capacity, headroom[site], envelope, checks.need_gpus, checks.pool_need_kw)
        scores = rule(state, pools)
        return int(pools[int(np.argmax(scores))])  # argmax keeps the first of equal scores

    def take(p: int) -> None:
        free[p] -= checks.need_gpus
        headroom[site[p]] -= checks.pool_need_kw[p]

    everywhere = np.ones(len(free), dtype=np.bool_)
    if spec.inference is None:
        p = pick(everywhere)
        if p is None:
            return None
        return build_placement(index, spec, policy, costs, [(p, checks.need_gpus)])
    cover = latency_coverage(index, spec)  # [endpoint, site]
    served = np.zeros(len(cover), dtype=np.bool_)
    chosen: dict[int, int] = {}
    for _ in range(spec.inference.replicas):
        unserved = np.flatnonzero(~served)
        allowed = cover[unserved[0]][site] if unserved.size else everywhere
        p = pick(allowed)
        if p is None:
            return None  # nothing was committed: the caller's usage is untouched
        take(p)
        chosen[p] = chosen.get(p, 0) + 1
        served |= cover[:, site[p]]
    if not served.all():
        return None
    return build_placement(index, spec, policy, costs, [(p, n * checks.need_gpus) for p, n in sorted(chosen.items())])
