"""The batch's warm start at scale: the online decision per class, placing counts, not jobs.

The exact warm start (``batch._greedy``) calls ``decide`` once per job (39k calls at 100k jobs,
~10 s). Here a class's jobs are placed together, class after class, the most valuable per GPU
first (W is GPU-hours: the longest jobs first; queue order among equals):

- a gang class (training, single-replica inference) fills its cheapest feasible pool with as many
  jobs as its free GPUs and its site's power headroom take, then the next cheapest, ... The pool a
  job fills gets cheaper (the packing term falls), so this is what ``decide`` would do job after
  job for the class alone. Costs are the class's own (``unit.total``) with the packing term
  recomputed on the running usage, power in whole watts as the online check rounds it.
- a replica class (several replicas) asks ``online._place_replicas`` once, on the running usage,
  and repeats that deployment as many times as its pools and sites still take it, then asks again.

Every placement is checked against the running usage (holds included, ``Holds.overlay``), so
the answer is feasible; it is not the queue order, so it differs from the exact warm start (at
100k jobs x 2,000 pools its W is higher: benchmarks/README.md). Policies with quotas or with several
preference levels keep the exact warm start (``batch._greedy`` chooses).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from grid_scheduler.engine.batch_arrays import packing_term
from grid_scheduler.engine.feasibility import watts
from grid_scheduler.engine.index import FloatArray, GridIndex, IntArray, Usage
from grid_scheduler.engine.online import _place_replicas
from grid_scheduler.engine.priority import Holds
from grid_scheduler.engine.scoring import PoolCosts
from grid_scheduler.model import Policy

if TYPE_CHECKING:
    from grid_scheduler.engine.batch import _Unit


def greedy_by_class(
    index: GridIndex, usage: Usage, policy: Policy, units: list[_Unit], holds: Holds
) -> None:
    """Fill ``unit.greedy`` (job -> [(pool, gpus)]) for every unit."""
    used = usage.pool_used_gpus.copy()
    site_kw = usage.site_used_kw.copy()
    running = Usage(used, site_kw, usage.pool_drained, usage.tenant_pool_gpus)
    need_w_of: dict[int, IntArray] = {}
    # Usage only grows: a class that finds no room fails again for every later class with the same
    # mask (or checks), size and view (held or not), so those are skipped. At 1M jobs most of the
    # ~200k classes (one per big gang and per multi-endpoint deployment) come after the grid is full.
    full: set[tuple[int, int, bool]] = set()
    # Most valuable per GPU first (W counts GPU-hours, so the longest jobs), larger first among
    # equals (they fit in fewer places), then queue order: a warm start near the W optimum.
    order = sorted(range(len(units)), key=lambda u: (-units[u].value / (units[u].gpus * units[u].replicas),
                                                      -units[u].gpus * units[u].replicas, u))
    for unit in (units[u] for u in order):
        view = holds.overlay(running, unit.spec)  # a fresh Usage when something is held, else ``running``
        held = view.pool_used_gpus is not used
        key = (id(unit.mask) if unit.gang else id(unit.checks), unit.gpus, held)
        if key in full:
            continue
        if unit.gang:
            room = _fill_gang(index, policy, unit, view, used, site_kw, need_w_of)
        else:
            room = _repeat_deployment(index, policy, unit, view, used, site_kw)
        if not room:
            full.add(key)


def _fill_gang(
    index: GridIndex, policy: Policy, unit: _Unit, view: Usage, used: IntArray, site_kw: FloatArray,
    need_w_of: dict[int, IntArray],
) -> bool:
    """Place the class's jobs; False when one found no pool at all (the mask, size and view are full)."""
    g = unit.gpus
    need_w = need_w_of.get(g)
    if need_w is None:
        need_w = need_w_of[g] = watts(index.pool_kw_per_gpu * g)
    static = unit.mask  # feasible on the usage at the start: usage only grows, so a superset of what is left
    costs, total = unit.source.get()
    base = total - costs.packing
    site = index.pool_site
    held = view.pool_used_gpus is not used
    jobs = unit.job_ids
    at = 0
    while at < len(jobs):
        free = np.maximum(index.pool_healthy_gpus - view.pool_used_gpus, 0)
        headroom_w = watts(index.site_envelope_kw - view.site_used_kw)
        ok = static & (free >= g) & (headroom_w[site] >= need_w)
        if not ok.any():
            return False  # usage only grows: the class's later jobs cannot fit either
        cost = base + packing_term(index, policy, free, g)
        p = int(np.argmin(np.where(ok, cost, np.inf)))
        s = int(site[p])
        # Power for k jobs at once in exact kW (not k rounded needs); the mask's check passed for one.
        need_kw = g * float(index.pool_kw_per_gpu[p])
        by_power = int((index.site_envelope_kw[s] - view.site_used_kw[s]) // need_kw) if need_kw > 0 else len(jobs)
        k = max(1, min(len(jobs) - at, int(free[p]) // g, by_power))
        for job_id in jobs[at:at + k]:
            unit.greedy[job_id] = [(p, g)]
        at += k
        used[p] += k * g
        site_kw[s] += k * g * float(index.pool_kw_per_gpu[p])
        if held:  # the overlay is a copy: move it too
            view.pool_used_gpus[p] = max(int(view.pool_used_gpus[p]), int(used[p]))
            view.site_used_kw[s] += k * g * float(index.pool_kw_per_gpu[p])
    return True


def _repeat_deployment(
    index: GridIndex, policy: Policy, unit: _Unit, view: Usage, used: IntArray, site_kw: FloatArray
) -> bool:
    """Place the class's deployments; False when some endpoint had no pool with room for a
    replica (which depends only on the checks, size and view: the caller remembers it)."""
    assert unit.spec.inference is not None
    # A deployment's own costs are recomputed on each use: once here, and only once it has room (at
    # scale most deployments come after the grid is full: their costs were most of the warm start).
    costs: PoolCosts | None = None
    held = view.pool_used_gpus is not used
    jobs = unit.job_ids
    at = 0
    while at < len(jobs):
        free = np.maximum(index.pool_healthy_gpus - view.pool_used_gpus, 0)
        headroom_kw = index.site_envelope_kw - view.site_used_kw
        if not _every_endpoint_has_a_slot(index, unit, free, headroom_kw):
            return False  # _place_replicas would fail: some endpoint has no pool within SLO that takes a replica
        if costs is None:
            costs = unit.costs
        packing = packing_term(index, policy, free, unit.gpus)
        single = len(unit.spec.inference.demand) == 1
        fill = _spread(index, unit, costs, free, headroom_kw, packing) if single else None
        if fill is None:
            checks = replace(unit.checks, pool_free_gpus=free, site_headroom_kw=headroom_kw)
            decision = _place_replicas(index, unit.spec, policy, checks, replace(costs, packing=packing))
            if decision.placement is None:
                return True  # the costs chose this (not only the checks): not remembered
            fill = [(index.pool_index[a.pool_id], a.gpus) for a in decision.placement.assignments]
        # Copies of the same deployment that still fit: GPUs per pool, whole watts per site.
        copies = len(jobs) - at
        need_kw: dict[int, float] = defaultdict(float)
        for p, gpus in fill:
            copies = min(copies, int(free[p]) // gpus)
            need_kw[int(index.pool_site[p])] += gpus * float(index.pool_kw_per_gpu[p])
        for s, kw in need_kw.items():
            if kw > 0:
                copies = min(copies, int(headroom_kw[s] // kw))
        copies = max(copies, 1)  # the decision itself fits
        for job_id in jobs[at:at + copies]:
            unit.greedy[job_id] = list(fill)
        at += copies
        for p, gpus in fill:
            s = int(index.pool_site[p])
            used[p] += copies * gpus
            site_kw[s] += copies * gpus * float(index.pool_kw_per_gpu[p])
            if held:
                view.pool_used_gpus[p] = max(int(view.pool_used_gpus[p]), int(used[p]))
                view.site_used_kw[s] += copies * gpus * float(index.pool_kw_per_gpu[p])
    return True


def _every_endpoint_has_a_slot(index: GridIndex, unit: _Unit, free: IntArray, headroom_kw: FloatArray) -> bool:
    """A necessary condition for ``_place_replicas`` to place the deployment (cheap to test, and at
    scale most failing attempts fail it): each demand endpoint has a pool within SLO that could
    take one replica now."""
    checks = unit.checks
    assert checks.demand_cover is not None
    site = index.pool_site
    ok = checks.pool_eligible & (free >= unit.gpus) & (headroom_kw[site] + 1e-6 >= checks.pool_need_kw)
    return bool(checks.demand_cover[:, site[ok]].any(axis=1).all())


def _spread(
    index: GridIndex, unit: _Unit, costs: PoolCosts, free: IntArray, headroom_kw: FloatArray, packing: FloatArray
) -> list[tuple[int, int]] | None:
    """``_place_replicas`` for a deployment with one demand endpoint, when it has at least as many
    sites as replicas: there the first replica takes the cheapest pool within SLO and each next
    one the cheapest pool at a site holding none yet (the spread gain is highest there), i.e. one
    replica at each of the R sites whose cheapest pool is cheapest. None: fewer sites than
    replicas (the caller asks ``_place_replicas``)."""
    checks, g = unit.checks, unit.gpus
    assert checks.demand_cover is not None
    site = index.pool_site
    ok = (checks.pool_eligible & (free >= g) & checks.demand_cover[0][site]
          & (headroom_kw[site] + 1e-6 >= checks.pool_need_kw))
    pools = np.flatnonzero(ok)
    cost = (costs.total - costs.packing + packing)[pools]
    pools = pools[np.argsort(cost, kind="stable")]  # ties: the pool listed first, as argmin does
    _, first = np.unique(site[pools], return_index=True)  # each site's cheapest pool
    if len(first) < unit.replicas:
        return None
    chosen = pools[np.sort(first)[: unit.replicas]]
    return [(int(p), g) for p in np.sort(chosen)]
