"""The online engine's replica loop as it was before the incremental slot mask (engine/online.py
``_place_replicas``, main at a21d96f), and the node assignment of unconstrained GPUs before whole
domains were filled in one pass, verbatim: the references the current code must equal, decision
for decision (tests/test_engine_fast_paths.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from grid_scheduler.engine.feasibility import Checks, demand_rows
from grid_scheduler.engine.index import GridIndex
from grid_scheduler.engine.online import _EPS, Decision, build_placement
from grid_scheduler.engine.scoring import PoolCosts
from grid_scheduler.engine.topology import (
    BoolArray,
    IntArray,
    NodeGpus,
    PoolShape,
    _fill_domain,
    domain_free_gpus,
    usable_gpus,
    whole_free_domains,
)
from grid_scheduler.model import GpuTopology, JobSpec, Policy


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


def assign_unconstrained_reference(shape: PoolShape, node_free: IntArray, gpus: int) -> NodeGpus | None:
    """engine/topology.py ``assign_nodes`` for GPUs with no topology request, with
    ``_assign_unconstrained`` as it was before whole free domains were filled in one pass (main at
    e23ab7e), verbatim: one ``_fill_domain`` per domain opened."""
    domain_free = domain_free_gpus(shape, node_free)
    if gpus <= 0 or usable_gpus(shape, node_free, GpuTopology(), domain_free) < gpus:
        return None
    free = np.asarray(node_free, dtype=np.int64).copy()
    taken = np.zeros(len(free), dtype=np.int64)
    domain_free = domain_free.copy()
    whole = whole_free_domains(shape, domain_free)
    _assign_unconstrained_reference(shape, free, taken, domain_free, whole, gpus)
    nodes = np.flatnonzero(taken)
    return tuple(zip(nodes.tolist(), taken[nodes].tolist(), strict=True))


def _assign_unconstrained_reference(
    shape: PoolShape, free: IntArray, taken: IntArray, domain_free: IntArray, whole: BoolArray, gpus: int
) -> None:
    broken = np.flatnonzero(~whole & (domain_free > 0))
    holding = broken[domain_free[broken] >= gpus]
    if len(holding):  # best fit: one broken domain with least to spare
        d = int(holding[np.argmin(domain_free[holding])])
        _fill_domain(shape, free, taken, d, gpus)
        return
    remaining = gpus
    order = [*broken[np.argsort(domain_free[broken], kind="stable")], *np.flatnonzero(whole)]
    for d in order:
        take = min(remaining, int(domain_free[d]))
        _fill_domain(shape, free, taken, int(d), take)
        remaining -= take
        if remaining == 0:
            return
