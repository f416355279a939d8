"""POP-style partitioned batch solve (Narayanan et al., SOSP '21) for the largest batches.

The grid's sites are cut into ``parts`` groups of about equal free GPUs, sites sorted by their
jurisdiction tags and country first, so a part is mostly one jurisdiction or region and a job
fenced to it mostly meets one part. Tier by tier (highest priority first, as ``solve_batch``):

0. (once) sites are cut into parts (``site_parts``);
1. the tier's jobs are grouped into classes on the running usage (``batch._build_units``);
2. each class's jobs are split across the parts by count, in proportion to the free GPUs its
   mask allows in each part (whole jobs; the fractional rest drawn by systematic sampling with
   the seed, so a one-job class lands in a part with probability its share, as POP assigns
   clients it cannot split); a class no part can take stays unplaced;
3. each part is solved by ``batch._solve_tier`` in a worker process, on the running usage with
   every pool outside the part drained (so nothing is placed there), the tier's holds included;
4. the answers are merged (pools are disjoint between parts, so no capacity, power or job is
   counted twice; quotas, global per tenant, are re-applied job by job in queue order);
5. the tier's bound on W is computed on the WHOLE tier, every pool, by ``batch_bound`` (not the
   sum of the parts' bounds, which bound only the partitioned problem).

The result's ``objective`` / ``best_bound`` / ``gap`` are on W alone (``big`` = 1): the
partitioned solve does not bound the cost. Fair share is not supported here (its convex terms
couple the parts); ``solve_batch`` never partitions a fair-share batch.

Worker processes are forked (``multiprocessing`` "fork" context) after the grid index and the
jobs are set in a module global, so a task carries only job indices and usage arrays.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from grid_scheduler.engine.batch import (
    BatchResult,
    TierResult,
    _build_units,
    _copy_usage,
    _solve_tier,
    _take,
    _within_quotas,
    hold_unplaced,
)
from grid_scheduler.engine.batch_arrays import ClassArrays
from grid_scheduler.engine.batch_bound import price_bound
from grid_scheduler.engine.index import GridIndex, IntArray, Usage
from grid_scheduler.engine.priority import Holds, _TierHold, job_value, tiers_descending
from grid_scheduler.engine.quota import policy_rules
from grid_scheduler.model import JobSpec, Placement, Policy

_SHARED: dict[str, Any] = {}  # set before the workers fork: index, policy, jobs


def site_parts(index: GridIndex, usage: Usage, parts: int) -> IntArray:
    """Part of each site: sites ordered by (jurisdiction tags, country, id), filled into parts in
    that order, each up to the free GPUs left / parts left (so one huge factory site fills a part
    alone and the rest share the others evenly); a site goes to the next part when more than half
    of it would overflow the current one."""
    free = np.maximum(index.pool_healthy_gpus - usage.pool_used_gpus, 0)
    site_free = np.bincount(index.pool_site, weights=free, minlength=len(index.site_ids))
    sites = index.grid.sites
    order = sorted(range(len(sites)), key=lambda s: (sorted(sites[s].tags), sites[s].location.country, sites[s].id))
    out = np.zeros(len(sites), dtype=np.int64)
    part, filled, left = 0, 0.0, float(site_free.sum())
    target = left / parts
    for s in order:
        size = float(site_free[s])
        if part < parts - 1 and filled > 0 and filled + size / 2 > target:
            part, left, filled = part + 1, left - filled, 0.0
            target = left / (parts - part)
        out[s] = part
        filled += size
    return out


def split_jobs(
    units: Sequence[Any], pool_part: IntArray, parts: int, rng: np.random.Generator
) -> tuple[list[list[str]], list[str]]:
    """Job ids per part, and the jobs no part can take (step 2 of the module doc)."""
    out: list[list[str]] = [[] for _ in range(parts)]
    nowhere: list[str] = []
    share_of: dict[tuple[int, int], Any] = {}
    for unit in units:
        key = (id(unit.mask), id(unit.checks.pool_free_gpus))
        cum = share_of.get(key)
        if cum is None:
            weights = np.where(unit.mask, unit.checks.pool_free_gpus, 0)
            cap = np.bincount(pool_part, weights=weights, minlength=parts)
            if cap.sum() > 0:
                cum = np.cumsum(cap / cap.sum())
                cum[-1] = 1.0  # exactly: no point past the end, so a part with no capacity is never drawn
            share_of[key] = cum
        if cum is None:
            nowhere.extend(unit.job_ids)
            continue
        n = len(unit.job_ids)
        # Systematic sampling: part i gets floor or ceil of n * share_i, in expectation exactly that.
        points = rng.random() + np.arange(n)
        part = np.minimum(np.searchsorted(cum * n, points, side="right"), parts - 1)
        for job_id, i in zip(unit.job_ids, part.tolist(), strict=True):
            out[i].append(job_id)
    return out, nowhere


@dataclass(frozen=True)
class _PartAnswer:
    placements: dict[str, Placement]
    status: str
    method: str
    greedy_value: int
    greedy_s: float
    build_s: float
    solve_s: float
    classes: int
    variables: int


def _solve_part(task: tuple[list[int], Usage, dict[int, _TierHold], float, int, int]) -> _PartAnswer:
    index: GridIndex = _SHARED["index"]
    policy: Policy = _SHARED["policy"]
    jobs: Sequence[tuple[str, JobSpec]] = _SHARED["jobs"]
    positions, usage, held, limit_s, seed, top_k = task
    holds = Holds(index, {p: t.copy() for p, t in held.items()})
    part_jobs = [jobs[i] for i in positions]
    result, _ = _solve_tier(index, usage, part_jobs, policy, holds, time_limit_s=limit_s, workers=1, seed=seed,
                            top_k=top_k)
    return _PartAnswer(result.placements, result.status, result.method, result.greedy_value, result.greedy_time_s,
                       result.build_time_s, result.solve_time_s, result.classes, result.variables)


def solve_partitioned(
    index: GridIndex,
    usage: Usage,
    jobs: Sequence[tuple[str, JobSpec]],
    policy: Policy,
    *,
    parts: int = 4,
    processes: int | None = None,
    time_limit_s: float = 30.0,
    seed: int = 0,
    top_k: int = 8,
) -> BatchResult:
    """Place ``jobs`` tier by tier, each tier split into ``parts`` solved in ``processes`` worker
    processes (default: ``os.cpu_count()``); see the module doc."""
    if policy.fair_share.enabled:
        raise ValueError("policy.fair_share: a partitioned batch does not support fair share")
    started = time.perf_counter()
    processes = max(1, processes or os.cpu_count() or 1)
    parts = max(1, parts)
    pool_part = site_parts(index, usage, parts)[index.pool_site]
    position = {job_id: i for i, (job_id, _) in enumerate(jobs)}
    by_tier: dict[int, list[tuple[str, JobSpec]]] = defaultdict(list)
    for job_id, spec in jobs:
        by_tier[spec.priority].append((job_id, spec))
    rng = np.random.default_rng(seed)
    rules = policy_rules(index, policy)
    running = _copy_usage(usage)
    holds = Holds(index)
    placements: dict[str, Placement] = {}
    tiers: list[TierResult] = []
    times: dict[str, float] = defaultdict(float)
    answers_all: list[_PartAnswer] = []
    _SHARED.update(index=index, policy=policy, jobs=jobs)
    pool: Executor | None = None
    try:
        if processes > 1 and parts > 1:
            fork = multiprocessing.get_context("fork")
            pool = ProcessPoolExecutor(max_workers=min(processes, parts), mp_context=fork)
        left_jobs = len(jobs)
        for priority in tiers_descending(by_tier):
            tier_jobs = by_tier[priority]
            t0 = time.perf_counter()
            arrays = ClassArrays(index, running, policy, holds)
            units = _build_units(index, running, tier_jobs, policy, holds, arrays)
            split, _ = split_jobs(units, pool_part, parts, rng)
            t1 = time.perf_counter()
            left_s = time_limit_s - (t1 - started)
            tier_s = max(left_s * len(tier_jobs) / max(left_jobs, 1), 0.05)
            left_jobs -= len(tier_jobs)
            # Parts run ``processes`` at a time: each gets its share of the tier's wall time.
            part_s = max(tier_s * min(processes, parts) / parts, 0.05)
            held = {p: t.copy() for p, t in holds._tiers.items()}
            tasks = []
            for i, ids in enumerate(split):
                if not ids:
                    continue
                drained = running.pool_drained | (pool_part != i)
                part_usage = Usage(running.pool_used_gpus, running.site_used_kw, drained, running.tenant_pool_gpus)
                tasks.append((sorted(position[j] for j in ids), part_usage, held, part_s, seed, top_k))
            answers = list(pool.map(_solve_part, tasks)) if pool is not None else [_solve_part(t) for t in tasks]
            t2 = time.perf_counter()
            tier_placed: dict[str, Placement] = {}
            for answer in answers:
                tier_placed.update(answer.placements)
            if rules is not None:  # quotas are per tenant over the whole grid: re-check across parts
                tier_placed = _within_quotas(index, running, tier_jobs, tier_placed, rules)
            bound = price_bound(index, running, units, tier_placed)
            t3 = time.perf_counter()
            spec_of = dict(tier_jobs)
            value = sum(job_value(spec_of[j]) for j in tier_placed)
            w_bound = max(bound.bound, value)
            tiers.append(TierResult(
                priority=priority, jobs=len(tier_jobs), placed=len(tier_placed), value=value,
                greedy_value=sum(a.greedy_value for a in answers), status="FEASIBLE" if w_bound > value else "OPTIMAL",
                method="+".join(sorted({a.method for a in answers})) or "greedy", objective=float(value),
                best_bound=float(w_bound), gap=(w_bound - value) / max(1.0, value), solve_time_s=t2 - t1,
            ))
            for job_id, placement in tier_placed.items():
                _take(index, running, spec_of[job_id].tenant, placement)
            hold_unplaced(holds, arrays, policy, units, tier_placed)
            placements.update(tier_placed)
            answers_all.extend(answers)
            times["split_s"] += t1 - t0
            times["parts_s"] += t2 - t1
            times["bound_s"] += t3 - t2
            times["bound_price_scale"] = max(times["bound_price_scale"], bound.scale)
            times["merge_s"] += time.perf_counter() - t3
    finally:
        if pool is not None:
            pool.shutdown()
        _SHARED.clear()
    return _result(jobs, placements, tiers, answers_all, times, parts, min(processes, parts))


def _result(
    jobs: Sequence[tuple[str, JobSpec]], placements: dict[str, Placement], tiers: list[TierResult],
    answers: list[_PartAnswer], times: dict[str, float], parts: int, processes: int,
) -> BatchResult:
    value = sum(t.value for t in tiers)
    bound = sum(t.best_bound for t in tiers)
    gap = max((t.gap for t in tiers), default=0.0)
    statuses = {t.status for t in tiers}
    extra = {
        "parts": float(parts), "processes": float(processes), **times,
        "weighted_gpus_bound": bound, "weighted_gpus_gap": gap, "tiers": float(len(tiers)),
        # Summed over parts (CPU work; the parts ran ``processes`` at a time).
        "parts_greedy_s": sum(a.greedy_s for a in answers), "parts_build_s": sum(a.build_s for a in answers),
        "parts_solve_s": sum(a.solve_s for a in answers),
    }
    return BatchResult(
        placements=placements,
        unplaced=[job_id for job_id, _ in jobs if job_id not in placements],
        status=statuses.pop() if len(statuses) == 1 else "FEASIBLE",
        method="partitioned:" + "+".join(sorted({a.method for a in answers}) or ["greedy"]),
        objective=float(value), best_bound=float(bound), gap=gap,
        build_time_s=times["split_s"] + times["bound_s"] + times["merge_s"],
        solve_time_s=times["parts_s"],
        greedy_time_s=0.0,
        greedy_objective=float(sum(t.greedy_value for t in tiers)),
        weighted_gpus=value, big=1,
        classes=sum(a.classes for a in answers), variables=sum(a.variables for a in answers),
        extra=extra, tiers=tiers, greedy_value=sum(t.greedy_value for t in tiers),
    )
