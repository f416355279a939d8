"""Why not there: the reasons, with numbers, for every site a decision did not choose.

Rendering sentences for hundreds of sites costs far more than deciding, so it is done
only when someone asks (ExplainPlacement, a job's full view, a job that waits).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from grid_scheduler.engine.feasibility import Checks, Unit, demand_rows, residency_rules
from grid_scheduler.engine.index import GridIndex
from grid_scheduler.engine.online import Decision
from grid_scheduler.model import Policy, Reason, ReasonCode, TopologyMode, WaitInfo

# Reasons a change of load or an operator can clear; the rest are facts of the grid.
TRANSIENT = frozenset({ReasonCode.CAPACITY, ReasonCode.POWER, ReasonCode.HEALTH})


def site_reasons(index: GridIndex, decision: Decision, policy: Policy) -> list[Reason]:
    """Reasons for every site not chosen, in grid order."""
    chosen_sites = set(decision.placement.site_ids) if decision.placement else set()
    chosen_cost = decision.placement.score.total if decision.placement else None
    reasons: list[Reason] = []
    for s, site_id in enumerate(index.site_ids):
        if site_id not in chosen_sites:
            reasons.extend(_reasons_for_site(index, decision, policy, s, _pools_of(index, s), chosen_cost))
    return reasons


def _reasons_for_site(
    index: GridIndex,
    decision: Decision,
    policy: Policy,
    s: int,
    pools: list[int],
    chosen_cost: float | None,
) -> list[Reason]:
    checks, spec = decision.checks, decision.spec
    site = index.grid.sites[s]
    site_id = site.id
    out: list[Reason] = []
    if not checks.site_residency_ok[s]:
        tags = ", ".join(sorted(site.tags))
        for rule, source in zip(residency_rules(spec, index, policy), _rule_sources(spec, policy), strict=True):
            if not rule.admits(site.tags):
                out.append(
                    Reason(
                        code=ReasonCode.RESIDENCY,
                        site_id=site_id,
                        message=f"site in {site.location.country} ({tags}); {source} requires {rule.describe()}",
                    )
                )
    if not checks.site_latency_ok[s] and spec.inference is not None:
        rows, _ = demand_rows(index, spec)
        latency = index.topology.endpoint_site_latency_ms[rows, s]
        nearest = int(np.argmin(latency))
        endpoint = spec.inference.demand[nearest].endpoint
        slo = spec.inference.latency_slo_ms
        shown = "unreachable" if np.isinf(latency[nearest]) else f"{latency[nearest]:.1f} ms"
        out.append(
            Reason(
                code=ReasonCode.LATENCY,
                site_id=site_id,
                endpoint_id=endpoint,
                message=f"{shown} to {endpoint} > SLO {slo:g} ms (nearest demand endpoint)",
                required=slo,
                available=float(latency[nearest]),
                unit="ms",
            )
        )
    if out:
        return out  # the site is ruled out whatever its pools hold
    if checks.site_preference_ok is not None and not checks.site_preference_ok[s]:
        return [Reason(code=ReasonCode.POLICY, site_id=site_id, message=_preference_message(decision, s))]
    if not pools:
        return [Reason(code=ReasonCode.CAPACITY, site_id=site_id, message="site has no GPU pools", unit="gpus")]
    feasible_here = False
    for p in pools:
        pool_out = _pool_reasons(index, decision, p, site_id)
        out.extend(pool_out)
        feasible_here |= not pool_out
    if checks.unit is Unit.SPLIT and feasible_here:
        site_out = _split_reasons(index, decision, s, pools, site_id)
        out.extend(site_out)
        feasible_here = not site_out
    if feasible_here:
        usable = checks.pool_eligible if checks.unit is Unit.SPLIT else checks.pool_feasible
        best = float(np.min(decision.costs.total[[p for p in pools if usable[p]]], initial=np.inf))
        if chosen_cost is not None:
            message = f"feasible, but scores {best:.3f} against the chosen {chosen_cost:.3f} (lower is better)"
        else:
            message = "feasible on its own, but the job as a whole could not be placed"
        out = [Reason(code=ReasonCode.SCORE, site_id=site_id, message=message, required=chosen_cost or 0.0,
                      available=best if np.isfinite(best) else 0.0)]
    return out


def _preference_message(decision: Decision, s: int) -> str:
    """Why the job's placement preference kept it off site ``s``: a later entry it never needed, or none."""
    levels = decision.preference
    later = next((i for i, level in enumerate(levels) if level.sites[s]), None)
    if later is not None:
        taker = levels[decision.preference_reached - 1].entry
        return (f"placement preference entry {later + 1} ({levels[later].entry}) not reached: "
                f"entry {decision.preference_reached} ({taker}) took the job")
    return "not in the placement preference (" + ", ".join(level.entry for level in levels) + ")"


