"""Why a target cannot be met: read off the feasibility model's shortfall and the aggregate.

For a target short in period p, in this order: demand that no site (existing or candidate)
admits at all (residency, latency, GPU type); GPUs that cannot arrive before p (lead time);
power that, with every upgrade at its earliest, cannot feed the GPUs the demand needs (the
power runway); GPUs too few even with every candidate; else the target shares its sites with
other targets' demand.
"""

from __future__ import annotations

from grid_scheduler.engine.feasibility import residency_rules
from grid_scheduler.whatif.planning.aggregate import Aggregate, DemandClass, Group
from grid_scheduler.whatif.planning.model import Solution, need_share
from grid_scheduler.whatif.planning.spec import LoadedPlan
from grid_scheduler.whatif.planning.targets import describe


def explain(loaded: LoadedPlan, agg: Aggregate, feasibility: Solution) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    targets = loaded.plan.targets
    for t, short in sorted(feasibility.shortfall.items()):
        periods = [p for p, s in enumerate(short) if s > 1e-9]
        if not periods:
            continue
        p = periods[0]
        out.append({
            "target": t,
            "what": describe(targets[t]),
            "periods_short": periods,
            "first_short_day": loaded.period_start_days(p),
            "worst_shortfall_share": round(max(short), 6),
            "why": _why(loaded, agg, t, p, feasibility.cap),
        })
    return out


def _why(loaded: LoadedPlan, agg: Aggregate, t: int, p: int, cap: float) -> str:
    members = [c for c in agg.classes if t in c.targets and c.gpu_hours[p] > 0]
    day = loaded.period_start_days(p)
    nowhere = [c for c in members if not c.groups]
    if nowhere:
        c = max(nowhere, key=lambda c: c.gpu_hours[p])
        return (f"demand '{c.label}' ({c.gpu_hours[p]:,.0f} GPU-hours in the period from day {day:g}) has no site, "
                f"existing or candidate, that can take it: {_nowhere(agg, c)}")
    hours = agg.period_hours[p]
    need_gpu_h = need_share(loaded.plan.targets[t]) * sum(c.gpu_hours[p] for c in members)
    groups: set[Group] = set().union(*(c.groups for c in members)) if members else set()
    now = {g: agg.base_gpus.get((g, p), 0) for g in groups}
    late = []
    for e in agg.effects:
        adds = e.gpus.get((e.earliest, p), {}) if e.earliest <= p else {}
        for g, n in adds.items():
            if g in now:
                now[g] += n
        if e.earliest > p and any(g in groups for by in e.gpus.values() for g in by):
            late.append(f"{e.candidate.id} (not before day {loaded.period_start_days(e.earliest):g})")
    gpu_h = sum(now.values()) * hours * cap
    sites = sorted({g[0] for g in groups})
    env = {s: agg.base_envelope_mw.get((s, p), 0.0) + sum(e.add_mw.get(s, 0.0) for e in agg.effects
                                                          if e.earliest <= p) for s in sites}
    # GPU-hours the envelopes can feed, filling each site's most frugal GPUs first
    power_gpu_h = 0.0
    for s in sites:
        kw = sorted((agg.group_kw_per_gpu[g], now[g]) for g in groups if g[0] == s)
        budget_kwh = env[s] * 1000 * hours
        for per_gpu, gpus in kw:
            take = min(gpus * hours * cap, budget_kwh / per_gpu)
            power_gpu_h += take
            budget_kwh -= take * per_gpu
    if power_gpu_h < need_gpu_h and power_gpu_h < gpu_h:
        mean_kw = sum(agg.group_kw_per_gpu[g] * now[g] for g in groups) / max(sum(now.values()), 1)
        need_mw = need_gpu_h * mean_kw / hours / 1000
        later = [f"{e.candidate.id} (+{mw:,.0f} MW, not before day {loaded.period_start_days(e.earliest):g})"
                 for e in agg.effects for s, mw in e.add_mw.items() if s in sites and e.earliest > p]
        why = (f"power runway too short in the period from day {day:g}: the demand needs ~{need_mw:,.0f} MW "
               f"at {', '.join(sites)}, which have {sum(env.values()):,.0f} MW with every upgrade at its earliest")
        return why + ("; later: " + ", ".join(later) if later else "")
    if gpu_h < need_gpu_h:
        why = (f"too few GPUs in the period from day {day:g}: {need_gpu_h:,.0f} GPU-hours needed, "
               f"{gpu_h:,.0f} available at {', '.join(sites) or 'no site'} with every candidate at its earliest "
               f"(utilisation cap {cap:g})")
        if late:
            why += "; lead time: " + ", ".join(late)
        return why
    why = (f"in the period from day {day:g} its sites ({', '.join(sites)}) are shared with other targets' demand "
           f"and cannot serve both")
    return why + ("; lead time: " + ", ".join(late) if late else "")


def _nowhere(agg: Aggregate, c: DemandClass) -> str:
    """Which rule rules the sites out: residency, the SLO, or the GPU type and workload."""
    spec, eligible = c.example, agg.eligible
    resident = eligible.resident_sites(spec)
    near = eligible.sites_within_slo(spec, c.endpoint)
    rules = " and ".join(r.describe() for r in residency_rules(spec, eligible.index, eligible.policy)
                         if r.allowed or r.denied) or "no residency rule"
    if not resident:
        return f"no site satisfies {rules}"
    if spec.inference is not None and c.endpoint is not None:
        slo = spec.inference.latency_slo_ms
        if not resident & near:
            close = ", ".join(f"{s} ({'/'.join(sorted(_tags(agg, s)))})" for s in sorted(near)) or "none"
            return (f"no site that satisfies {rules} is within the {slo:g} ms SLO of {c.endpoint} "
                    f"(sites within it: {close})")
    types = "/".join(spec.gpus.types) or "any type"
    return (f"sites {', '.join(sorted(resident & near))} satisfy residency and latency, but none has or may get "
            f"{types} GPUs for {spec.kind.value}")


def _tags(agg: Aggregate, site: str) -> frozenset[str]:
    return agg.eligible.index.grid.site_by_id[site].tags
