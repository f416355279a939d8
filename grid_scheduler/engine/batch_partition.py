"""POP-style partitioned batch solve (Narayanan et al., SOSP '21) for the largest batches.

The grid's sites are cut into ``parts`` groups of about equal free GPUs, sites sorted by their
jurisdiction tags and country first, so a part is mostly one jurisdiction or region and a job
fenced to it mostly meets one part. Tier by tier (highest priority first, as ``solve_batch``):

0. (once) sites are cut into parts (``site_parts``);
1. the tier's jobs are grouped into classes on the running usage (``batch._build_units``), with
   their checks and masks only: costs are computed in the workers, for their part;
2. each class's jobs are split across the parts by count, in proportion to the free GPUs its
   mask allows in each part (whole jobs; the fractional rest drawn by systematic sampling with
   the seed, so a one-job class lands in a part with probability its share, as POP assigns
   clients it cannot split); a class no part can take stays unplaced;
3. each part is solved by ``batch._solve_tier`` in a worker process, on the running usage with
   every pool outside the part drained (so nothing is placed there), the tier's holds included
   (with ``accept_gap``, a part whose warm start is that close to its price bound keeps it);
4. the answers are merged (pools are disjoint between parts, so no capacity, power or job is
   counted twice; quotas, global per tenant, are re-applied job by job in queue order);
5. the tier's bound on W is computed on the WHOLE tier, every pool, by ``batch_bound`` (not the
   sum of the parts' bounds, which bound only the partitioned problem).

The result's ``objective`` / ``best_bound`` / ``gap`` are on W alone (``big`` = 1): the
partitioned solve does not bound the cost. Fair share is not supported here (its convex terms
couple the parts); ``solve_batch`` never partitions a fair-share batch.

Worker processes are forked (``multiprocessing`` "fork" context) once, before the first tier,
after the grid index and the input groups (``batch_input.JobGroup``) are set in a module global
and frozen out of the cyclic collector (so neither process's collector copies the inherited
pages), so a task carries only its part's ``(group, job ids)``, usage arrays and holds.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import resource
import time
from bisect import bisect_right
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
    _Unit,
    _within_quotas,
    hold_unplaced,
)
from grid_scheduler.engine.batch_arrays import ClassArrays
from grid_scheduler.engine.batch_bound import price_bound
from grid_scheduler.engine.batch_input import JobGroup, as_groups, flatten, job_count
from grid_scheduler.engine.index import GridIndex, IntArray, Usage
from grid_scheduler.engine.priority import Holds, _TierHold, job_value, tiers_descending
from grid_scheduler.engine.quota import policy_rules
from grid_scheduler.model import JobSpec, Placement, Policy

_SHARED: dict[str, Any] = {}  # set before the workers fork: index, policy, groups


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


def split_groups(
    units: Sequence[_Unit], group_index: Sequence[int], pool_part: IntArray, parts: int, rng: np.random.Generator
) -> tuple[list[list[tuple[int, list[str]]]], list[str]]:
    """Per part, ``(input group, its job ids there)``; and the jobs no part can take (step 2 of the
    module doc). ``group_index``: the input group of each of the tier's groups (``unit.runs``)."""
    out: list[dict[int, list[str]]] = [defaultdict(list) for _ in range(parts)]
    nowhere: list[str] = []
    share_of, cum_list = _shares(units, pool_part, parts)
    for unit in units:
        key = (id(unit.mask), id(unit.checks.pool_free_gpus))
        cum = share_of[key]
        if cum is None:
            nowhere.extend(unit.job_ids)
            continue
        n = len(unit.job_ids)
        if n == 1:  # most classes at scale (each deployment with several endpoints is its own): no arrays
            i = min(bisect_right(cum_list[key], rng.random()), parts - 1)  # ``searchsorted`` below, for n = 1
            (g, _), = unit.runs
            out[i][group_index[g]].extend(unit.job_ids)
            continue
        # Systematic sampling: part i gets floor or ceil of n * share_i, in expectation exactly that.
        # The points increase, so the parts drawn do too: each part takes one slice of the class's jobs.
        points = rng.random() + np.arange(n)
        part = np.minimum(np.searchsorted(cum * n, points, side="right"), parts - 1)
        edges = np.concatenate(([0], np.cumsum(np.bincount(part, minlength=parts)))).tolist()
        at = 0
        for g, count in unit.runs:
            group = group_index[g]
            for i in range(parts):
                a, b = max(at, edges[i]), min(at + count, edges[i + 1])
                if a < b:
                    out[i][group].extend(unit.job_ids[a:b])
            at += count
    return [list(p.items()) for p in out], nowhere


_SHARE_ROWS = 1024  # masks per matrix product in ``_shares`` (8 bytes a pool each: ~40 MB at 5,000 pools)


