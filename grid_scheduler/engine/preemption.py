"""Preemption: the cheapest set of running jobs to evict so that a waiting job fits.

Only running jobs that are preemptible and of strictly lower priority than the waiting
job may be chosen, and, by quota reclaim (``engine/quota.py``), preemptible jobs of any
priority of a cohort peer that borrows in a group where the job's tenant is below its nominal
quota. What a victim loses is ``victim_cost``: (priority + 1) x GPUs x hours
it has already run (at least one minute, so a job that has just started still counts its
GPUs; +1 on priority so priority-0 work is not free). Among sets of equal cost, fewer
victims win.

For a gang job the choice is exact (CP-SAT): pick one target pool and victims whose release
frees enough GPUs in that pool and enough power at its site. For a split training job or
an inference deployment, where "fits" means the online path's own search succeeds, victims
are added cheapest first until ``decide`` succeeds, then any victim not needed is dropped
(most expensive first): minimal, not guaranteed cheapest. Every answer is checked by
re-running ``decide`` on the usage with the victims released; no victims are returned
when even evicting every eligible victim would not make room.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from ortools.sat.python import cp_model

from grid_scheduler.engine.feasibility import Unit, compute_checks
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.engine.online import decide
from grid_scheduler.engine.priority import can_preempt
from grid_scheduler.model import JobSpec, Placement, Policy

Running = tuple[str, JobSpec, Placement, float]  # job id, spec, placement, started at (s)
COST_SCALE = 1000  # victim cost x1000 -> integer for CP-SAT
POWER_SCALE = 1_000_000  # kW -> mW; freed power rounded down, deficits up
MIN_RUN_HOURS = 1.0 / 60.0


def victim_cost(spec: JobSpec, placement: Placement, started_at_s: float, now_s: float) -> float:
    hours = max((now_s - started_at_s) / 3600.0, MIN_RUN_HOURS)
    return (spec.priority + 1) * placement.gpus * hours


def eligible_victims(
    job: JobSpec, running: Sequence[Running], reclaimable: frozenset[str] = frozenset()
) -> list[Running]:
    """Lower tiers (``can_preempt``), and borrowers the job's tenant may reclaim from (``reclaimable``,
    by ``QuotaRules.may_reclaim``)."""
    return [r for r in running if can_preempt(job, r[1]) or (r[0] in reclaimable and r[1].preemptible)]


def release(
    index: GridIndex, usage: Usage, placements: Sequence[Placement], tenants: Sequence[str] | None = None
) -> Usage:
    """``usage`` with the GPUs and power of ``placements`` handed back (and, given the tenant of
    each, their quota usage too: evicting a borrower frees its cohort's quota)."""
    used = usage.pool_used_gpus.copy()
    kw = usage.site_used_kw.copy()
    by_tenant = dict(usage.tenant_pool_gpus)
    freed_nodes: dict[int, list[tuple[int, int]]] = {}  # pool -> (node, GPUs) the victims free there
    for n, placement in enumerate(placements):
        row = None
        if tenants is not None and tenants[n] in by_tenant:
            row = by_tenant[tenants[n]] = by_tenant[tenants[n]].copy()
        for a in placement.assignments:
            p = index.pool_index[a.pool_id]
            used[p] -= a.gpus
            kw[index.pool_site[p]] -= a.power_kw
            if usage.node_used_gpus and a.nodes:  # the victim's nodes free up too
                freed_nodes.setdefault(p, []).extend(a.nodes)
            if row is not None:
                row[p] = max(int(row[p]) - a.gpus, 0)
    node_used = list(usage.node_used_gpus)
    for p, freed in freed_nodes.items():
        # One pass per pool: every candidate at once is released to test whether eviction can
        # help at all, hundreds of gangs of up to ~1,000 nodes each.
        at, gpus = np.array(freed, dtype=np.int64).T
        left = node_used[p].astype(np.int64)
        np.subtract.at(left, at, gpus)
        node_used[p] = np.maximum(left, 0).astype(node_used[p].dtype)
    if not freed_nodes:  # no node moved: share the node arrays, and the view already built on them
        return Usage(np.maximum(used, 0), np.maximum(kw, 0.0), usage.pool_drained.copy(), by_tenant,
                     usage.node_used_gpus, usage.node_out, usage.node_view_cache)
    nodes = tuple(node_used)
    return Usage(np.maximum(used, 0), np.maximum(kw, 0.0), usage.pool_drained.copy(), by_tenant,
                 nodes, usage.node_out, usage.node_view_moved(index, nodes, freed_nodes))


def fits(index: GridIndex, usage: Usage, job: JobSpec, policy: Policy, victims: Sequence[Running]) -> bool:
    freed = release(index, usage, [v[2] for v in victims], [v[1].tenant for v in victims])
    return decide(index, freed, job, policy).placement is not None


def choose_victims(
    index: GridIndex,
    usage: Usage,
    job: JobSpec,
    running: Sequence[Running],
    policy: Policy,
    now_s: float,
    *,
    time_limit_s: float = 2.0,
    reclaimable: frozenset[str] = frozenset(),
) -> list[str] | None:
    """Ids of the jobs to evict (``[]`` when the job fits already), or None when no
    eviction of lower-priority preemptible jobs (or of borrowers in ``reclaimable``) makes room."""
    if decide(index, usage, job, policy).placement is not None:
        return []
    candidates = eligible_victims(job, running, reclaimable)
    if not candidates or not fits(index, usage, job, policy, candidates):
        return None
    costs = {r[0]: victim_cost(r[1], r[2], r[3], now_s) for r in candidates}
    chosen: list[Running] | None = None
    # The exact gang model counts GPUs and power only: with reclaim, quota decides too, so search.
    if compute_checks(index, usage, job, policy).unit is Unit.GANG and not reclaimable:
        chosen = _exact_gang(index, usage, job, policy, candidates, costs, time_limit_s)
        if chosen is not None and not fits(index, usage, job, policy, chosen):
            chosen = None  # rounding disagreed with the engine: fall back to the search below
    if chosen is None:
        chosen = _add_then_prune(index, usage, job, policy, candidates, costs)
    return sorted(r[0] for r in chosen)


def _add_then_prune(
    index: GridIndex, usage: Usage, job: JobSpec, policy: Policy, candidates: list[Running], costs: dict[str, float]
) -> list[Running]:
    order = sorted(candidates, key=lambda r: (costs[r[0]], r[0]))
    chosen: list[Running] = []
    for victim in order:
        chosen.append(victim)
        if fits(index, usage, job, policy, chosen):
            break
    for victim in sorted(chosen, key=lambda r: (-costs[r[0]], r[0])):
        rest = [v for v in chosen if v[0] != victim[0]]
        if fits(index, usage, job, policy, rest):
            chosen = rest
    return chosen


def _exact_gang(
    index: GridIndex,
    usage: Usage,
    job: JobSpec,
    policy: Policy,
    candidates: list[Running],
    costs: dict[str, float],
    time_limit_s: float,
) -> list[Running] | None:
    """min cost victims s.t. for one chosen pool p: freed GPUs in p >= GPU deficit of p and
    freed power at p's site >= power deficit of p (deficits as ``compute_checks`` sees them)."""
    checks = compute_checks(index, usage, job, policy)
    freed_gpus: dict[int, dict[int, int]] = defaultdict(dict)  # pool -> victim -> GPUs
    freed_mw: dict[int, dict[int, int]] = defaultdict(dict)  # site -> victim -> mW
    for v, (_, _, placement, _) in enumerate(candidates):
        for a in placement.assignments:
            p = index.pool_index[a.pool_id]
            s = int(index.pool_site[p])
            freed_gpus[p][v] = freed_gpus[p].get(v, 0) + a.gpus
            freed_mw[s][v] = freed_mw[s].get(v, 0) + math.floor(a.power_kw * POWER_SCALE)
    model = cp_model.CpModel()
    x = [model.new_bool_var(f"x_{v}") for v in range(len(candidates))]
    targets = []
    for p in (int(i) for i in np.flatnonzero(checks.pool_eligible)):
        s = int(index.pool_site[p])
        gpu_deficit = checks.need_gpus - int(index.pool_healthy_gpus[p] - usage.pool_used_gpus[p])
        power_deficit = math.ceil((float(checks.pool_need_kw[p]) - float(checks.site_headroom_kw[s]) - 1e-6)
                                  * POWER_SCALE)
        gpus_here, mw_here = freed_gpus.get(p, {}), freed_mw.get(s, {})
        if sum(gpus_here.values()) < gpu_deficit or sum(mw_here.values()) < power_deficit:
            continue  # even every eligible victim here would not do
        z = model.new_bool_var(f"z_{p}")
        if gpu_deficit > 0:
            model.add(sum(g * x[v] for v, g in gpus_here.items()) >= gpu_deficit).only_enforce_if(z)
        if power_deficit > 0:
            model.add(sum(w * x[v] for v, w in mw_here.items()) >= power_deficit).only_enforce_if(z)
        targets.append(z)
    if not targets:
        return None
    model.add_exactly_one(targets)
    # +1 per victim: among equal losses, evict fewer jobs.
    model.minimize(sum((round(costs[r[0]] * COST_SCALE) + 1) * x[v] for v, r in enumerate(candidates)))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 1  # tiny model; one worker keeps the answer deterministic
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return [r for v, r in enumerate(candidates) if solver.value(x[v])]
