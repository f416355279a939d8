"""Independent checks of a placement against the grid model.

These deliberately do not reuse the engine's masks: they recompute from the Grid (and
networkx for latency) so that a bug in the engine cannot hide itself.
"""

from __future__ import annotations

from collections import defaultdict

import networkx as nx

from grid_scheduler.model import (
    Assignment,
    Grid,
    JobRecord,
    JobSpec,
    JobState,
    Placement,
    Policy,
    Pool,
    Site,
    TopologyMode,
)
from grid_scheduler.topology import build_graph


def residency_ok(grid: Grid, spec: JobSpec, site_id: str, policy: Policy | None = None) -> bool:
    tags = grid.site_by_id[site_id].tags
    rules = [spec.residency] + [grid.dataset_by_id[d].residency for d in spec.datasets]
    if policy is not None and spec.tenant in policy.tenant_residency:
        rules.append(policy.tenant_residency[spec.tenant])
    return all(r.admits(tags) for r in rules)


def preference_admits(spec: JobSpec, site: Site, policy: Policy | None) -> bool:
    """The preference fence, read from its definition: a listed site, a listed tag or tier, or '*'."""
    entries = spec.placement_preference or (policy or Policy()).tenant_placement_preference.get(spec.tenant, [])
    if not entries or "*" in entries:
        return True
    return (f"site:{site.id}" in entries or f"tier:{site.tier.value}" in entries
            or any(f"jurisdiction:{tag}" in entries for tag in site.tags))


def placement_violations(grid: Grid, spec: JobSpec, placement: Placement, policy: Policy | None = None) -> list[str]:
    problems = []
    types = grid.gpu_type_by_name
    for a in placement.assignments:
        site, pool = grid.pool_by_id[a.pool_id]
        if site.id != a.site_id:
            problems.append(f"{a.pool_id} is not in {a.site_id}")
        if not residency_ok(grid, spec, site.id, policy):
            problems.append(f"residency broken at {site.id}")
        if spec.gpus.types and pool.gpu_type not in spec.gpus.types:
            problems.append(f"{pool.gpu_type} not allowed")
        if types[pool.gpu_type].memory_gib < spec.gpus.min_memory_gib:
            problems.append(f"{pool.gpu_type} memory too small")
        if pool.workload.value not in ("any", spec.kind.value):
            problems.append(f"{pool.id} is for {pool.workload.value}")
        if not preference_admits(spec, site, policy):
            problems.append(f"{site.id} is outside the placement preference")
        problems.extend(topology_violations(spec, pool, a))
    if placement.gpus != spec.total_gpus:
        problems.append(f"{placement.gpus} GPUs placed, {spec.total_gpus} asked")
    if spec.gang and spec.inference is None and len(placement.assignments) != 1:
        problems.append("gang job split across pools")
    if len({a.site_id for a in placement.assignments}) > 1 and spec.inference is None:
        problems.append("training job split across sites")
    if spec.inference is not None:
        graph = build_graph(grid)
        sites = {a.site_id for a in placement.assignments}
        for a in placement.assignments:
            if a.gpus % spec.gpus.count:
                problems.append(f"{a.pool_id}: {a.gpus} GPUs is not whole replicas")
        for demand in spec.inference.demand:
            lengths = nx.single_source_dijkstra_path_length(graph, demand.endpoint, weight="latency_ms")
            best = min((lengths.get(s, float("inf")) for s in sites), default=float("inf"))
            if best > spec.inference.latency_slo_ms + 1e-9:
                problems.append(f"{demand.endpoint}: nearest replica {best:.1f} ms > SLO")
    return problems


def topology_violations(spec: JobSpec, pool: Pool, a: Assignment) -> list[str]:
    """A whole-domain job's share of a pool is whole domains, a sliced job's whole slices; with
    node detail, each domain's part is too (no slice or domain crosses a domain boundary)."""
    mode, n = spec.topology.mode, spec.topology.slice_gpus
    step = pool.domain_gpus if mode is TopologyMode.WHOLE_DOMAINS else n if mode is TopologyMode.SLICES else 1
    problems = [f"{a.pool_id}: {a.gpus} GPUs is not whole {mode.value} of {step}"] if a.gpus % step else []
    per_domain: dict[int, int] = defaultdict(int)
    for node, gpus in a.nodes:
        per_domain[node // pool.nodes_per_domain] += gpus
    if any(g % step for g in per_domain.values()):
        problems.append(f"{a.pool_id}: a domain holds part of a {mode.value} unit: {dict(per_domain)}")
    return problems


def ledger_from_jobs(grid: Grid, jobs: list[JobRecord]) -> tuple[dict[str, int], dict[str, float]]:
    """GPUs per pool and kW per site, recomputed from what running jobs hold."""
    gpus: dict[str, int] = defaultdict(int)
    power_kw: dict[str, float] = defaultdict(float)
    for job in jobs:
        if job.state is JobState.RUNNING and job.placement is not None:
            for a in job.placement.assignments:
                gpus[a.pool_id] += a.gpus
                power_kw[a.site_id] += a.power_kw
    return dict(gpus), dict(power_kw)


def over_capacity(grid: Grid, gpus: dict[str, int], power_kw: dict[str, float]) -> list[str]:
    problems = []
    for pool_id, n in gpus.items():
        _, pool = grid.pool_by_id[pool_id]
        if n > pool.healthy_gpus:
            problems.append(f"pool {pool_id}: {n} > {pool.healthy_gpus}")
    for site_id, kw in power_kw.items():
        envelope_kw = grid.site_by_id[site_id].power_envelope_mw * 1000
        if kw > envelope_kw + 1e-3:
            problems.append(f"site {site_id}: {kw:.1f} kW > {envelope_kw:.1f}")
    return problems
