"""An independent feasibility check of a set of placements, for tests and benchmarks.

It deliberately does not use the feasibility masks (``Checks``) it is meant to audit:
every rule is recomputed from the ``Grid`` model itself (pool sizes, drained nodes,
board power x PUE, site tags, residency rules, latency by shortest path). The only
shared pieces are the model's own definitions (``ResidencyRule.admits``, site tags) and
the topology's latency matrix, which is a fact about the grid, not a decision.

A ``Usage`` passed as the starting load must be aligned with the grid file's order
(sites in order, each site's pools in order), which is how ``GridIndex`` flattens it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from grid_scheduler.engine.index import Usage
from grid_scheduler.model import Grid, JobKind, JobSpec, Placement, Policy, Pool, Site, Workload
from grid_scheduler.topology import Topology

# Power figures are sums of floats; the engine allows 1e-6 kW of rounding, and so do we.
POWER_TOLERANCE_KW = 1e-6


@dataclass(frozen=True)
class Violation:
    job_id: str
    code: str  # unknown_pool | gpu_type | workload | health | capacity | power | residency | latency | gang
    message: str


def check_solution(
    grid: Grid,
    placed: Mapping[str, tuple[JobSpec, Placement]],
    usage: Usage | None = None,
    policy: Policy | None = None,
    topology: Topology | None = None,
    *,
    gang_training: bool = False,
) -> list[Violation]:
    """Every broken hard rule in ``placed`` (job id -> (spec, placement)), on top of ``usage``.

    ``gang_training`` holds non-gang training jobs to the gang rule too (the batch optimizer
    places them in one pool); otherwise they need only stay within one site.
    """
    policy = policy or Policy()
    pools: dict[str, tuple[int, Site, Pool]] = {}
    for site in grid.sites:
        for pool in site.pools:
            pools[pool.id] = (len(pools), site, pool)
    site_order = {s.id: i for i, s in enumerate(grid.sites)}
    used_gpus: dict[str, int] = defaultdict(int)
    used_kw: dict[str, float] = defaultdict(float)
    drained: set[str] = set()
    if usage is not None:
        for pool_id, (p, _, _) in pools.items():
            used_gpus[pool_id] = int(usage.pool_used_gpus[p])
            if bool(usage.pool_drained[p]):
                drained.add(pool_id)
        for site in grid.sites:
            used_kw[site.id] = float(usage.site_used_kw[site_order[site.id]])
    needs_latency = any(spec.inference is not None for spec, _ in placed.values())
    if needs_latency and topology is None:
        topology = Topology.from_grid(grid)
    out: list[Violation] = []
    touched_pools: dict[str, list[str]] = defaultdict(list)
    touched_sites: dict[str, list[str]] = defaultdict(list)
    for job_id, (spec, placement) in placed.items():
        out.extend(_check_job(grid, job_id, spec, placement, pools, drained, policy, topology, gang_training))
        for a in placement.assignments:
            if a.pool_id not in pools:
                continue
            _, site, pool = pools[a.pool_id]
            used_gpus[a.pool_id] += a.gpus
            used_kw[site.id] += a.gpus * grid.gpu_type_by_name[pool.gpu_type].board_power_kw * site.pue
            touched_pools[a.pool_id].append(job_id)
            touched_sites[site.id].append(job_id)
    for pool_id, jobs in touched_pools.items():
        _, _, pool = pools[pool_id]
        if used_gpus[pool_id] > pool.healthy_gpus:
            out.append(Violation(",".join(jobs), "capacity",
                                 f"pool {pool_id}: {used_gpus[pool_id]} GPUs used > {pool.healthy_gpus} healthy"))
    for site_id, jobs in touched_sites.items():
        envelope_kw = grid.site_by_id[site_id].power_envelope_mw * 1000.0
        if used_kw[site_id] > envelope_kw + POWER_TOLERANCE_KW:
            out.append(Violation(",".join(jobs), "power",
                                 f"site {site_id}: {used_kw[site_id]:.3f} kW > envelope {envelope_kw:.3f} kW"))
    return out


def _check_job(
    grid: Grid,
    job_id: str,
    spec: JobSpec,
    placement: Placement,
    pools: Mapping[str, tuple[int, Site, Pool]],
    drained: set[str],
    policy: Policy,
    topology: Topology | None,
    gang_training: bool,
) -> list[Violation]:
    out: list[Violation] = []

    def fail(code: str, message: str) -> None:
        out.append(Violation(job_id, code, message))

    sites: list[Site] = []
    for a in placement.assignments:
        if a.pool_id not in pools:
            fail("unknown_pool", f"no pool {a.pool_id}")
            continue
        _, site, pool = pools[a.pool_id]
        sites.append(site)
        if a.site_id != site.id:
            fail("unknown_pool", f"pool {a.pool_id} is in {site.id}, not {a.site_id}")
        gpu = grid.gpu_type_by_name[pool.gpu_type]
        if a.gpu_type != pool.gpu_type or (spec.gpus.types and pool.gpu_type not in spec.gpus.types):
            fail("gpu_type", f"pool {a.pool_id} has {pool.gpu_type}; job allows {spec.gpus.types or 'any'}")
        if gpu.memory_gib < spec.gpus.min_memory_gib:
            fail("gpu_type", f"{pool.gpu_type} has {gpu.memory_gib} GiB < {spec.gpus.min_memory_gib}")
        if pool.workload is not Workload.ANY and pool.workload.value != spec.kind.value:
            fail("workload", f"pool {a.pool_id} is for {pool.workload.value}")
        if a.pool_id in drained or pool.healthy_gpus == 0:
            fail("health", f"pool {a.pool_id} is drained")
        expected_kw = a.gpus * gpu.board_power_kw * site.pue
        if abs(a.power_kw - expected_kw) > 1e-6 * max(1.0, expected_kw):
            fail("power", f"assignment in {a.pool_id} claims {a.power_kw} kW, draws {expected_kw} kW")
        rules = [("job", spec.residency)]
        if spec.tenant in policy.tenant_residency:
            rules.append((f"tenant {spec.tenant}", policy.tenant_residency[spec.tenant]))
        rules.extend((f"dataset {d}", grid.dataset_by_id[d].residency) for d in spec.datasets)
        for source, rule in rules:
            if not rule.admits(site.tags):
                fail("residency", f"{site.id} ({', '.join(sorted(site.tags))}) breaks {source}: {rule.describe()}")
    out.extend(_check_shape(job_id, spec, placement, sites, gang_training))
    if spec.inference is not None and topology is not None and sites:
        out.extend(_check_latency(job_id, spec, sites, topology))
    return out


def _check_shape(
    job_id: str, spec: JobSpec, placement: Placement, sites: list[Site], gang_training: bool
) -> list[Violation]:
    gpus = [a.gpus for a in placement.assignments]
    if spec.kind is JobKind.INFERENCE:
        assert spec.inference is not None
        per = spec.gpus.count
        bad = [g for g in gpus if g % per]
        if sum(gpus) != spec.total_gpus or bad:
            return [Violation(job_id, "gang", f"replica GPUs {gpus} do not make {spec.inference.replicas} x {per}")]
        return []
    if spec.gang or gang_training:
        if len(gpus) != 1 or gpus[0] != spec.gpus.count:
            return [Violation(job_id, "gang", f"gang of {spec.gpus.count} placed as {gpus}")]
        return []
    if sum(gpus) != spec.gpus.count or len({s.id for s in sites}) > 1:
        return [Violation(job_id, "gang", f"{spec.gpus.count} GPUs placed as {gpus} over {len(sites)} sites")]
    return []


def _check_latency(job_id: str, spec: JobSpec, sites: list[Site], topology: Topology) -> list[Violation]:
    assert spec.inference is not None
    slo = spec.inference.latency_slo_ms
    cols = [topology.site_ids.index(s.id) for s in sites]
    rows = [topology.endpoint_ids.index(d.endpoint) for d in spec.inference.demand]
    latency = topology.endpoint_site_latency_ms[np.ix_(rows, cols)]
    out = []
    for r, demand in enumerate(spec.inference.demand):
        if not (latency[r] <= slo).any():
            out.append(Violation(job_id, "latency",
                                 f"{demand.endpoint}: nearest replica {latency[r].min():.1f} ms > SLO {slo:g} ms"))
    for c, site in enumerate(sites):
        if not (latency[:, c] <= slo).any():
            out.append(Violation(job_id, "latency", f"replica at {site.id} serves no demand endpoint within SLO"))
    return out