def _pool_reasons(index: GridIndex, decision: Decision, p: int, site_id: str) -> list[Reason]:
    checks, spec = decision.checks, decision.spec
    pool_id = index.pool_ids[p]
    gpu_type = index.pool_gpu_type[p]
    if not checks.pool_type_ok[p]:
        wanted = " or ".join(spec.gpus.types) or "any type"
        if spec.gpus.min_memory_gib:
            wanted += f" with >= {spec.gpus.min_memory_gib:g} GiB"
        return [Reason(code=ReasonCode.GPU_TYPE, site_id=site_id, pool_id=pool_id,
                       message=f"pool {pool_id} has {gpu_type}; job needs {wanted}")]
    if not checks.pool_workload_ok[p]:
        workload = "inference" if spec.kind.value == "training" else "training"
        return [Reason(code=ReasonCode.WORKLOAD, site_id=site_id, pool_id=pool_id,
                       message=f"pool {pool_id} is reserved for {workload}")]
    if not checks.pool_health_ok[p]:
        return [Reason(code=ReasonCode.HEALTH, site_id=site_id, pool_id=pool_id,
                       message=f"pool {pool_id} is drained")]
    if checks.unit is Unit.SPLIT:
        return []  # capacity, power and quota of a split job are judged per site
    out = []
    if not checks.pool_quota_ok[p]:
        out.append(_quota_reason(checks, site_id, pool_id, checks.quota_group_of(p), checks.need_gpus))
    free = int(checks.pool_free_gpus[p])
    if not checks.pool_capacity_ok[p] and checks.topology.mode is not TopologyMode.NONE:
        out.append(_topology_reason(index, checks, p, site_id))
    elif not checks.pool_capacity_ok[p]:
        out.append(Reason(code=ReasonCode.CAPACITY, site_id=site_id, pool_id=pool_id,
                          message=f"{free} free {gpu_type} < {checks.need_gpus} in pool {pool_id}",
                          required=checks.need_gpus, available=free, unit="gpus"))
    if not checks.pool_power_ok[p]:
        out.append(_power_reason(site_id, pool_id, float(checks.site_headroom_kw[checks.pool_site[p]]),
                                 float(checks.pool_need_kw[p])))
    return out


def _topology_reason(index: GridIndex, checks: Checks, p: int, site_id: str) -> Reason:
    """Why a whole-domain or sliced job does not fit pool ``p``, in domains and slices."""
    pool_id = index.pool_ids[p]
    need = checks.need_gpus
    usable = int(checks.pool_free_gpus[p])
    domain_gpus = index.pool_shapes[p].domain_gpus
    view = checks.domain_view
    largest = view.largest_free_domain(p) if view is not None else 0
    if checks.topology.mode is TopologyMode.SLICES:
        n = checks.topology.slice_gpus
        message = (f"room for {usable // n} of {need // n} slices of {n} GPUs in pool {pool_id} "
                   f"(largest free domain: {largest} of {domain_gpus})")
    elif checks.pool_topology_ok is not None and not checks.pool_topology_ok[p]:
        message = f"{need} GPUs are not whole {domain_gpus}-GPU domains of pool {pool_id}"
    elif need == domain_gpus or usable == 0:
        message = f"no domain with {domain_gpus} free GPUs in pool {pool_id} (largest free: {largest})"
    else:
        message = (f"{usable // domain_gpus} of {need // domain_gpus} whole free {domain_gpus}-GPU domains "
                   f"in pool {pool_id}")
    return Reason(code=ReasonCode.CAPACITY, site_id=site_id, pool_id=pool_id, message=message,
                  required=need, available=usable, unit="gpus")


