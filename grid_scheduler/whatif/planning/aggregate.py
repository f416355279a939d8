"""The plan's world in aggregate: demand classes, capacity groups, periods, and what candidates add.

- A **group** is where capacity is: (site, GPU type, workload affinity). Its GPUs per period
  come from the scenario's timeline (the *least* the period sees: a delivery mid-period
  counts from the next one, a cut mid-period for all of it) plus the candidates chosen.
- A **demand class** is work the grid treats alike: jobs with the same set of eligible groups
  (residency x GPU type x workload x, for inference, the sites within the SLO of one endpoint)
  and the same targets. Its GPU-hours per period are what its jobs want in that period (an
  inference deployment's hours are split over its endpoints by weight), cut at the horizon.

Eligibility is computed on a grid holding every site that exists or may be added, with the
engine's own residency rules (job, tenant, datasets), so the model and the scheduler agree on
*where* work may run; they differ on *how much fits* (see ``model.py``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from grid_scheduler.engine.feasibility import residency_rules
from grid_scheduler.engine.index import GridIndex
from grid_scheduler.model import Grid, JobKind, JobSpec, Workload
from grid_scheduler.whatif.changes import DAY_S, AddPool, AddSite, GpuDelivery, PowerUpgrade, Timeline
from grid_scheduler.whatif.planning.spec import Candidate, LoadedPlan, QueueDelayTarget, ResidencyTarget, SloTarget
from grid_scheduler.whatif.workload import Arrival, build_arrivals

HOUR_S = 3_600.0
Group = tuple[str, str, str]  # site, GPU type, workload affinity


@dataclass
class DemandClass:
    label: str
    groups: frozenset[Group]
    targets: frozenset[int]
    gpu_hours: list[float]
    example: JobSpec  # one job of the class, to explain it
    endpoint: str | None
    jobs: int = 0


@dataclass
class CandidateEffect:
    """What one candidate adds if it starts at period q: GPUs per group and MW per site, in period p."""

    candidate: Candidate
    earliest: int
    gpus: dict[tuple[int, int], dict[Group, int]] = field(default_factory=dict)  # (q, p) -> group -> GPUs
    add_mw: dict[str, float] = field(default_factory=dict)  # site -> MW from its start on
    new_site: str | None = None


@dataclass
class Aggregate:
    periods: int
    period_days: float
    period_hours: list[float]
    groups: list[Group]
    group_kw_per_gpu: dict[Group, float]
    base_gpus: dict[tuple[Group, int], int]
    base_envelope_mw: dict[tuple[str, int], float]
    classes: list[DemandClass]
    effects: list[CandidateEffect]
    eligible: Eligibility


class Eligibility:
    """Which groups a job may use, on the grid with every existing and candidate site."""

    def __init__(self, grid: Grid, loaded: LoadedPlan, groups: list[Group]) -> None:
        self.index = GridIndex.build(grid)
        self.policy = loaded.base.policy
        self.groups = groups
        self.types = grid.gpu_type_by_name
        # Keyed by the spec object's id (equal specs are one object); the entry holds the spec so
        # that its id cannot be reused by another spec while the cache lives.
        self._cache: dict[tuple[int, str | None], tuple[JobSpec, frozenset[Group]]] = {}

    def groups_for(self, spec: JobSpec, endpoint: str | None) -> frozenset[Group]:
        key = (id(spec), endpoint)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = (spec, self._compute(spec, endpoint))
        return found[1]

    def resident_sites(self, spec: JobSpec) -> set[str]:
        idx = self.index
        resident = idx.residency_mask(residency_rules(spec, idx, self.policy))
        return {sid for i, sid in enumerate(idx.site_ids) if resident[i]}

    def sites_within_slo(self, spec: JobSpec, endpoint: str | None) -> set[str]:
        idx = self.index
        if spec.inference is None or endpoint is None:
            return set(idx.site_ids)
        lat = idx.topology.endpoint_site_latency_ms[idx.endpoint_index[endpoint]]
        return {sid for sid in idx.site_ids if lat[idx.site_index[sid]] <= spec.inference.latency_slo_ms}

    def _compute(self, spec: JobSpec, endpoint: str | None) -> frozenset[Group]:
        ok_sites = self.resident_sites(spec) & self.sites_within_slo(spec, endpoint)
        kind = spec.kind.value
        out = set()
        for site, gpu_type, workload in self.groups:
            if site not in ok_sites:
                continue
            if workload not in (Workload.ANY.value, kind):
                continue
            if spec.gpus.types and gpu_type not in spec.gpus.types:
                continue
            if self.types[gpu_type].memory_gib < spec.gpus.min_memory_gib:
                continue
            out.add((site, gpu_type, workload))
        return frozenset(out)


def job_matches(target: SloTarget | QueueDelayTarget | ResidencyTarget, spec: JobSpec, source: str) -> bool:
    """Whether the target's filter admits the job (``from_days`` is a matter of time, checked apart)."""
    if target.job_kind is not None and spec.kind is not target.job_kind:
        return False
    if target.tenants and spec.tenant not in target.tenants:
        return False
    if target.sources and source not in target.sources:
        return False
    return not (isinstance(target, SloTarget) and spec.kind is not JobKind.INFERENCE)


