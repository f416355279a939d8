"""What a run measured: per-job facts, integrals over time, and samples for plots.

Per job: arrival, every run (start, end, how it ended, its placement's parts, latency to each
demand endpoint), re-queues, and for a job never placed, why (its ``JobRecord.waiting``).

Energy and GPU-hours *used* are summed from the runs' parts (``run_parts``), the rows of
jobs.csv, so that a planner can recompute them from that file alone and get the same numbers:
a part's energy is its power in whole watts (the ledger's unit) times its seconds, its
GPU-seconds its GPUs times its seconds; each figure is ``math.fsum`` of its parts (exact, so
the order of rows does not matter) in one unit conversion, then rounded to 6 decimals.
GPU-hours *available* and peak power are integrated from the ledger between events (it is
constant between them); samples at a fixed step feed the time series and plots.

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
import numpy.typing as npt

from grid_scheduler.engine import Usage
from grid_scheduler.model import Assignment, Grid, JobKind, JobSpec, Placement, Policy, WaitInfo
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.state import to_watts

HOUR_S = 3_600.0
J_PER_MWH = 3.6e9
DECIMALS = 6  # every summed energy, cost, carbon and GPU-hour figure is rounded to this
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
    preempted_by: str = ""  # the job that evicted it


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


@dataclass(frozen=True)
class RunPart:
    """One assignment (site, pool, GPUs) of one run of a job: one row of jobs.csv."""

    job: JobLog
    number: int  # the run's number for its job, from 1
    run: Run
    assignment: Assignment
    end_s: float  # the run's end, or the horizon if it was still running then

    @property
    def power_w(self) -> int:
        return to_watts(self.assignment.power_kw)

    @property
    def seconds(self) -> float:
        return self.end_s - self.run.start_s

    @property
    def energy_j(self) -> float:
        return self.power_w * self.seconds

    @property
    def gpu_s(self) -> float:
        return self.assignment.gpus * self.seconds


def run_parts(jobs: list[JobLog], horizon_s: float) -> list[RunPart]:
    """Every part of every run, in job order, then run order, then the placement's order."""
    return [
        RunPart(job, n, run, a, run.end_s if run.end_s is not None else horizon_s)
        for job in jobs
        for n, run in enumerate(job.runs, start=1)
        for a in run.assignments
    ]


def _sum(values: list[float], scale: float = 1.0) -> float:
    """The documented way every used figure is made: an exact sum, one division, 6 decimals."""
    return round(math.fsum(values) / scale, DECIMALS)


class Recorder:
    def __init__(self, sample_every_s: float) -> None:
        self.sample_every_s = sample_every_s
        self.t = 0.0
        self.samples: list[Sample] = []
        self.pool_meta: dict[str, tuple[str, str, str]] = {}  # pool -> (site, tier, gpu type)
        self.site_meta: dict[str, dict[str, Any]] = {}
        self.gpu_s: defaultdict[str, float] = defaultdict(float)
        self.cap_s: defaultdict[str, float] = defaultdict(float)
        self.site_kwh: defaultdict[str, float] = defaultdict(float)  # the ledger's integral (a cross-check)
        self.site_price: dict[str, float] = {}  # per MWh
        self.site_carbon: dict[str, float] = {}  # g CO2 per kWh
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
            self.site_price[site.id] = site.energy_price_per_mwh
            self.site_carbon[site.id] = site.carbon_g_per_kwh
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
            self.site_kwh[site] += float(e.kwh[i])
            self.site_peak_kw[site] = max(self.site_peak_kw[site], float(e.peak_kw[i]))
        self._epoch = None

    def finish(self, t: float, usage: Usage) -> None:
        self.advance(t, usage)
        if self._epoch is not None:
            np.maximum(self._epoch.peak_kw, usage.site_used_kw, out=self._epoch.peak_kw)
        self._fold()

    # --- samples -----------------------------------------------------------------------
    def sample(
        self, t: float, usage: Usage, pending: int, running: int, pool_used_w: npt.NDArray[np.int64],
        fragmented_gpus: int = 0,
    ) -> None:
        """``pool_used_w``: the running jobs' power per pool, in the ledger's whole watts (the
        ledger itself keeps power per site only). ``fragmented_gpus``: free GPUs no waiting job
        could start on (whatif/fragmentation.py)."""
        e = self._epoch
        assert e is not None
        add = self.samples.append
        used = usage.pool_used_gpus.astype(np.float64)
        # Healthy GPUs not in use: free for new work, unless the pool is drained (then idle, held back).
        idle = e.cap - used
        free = np.where(usage.pool_drained, 0.0, idle)
        drained = idle - free
        site_used = np.bincount(e.pool_site, weights=used, minlength=len(e.site_ids))
        site_free = np.bincount(e.pool_site, weights=free, minlength=len(e.site_ids))
        for i, site in enumerate(e.site_ids):
            add(Sample(t, "gpus_used_site", site, float(site_used[i])))
            add(Sample(t, "gpus_free_site", site, float(site_free[i])))
        for i, pool in enumerate(e.pool_ids):
            add(Sample(t, "gpus_used_pool", pool, float(used[i])))
            add(Sample(t, "gpus_free_pool", pool, float(free[i])))
            add(Sample(t, "gpus_drained_idle_pool", pool, float(drained[i])))
            add(Sample(t, "power_mw_pool", pool, float(pool_used_w[i]) / 1e6))
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
        add(Sample(t, "gpus", "fragmented", float(fragmented_gpus)))


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
    """Totals of a run: deterministic for a scenario and seed (no wall-clock figures).

    Energy, cost, carbon and GPU-hours used come from the runs' parts (see the module doc),
    so each can be recomputed from jobs.csv alone.
    """
    parts = run_parts(jobs, horizon_s)
    site_j: defaultdict[str, list[float]] = defaultdict(list)
    for part in parts:
        site_j[part.assignment.site_id].append(part.energy_j)
    sites = sorted(rec.site_meta)
    by_site = {site: _energy(math.fsum(site_j[site]), rec.site_price[site], rec.site_carbon[site])
               for site in sites}
    return {
        "jobs": _job_counts(jobs),
        "workload": workload,
        "utilisation": _utilisation(rec, parts),
        "queue_delay_hours": _delays(jobs),
        "never_placed": _never_placed(jobs),
        "slo_attainment": _slo(jobs, horizon_s),
        "power": {
            site: {
                "peak_mw": rec.site_peak_kw[site] / 1000.0,
                "min_envelope_mw": rec.site_min_envelope_mw[site],
                "mean_mw": _sum(site_j[site], horizon_s * 1e6),  # J / s = W
                "peak_over_envelope": _ratio(rec.site_peak_kw[site] / 1000.0, rec.site_min_envelope_mw[site]),
            }
            for site in sites
        },
        "energy": {
            "total": {
                "mwh": _sum([p.energy_j for p in parts], J_PER_MWH),
                "cost": _sum([v["_cost"] for v in by_site.values()]),
                "tco2": _sum([v["_tco2"] for v in by_site.values()]),
            },
            "by_site": {site: {k: v for k, v in e.items() if not k.startswith("_")} for site, e in by_site.items()},
        },
        "residency": {"placements_checked": rec.placements, "violations": rec.residency_violations},
        "fragmentation": _fragmentation(rec),
        "disruption": {
            "displaced_jobs": sum(c.displaced_jobs for c in changes),
            "displaced_gpus": sum(c.displaced_gpus for c in changes),
            "replaced_jobs": sum(c.replaced_jobs for c in changes),
            "requeues": sum(j.requeues for j in jobs),
            "preemptions": sum(j.preemptions for j in jobs),
            "jobs_preempted": sum(1 for j in jobs if j.preemptions),
        },
    }