def _quota_reason(checks: Checks, site_id: str, pool_id: str, group: int, need_gpus: int) -> Reason:
    q = checks.quota[group]
    return Reason(code=ReasonCode.QUOTA, site_id=site_id, pool_id=pool_id,
                  message=(f"tenant quota {q.group}: uses {q.used} of nominal {q.nominal} GPUs, may borrow "
                           f"{q.borrowable} more; {need_gpus} needed"),
                  required=need_gpus, available=q.headroom, unit="gpus", used=q.used, nominal=q.nominal,
                  borrowable=q.borrowable)


def _split_quota_headroom(checks: Checks, eligible: list[int]) -> tuple[int, int]:
    """GPUs the tenant's quota allows across ``eligible`` pools (each limited group counted once),
    and the tightest group among them (-1: none limits)."""
    unlimited = 0
    groups: set[int] = set()
    for p in eligible:
        g = checks.quota_group_of(p)
        if g < 0:
            unlimited += int(checks.pool_free_gpus[p])
        else:
            groups.add(g)
    total = unlimited + sum(checks.quota[g].headroom for g in groups)
    tightest = min(groups, key=lambda g: checks.quota[g].headroom, default=-1)
    return total, tightest


def _split_reasons(index: GridIndex, decision: Decision, s: int, pools: list[int], site_id: str) -> list[Reason]:
    checks = decision.checks
    eligible = [p for p in pools if checks.pool_eligible[p]]
    if not eligible:
        return []
    if checks.quota:
        allowed, group = _split_quota_headroom(checks, eligible)
        if allowed < checks.need_gpus and group >= 0:
            return [_quota_reason(checks, site_id, "", group, checks.need_gpus)]
    free = int(sum(int(checks.pool_free_gpus[p]) for p in eligible))
    if free < checks.need_gpus:
        return [Reason(code=ReasonCode.CAPACITY, site_id=site_id,
                       message=f"{free} free eligible GPUs across the site's pools < {checks.need_gpus}",
                       required=checks.need_gpus, available=free, unit="gpus")]
    # The least power any fill could draw: every GPU from the most frugal eligible pool.
    least_kw = checks.need_gpus * float(min(index.pool_kw_per_gpu[p] for p in eligible))
    headroom_kw = float(checks.site_headroom_kw[s])
    if least_kw > headroom_kw + 1e-6:
        return [_power_reason(site_id, "", headroom_kw, least_kw)]
    return []


def _power_reason(site_id: str, pool_id: str, headroom_kw: float, need_kw: float) -> Reason:
    return Reason(code=ReasonCode.POWER, site_id=site_id, pool_id=pool_id,
                  message=f"{max(headroom_kw, 0) / 1000:.2f} MW headroom < {need_kw / 1000:.2f} MW needed",
                  required=need_kw / 1000, available=max(headroom_kw, 0) / 1000, unit="MW")


def _rule_sources(spec, policy: Policy) -> list[str]:  # type: ignore[no-untyped-def]
    """Who each residency rule comes from, in the order residency_rules lists them."""
    sources = ["job"]
    if spec.tenant in policy.tenant_residency:
        sources.append(f"tenant {spec.tenant} policy")
    sources.extend(f"dataset {d}" for d in spec.datasets)
    return sources


def wait_info(index: GridIndex, decision: Decision, policy: Policy, limit: int = 3) -> WaitInfo:
    """Why the job is not placed: sites per reason, and the few sentences that matter most.

    This runs for every job that waits, so it counts with arrays and renders only the
    ``limit`` sentences it keeps: the same counts ``site_reasons`` would give (a test holds
    the two together), at a fraction of the cost on a large grid.
    """
    masks = site_code_masks(index, decision)
    counts = {code.value: int(mask.sum()) for code, mask in masks.items() if mask.any()}
    summary: list[str] = []
    if decision.uncovered_endpoints:
        summary.append("no replica can serve " + ", ".join(decision.uncovered_endpoints) + " within the SLO")
    near = _near_reasons(index, decision, limit)
    summary.extend(f"{r.site_id}: {r.code.value}: {r.message}" for r in near)
    if not near:
        first = _first_reasons(index, decision, policy, limit)
        summary.extend(f"{r.site_id}: {r.code.value}: {r.message}" for r in first)
    return WaitInfo(site_counts=dict(sorted(counts.items())), summary=summary)