def bound_to(spec: JobSpec, jurisdiction: str, index: GridIndex, loaded: LoadedPlan) -> bool:
    """A job is bound to a jurisdiction if one of its residency rules allows it by name."""
    return any(jurisdiction in r.allowed for r in residency_rules(spec, index, loaded.base.policy))


def _union_grid(loaded: LoadedPlan) -> Grid:
    """The base grid with every site any scenario change or candidate adds (for latency and tags)."""
    adds = [c for c in loaded.base.scenario.changes if isinstance(c, AddSite)]
    adds += [e for e in (c.at(0) for c in loaded.plan.candidates) if isinstance(e, AddSite)]
    adds = [a.model_copy(update={"at_days": 0.0}) for a in adds]
    return Timeline(loaded.base.grid, list(adds), 1.0).grid_at(0.0)


def _period_grids(loaded: LoadedPlan, p: int) -> list[Grid]:
    timeline = loaded.base.timeline
    start = loaded.period_start_days(p) * DAY_S
    end = min(start + loaded.plan.period_days * DAY_S, loaded.base.scenario.horizon_s)
    times = [start] + [m.time_s for m in timeline.moments() if m.grid and start < m.time_s < end]
    return [timeline.grid_at(t) for t in times]


def _grid_groups(grid: Grid) -> dict[Group, int]:
    out: dict[Group, int] = defaultdict(int)
    for site in grid.sites:
        for pool in site.pools:
            out[(site.id, pool.gpu_type, pool.workload.value)] += pool.healthy_gpus
    return out


def _effect(loaded: LoadedPlan, candidate: Candidate) -> CandidateEffect:
    effect = CandidateEffect(candidate, loaded.earliest_period(candidate))
    periods = loaded.periods
    for q in range(effect.earliest, periods):
        change = candidate.at(loaded.period_start_days(q))
        for p in range(q, periods):
            gpus: dict[Group, int] = {}
            match change:
                case AddPool():
                    gpus[(change.site, change.pool.gpu_type, change.pool.workload.value)] = change.pool.healthy_gpus
                case AddSite():
                    for pool in change.site.pools:
                        g = (change.site.id, pool.gpu_type, pool.workload.value)
                        gpus[g] = gpus.get(g, 0) + pool.healthy_gpus
                case GpuDelivery():
                    n = change.delivered_by(loaded.period_start_days(p)) * change.nodes_per_delivery
                    g = (change.site, change.pool.gpu_type, change.pool.workload.value)
                    gpus[g] = n * change.pool.gpus_per_node
            effect.gpus[(q, p)] = {g: n for g, n in gpus.items() if n > 0}
        if isinstance(change, PowerUpgrade):
            effect.add_mw[change.site] = change.add_mw
        elif isinstance(change, AddSite):
            effect.add_mw[change.site.id] = change.site.power_envelope_mw
            effect.new_site = change.site.id
    return effect


