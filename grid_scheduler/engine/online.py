"""The online path: place one job now, on a snapshot of the ledger.

Filter with the feasibility arrays, score with the cost arrays, pick the cheapest.
Ties go to the pool listed first in the grid, so the same input always gives the
same decision.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from grid_scheduler.engine.feasibility import Checks, Unit, compute_checks, demand_rows
from grid_scheduler.engine.index import GridIndex, IntArray, Usage
from grid_scheduler.engine.preference import Level, preference_levels
from grid_scheduler.engine.scoring import PoolCosts, pool_costs
from grid_scheduler.engine.topology import NodeGpus, NodeView, assign_job_nodes
from grid_scheduler.model import Assignment, JobSpec, Placement, Policy
from grid_scheduler.model.placement import EndpointLatency

_EPS = 1e-9


@dataclass(frozen=True)
class Decision:
    """A placement or none, with everything needed to explain it."""

    spec: JobSpec
    checks: Checks
    costs: PoolCosts
    placement: Placement | None
    # Inference: demand endpoints the chosen replicas could not serve within the SLO.
    uncovered_endpoints: tuple[str, ...] = ()
    # The job's placement preference, and how many of its entries this decision reached: the
    # entries before the last reached were skipped (nothing there could take the job).
    preference: tuple[Level, ...] = ()
    preference_reached: int = 0


def decide(
    index: GridIndex,
    usage: Usage,
    spec: JobSpec,
    policy: Policy,
    capacity_gpus: IntArray | None = None,
) -> Decision:
    """The cheapest placement now; with a placement preference, within its first entry that can
    take the job (entries accumulate: the second try may use the first two entries' sites)."""
    checks = compute_checks(index, usage, spec, policy, capacity_gpus)
    levels = preference_levels(index, spec, policy)
    if not levels:
        return _decide(index, spec, policy, checks)
    if len(levels) == 1:  # compute_checks has fenced the job in already
        return replace(_decide(index, spec, policy, checks), preference=levels, preference_reached=len(levels))
    reached = np.zeros(len(index.site_ids), dtype=np.bool_)
    decision = None
    for i, level in enumerate(levels):
        grown = reached | level.sites
        if i > 0 and np.array_equal(grown, reached):
            continue  # an entry that adds no site cannot place what the ones before could not
        reached = grown
        decision = _decide(index, spec, policy, replace(checks, site_preference_ok=reached))
        if decision.placement is not None:
            return replace(decision, preference=levels, preference_reached=i + 1)
    assert decision is not None
    return replace(decision, preference=levels, preference_reached=len(levels))


def _decide(index: GridIndex, spec: JobSpec, policy: Policy, checks: Checks) -> Decision:
    costs = pool_costs(index, checks, spec, policy)
    if checks.unit is Unit.REPLICA:
        return _place_replicas(index, spec, policy, checks, costs)
    pools_gpus = _place_gang(checks, costs)
    if pools_gpus is None and checks.unit is Unit.SPLIT:
        pools_gpus = _place_split(index, checks, costs)
    placement = build_placement(index, spec, policy, costs, pools_gpus, checks.nodes) if pools_gpus else None
    return Decision(spec, checks, costs, placement)


def could_ever_place(index: GridIndex, spec: JobSpec, policy: Policy) -> Decision:
    """The decision on an empty grid with every node healthy: if this fails, waiting is pointless."""
    return decide(index, Usage.empty(index), spec, policy, capacity_gpus=index.pool_total_gpus)


def _place_gang(checks: Checks, costs: PoolCosts) -> list[tuple[int, int]] | None:
    feasible = checks.pool_feasible
    if not feasible.any():
        return None
    pool = int(np.argmin(np.where(feasible, costs.total, np.inf)))
    return [(pool, checks.need_gpus)]


def _place_split(index: GridIndex, checks: Checks, costs: PoolCosts) -> list[tuple[int, int]] | None:
    """Fill the cheapest pools of one site; the site whose fill costs least wins."""
    eligible = checks.pool_eligible & (checks.pool_free_gpus > 0)
    free = np.where(eligible, checks.pool_free_gpus, 0)
    site_free = np.bincount(checks.pool_site, weights=free, minlength=len(index.site_ids))
    best: tuple[float, list[tuple[int, int]]] | None = None
    total_cost = costs.total
    bounds = index.site_pool_bounds
    for site in np.flatnonzero(site_free >= checks.need_gpus):
        start = int(bounds[site])
        pools = start + np.flatnonzero(eligible[start : bounds[site + 1]])
        pools = pools[np.argsort(total_cost[pools], kind="stable")]
        remaining, need_w, fill = checks.need_gpus, 0, []
        quota_left = checks.group_headroom()  # the tenant's quota bounds a group's pools together
        for pool in pools:
            group = checks.quota_group_of(int(pool))
            take = int(min(remaining, free[pool], quota_left.get(group, remaining)))
            if checks.pool_unit_gpus is not None:  # whole domains or slices: the pool's share in whole steps
                take -= take % int(checks.pool_unit_gpus[pool])
            if take <= 0:
                continue
            if group >= 0:
                quota_left[group] -= take
            fill.append((int(pool), take))
            # Whole watts per assignment, summed: what the ledger will reserve (build_placement's power_kw).
            need_w += round(take * float(index.pool_kw_per_gpu[pool]) * 1000.0)
            remaining -= take
            if remaining == 0:
                break
        if remaining > 0 or need_w > checks.site_headroom_w[site]:
            continue
        cost = sum(total_cost[p] * g for p, g in fill) / checks.need_gpus
        if best is None or cost < best[0] - _EPS:
            best = (cost, fill)
    return best[1] if best else None


def _place_replicas(
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
    # Which candidates have a slot: kept from one replica to the next, recomputed only where the
    # last pick changed it (its site's headroom and its own free GPUs); quota groups that ran
    # out are masked again on every step, as before.
    slot_ok = (free >= per_replica) & (headroom[site] + 1e-6 >= need_kw)
    any_uncovered = bool(uncovered.any())
    for _ in range(spec.inference.replicas):
        for group, left in quota_left.items():
            if left < per_replica:
                slot_ok &= candidate_group != group
        # First cover the demand no replica serves yet; then spread, where a replica carries most.
        gain = ((weights * uncovered) @ cover_at if any_uncovered
                else (covered_weight / (replicas_at_site + 1.0))[site])
        gain = np.where(slot_ok, gain, 0.0)
        best_gain = gain.max(initial=0.0)
        if best_gain <= 0:
            break
        # slot_ok again: with a best gain under _EPS, a candidate without a slot (gain 0) would tie.
        c = int(np.argmin(np.where(slot_ok & (gain >= best_gain - _EPS), total_cost, np.inf)))
        chosen[int(candidates[c])] += 1
        s = site[c]
        replicas_at_site[s] += 1
        free[c] -= per_replica
        if candidate_group[c] >= 0:
            quota_left[int(candidate_group[c])] -= per_replica
        headroom[s] -= need_kw[c]
        at = np.flatnonzero(site == s)
        slot_ok[at] = (free[at] >= per_replica) & (headroom[s] + 1e-6 >= need_kw[at])
        if any_uncovered:
            uncovered &= ~cover_at[:, c]
            any_uncovered = bool(uncovered.any())
    placed = sum(chosen.values())
    uncovered_ids = tuple(d.endpoint for d, u in zip(spec.inference.demand, uncovered, strict=True) if u)
    if placed < spec.inference.replicas or uncovered_ids:
        return Decision(spec, checks, costs, None, uncovered_ids)
    pools_gpus = [(pool, n * per_replica) for pool, n in sorted(chosen.items())]
    return Decision(spec, checks, costs, build_placement(index, spec, policy, costs, pools_gpus, checks.nodes))


def replica_gpus(spec: JobSpec) -> int | None:
    """GPUs per replica of an inference deployment (None for training): the unit a node failure costs."""
    return spec.gpus.count if spec.inference is not None else None


def _nodes(index: GridIndex, spec: JobSpec, nodes: NodeView | None, pool: int, gpus: int) -> NodeGpus:
    if nodes is None:
        return ()
    shape, free = index.pool_shapes[pool], nodes.node_free[pool]
    assigned = assign_job_nodes(shape, free, gpus, spec.topology, replica_gpus(spec), nodes.domain_free(pool))
    # The checks counted these GPUs free on these nodes, so this holds; if the ledger disagreed,
    # a reservation without node detail is still counted at pool level.
    return assigned if assigned is not None else ()


def with_nodes(index: GridIndex, nodes: NodeView, spec: JobSpec, placement: Placement) -> Placement | None:
    """``placement`` (made without node detail, e.g. by the batch solver) with the nodes each
    assignment takes now, or None when some pool's nodes no longer hold it."""
    assignments = []
    for a in placement.assignments:
        p = index.pool_index[a.pool_id]
        assigned = assign_job_nodes(index.pool_shapes[p], nodes.node_free[p], a.gpus, spec.topology,
                                    replica_gpus(spec), nodes.domain_free(p))
        if assigned is None:
            return None
        assignments.append(a.model_copy(update={"nodes": assigned}))
    return placement.model_copy(update={"assignments": assignments})


def build_placement(
    index: GridIndex,
    spec: JobSpec,
    policy: Policy,
    costs: PoolCosts,
    pools_gpus: list[tuple[int, int]],
    nodes: NodeView | None = None,
) -> Placement:
    """The placement of ``pools_gpus``; with ``nodes`` (the ledger's free GPUs per node), each
    assignment also says which nodes its GPUs sit on (engine/topology.py assigns them)."""
    grid = index.grid
    assignments = []
    carbon_kg_per_hour = 0.0
    cost_per_hour = 0.0
    # Engine outputs are validated as built, cheaper with pydantic 2.14 than model_construct's Python
    # loop for these small models (benchmarks/README.md), except an Assignment: validating its
    # node list costs ~0.4 us a node (a 4,096-GPU gang holds 1,024), so it is constructed.
    for pool, gpus in pools_gpus:
        site = grid.sites[int(index.pool_site[pool])]
        power_kw = gpus * float(index.pool_kw_per_gpu[pool])
        assignments.append(
            Assignment.model_construct(
                site_id=site.id,
                pool_id=index.pool_ids[pool],
                gpu_type=index.pool_gpu_type[pool],
                gpus=gpus,
                power_kw=power_kw,
                nodes=_nodes(index, spec, nodes, pool, gpus),
            )
        )
        carbon_kg_per_hour += power_kw * site.carbon_g_per_kwh / 1000.0
        cost_per_hour += power_kw / 1000.0 * site.energy_price_per_mwh
    endpoint_latencies: list[EndpointLatency] = []
    latency_term = None
    if spec.inference is not None:
        rows, weights = demand_rows(index, spec)
        sites = np.array(sorted({int(index.pool_site[p]) for p, _ in pools_gpus}), dtype=np.int64)
        latency = index.topology.endpoint_site_latency_ms[rows][:, sites]
        nearest = latency.argmin(axis=1)
        for d, demand in enumerate(spec.inference.demand):
            endpoint_latencies.append(
                EndpointLatency(
                    endpoint_id=demand.endpoint,
                    site_id=index.site_ids[sites[nearest[d]]],
                    latency_ms=float(latency[d, nearest[d]]),
                )
            )
        # The latency term of a deployment is what its users see: each endpoint to its nearest replica.
        served = np.minimum(latency.min(axis=1) / spec.inference.latency_slo_ms, 1.0)
        latency_term = policy.weights.latency * float(weights @ served / weights.sum())
    return Placement(
        assignments=assignments,
        score=costs.terms_at([p for p, _ in pools_gpus], [g for _, g in pools_gpus], latency_term),
        endpoint_latencies=endpoint_latencies,
        carbon_kg_per_hour=carbon_kg_per_hour,
        energy_cost_per_hour=cost_per_hour,
    )