def _fragmentation(rec: Recorder) -> dict[str, float]:
    """Free GPUs no waiting job could start on (whatif/fragmentation.py), over the samples: the
    mean over all of them (0 while nothing waits) and over those where jobs waited."""
    frag = [s.value for s in rec.samples if s.metric == "gpus" and s.key == "fragmented"]
    waiting = [s.value for s in rec.samples if s.metric == "jobs" and s.key == "pending"]
    while_waiting = [f for f, w in zip(frag, waiting, strict=True) if w > 0]
    return {
        "samples": len(frag),
        "samples_with_waiting_jobs": len(while_waiting),
        "mean_gpus": round(math.fsum(frag) / len(frag), DECIMALS) if frag else 0.0,
        "mean_gpus_while_waiting": round(math.fsum(while_waiting) / len(while_waiting), DECIMALS)
        if while_waiting else 0.0,
    }


def _energy(joules: float, price_per_mwh: float, carbon_g_per_kwh: float) -> dict[str, float]:
    """A site's energy (MWh), cost and carbon (t) from its exact joules; the unrounded cost and
    carbon (``_cost``, ``_tco2``) feed the totals, so a total is not a sum of rounded figures."""
    mwh = joules / J_PER_MWH
    cost, tco2 = mwh * price_per_mwh, mwh * carbon_g_per_kwh / 1000.0  # g/kWh = kg/MWh
    return {"mwh": round(mwh, DECIMALS), "cost": round(cost, DECIMALS), "tco2": round(tco2, DECIMALS),
            "_cost": cost, "_tco2": tco2}


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


def _utilisation(rec: Recorder, parts: list[RunPart]) -> dict[str, Any]:
    """GPU-hours used (from the runs' parts) and available (the ledger's healthy GPUs over time),
    for the fleet and by pool, site, tier and GPU type."""
    used: dict[str, dict[str, list[float]]] = {"pool": {}, "site": {}, "tier": {}, "gpu_type": {}}
    cap: dict[str, dict[str, float]] = {"pool": {}, "site": {}, "tier": {}, "gpu_type": {}}
    for pool, (site, tier, gpu_type) in rec.pool_meta.items():
        for group, key in (("pool", pool), ("site", site), ("tier", tier), ("gpu_type", gpu_type)):
            used[group].setdefault(key, [])
            cap[group][key] = cap[group].get(key, 0.0) + rec.cap_s[pool]
    for part in parts:
        site, tier, gpu_type = rec.pool_meta[part.assignment.pool_id]
        for group, key in (("pool", part.assignment.pool_id), ("site", site), ("tier", tier),
                           ("gpu_type", gpu_type)):
            used[group][key].append(part.gpu_s)

    def row(gpu_s: list[float], cap_s: float) -> dict[str, float]:
        return {"gpu_hours_used": _sum(gpu_s, HOUR_S), "gpu_hours_available": cap_s / HOUR_S,
                "utilisation": _ratio(math.fsum(gpu_s), cap_s)}

    out: dict[str, Any] = {"fleet": row([p.gpu_s for p in parts], sum(rec.cap_s.values()))}
    for group in ("site", "tier", "gpu_type", "pool"):
        out[f"by_{group}"] = {key: row(used[group][key], cap[group][key]) for key in sorted(used[group])}
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