def aggregate(loaded: LoadedPlan, arrivals: list[Arrival] | None = None) -> Aggregate:
    scenario = loaded.base.scenario
    horizon_s = scenario.horizon_s
    union = _union_grid(loaded)
    periods = loaded.periods
    period_s = loaded.plan.period_days * DAY_S
    period_hours = [(min((p + 1) * period_s, horizon_s) - p * period_s) / HOUR_S for p in range(periods)]

    base_gpus: dict[tuple[Group, int], int] = {}
    base_env: dict[tuple[str, int], float] = {}
    groups: set[Group] = set()
    for p in range(periods):
        grids = _period_grids(loaded, p)
        per_grid = [_grid_groups(g) for g in grids]
        seen = set().union(*per_grid)
        groups |= seen
        for g in seen:
            base_gpus[(g, p)] = min(gg.get(g, 0) for gg in per_grid)
        for site in union.sites:
            envs = [next((s.power_envelope_mw for s in g.sites if s.id == site.id), 0.0) for g in grids]
            base_env[(site.id, p)] = min(envs)
    effects = [_effect(loaded, c) for c in loaded.plan.candidates]
    for e in effects:
        for by_group in e.gpus.values():
            groups |= set(by_group)
    group_list = sorted(groups)
    sites = union.site_by_id
    kw = {g: union.gpu_type_by_name[g[1]].board_power_kw * sites[g[0]].pue for g in group_list}

    eligible = Eligibility(union, loaded, group_list)
    if arrivals is None:
        arrivals, _ = build_arrivals(scenario.workload, loaded.base.grid, scenario.seed, horizon_s,
                                     loaded.base.base_dir)
    targets = loaded.plan.targets
    classes: dict[tuple[frozenset[Group], frozenset[int]], DemandClass] = {}
    for a in arrivals:
        end = min(a.time_s + a.duration_s, horizon_s)
        if end <= a.time_s:
            continue
        spec = a.spec
        shares: list[tuple[str | None, float]] = [(None, 1.0)]
        if spec.inference is not None:
            total = sum(d.weight for d in spec.inference.demand)
            shares = [(d.endpoint, d.weight / total) for d in spec.inference.demand]
        for endpoint, share in shares:
            member = frozenset(i for i, t in enumerate(targets) if _counts_for(t, spec, a.source, endpoint, eligible,
                                                                             loaded))
            groups_ok = eligible.groups_for(spec, endpoint)
            key = (groups_ok, member)
            c = classes.get(key)
            if c is None:
                c = classes[key] = DemandClass(_label(spec, endpoint, a.source), groups_ok, member, [0.0] * periods,
                                               spec, endpoint)
            c.jobs += 1
            for p in range(int(a.time_s // period_s), min(int(end // period_s), periods - 1) + 1):
                overlap = min(end, (p + 1) * period_s) - max(a.time_s, p * period_s)
                if overlap > 0:
                    c.gpu_hours[p] += spec.total_gpus * share * overlap / HOUR_S
    ordered = sorted(classes.values(), key=lambda c: (c.label, sorted(c.groups), sorted(c.targets)))
    return Aggregate(periods, loaded.plan.period_days, period_hours, group_list, kw, base_gpus, base_env, ordered,
                     effects, eligible)


def _counts_for(target: SloTarget | QueueDelayTarget | ResidencyTarget, spec: JobSpec, source: str,
                endpoint: str | None, eligible: Eligibility, loaded: LoadedPlan) -> bool:
    if not job_matches(target, spec, source):
        return False
    if isinstance(target, SloTarget):
        return endpoint is not None and (not target.endpoints or endpoint in target.endpoints)
    if isinstance(target, ResidencyTarget):
        return bound_to(spec, target.jurisdiction, eligible.index, loaded)
    return True


def _label(spec: JobSpec, endpoint: str | None, source: str) -> str:
    where = " or ".join(spec.residency.allowed) if spec.residency.allowed else "anywhere"
    types = "/".join(spec.gpus.types) if spec.gpus.types else "any GPU"
    if spec.inference is not None and endpoint is not None:
        return f"{source}: inference at {endpoint} within {spec.inference.latency_slo_ms:g} ms, {where}, {types}"
    return f"{source}: {spec.kind.value}, {where}, {types}"