def site_code_masks(index: GridIndex, decision: Decision) -> dict[ReasonCode, npt.NDArray[np.bool_]]:
    """Per reason code, the sites whose reasons (as ``site_reasons`` renders them) include it."""
    checks = decision.checks
    n_sites = len(index.site_ids)
    site = checks.pool_site

    def any_at_site(pool_mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        return np.bincount(site, weights=pool_mask, minlength=n_sites) > 0

    residency = ~checks.site_residency_ok
    latency = ~checks.site_latency_ok if decision.spec.inference is not None else np.zeros(n_sites, np.bool_)
    fenced = ~(residency | latency)
    preferred = checks.site_preference_ok if checks.site_preference_ok is not None else np.ones(n_sites, np.bool_)
    open_site = fenced & preferred
    has_pools = np.bincount(site, minlength=n_sites) > 0
    type_fail = ~checks.pool_type_ok
    workload_fail = checks.pool_type_ok & ~checks.pool_workload_ok
    health_fail = checks.pool_type_ok & checks.pool_workload_ok & ~checks.pool_health_ok
    eligible = checks.pool_eligible
    no_pools = open_site & ~has_pools
    if checks.unit is Unit.SPLIT:
        split_quota = _split_quota_failures(index, decision)
        split_capacity, split_power = _split_failures(index, decision)
        split_capacity &= ~split_quota
        split_power &= ~split_quota
        feasible = any_at_site(eligible) & ~split_capacity & ~split_power & ~split_quota
        capacity_sites, power_sites, quota_sites = split_capacity, split_power, split_quota
    else:
        feasible = any_at_site(checks.pool_feasible)
        capacity_sites = any_at_site(eligible & ~checks.pool_capacity_ok)
        power_sites = any_at_site(eligible & ~checks.pool_power_ok)
        quota_sites = any_at_site(eligible & ~checks.pool_quota_ok)
    pool_sites = open_site & has_pools & ~feasible
    chosen = np.zeros(n_sites, dtype=np.bool_)
    if decision.placement is not None:
        chosen[[index.site_index[s] for s in decision.placement.site_ids]] = True
    masks = {
        ReasonCode.RESIDENCY: residency,
        ReasonCode.LATENCY: latency,
        ReasonCode.POLICY: fenced & ~preferred,
        ReasonCode.GPU_TYPE: pool_sites & any_at_site(type_fail),
        ReasonCode.WORKLOAD: pool_sites & any_at_site(workload_fail),
        ReasonCode.HEALTH: pool_sites & any_at_site(health_fail),
        ReasonCode.CAPACITY: (pool_sites & capacity_sites) | no_pools,
        ReasonCode.POWER: pool_sites & power_sites,
        ReasonCode.QUOTA: pool_sites & quota_sites,
        ReasonCode.SCORE: open_site & has_pools & feasible,
    }
    return {code: mask & ~chosen for code, mask in masks.items()}


def _split_quota_failures(index: GridIndex, decision: Decision) -> npt.NDArray[np.bool_]:
    """Per site, whether a split job's quota (not capacity or power) rules it out, as _split_reasons says."""
    checks = decision.checks
    out = np.zeros(len(index.site_ids), dtype=np.bool_)
    if not checks.quota:
        return out
    for s in np.unique(checks.pool_site[checks.pool_eligible]):
        eligible = [p for p in _pools_of(index, int(s)) if checks.pool_eligible[p]]
        allowed, group = _split_quota_headroom(checks, eligible)
        out[s] = allowed < checks.need_gpus and group >= 0
    return out


def _split_failures(index: GridIndex, decision: Decision) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per site, whether a split job fails on capacity, or (with enough GPUs) on power."""
    checks = decision.checks
    n_sites = len(index.site_ids)
    eligible = checks.pool_eligible
    free = np.bincount(checks.pool_site, weights=np.where(eligible, checks.pool_free_gpus, 0), minlength=n_sites)
    least_kw_per_gpu = np.full(n_sites, np.inf)
    np.minimum.at(least_kw_per_gpu, checks.pool_site[eligible], index.pool_kw_per_gpu[eligible])
    has_eligible = np.isfinite(least_kw_per_gpu)
    capacity = has_eligible & (free < checks.need_gpus)
    power = has_eligible & ~capacity & (checks.need_gpus * least_kw_per_gpu > checks.site_headroom_kw + 1e-6)
    return capacity, power


def _near_reasons(index: GridIndex, decision: Decision, limit: int) -> list[Reason]:
    """The transient reasons (capacity, power, health) with the smallest shortfall, one per site
    and reason, rendered.

    A site ruled out by residency or latency has no pool reasons, so these belong to sites
    that could take the job once capacity frees. Ties go to grid order.
    """
    checks = decision.checks
    open_site = checks.site_residency_ok & (checks.site_latency_ok if decision.spec.inference is not None else True)
    if checks.site_preference_ok is not None:
        open_site = open_site & checks.site_preference_ok
    candidates: list[tuple[float, int, int, Reason]] = []
    if checks.unit is Unit.SPLIT:
        capacity, power = _split_failures(index, decision)
        for s in np.flatnonzero(open_site & (capacity | power))[: limit * 4]:
            pools = _pools_of(index, int(s))
            for r in _split_reasons(index, decision, int(s), pools, index.site_ids[s]):
                candidates.append((-(r.available / r.required) if r.required else 0.0, int(s), -1, r))
    pool_open = open_site[checks.pool_site] & checks.pool_type_ok & checks.pool_workload_ok
    health = pool_open & ~checks.pool_health_ok
    eligible = pool_open & checks.pool_health_ok
    if checks.unit is not Unit.SPLIT:
        short_gpus = eligible & ~checks.pool_capacity_ok
        short_power = eligible & ~checks.pool_power_ok
        need = max(checks.need_gpus, 1)
        gpu_key = np.where(short_gpus, -(checks.pool_free_gpus / need), np.inf)
        headroom = np.maximum(checks.site_headroom_kw[checks.pool_site], 0.0)
        power_key = np.where(short_power, -(headroom / np.maximum(checks.pool_need_kw, 1e-9)), np.inf)
        key = np.minimum(gpu_key, power_key)
        key = np.where(health & ~np.isfinite(key), 0.0, key)
        # Only a pool in the first `limit` by key can hold one of the first `limit` reasons.
        order = np.lexsort((np.arange(len(key)), key))[: limit * 4]
        for p in order:
            if not np.isfinite(key[p]):
                break
            site_id = index.site_ids[int(checks.pool_site[p])]
            for r in _pool_reasons(index, decision, int(p), site_id):
                if r.code in TRANSIENT:
                    k = -(r.available / r.required) if r.required else 0.0
                    candidates.append((k, int(checks.pool_site[p]), int(p), r))
    else:
        for p in np.flatnonzero(health)[:limit]:
            site_id = index.site_ids[int(checks.pool_site[p])]
            candidates.extend((0.0, int(checks.pool_site[p]), int(p), r)
                              for r in _pool_reasons(index, decision, int(p), site_id))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    # One sentence per site and reason: a site's power shortfall reads the same for each pool.
    seen: set[tuple[str, ReasonCode]] = set()
    out: list[Reason] = []
    for _, _, _, reason in candidates:
        if (reason.site_id, reason.code) not in seen:
            seen.add((reason.site_id, reason.code))
            out.append(reason)
    return out[:limit]


def _first_reasons(index: GridIndex, decision: Decision, policy: Policy, limit: int) -> list[Reason]:
    """The first reason of each of the first ``limit`` sites (in grid order) that has one."""
    out: list[Reason] = []
    for s in range(len(index.site_ids)):
        reasons = _reasons_for_site(index, decision, policy, s, _pools_of(index, s), None)
        first = next((r for r in reasons if r.code is not ReasonCode.SCORE), None)
        if first is not None:
            out.append(first)
            if len(out) == limit:
                break
    return out


def _pools_of(index: GridIndex, s: int) -> list[int]:
    """Pool indices of site ``s`` (the grid lists pools site by site)."""
    return list(range(int(index.site_pool_bounds[s]), int(index.site_pool_bounds[s + 1])))