def _shares(
    units: Sequence[_Unit], pool_part: IntArray, parts: int
) -> tuple[dict[tuple[int, int], Any], dict[tuple[int, int], list[float]]]:
    """Per distinct (mask, free GPUs) of ``units``: the cumulative share of the free GPUs the mask
    allows in each part (None: none anywhere), as an array and a list. The free GPUs per part of
    many masks are one matrix product (a ``bincount`` per mask was ~20 us, ~100k masks at 1M
    jobs); integer sums, so exact in any order."""
    firsts: dict[tuple[int, int], _Unit] = {}
    for unit in units:
        firsts.setdefault((id(unit.mask), id(unit.checks.pool_free_gpus)), unit)
    by_free: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for key in firsts:
        by_free[key[1]].append(key)
    share_of: dict[tuple[int, int], Any] = {}
    cum_list: dict[tuple[int, int], list[float]] = {}
    for keys in by_free.values():
        free = firsts[keys[0]].checks.pool_free_gpus
        per_part = np.zeros((len(pool_part), parts), dtype=np.float64)
        per_part[np.arange(len(pool_part)), pool_part] = free
        for a in range(0, len(keys), _SHARE_ROWS):
            chunk = keys[a:a + _SHARE_ROWS]
            masks = np.stack([firsts[key].mask for key in chunk]).astype(np.float64)
            caps = masks @ per_part
            for key, cap in zip(chunk, caps, strict=True):
                cum = None
                if cap.sum() > 0:
                    cum = np.cumsum(cap / cap.sum())
                    cum[-1] = 1.0  # exactly: no point past the end, so a part with no capacity is never drawn
                share_of[key] = cum
                cum_list[key] = cum.tolist() if cum is not None else []
    return share_of, cum_list


@dataclass(frozen=True)
class _PartAnswer:
    placements: dict[str, Placement]
    placed_group: dict[str, int]  # placed job -> its input group (its spec, tenant included)
    status: str
    method: str
    greedy_value: int
    greedy_s: float
    build_s: float
    solve_s: float
    classes: int
    variables: int
    peak_rss_mib: float


_Task = tuple[list[tuple[int, list[str]]], Usage, dict[int, _TierHold], float, int, int, float]


