"""A plan's targets measured on a replay (the simulator's job log), the same way for every plan."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grid_scheduler.engine.index import GridIndex
from grid_scheduler.whatif.changes import DAY_S
from grid_scheduler.whatif.metrics import HOUR_S, JobLog
from grid_scheduler.whatif.planning.aggregate import bound_to, job_matches
from grid_scheduler.whatif.planning.spec import LoadedPlan, QueueDelayTarget, ResidencyTarget, SloTarget, Target


@dataclass(frozen=True)
class Measured:
    value: float
    met: bool
    jobs: int


def describe(target: Target) -> str:
    who = []
    if target.sources:
        who.append("/".join(target.sources))
    if target.tenants:
        who.append("tenants " + "/".join(target.tenants))
    if target.job_kind is not None:
        who.append(target.job_kind.value)
    if target.from_days:
        who.append(f"from day {target.from_days:g}")
    of = f" ({', '.join(who)})" if who else ""
    match target:
        case SloTarget():
            where = ", ".join(target.endpoints) if target.endpoints else "every endpoint"
            return f"SLO attainment at {where}{of} >= {target.min:g}"
        case QueueDelayTarget():
            return f"queue delay p95{of} <= {target.max_hours:g} h"
        case ResidencyTarget():
            return f"{target.jurisdiction} residency coverage{of} >= {target.min:g}"
    raise AssertionError(target)


def measure(target: Target, jobs: list[JobLog], horizon_s: float, index: GridIndex, loaded: LoadedPlan) -> Measured:
    since_s = target.from_days * DAY_S
    chosen = [j for j in jobs if j.arrival_s >= since_s and job_matches(target, j.spec, j.source)]
    match target:
        case SloTarget():
            value = _slo(target, chosen, horizon_s)
            return Measured(value, value >= target.min - 1e-9, len(chosen))
        case QueueDelayTarget():
            delays = [((j.runs[0].start_s if j.runs else horizon_s) - j.arrival_s) / HOUR_S for j in chosen]
            value = float(np.percentile(delays, 95)) if delays else 0.0
            return Measured(value, value <= target.max_hours + 1e-9, len(chosen))
        case ResidencyTarget():
            bound = [j for j in chosen if bound_to(j.spec, target.jurisdiction, index, loaded)]
            value = _coverage(target.jurisdiction, bound, horizon_s, index)
            return Measured(value, value >= target.min - 1e-9, len(bound))
    raise AssertionError(target)


def _slo(target: SloTarget, jobs: list[JobLog], horizon_s: float) -> float:
    """Share of wanted demand-hours served within the SLO (as ``metrics._slo``, over the target's endpoints)."""
    wanted = served = 0.0
    for j in jobs:
        inference = j.spec.inference
        assert inference is not None
        start, end = j.arrival_s, min(j.arrival_s + j.duration_s, horizon_s)
        if end <= start:
            continue
        total_w = sum(d.weight for d in inference.demand)
        for d in inference.demand:
            if target.endpoints and d.endpoint not in target.endpoints:
                continue
            w = d.weight / total_w
            wanted += w * (end - start)
            for run in j.runs:
                ms = run.latency_ms.get(d.endpoint)
                if ms is not None and ms <= inference.latency_slo_ms:
                    overlap = min(end, run.end_s if run.end_s is not None else horizon_s) - max(start, run.start_s)
                    served += w * max(overlap, 0.0)
    return served / wanted if wanted > 0 else 1.0


def _coverage(jurisdiction: str, jobs: list[JobLog], horizon_s: float, index: GridIndex) -> float:
    """GPU-seconds run inside the jurisdiction over GPU-seconds wanted, each job capped at what it wanted."""
    wanted = served = 0.0
    for j in jobs:
        want = j.spec.total_gpus * max(min(j.arrival_s + j.duration_s, horizon_s) - j.arrival_s, 0.0)
        got = 0.0
        for run in j.runs:
            seconds = (run.end_s if run.end_s is not None else horizon_s) - run.start_s
            got += sum(a.gpus for a in run.assignments
                       if jurisdiction in index.grid.site_by_id[a.site_id].tags) * max(seconds, 0.0)
        wanted += want
        served += min(got, want)
    return served / wanted if wanted > 0 else 1.0
