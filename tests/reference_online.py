"""The online engine's replica loop as it was before the incremental slot mask (engine/online.py
``_place_replicas``, main at a21d96f), verbatim: the reference the current loop must equal,
decision for decision (tests/test_engine_fast_paths.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from grid_scheduler.engine.feasibility import Checks, demand_rows
from grid_scheduler.engine.index import GridIndex
from grid_scheduler.engine.online import _EPS, Decision, build_placement
from grid_scheduler.engine.scoring import PoolCosts
from grid_scheduler.model import JobSpec, Policy


def place_replicas_reference(
    index: GridIndex, spec: JobSpec, policy: Policy, checks: Checks, costs: PoolCosts
) -> Decision:
    """Greedy covering: each replica goes where it serves the most unserved demand, then
    extra replicas go where each would carry the most demand; ties to the cheaper pool."""
    assert spec.inference is not None
    assert checks.demand_cover is not None
    cover = checks.demand_cover  # [demand, site]
    _, weights = demand_rows(index, spec)
    per_replica = checks.need_gpus
    covered_weight = weights @ cover  # demand each site can serve
    # Only pools that could take a replica now, at sites that serve some demand, can be picked;
    # working on those alone keeps each replica's step small on a large grid. Candidates stay
    # in grid order, so ties still go to the pool listed first.
    candidates = np.flatnonzero(
        checks.pool_eligible & (checks.pool_free_gpus >= per_replica) & (covered_weight[checks.pool_site] > 0)
    )
    site = checks.pool_site[candidates]
    free = checks.pool_free_gpus[candidates].copy()
    headroom = checks.site_headroom_kw.copy()
    need_kw = checks.pool_need_kw[candidates]
    total_cost = costs.total[candidates]
    cover_at = cover[:, site]  # [demand, candidate]
    uncovered = np.ones(len(weights), dtype=np.bool_)
    replicas_at_site = np.zeros(len(headroom), dtype=np.float64)
    chosen: Counter[int] = Counter()
    quota_left = checks.group_headroom()
    candidate_group = np.full(len(candidates), -1, dtype=np.int64)
    if checks.pool_quota_group is not None:
        groups = checks.pool_quota_group[candidates]
        candidate_group = np.where(np.isin(groups, list(quota_left)), groups, -1)
    for _ in range(spec.inference.replicas):
        slot_ok = (free >= per_replica) & (headroom[site] + 1e-6 >= need_kw)
        for group, left in quota_left.items():
            if left < per_replica:
                slot_ok &= candidate_group != group
        # First cover the demand no replica serves yet; then spread, where a replica carries most.
        spread = (covered_weight / (replicas_at_site + 1.0))[site]
        gain = (weights * uncovered) @ cover_at if uncovered.any() else spread
        gain = np.where(slot_ok, gain, 0.0)
        best_gain = gain.max(initial=0.0)
        if best_gain <= 0:
            break
        # slot_ok again: with a best gain under _EPS, a candidate without a slot (gain 0) would tie.
        c = int(np.argmin(np.where(slot_ok & (gain >= best_gain - _EPS), total_cost, np.inf)))
        chosen[int(candidates[c])] += 1
        replicas_at_site[site[c]] += 1
        free[c] -= per_replica
        if candidate_group[c] >= 0:
            quota_left[int(candidate_group[c])] -= per_replica
        headroom[site[c]] -= need_kw[c]
        uncovered &= ~cover_at[:, c]
    placed = sum(chosen.values())
    uncovered_ids = tuple(d.endpoint for d, u in zip(spec.inference.demand, uncovered, strict=True) if u)
    if placed < spec.inference.replicas or uncovered_ids:
        return Decision(spec, checks, costs, None, uncovered_ids)
    pools_gpus = [(pool, n * per_replica) for pool, n in sorted(chosen.items())]
    return Decision(spec, checks, costs, build_placement(index, spec, policy, costs, pools_gpus, checks.nodes))