def _solve_part(task: _Task) -> _PartAnswer:
    index: GridIndex = _SHARED["index"]
    policy: Policy = _SHARED["policy"]
    groups: Sequence[JobGroup] = _SHARED["groups"]
    items, usage, held, limit_s, seed, top_k, accept_gap = task
    holds = Holds(index, {p: t.copy() for p, t in held.items()})  # racks too: whole-domain gangs hold domains
    part_groups = [JobGroup(groups[g].spec, ids) for g, ids in items]
    result, units = _solve_tier(index, usage, part_groups, policy, holds, time_limit_s=limit_s, workers=1,
                                seed=seed, top_k=top_k, accept_gap=accept_gap)
    placed_group = {job_id: g for g, ids in items for job_id in ids if job_id in result.placements}
    answer = _PartAnswer(result.placements, placed_group, result.status, result.method, result.greedy_value,
                         result.greedy_time_s, result.build_time_s, result.solve_time_s, result.classes,
                         result.variables, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    del result, units, part_groups
    if not gc.isenabled():  # forked from ``solve_partitioned``: the part's cycles (model, classes) go now
        gc.collect()
    return answer


def _start_workers(processes: int, parts: int) -> Executor | None:
    """Forked workers, started now (before the first tier's classes exist, so they inherit only the
    grid index and the input), while the caller keeps the input frozen out of the collector: a
    collection in a worker would otherwise write to every inherited object's header and so copy
    every page (the 1M attempt's workers reached 6.6 GB that way)."""
    if processes <= 1 or parts <= 1:
        return None
    pool = ProcessPoolExecutor(max_workers=min(processes, parts), mp_context=multiprocessing.get_context("fork"))
    pool.submit(os.getpid).result()  # with "fork", the first task starts every worker
    return pool


def solve_partitioned(
    index: GridIndex,
    usage: Usage,
    jobs: Sequence[tuple[str, JobSpec]] | Sequence[JobGroup],
    policy: Policy,
    *,
    parts: int = 4,
    processes: int | None = None,
    time_limit_s: float = 30.0,
    seed: int = 0,
    top_k: int = 8,
    accept_gap: float = 0.0,
) -> BatchResult:
    """Place ``jobs`` tier by tier, each tier split into ``parts`` solved in ``processes`` worker
    processes (default: ``os.cpu_count()``); see the module doc. ``accept_gap``: per part, as
    ``solve_batch``'s (a part's warm start against the part's price bound)."""
    if policy.fair_share.enabled:
        raise ValueError("policy.fair_share: a partitioned batch does not support fair share")
    started = time.perf_counter()
    processes = max(1, processes or os.cpu_count() or 1)
    parts = max(1, parts)
    groups = as_groups(jobs)
    pool_part = site_parts(index, usage, parts)[index.pool_site]
    by_tier: dict[int, list[int]] = defaultdict(list)
    for g, group in enumerate(groups):
        by_tier[group.spec.priority].append(g)
    rng = np.random.default_rng(seed)
    rules = policy_rules(index, policy)
    running = _copy_usage(usage)
    holds = Holds(index)
    placements: dict[str, Placement] = {}
    tiers: list[TierResult] = []
    times: dict[str, float] = defaultdict(float)
    answers_all: list[_PartAnswer] = []
    _SHARED.update(index=index, policy=policy, groups=groups)
    pool: Executor | None = None
    # The input (a million ids, ~500k specs) lives through the call: frozen, the cyclic collector
    # stops re-scanning it at every full collection (at 200k it was ~30 % of the parent's time,
    # spread over whatever allocated), in the parent and in the forked workers.
    gc.freeze()
    # And no cyclic collection during the call (restored after): a tier's classes are ~100k small
    # acyclic objects (keys, masks, checks) whose allocation kept triggering collections (~20 % of
    # class building); the forked workers inherit this and collect once per part instead.
    collecting = gc.isenabled()
    gc.disable()
    try:
        # Per-grid caches the workers' costs read, filled once here rather than once per worker.
        for dataset_id in sorted({d for group in groups for d in group.spec.datasets}):
            index.dataset_transfer_hours(dataset_id)
        pool = _start_workers(processes, parts)
        left_jobs = job_count(groups)
        for priority in tiers_descending(by_tier):
            tier_index = by_tier[priority]
            tier_groups = [groups[g] for g in tier_index]
            tier_n = job_count(tier_groups)
            t0 = time.perf_counter()
            arrays = ClassArrays(index, running, policy, holds)
            # Checks and masks only: the classes' costs are computed in the workers, for their part.
            units = _build_units(index, running, tier_groups, policy, holds, arrays)
            split, _ = split_groups(units, tier_index, pool_part, parts, rng)
            t1 = time.perf_counter()
            left_s = time_limit_s - (t1 - started)
            tier_s = max(left_s * tier_n / max(left_jobs, 1), 0.05)
            left_jobs -= tier_n
            # Parts run ``processes`` at a time: each gets its share of the tier's wall time.
            part_s = max(tier_s * min(processes, parts) / parts, 0.05)
            held = {p: t.copy() for p, t in holds._tiers.items()}
            tasks: list[_Task] = []
            for i, items in enumerate(split):
                if not items:
                    continue
                drained = running.pool_drained | (pool_part != i)
                part_usage = Usage(running.pool_used_gpus, running.site_used_kw, drained, running.tenant_pool_gpus)
                tasks.append((items, part_usage, held, part_s, seed, top_k, accept_gap))
            answers = list(pool.map(_solve_part, tasks)) if pool is not None else [_solve_part(t) for t in tasks]
            t2 = time.perf_counter()
            tier_placed: dict[str, Placement] = {}
            group_of: dict[str, int] = {}
            for answer in answers:
                tier_placed.update(answer.placements)
                group_of.update(answer.placed_group)
            if rules is not None:  # quotas are per tenant over the whole grid: re-check across parts
                tier_placed = _within_quotas(index, running, list(flatten(tier_groups)), tier_placed, rules)
            bound = price_bound(index, running, units, tier_placed)
            t3 = time.perf_counter()
            value = sum(job_value(groups[group_of[j]].spec) for j in tier_placed)
            w_bound = max(bound.bound, value)
            tiers.append(TierResult(
                priority=priority, jobs=tier_n, placed=len(tier_placed), value=value,
                greedy_value=sum(a.greedy_value for a in answers), status="FEASIBLE" if w_bound > value else "OPTIMAL",
                method="+".join(sorted({a.method for a in answers})) or "greedy", objective=float(value),
                best_bound=float(w_bound), gap=(w_bound - value) / max(1.0, value), solve_time_s=t2 - t1,
            ))
            for job_id, placement in tier_placed.items():
                _take(index, running, groups[group_of[job_id]].spec.tenant, placement)
            hold_unplaced(holds, arrays, policy, units, tier_placed)
            placements.update(tier_placed)
            answers_all.extend(answers)
            times["split_s"] += t1 - t0
            times["parts_s"] += t2 - t1
            times["bound_s"] += t3 - t2
            times["bound_price_scale"] = max(times["bound_price_scale"], bound.scale)
            times["merge_s"] += time.perf_counter() - t3
            del units, arrays, split, tasks, answers  # before the next tier's are built, not after
    finally:
        if pool is not None:
            pool.shutdown()
        _SHARED.clear()
        gc.unfreeze()
        if collecting:
            gc.enable()
    return _result(groups, placements, tiers, answers_all, times, parts, min(processes, parts))


def _result(
    groups: Sequence[JobGroup], placements: dict[str, Placement], tiers: list[TierResult],
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
        # Peak resident memory of a worker (its ru_maxrss, so including what it inherited).
        "worker_peak_rss_mib": max((a.peak_rss_mib for a in answers), default=0.0),
        "parts_model_skipped": float(sum(a.method == "greedy" and a.variables == 0 for a in answers)),
    }
    return BatchResult(
        placements=placements,
        unplaced=[job_id for _, job_ids in groups for job_id in job_ids if job_id not in placements],
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
