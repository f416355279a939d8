"""What a run measured: integrals over time, samples for plots, and per-job facts.

Usage is integrated exactly between events (the ledger is constant between them):
GPU-seconds used and available per pool, facility kWh per site, and from those the
energy cost and carbon at each site's price and intensity. Samples at a fixed step
feed the time-series plots. Per job: arrival, every run (start, end, latency to each
demand endpoint), re-queues, and for a job never placed, why (its ``JobRecord.waiting``).

Residency is re-checked here on every placement from the grid model itself (site tags
against the job's, its tenant's and its datasets' rules), not from the engine's masks,
so a violation would be counted rather than assumed away.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grid_scheduler.engine import Usage
from grid_scheduler.model import Assignment, Grid, JobKind, JobSpec, Placement, Policy, WaitInfo
from grid_scheduler.scheduler import Scheduler

HOUR_S = 3_600.0
PERCENTILES = (50, 95, 99)


@dataclass
class Run:
    start_s: float
    end_s: float | None
    latency_ms: dict[str, float]  # demand endpoint -> latency to its nearest replica
    sites: tuple[str, ...]
    assignments: tuple[Assignment, ...] = ()  # site, pool, GPUs and power of each part of the placement
    ended: str = "running"  # completed | preempted | displaced | running (at the horizon)
    displaced_by: ChangeLog | None = None  # the timed change that took its capacity


@dataclass
class JobLog:
    job_id: str
    source: str
    spec: JobSpec
    arrival_s: float
    duration_s: float
    remaining_s: float
    state: str = "pending"  # pending | running | completed | rejected
    runs: list[Run] = field(default_factory=list)
    requeues: int = 0  # displaced by a grid change
    preemptions: int = 0  # evicted by the scheduler for a higher-priority job
    waiting: WaitInfo | None = None
    token: int = 0  # bumped on every (re)start; a completion for an older token is stale

    @property
    def first_start_s(self) -> float | None:
        return self.runs[0].start_s if self.runs else None


@dataclass
class ChangeLog:
    time_s: float
    change: int
    what: str
    displaced_jobs: int = 0
    displaced_gpus: int = 0
    replaced_jobs: int = 0  # of those displaced, how many ran again before the horizon


@dataclass
class Sample:
    time_s: float
    metric: str
    key: str
    value: float


def residency_violations(grid: Grid, policy: Policy, spec: JobSpec, placement: Placement) -> int:
    rules = [spec.residency]
    if spec.tenant in policy.tenant_residency:
        rules.append(policy.tenant_residency[spec.tenant])
    rules += [grid.dataset_by_id[d].residency for d in spec.datasets]
    return sum(1 for a in placement.assignments if not all(r.admits(grid.site_by_id[a.site_id].tags) for r in rules))


class Recorder:
    def __init__(self, sample_every_s: float) -> None:
        self.sample_every_s = sample_every_s
        self.t = 0.0
        self.samples: list[Sample] = []
        self.pool_meta: dict[str, tuple[str, str, str]] = {}  # pool -> (site, tier, gpu type)
        self.site_meta: dict[str, dict[str, Any]] = {}
        self.gpu_s: defaultdict[str, float] = defaultdict(float)
        self.cap_s: defaultdict[str, float] = defaultdict(float)
        self.site_kwh: defaultdict[str, float] = defaultdict(float)
        self.site_cost: defaultdict[str, float] = defaultdict(float)
        self.site_carbon_kg: defaultdict[str, float] = defaultdict(float)
        self.site_peak_kw: defaultdict[str, float] = defaultdict(float)
        self.site_min_envelope_mw: dict[str, float] = {}
        self.residency_violations = 0
        self.placements = 0
        self._epoch: _Epoch | None = None

    # --- integrals ---------------------------------------------------------------------
    def begin_epoch(self, scheduler: Scheduler) -> None:
        self._fold()
        self._epoch = _Epoch(scheduler, self.t)
        for site in scheduler.grid.sites:
            self.site_meta[site.id] = {
                "tier": site.tier.value, "lat": site.location.lat, "lon": site.location.lon,
                "country": site.location.country,
            }
            env = self.site_min_envelope_mw.get(site.id, math.inf)
            self.site_min_envelope_mw[site.id] = min(env, site.power_envelope_mw)
            for pool in site.pools:
                self.pool_meta[pool.id] = (site.id, site.tier.value, pool.gpu_type)

    def advance(self, t: float, usage: Usage) -> None:
        dt = t - self.t
        if dt > 0 and self._epoch is not None:
            e = self._epoch
            e.gpu_s += usage.pool_used_gpus * dt
            e.kwh += usage.site_used_kw * (dt / HOUR_S)
            np.maximum(e.peak_kw, usage.site_used_kw, out=e.peak_kw)
        self.t = max(self.t, t)

    def _fold(self) -> None:
        e = self._epoch
        if e is None:
            return
        span = self.t - e.start_s
        for i, pool in enumerate(e.pool_ids):
            self.gpu_s[pool] += float(e.gpu_s[i])
            self.cap_s[pool] += float(e.cap[i]) * span
        for i, site in enumerate(e.site_ids):
            kwh = float(e.kwh[i])
            self.site_kwh[site] += kwh
            self.site_cost[site] += kwh / 1000.0 * e.price[i]
            self.site_carbon_kg[site] += kwh * e.carbon[i] / 1000.0
            self.site_peak_kw[site] = max(self.site_peak_kw[site], float(e.peak_kw[i]))
        self._epoch = None

    def finish(self, t: float, usage: Usage) -> None:
        self.advance(t, usage)
        if self._epoch is not None:
            np.maximum(self._epoch.peak_kw, usage.site_used_kw, out=self._epoch.peak_kw)
        self._fold()

    # --- samples -----------------------------------------------------------------------
    def sample(self, t: float, usage: Usage, pending: int, running: int) -> None:
        e = self._epoch
        assert e is not None
        add = self.samples.append
        used = usage.pool_used_gpus.astype(np.float64)
        for metric, groups, n, names in (
            ("utilisation_site", e.pool_site, len(e.site_ids), e.site_ids),
            ("utilisation_tier", e.pool_tier, len(e.tiers), e.tiers),
            ("utilisation_gpu_type", e.pool_type, len(e.types), e.types),
        ):
            u = np.bincount(groups, weights=used, minlength=n)
            c = np.bincount(groups, weights=e.cap, minlength=n)
            for i, name in enumerate(names):
                add(Sample(t, metric, name, float(u[i] / c[i]) if c[i] > 0 else 0.0))
        cap = float(e.cap.sum())
        add(Sample(t, "utilisation_fleet", "fleet", float(used.sum() / cap) if cap > 0 else 0.0))
        for i, site in enumerate(e.site_ids):
            add(Sample(t, "power_mw", site, float(usage.site_used_kw[i]) / 1000.0))
            add(Sample(t, "envelope_mw", site, float(e.envelope_mw[i])))
        add(Sample(t, "jobs", "pending", float(pending)))
        add(Sample(t, "jobs", "running", float(running)))
        add(Sample(t, "gpus", "used", float(used.sum())))
        add(Sample(t, "gpus", "available", cap))


class _Epoch:
    """The arrays of one grid: accumulators and the facts to weigh them by."""

    def __init__(self, scheduler: Scheduler, start_s: float) -> None:
        index, grid = scheduler.index, scheduler.grid
        self.start_s = start_s
        self.pool_ids = index.pool_ids
        self.site_ids = index.site_ids
        self.pool_site = index.pool_site
        self.cap = scheduler.limits.pool_gpus.astype(np.float64)
        self.tiers = tuple(sorted({s.tier.value for s in grid.sites}))
        tier_of_site = [self.tiers.index(s.tier.value) for s in grid.sites]
        self.pool_tier = np.array([tier_of_site[s] for s in index.pool_site], dtype=np.int64)
        self.types = tuple(sorted(set(index.pool_gpu_type)))
        self.pool_type = np.array([self.types.index(t) for t in index.pool_gpu_type], dtype=np.int64)
        self.envelope_mw = np.array([s.power_envelope_mw for s in grid.sites], dtype=np.float64)
        self.price = [s.energy_price_per_mwh for s in grid.sites]
        self.carbon = [s.carbon_g_per_kwh for s in grid.sites]
        self.gpu_s = np.zeros(len(self.pool_ids), dtype=np.float64)
        self.kwh = np.zeros(len(self.site_ids), dtype=np.float64)
        self.peak_kw = np.zeros(len(self.site_ids), dtype=np.float64)


# --- the summary ------------------------------------------------------------------------
def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    a = np.asarray(values, dtype=np.float64)
    out: dict[str, float] = {"count": len(values), "mean": float(a.mean())}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(a, p))
    out["max"] = float(a.max())
    return out


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def summarize(
    rec: Recorder, jobs: list[JobLog], changes: list[ChangeLog], horizon_s: float, workload: dict[str, Any]
) -> dict[str, Any]:
    """Totals of a run: deterministic for a scenario and seed (no wall-clock figures)."""
    return {
        "jobs": _job_counts(jobs),
        "workload": workload,
        "utilisation": _utilisation(rec),
        "queue_delay_hours": _delays(jobs),
        "never_placed": _never_placed(jobs),
        "slo_attainment": _slo(jobs, horizon_s),
        "power": {
            site: {
                "peak_mw": rec.site_peak_kw[site] / 1000.0,
                "min_envelope_mw": rec.site_min_envelope_mw[site],
                "mean_mw": rec.site_kwh[site] / (horizon_s / HOUR_S) / 1000.0,
                "peak_over_envelope": _ratio(rec.site_peak_kw[site] / 1000.0, rec.site_min_envelope_mw[site]),
            }
            for site in sorted(rec.site_meta)
        },
        "energy": {
            "total": {
                "mwh": sum(rec.site_kwh.values()) / 1000.0,
                "cost": sum(rec.site_cost.values()),
                "tco2": sum(rec.site_carbon_kg.values()) / 1000.0,
            },
            "by_site": {
                site: {"mwh": rec.site_kwh[site] / 1000.0, "cost": rec.site_cost[site],
                       "tco2": rec.site_carbon_kg[site] / 1000.0}
                for site in sorted(rec.site_meta)
            },
        },
        "residency": {"placements_checked": rec.placements, "violations": rec.residency_violations},
        "disruption": {
            "displaced_jobs": sum(c.displaced_jobs for c in changes),
            "displaced_gpus": sum(c.displaced_gpus for c in changes),
            "replaced_jobs": sum(c.replaced_jobs for c in changes),
            "requeues": sum(j.requeues for j in jobs),
            "preemptions": sum(j.preemptions for j in jobs),
            "jobs_preempted": sum(1 for j in jobs if j.preemptions),
        },
    }


def _job_counts(jobs: list[JobLog]) -> dict[str, Any]:
    by_state = Counter(j.state for j in jobs)
    by_kind = Counter(j.spec.kind.value for j in jobs)
    placed = sum(1 for j in jobs if j.runs)
    return {
        "arrived": len(jobs),
        "placed": placed,
        "placed_without_waiting": sum(1 for j in jobs if j.runs and j.runs[0].start_s == j.arrival_s),
        "by_state_at_end": dict(sorted(by_state.items())),
        "by_kind": dict(sorted(by_kind.items())),
        "gpu_hours_requested": sum(j.spec.total_gpus * j.duration_s for j in jobs) / HOUR_S,
    }


def _utilisation(rec: Recorder) -> dict[str, Any]:
    groups: dict[str, dict[str, list[float]]] = {"site": {}, "tier": {}, "gpu_type": {}}
    for pool, (site, tier, gpu_type) in rec.pool_meta.items():
        for group, key in (("site", site), ("tier", tier), ("gpu_type", gpu_type)):
            acc = groups[group].setdefault(key, [0.0, 0.0])
            acc[0] += rec.gpu_s[pool]
            acc[1] += rec.cap_s[pool]
    used, cap = sum(rec.gpu_s.values()), sum(rec.cap_s.values())
    out: dict[str, Any] = {"fleet": {"gpu_hours_used": used / HOUR_S, "gpu_hours_available": cap / HOUR_S,
                                     "utilisation": _ratio(used, cap)}}
    for group, values in groups.items():
        out[f"by_{group}"] = {
            key: {"gpu_hours_used": u / HOUR_S, "gpu_hours_available": c / HOUR_S, "utilisation": _ratio(u, c)}
            for key, (u, c) in sorted(values.items())
        }
    return out


def _delays(jobs: list[JobLog]) -> dict[str, Any]:
    placed = [j for j in jobs if j.runs]
    by_kind: dict[str, list[float]] = defaultdict(list)
    by_priority: dict[str, list[float]] = defaultdict(list)
    by_source: dict[str, list[float]] = defaultdict(list)
    every: list[float] = []
    for j in placed:
        d = (j.runs[0].start_s - j.arrival_s) / HOUR_S
        every.append(d)
        by_kind[j.spec.kind.value].append(d)
        by_priority[str(j.spec.priority)].append(d)
        by_source[j.source].append(d)
    return {
        "all": percentiles(every),
        "by_kind": {k: percentiles(v) for k, v in sorted(by_kind.items())},
        "by_priority": {k: percentiles(v) for k, v in sorted(by_priority.items(), key=lambda kv: int(kv[0]))},
        "by_source": {k: percentiles(v) for k, v in sorted(by_source.items())},
    }


def _never_placed(jobs: list[JobLog]) -> dict[str, Any]:
    never = [j for j in jobs if not j.runs]
    reasons: Counter[str] = Counter()
    examples: Counter[str] = Counter()
    for j in never:
        if j.waiting is not None:
            reasons.update(j.waiting.site_counts.keys())
            if j.waiting.summary:
                examples[f"{j.source}: {j.waiting.summary[0]}"] += 1
    return {
        "count": len(never),
        "by_state": dict(sorted(Counter(j.state for j in never).items())),
        "by_source": dict(sorted(Counter(j.source for j in never).items())),
        "jobs_per_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "top_summaries": [
            {"summary": s, "jobs": n} for s, n in sorted(examples.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        ],
    }


def _slo(jobs: list[JobLog], horizon_s: float) -> dict[str, Any]:
    """Per endpoint: the share of wanted demand-hours served within the SLO.

    A deployment wants service from its arrival for its duration (cut at the horizon); it is
    served while it runs with that endpoint's nearest replica within the SLO. Waiting in the
    queue, being refused, or being displaced all count against attainment.
    """
    wanted: defaultdict[str, float] = defaultdict(float)
    served: defaultdict[str, float] = defaultdict(float)
    deployments: Counter[str] = Counter()
    latencies: dict[str, list[float]] = defaultdict(list)
    for j in jobs:
        if j.spec.kind is not JobKind.INFERENCE or j.spec.inference is None:
            continue
        slo = j.spec.inference.latency_slo_ms
        start, end = j.arrival_s, min(j.arrival_s + j.duration_s, horizon_s)
        if end <= start:
            continue
        total_w = sum(d.weight for d in j.spec.inference.demand)
        for d in j.spec.inference.demand:
            w = d.weight / total_w
            deployments[d.endpoint] += 1
            wanted[d.endpoint] += w * (end - start)
            for run in j.runs:
                ms = run.latency_ms.get(d.endpoint)
                if ms is None:
                    continue
                latencies[d.endpoint].append(ms)
                if ms <= slo:
                    overlap = min(end, run.end_s if run.end_s is not None else horizon_s) - max(start, run.start_s)
                    served[d.endpoint] += w * max(overlap, 0.0)
    out: dict[str, Any] = {}
    for e in sorted(wanted):
        lat = percentiles(latencies[e])
        out[e] = {
            "attainment": _ratio(served[e], wanted[e]),
            "deployments": deployments[e],
            "wanted_hours": wanted[e] / HOUR_S,
            "served_hours": served[e] / HOUR_S,
            "latency_ms_p50": lat.get("p50", 0.0),
            "latency_ms_p95": lat.get("p95", 0.0),
        }
    total_wanted, total_served = sum(wanted.values()), sum(served.values())
    return {"overall": _ratio(total_served, total_wanted), "by_endpoint": out}
