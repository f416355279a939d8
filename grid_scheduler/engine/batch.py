"""Batch placement: many pending jobs at once, with OR-Tools CP-SAT.

The naive model (one boolean per job x pool) does not scale, so the model is built over
*classes*: jobs whose specs are equal except for their name are interchangeable, and one
integer per (class, candidate pool) says how many of them go there. Per class only the
best K feasible pools (by the policy's cost) are candidates, widened while they cannot hold
the class's demand, plus every pool the greedy answer used, so the greedy answer is always a
point of the model. That greedy answer (the online ``decide``, job by job, highest priority
first) warm-starts the solver (``add_hint``) and is also the floor: if CP-SAT returns
nothing, or something worse, the greedy answer is returned.

Units of work in the model (a "class" is a set of jobs the model cannot tell apart):

- gang class (training, and single-replica inference): ``n[c, p]`` jobs of the class in
  pool ``p``, at most the class's count in all. Non-gang training jobs are treated as gang
  jobs here (one pool each): simpler, and a split job still fits later through the online path.
  A single replica must be within SLO of *every* demand endpoint, a static mask.
  Jobs of ``BIG_JOB_GPUS`` or more stay individual (a class of their own).
- replica class (inference with several replicas): ``n[c, p]`` replicas in pool ``p`` and
  ``k[c]`` deployments placed, ``sum_p n = replicas * k``. With one demand endpoint every
  eligible pool serves it, so identical deployments pool their replicas (any split of the
  replicas into groups is a valid answer). With several endpoints a deployment is its own
  class (``k`` is 0 or 1) and, per demand endpoint, ``sum_{p within SLO} n >= k``
  (a covering constraint).

What the class key leaves out, because no check, cost or value reads it: the name, the tenant
(unless the policy has a rule for it), the datasets' order, and the traffic weight of a
deployment's only endpoint.

Hard constraints: free GPUs per pool, site power headroom, and through the candidate
masks (``compute_checks`` on the given usage, never re-derived here) residency, GPU type,
workload, health and latency. Quotas (``engine/quota.py``, the one rule): a class never mixes
tenants whose quotas differ (the tenant is in the class key when it has a quota), each tier's
model has one row per (tenant, limited group) capping the GPUs added at the tenant's headroom
and one per (cohort, group) capping them at what the cohort can still lend plus its members'
unused guaranteed quota (both necessary conditions), and the decoded plan is then filtered
job by job, in queue order, by the exact rule (``QuotaRules.over``): a job the rule refuses
stays unplaced, so a plan never breaks a quota (and the ledger re-checks at commit anyway).
A job's placement preference (engine/preference.py): its fence is in the same masks, its
order a cost step per entry (``_ranked_cost``), so the cost phase fills the first entry first,
as the online path does.

Racks (issue 11's ``JobSpec.topology``): a whole-domain or slice job is planned only where its
commit finds nodes. Each pool gets a rack row (whole free domains) and its GPU row counts such a
job's racks' GPUs; the nodes the tiers above take are carried down in queue order
(``engine/batch_racks.py``, which says why the rows suffice). A topology job left unplaced holds
its racks against the tiers below, as in the queue.

Priority tiers (``engine/priority.py``, the one definition) are solved one after the other,
highest first, each on the capacity the tiers above left: a lower tier can never outweigh a
higher one, whatever its size (a 128-GPU priority-0 job never displaces a 60-GPU priority-1
job). Jobs of a tier that stay unplaced *hold* capacity against the non-preemptible jobs of
the tiers below (``Holds``), exactly as on the online path. Each tier's result is reported
(``BatchResult.tiers``); the overall gap is the largest tier's gap, and each tier's bound holds
given the placements of the tiers above it.

Objective within a tier, lexicographic: first maximise ``W``, the sum of ``value`` (the job's
GPU-hours, ``priority.job_value``) over placed jobs; then, with ``W`` held at what was found,
minimise ``C``, the policy's weighted cost per GPU from ``pool_costs`` (evaluated on the
usage at the start of the cycle) times each job's GPUs, times ``COST_SCALE`` (x1000: three
decimals of a term that lies in [0, sum of weights] per GPU), rounded per job and pool. With
fair share on, ``C`` also has a fair-share part (``_Model._add_fair``): per tenant, its GPUs
placed in the tier equal the sum of ``FAIR_STEPS`` slice variables whose cost per GPU grows with
its weighted share (``fairshare.convex_steps``), so the cheapest answer fills tenants
progressively, as the queue order does; the top slice costs one more than any pool's cost per GPU.
The two are solved one after the other (the first at most ``PHASE1_SHARE`` of the time), not
as one weighted sum: a single objective ``BIG * W - C`` is equivalent, but its huge
coefficients leave CP-SAT's LP bound loose by ~10 % where the two phases prove optimality.
For reporting (and comparing with the greedy answer) the pair is folded into that one
number, ``objective = BIG * W - C`` with ``BIG`` larger than any possible ``C``; its bound is
``BIG * bound(W) - bound(C)`` (the cost bound counts only when ``W`` is proven optimal).
Power is in integer milliwatts (``POWER_SCALE``), needs rounded up and headroom rounded
down, so the integer model is never more permissive than the float one.

The bound on ``W``. CP-SAT's own bound after a few seconds is weak at scale (30 % at 10k jobs x
500 pools; none at all when presolve does not finish), so ``W`` is also bounded by the LP
relaxation of the same rows, solved by GLOP (at most ``LP_SHARE`` of the time limit) and
re-derived from its duals by weak duality (valid whatever GLOP's tolerances); the smallest of
that, CP-SAT's bound and "every job placed" is reported. Each pool's capacity in the model is
first cut to the largest sum of its candidates' sizes that fits (a bounded subset sum: no
integer answer uses more), which tightens the LP where gangs leave fragments. When the greedy
answer already reaches the bound, ``W`` is proven and the whole time goes to the cost phase;
once ``W`` is proven, a second GLOP solve (``W`` held) bounds ``C`` the same way.
``extra`` reports the two halves of the folded gap: ``weighted_gpus_gap`` (W against its bound)
and, once ``W`` is proven, ``cost_gap``. All bounds are on the candidate model (best K pools per
class), not on every pool.

Speed at 100k jobs: the model is kept as arrays and handed to CP-SAT as one text-format proto
(parsed in C++), classes that differ only in priority share their checks and costs, and each
class's cost array is computed once.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from ortools.linear_solver import linear_solver_pb2, pywraplp
from ortools.sat.python import cp_model

from grid_scheduler.engine.batch_arrays import ClassArrays, node_detail, plain
from grid_scheduler.engine.batch_bound import price_bound
from grid_scheduler.engine.batch_greedy import greedy_by_class
from grid_scheduler.engine.batch_input import JobGroup, Jobs, as_groups, flatten, job_count
from grid_scheduler.engine.batch_racks import RackLedger, TierRacks, has_topology
from grid_scheduler.engine.fairshare import charge, convex_steps, share_per_gpu
from grid_scheduler.engine.feasibility import Checks, latency_coverage
from grid_scheduler.engine.index import BoolArray, FloatArray, GridIndex, IntArray, Usage
from grid_scheduler.engine.online import build_placement, decide
from grid_scheduler.engine.preference import entries as preference_entries
from grid_scheduler.engine.preference import pool_rank, preference_levels
from grid_scheduler.engine.priority import Holds, job_value, tiers_descending
from grid_scheduler.engine.quota import QuotaRules, policy_rules
from grid_scheduler.engine.scoring import PoolCosts
from grid_scheduler.model import JobKind, JobSpec, Placement, Policy, TopologyMode

COST_SCALE = 1000  # cost terms x1000 -> integer (see module doc)
POWER_SCALE = 1_000_000  # kW -> mW
BIG_JOB_GPUS = 512  # gang jobs this large are never aggregated
LP_SHARE = 0.3  # of the time limit, at most, for GLOP's bound on W (it needs ~2 s at 340k variables)
PHASE1_SHARE = 0.8  # of the time left after the LP, for W; the cost phase gets the rest (at least 0.1 s)
LARGE_MODEL_VARS = 5_000
HUGE_MODEL_VARS = 100_000
KNAPSACK_WORK = 300_000_000  # DP cells per bound (deterministic, ~1 s): beyond, Dantzig's bound


@dataclass(frozen=True)
class TierResult:
    """One priority tier's solve."""

    priority: int
    jobs: int
    placed: int
    value: int  # sum of job_value (GPU-hours x HOUR_UNITS) over the tier's placed jobs
    greedy_value: int
    status: str
    method: str
    objective: float
    best_bound: float
    gap: float
    solve_time_s: float


@dataclass(frozen=True)
class BatchResult:
    placements: dict[str, Placement]
    unplaced: list[str]
    status: str  # CP-SAT status (OPTIMAL, FEASIBLE, UNKNOWN, ...) of the solve
    method: str  # "cp-sat" or "greedy": which answer is returned
    objective: float  # of the returned answer, in model units (see module doc)
    best_bound: float  # CP-SAT's bound on the candidate model
    gap: float  # |bound - objective| / max(1, |objective|)
    build_time_s: float
    solve_time_s: float
    greedy_time_s: float
    greedy_objective: float
    weighted_gpus: int  # sum of job_value (GPU-hours x HOUR_UNITS) over placed jobs, every tier
    big: int  # the lexicographic weight within a tier: objective = big * value - scaled cost (top tier's)
    classes: int = 0
    variables: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    tiers: list[TierResult] = field(default_factory=list)  # highest priority first
    greedy_value: int = 0  # weighted_gpus of the greedy answer


# An answer, per unit: (jobs or deployments placed, {pool: jobs (gang) or replicas there}).
Answer = list[tuple[int, dict[int, int]]]


class _CostSource:
    """A class's ``PoolCosts`` and ranked total per pool, computed on first use. Kept when shared
    between classes (``ClassArrays.keeps_costs``); a deployment's own costs are recomputed on each
    use instead (twice in a solve: warm start, candidates), so a million-job batch does not hold
    ~150k pairs of arrays over every pool; once candidates are chosen the class keeps only theirs
    (``_Unit.candidate_cost``)."""

    __slots__ = ("_build", "_value", "keep")

    def __init__(self, build: Callable[[], tuple[PoolCosts, FloatArray]], keep: bool) -> None:
        self._build, self.keep = build, keep
        self._value: tuple[PoolCosts, FloatArray] | None = None

    def get(self) -> tuple[PoolCosts, FloatArray]:
        if self._value is not None:
            return self._value
        value = self._build()
        if self.keep:
            self._value = value
        return value


@dataclass
class _Unit:
    """A class of interchangeable jobs (see module doc)."""

    spec: JobSpec  # as modelled (gang for training)
    job_ids: list[str]
    checks: Checks
    source: _CostSource  # costs and total (see ``costs`` / ``total``)
    gpus: int  # per job (gang) or per replica
    replicas: int  # 1 for gang classes
    value: int  # (priority + 1) * GPUs of one job
    mask: BoolArray  # candidate-eligible pools
    covering: bool  # several demand endpoints: coverage constraints apply
    candidates: list[int] = field(default_factory=list)
    cover: BoolArray | None = None  # covering classes: latency_coverage, computed once
    greedy: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # job -> [(pool, gpus)]
    runs: list[tuple[int, int]] = field(default_factory=list)  # (input group, its jobs here), in job_ids' order
    candidate_cost: FloatArray | None = None  # ``total`` at ``candidates``, once they are chosen

    @property
    def costs(self) -> PoolCosts:
        return self.source.get()[0]

    @property
    def total(self) -> FloatArray:
        """``costs.total``, ranked by the placement preference (``_ranked_cost``)."""
        return self.source.get()[1]

    def cost_at(self, p: int) -> float:
        """``total[p]``, from the candidates' costs when ``p`` is one."""
        if self.candidate_cost is not None:
            i = bisect_left(self.candidates, p)
            if i < len(self.candidates) and self.candidates[i] == p:
                return float(self.candidate_cost[i])
        return float(self.total[p])

    @property
    def gang(self) -> bool:
        return self.replicas == 1

    @property
    def demand_slots(self) -> int:
        return len(self.job_ids) * self.replicas


def as_modelled(spec: JobSpec) -> JobSpec:
    """The spec the batch places: non-gang training becomes a gang (one pool)."""
    if spec.kind is JobKind.TRAINING and not spec.gang:
        return spec.model_copy(update={"gang": True})
    return spec


def class_key(spec: JobSpec, policy: Policy) -> Hashable:
    """Equal for jobs every check and cost treats alike (see module doc)."""
    rules = spec.residency
    inference = None
    if spec.inference is not None:
        single = len(spec.inference.demand) == 1
        demand = tuple((d.endpoint, 1.0 if single else d.weight) for d in spec.inference.demand)
        inference = (spec.inference.replicas, spec.inference.latency_slo_ms, demand)
    return (
        spec.kind, spec.gpus.count, tuple(spec.gpus.types), spec.gpus.min_memory_gib, spec.gang, spec.priority,
        tuple(rules.allowed), tuple(rules.denied), tuple(spec.datasets), inference,
        spec.tenant if (spec.tenant in policy.tenant_residency or policy.fair_share.enabled
                        or _has_quota(policy, spec.tenant)) else None,
        job_value(spec), spec.preemptible, tuple(preference_entries(spec, policy)),
    )


def _ranked_cost(index: GridIndex, spec: JobSpec, policy: Policy, costs: PoolCosts) -> FloatArray:
    """The cost the model minimises: with a placement preference, each later entry costs one
    step more than any pool of the entries before it could (a step exceeds the largest cost per
    GPU, the sum of the weights), so the cost phase fills the first entry first, as ``decide``
    does; the value phase (which jobs run at all) does not see it."""
    rank = pool_rank(index, spec, policy)
    if rank is None:
        return costs.total
    w = policy.weights
    step = w.latency + w.carbon + w.energy_price + w.packing + w.data_movement + 1.0
    return np.asarray(costs.total + step * rank, dtype=np.float64)


def _has_quota(policy: Policy, tenant: str) -> bool:
    return any(tenant in cohort.tenants for cohort in policy.quotas.cohorts)


def _copy_usage(usage: Usage) -> Usage:
    """A running copy the batch may add to, tenants' quota usage included."""
    return Usage(usage.pool_used_gpus.copy(), usage.site_used_kw.copy(), usage.pool_drained.copy(),
                 {t: row.copy() for t, row in usage.tenant_pool_gpus.items()})


def _take(index: GridIndex, running: Usage, tenant: str, placement: Placement) -> None:
    row = running.tenant_pool_gpus.get(tenant)
    if row is None:
        row = np.zeros(len(index.pool_ids), dtype=np.int64)
        assert isinstance(running.tenant_pool_gpus, dict)
        running.tenant_pool_gpus[tenant] = row
    for a in placement.assignments:
        p = index.pool_index[a.pool_id]
        running.pool_used_gpus[p] += a.gpus
        running.site_used_kw[index.pool_site[p]] += a.power_kw
        row[p] += a.gpus


def _within_quotas(
    index: GridIndex, usage: Usage, jobs: Sequence[tuple[str, JobSpec]], placements: dict[str, Placement],
    rules: QuotaRules,
) -> dict[str, Placement]:
    """The placements the quota rule admits, taken in queue order on top of ``usage``."""
    running = _copy_usage(usage)
    kept: dict[str, Placement] = {}
    for job_id, spec in jobs:
        placement = placements.get(job_id)
        if placement is None:
            continue
        adds = [(index.pool_index[a.pool_id], a.gpus) for a in placement.assignments]
        if rules.over(running.tenant_pool_gpus, spec.tenant, adds):
            continue
        _take(index, running, spec.tenant, placement)
        kept[job_id] = placement
    return kept


_PRIORITY_AT = 5  # position of the priority in class_key's tuple


def _without_priority(key: Hashable) -> Hashable:
    assert isinstance(key, tuple)
    return key[:_PRIORITY_AT] + key[_PRIORITY_AT + 1:]


MIN_TIER_S = 0.05  # the least solver time a tier gets
PARTITION_JOBS = 300_000  # from this many jobs, solve_batch partitions (batch_partition.py)
BY_CLASS_JOBS = 2_000  # from this many jobs in a tier, the warm start places classes, not jobs (batch_greedy.py)


def solve_batch(
    index: GridIndex,
    usage: Usage,
    jobs: Jobs | Sequence[JobGroup],
    policy: Policy,
    *,
    time_limit_s: float = 5.0,
    workers: int = 2,
    seed: int = 0,
    top_k: int = 8,
    weighted_shares: Mapping[str, float] | None = None,
    by_class: bool | None = None,
    partition: bool | None = None,
    parts: int = 4,
    processes: int | None = None,
    accept_gap: float = 0.0,
) -> BatchResult:
    """Place as much of ``jobs`` as fits in ``usage``'s free capacity, tier by tier (highest
    priority first), each tier maximising GPU-hours and then minimising the policy's cost.

    With fair share on, ``weighted_shares`` is each tenant's share / weight at the start of the
    cycle (``fairshare.weighted_shares``); among answers of equal GPU-hours, tenants below their
    share are served first, by progressive filling (``fairshare.convex_steps``), then the cost decides.

    The time limit is shared out between tiers by their number of jobs, re-shared after each.
    Returns every tier's result and their union; never worse, tier by tier, than the greedy.

    ``by_class``: the warm start places classes, not jobs (None: from ``BY_CLASS_JOBS`` jobs in a
    tier). ``partition``: solve POP-style in ``parts`` parts on ``processes`` worker processes
    (engine/batch_partition.py; None: from ``PARTITION_JOBS`` jobs, never with fair share on).
    ``accept_gap``: a tier whose warm start is within this gap of the price bound (``batch_bound``)
    keeps it without building the model (0: the model is always built).

    ``jobs``: ``(job_id, spec)`` pairs, or ``JobGroup``s (engine/batch_input.py: one spec, many
    ids), whose queue order is their flattening; on the same order both give the same plan.
    """
    groups = as_groups(jobs)
    n_jobs = job_count(groups)
    if partition is None:
        partition = n_jobs >= PARTITION_JOBS and not policy.fair_share.enabled
    # Whole-domain and slice jobs need racks as the commit will find them (engine/batch_racks.py);
    # the partitioned solve does not carry them between its worker processes.
    racks = RackLedger(index, usage) if any(has_topology(g.spec) for g in groups) else None
    if partition and racks is not None:
        partition = False
    if partition:
        from grid_scheduler.engine.batch_partition import solve_partitioned  # it imports this module

        return solve_partitioned(index, usage, groups, policy, parts=parts, processes=processes,
                                 time_limit_s=time_limit_s, seed=seed, top_k=top_k, accept_gap=accept_gap)
    started = time.perf_counter()
    by_tier: dict[int, list[JobGroup]] = defaultdict(list)
    for group in groups:
        by_tier[group.spec.priority].append(group)
    running = _copy_usage(usage)
    holds = Holds(index)
    fair = dict(weighted_shares or {}) if policy.fair_share.enabled else None
    results: list[tuple[int, BatchResult]] = []
    left_jobs = n_jobs
    for priority in tiers_descending(by_tier):
        tier_groups = by_tier[priority]
        tier_n = job_count(tier_groups)
        left_s = time_limit_s - (time.perf_counter() - started)
        limit = max(left_s * tier_n / max(left_jobs, 1), MIN_TIER_S)
        left_jobs -= tier_n
        tier_fair = _Fair(dict(fair), policy, share_per_gpu(index)) if fair is not None else None
        arrays = ClassArrays(index, running, policy, holds)
        result, units = _solve_tier(index, running, tier_groups, policy, holds, time_limit_s=limit, workers=workers,
                                    seed=seed, top_k=top_k, fair=tier_fair, by_class=by_class, arrays=arrays,
                                    accept_gap=accept_gap, racks=racks)
        results.append((priority, result))
        spec_of = _placed_specs(tier_groups, result.placements)
        for job_id, placement in result.placements.items():
            if fair is not None:  # lower tiers see what this one took, as the queue order does
                charge(fair, index, policy, spec_of[job_id].tenant, placement.gpus, placement.power_kw)
            _take(index, running, spec_of[job_id].tenant, placement)
        hold_unplaced(holds, arrays, policy, units, result.placements)
    return _combine(groups, results)


def _placed_specs(groups: Sequence[JobGroup], placements: Mapping[str, Placement]) -> dict[str, JobSpec]:
    """The input spec of each placed job (a class's spec is its first job's: tenants may differ)."""
    return {job_id: spec for spec, job_ids in groups for job_id in job_ids if job_id in placements}


def hold_unplaced(
    holds: Holds, arrays: ClassArrays, policy: Policy, units: list[_Unit], placements: Mapping[str, Placement]
) -> None:
    """``holds.hold_for`` every unplaced job, one call per distinct shadow: the pools held are the
    same, the power held is the shadow's times the number of jobs (rounded once, not per job).
    A class's modelled spec has its jobs' shadow (``as_modelled`` changes only ``gang``, which
    no static check and no power need reads)."""
    count: dict[tuple[int, int], int] = defaultdict(int)
    first: dict[tuple[int, int], tuple[JobSpec, tuple[BoolArray, FloatArray]]] = {}
    for unit in units:
        waiting = sum(1 for job_id in unit.job_ids if job_id not in placements)
        if not waiting or unit.spec.priority == 0:
            continue  # priority 0: nothing is below, hold_for holds nothing
        pools, site_kw = arrays.shadow(unit.spec, unit.checks)
        # Whole-domain gangs hold domains, per gang and by size (rule 1): apart from the rest.
        key = (id(pools), unit.spec.total_gpus if unit.spec.topology.mode is TopologyMode.WHOLE_DOMAINS else -1)
        count[key] += waiting
        first.setdefault(key, (unit.spec, (pools, site_kw)))
    for key, (spec, (pools, site_kw)) in first.items():
        holds.hold_for(spec, policy, (pools, site_kw * count[key]), jobs=count[key])


def _combine(groups: Sequence[JobGroup], results: list[tuple[int, BatchResult]]) -> BatchResult:
    if not results:
        return _solve_tier_empty()
    placements: dict[str, Placement] = {}
    tiers: list[TierResult] = []
    for priority, r in results:
        placements.update(r.placements)
        tiers.append(TierResult(
            priority=priority, jobs=len(r.placements) + len(r.unplaced), placed=len(r.placements),
            value=r.weighted_gpus, greedy_value=r.greedy_value, status=r.status, method=r.method,
            objective=r.objective, best_bound=r.best_bound, gap=r.gap, solve_time_s=r.solve_time_s,
        ))
    statuses = {r.status for _, r in results}
    top = results[0][1]
    extra = dict(top.extra) if len(results) == 1 else _combined_extra([r for _, r in results])
    return BatchResult(
        placements=placements,
        unplaced=[job_id for _, job_ids in groups for job_id in job_ids if job_id not in placements],
        status=statuses.pop() if len(statuses) == 1 else ("FEASIBLE" if "OPTIMAL" in statuses else top.status),
        method="+".join(sorted({r.method for _, r in results})),
        objective=sum(r.objective for _, r in results),
        best_bound=sum(r.best_bound for _, r in results),
        gap=max(r.gap for _, r in results),
        build_time_s=sum(r.build_time_s for _, r in results),
        solve_time_s=sum(r.solve_time_s for _, r in results),
        greedy_time_s=sum(r.greedy_time_s for _, r in results),
        greedy_objective=sum(r.greedy_objective for _, r in results),
        weighted_gpus=sum(r.weighted_gpus for _, r in results),
        big=top.big,
        classes=sum(r.classes for _, r in results),
        variables=sum(r.variables for _, r in results),
        extra=extra,
        tiers=tiers,
        greedy_value=sum(r.greedy_value for _, r in results),
    )


def _combined_extra(results: list[BatchResult]) -> dict[str, float]:
    """Gaps: the largest tier's; bounds and times: summed over the tiers that report them."""
    extra: dict[str, float] = {"tiers": float(len(results))}
    for r in results:
        for key, value in r.extra.items():
            if key.endswith("_gap"):
                extra[key] = max(extra.get(key, 0.0), value)
            elif key != "cost_scale":
                extra[key] = extra.get(key, 0.0) + value
    return extra


def _solve_tier_empty() -> BatchResult:
    return BatchResult(placements={}, unplaced=[], status="OPTIMAL", method="greedy", objective=0.0,
                       best_bound=0.0, gap=0.0, build_time_s=0.0, solve_time_s=0.0, greedy_time_s=0.0,
                       greedy_objective=0.0, weighted_gpus=0, big=1)


def _solve_tier(
    index: GridIndex,
    usage: Usage,
    jobs: Jobs | Sequence[JobGroup],
    policy: Policy,
    holds: Holds,
    *,
    time_limit_s: float,
    workers: int,
    seed: int,
    top_k: int,
    fair: _Fair | None = None,
    by_class: bool | None = None,
    arrays: ClassArrays | None = None,
    accept_gap: float = 0.0,
    racks: RackLedger | None = None,
) -> tuple[BatchResult, list[_Unit]]:
    """One tier: every job has the same priority; ``holds`` is what the tiers above wait for;
    ``fair``: the fair-share term when fair share is on; ``by_class``: the warm start's (``_greedy``);
    ``accept_gap``: as ``solve_batch``'s; ``racks``: the nodes the tiers above left, when the batch
    has whole-domain or slice jobs (engine/batch_racks.py): this tier's placements are taken there."""
    groups = as_groups(jobs)
    t0 = time.perf_counter()
    units = _build_units(index, usage, groups, policy, holds, arrays)
    t_units = time.perf_counter()
    tier_racks = _tier_racks(index, racks, units)
    _greedy(index, usage, policy, groups, units, holds, by_class, tier_racks)
    greedy_time = time.perf_counter() - t_units
    greedy_placed = {job_id for unit in units for job_id in unit.greedy}
    price = price_bound(index, usage, units, greedy_placed).bound if units else None
    greedy_w = sum(unit.value * len(unit.greedy) for unit in units)
    if accept_gap > 0 and price is not None and (price - greedy_w) <= accept_gap * max(greedy_w, 1):
        return _greedy_result(index, policy, groups, units, price, t_units - t0, greedy_time, racks), units
    t1 = time.perf_counter()
    for unit in units:
        _choose_candidates(index, unit, top_k)
    rules = policy_rules(index, policy)
    model = _Model(index, usage, units, fair, rules, tier_racks)
    t2 = time.perf_counter()
    greedy_answer = _greedy_answer(units)
    greedy_obj = model.evaluate(greedy_answer)
    outcome = model.solve(time_limit_s, workers, seed, greedy_answer, price if model.has_vars else None)
    t3 = time.perf_counter()
    build_time = (t_units - t0) + (t2 - t1)
    use_solver = outcome.answer is not None and model.evaluate(outcome.answer) >= greedy_obj
    answer = outcome.answer if use_solver and outcome.answer is not None else greedy_answer
    objective = model.evaluate(answer)
    bound = max(outcome.bound, objective) if model.has_vars else objective
    placements = _decode(index, policy, units, answer, use_solver)
    if rules is not None:
        placements = _within_quotas(index, usage, list(flatten(groups)), placements, rules)
    planned = len(placements)
    if racks is not None:  # the commit's nodes, in queue order; drops what would find none
        placements = racks.admit(flatten(groups), placements)
    unplaced = [job_id for _, job_ids in groups for job_id in job_ids if job_id not in placements]
    spec_of = _placed_specs(groups, placements)
    extra = {"cost_scale": float(model.cost_scale), **outcome.extra}
    if racks is not None:
        extra["rack_dropped"] = float(planned - len(placements))  # 0 unless the rack rows missed a case
    if model.has_vars:
        # The folded gap split in two: W against its bound, and (once W is proven) C against its bound.
        w = sum(unit.value * placed for unit, (placed, _) in zip(units, answer, strict=True))
        w_bound = max(outcome.extra.get("weighted_gpus_bound", w), w)
        extra["weighted_gpus_gap"] = (w_bound - w) / max(1.0, w)
        if "cost_bound" in extra and w >= w_bound:
            cost = model.big * w - objective
            extra["cost_gap"] = max(cost - extra["cost_bound"], 0.0) / max(1.0, cost)
    result = BatchResult(
        placements=placements,
        unplaced=unplaced,
        status=outcome.status if model.has_vars else "OPTIMAL",
        method="cp-sat" if use_solver else "greedy",
        objective=objective,
        best_bound=bound,
        gap=abs(bound - objective) / max(1.0, abs(objective)),
        build_time_s=build_time,
        solve_time_s=t3 - t2,
        greedy_time_s=greedy_time,
        greedy_objective=greedy_obj,
        weighted_gpus=sum(job_value(spec_of[j]) for j in placements),
        big=model.big,
        classes=len(units),
        variables=model.n_vars,
        extra=extra,
        greedy_value=greedy_w,
    )
    return result, units


def _greedy_result(
    index: GridIndex, policy: Policy, groups: Sequence[JobGroup], units: list[_Unit], price: int, build_s: float,
    greedy_s: float, racks: RackLedger | None = None,
) -> BatchResult:
    """The warm start as the tier's answer, no model built (``accept_gap``): W alone is the
    objective (``big`` = 1, as the partitioned solve reports), bounded by the price bound."""
    placements = _decode(index, policy, units, _greedy_answer(units), from_solver=False)
    if racks is not None:
        placements = racks.admit(flatten(groups), placements)
    spec_of = _placed_specs(groups, placements)
    w = sum(job_value(spec_of[j]) for j in placements)
    bound = max(price, w)
    gap = (bound - w) / max(1.0, w)
    return BatchResult(
        placements=placements,
        unplaced=[job_id for _, job_ids in groups for job_id in job_ids if job_id not in placements],
        status="OPTIMAL" if bound <= w else "FEASIBLE", method="greedy", objective=float(w),
        best_bound=float(bound), gap=gap, build_time_s=build_s, solve_time_s=0.0, greedy_time_s=greedy_s,
        greedy_objective=float(w), weighted_gpus=w, big=1, classes=len(units), variables=0,
        extra={"weighted_gpus_bound": float(bound), "price_weighted_gpus_bound": float(price),
               "weighted_gpus_gap": gap, "model_skipped": 1.0},
        greedy_value=sum(unit.value * len(unit.greedy) for unit in units),
    )


FAIR_STEPS = 8  # slices of each tenant's convex fair-share cost in one tier's model


@dataclass(frozen=True)
class _Fair:
    """The fair-share term of a tier (engine/fairshare.py rule 4)."""

    weighted: Mapping[str, float]  # tenant -> share / weight at the start of the tier
    policy: Policy
    per_gpu: float  # dominant share one GPU adds


# --- classes -------------------------------------------------------------------------
def _build_units(
    index: GridIndex, usage: Usage, jobs: Jobs | Sequence[JobGroup], policy: Policy, holds: Holds,
    arrays: ClassArrays | None = None,
) -> list[_Unit]:
    """Jobs grouped into classes, each with its checks (against ``holds.overlay(usage, spec)``),
    candidate mask and (computed on first use) costs, assembled from shared parts
    (``batch_arrays.ClassArrays``). A group's jobs share a class key: it is computed once a group."""
    arrays = arrays if arrays is not None else ClassArrays(index, usage, policy, holds)
    groups = as_groups(jobs)
    arrays.prepare(group.spec for group in groups)
    by_key: dict[Hashable, _Unit] = {}
    # Checks, costs and masks read no priority: classes that differ only in it share them.
    shared: dict[Hashable, tuple[Checks, BoolArray, _CostSource]] = {}
    units: list[_Unit] = []
    for g, (original, job_ids) in enumerate(groups):
        spec = as_modelled(original)
        replicas = spec.inference.replicas if spec.inference is not None else 1
        covering = spec.inference is not None and replicas > 1 and len(spec.inference.demand) > 1
        individual = covering or spec.total_gpus >= BIG_JOB_GPUS
        ckey = class_key(spec, policy)
        skey = _without_priority(ckey)
        entry = shared.get(skey)
        if entry is None:
            entry = shared[skey] = _class_parts(index, policy, arrays, spec, replicas)
        checks, mask, source = entry
        for key, ids in ((("job", job_id), [job_id]) for job_id in job_ids) if individual else ((ckey, job_ids),):
            unit = by_key.get(key)
            if unit is None:
                unit = by_key[key] = _Unit(
                    spec=spec, job_ids=[], checks=checks, source=source, gpus=spec.gpus.count, replicas=replicas,
                    value=job_value(spec), mask=mask, covering=covering,
                )
                units.append(unit)
            unit.job_ids.extend(ids)
            unit.runs.append((g, len(ids)))
    return units


def _class_parts(
    index: GridIndex, policy: Policy, arrays: ClassArrays, spec: JobSpec, replicas: int
) -> tuple[Checks, BoolArray, _CostSource]:
    """A class's checks and candidate mask, and its costs' source (computed when first used)."""
    # A non-preemptible job sees the capacity that higher tiers hold as taken.
    checks = arrays.checks(spec)
    mask: BoolArray = checks.pool_feasible
    if spec.inference is not None and replicas == 1:
        # One replica must serve every demand endpoint by itself.
        def serving() -> BoolArray:
            cover = checks.demand_cover if checks.demand_cover is not None else latency_coverage(index, spec)
            serves_all = np.asarray(cover.all(axis=0), dtype=np.bool_)
            return np.asarray(mask & serves_all[index.pool_site])

        if arrays.exact or not plain(spec):
            mask = serving()
        elif len(spec.inference.demand) == 1:
            pass  # one endpoint: serving it is being within SLO of one, which the (interned) mask has checked
        else:  # memoised checks: the mask is shared too (one per checks and endpoint set)
            assert spec.inference is not None
            endpoints = tuple(d.endpoint for d in spec.inference.demand)
            mask = arrays.memo(("serving", id(checks), endpoints), lambda: arrays.intern("pools", serving()))

    def build() -> tuple[PoolCosts, FloatArray]:
        costs = arrays.costs(spec, checks)
        return costs, _ranked_cost(index, spec, policy, costs)

    return checks, mask, _CostSource(build, arrays.keeps_costs(spec))


def _tier_racks(index: GridIndex, racks: RackLedger | None, units: list[_Unit]) -> TierRacks | None:
    """The rack figures of the pools the tier's whole-domain and slice classes may use (None: it
    has none). A pool without the racks for one slot of such a class now never gets one in this
    tier (racks only go): it leaves the class's mask, so its candidates, warm start and price bound."""
    if racks is None:
        return None
    topology = [u for u in units if has_topology(u.spec)]
    if not topology:
        return None
    tier = racks.tier(np.flatnonzero(np.logical_or.reduce([u.mask for u in topology])).tolist())
    for unit in topology:
        pools = np.flatnonzero(unit.mask)
        need = tier.slot_racks(index, unit.spec, unit.gpus, pools)
        room = tier.free_gpus[pools] >= need * tier.domain_gpus[pools]
        ok = (need > 0) & (tier.whole_domains[pools] >= need) & room
        if not ok.all():
            mask = unit.mask.copy()  # masks are shared between classes: a new one
            mask[pools[~ok]] = False
            unit.mask = mask
    return tier


def _greedy(
    index: GridIndex, usage: Usage, policy: Policy, jobs: Jobs | Sequence[JobGroup], units: list[_Unit],
    holds: Holds, by_class: bool | None = None, racks: TierRacks | None = None,
) -> None:
    """The warm start: the online decision, job by job, in queue order, on a running copy of usage;
    or (``by_class``; None: from ``BY_CLASS_JOBS`` jobs up) class by class, placing counts
    (engine/batch_greedy.py), which quotas, several preference levels, a ledger with node detail or
    a job asking for a topology inside pools (issue 11) never take. With ``racks`` (the tier has
    whole-domain or slice jobs), the answer keeps to the model's rack and GPU rows (``_RackRoom``)."""
    groups = as_groups(jobs)
    if by_class is None:
        by_class = job_count(groups) >= BY_CLASS_JOBS
    if by_class and policy_rules(index, policy) is None and not node_detail(index, usage) and not any(
            len(preference_levels(index, u.spec, policy)) > 1 or not plain(u.spec) for u in units):
        greedy_by_class(index, usage, policy, units, holds)
        return
    unit_of = {job_id: unit for unit in units for job_id in unit.job_ids}
    running = _copy_usage(usage)
    room = _RackRoom(index, running, racks) if racks is not None else None
    queue = list(flatten(groups))
    order = sorted(range(len(queue)), key=lambda i: -queue[i][1].priority)
    failed: set[int] = set()  # usage only grows, so once a class fails, its later jobs fail too
    for i in order:
        job_id, _ = queue[i]
        unit = unit_of[job_id]
        if id(unit) in failed:
            continue
        view = holds.overlay(running, unit.spec)
        if room is not None and has_topology(unit.spec):
            view = room.only_with_racks(view, unit)
        decision = decide(index, view, unit.spec, policy)
        if decision.placement is None:
            failed.add(id(unit))
            continue
        fill = [(index.pool_index[a.pool_id], a.gpus) for a in decision.placement.assignments]
        if room is not None and has_topology(unit.spec) and not room.fits(unit, fill):
            failed.add(id(unit))  # racks only shrink within the tier: its later jobs find none either
            continue
        _take(index, running, unit.spec.tenant, decision.placement)
        if room is not None and has_topology(unit.spec):
            room.take(unit, fill)
        unit.greedy[job_id] = fill


class _RackRoom:
    """The model's rack rows (engine/batch_racks.py) in the exact warm start, on its running usage:
    a whole-domain or slice job goes only where its racks are left, and counts its racks' GPUs
    at pool level (``S * r``), so plain jobs leave them; pools with fewer free GPUs on nodes than
    at pool level are counted at the nodes' figure from the start."""

    def __init__(self, index: GridIndex, running: Usage, racks: TierRacks) -> None:
        self.index, self.running, self.racks = index, running, racks
        self.left = racks.whole_domains.copy()
        np.maximum(running.pool_used_gpus, index.pool_healthy_gpus - racks.free_gpus, out=running.pool_used_gpus)
        self._need: dict[int, IntArray] = {}

    def need(self, unit: _Unit) -> IntArray:
        """Racks one slot of ``unit`` counts in each pool (-1: never fits; see ``slot_racks``)."""
        need = self._need.get(id(unit))
        if need is None:
            pools = np.arange(len(self.index.pool_ids), dtype=np.int64)
            need = np.full(len(pools), -1, dtype=np.int64)
            mask = unit.mask
            need[mask] = self.racks.slot_racks(self.index, unit.spec, unit.gpus, pools[mask])
            self._need[id(unit)] = need
        return need

    def only_with_racks(self, view: Usage, unit: _Unit) -> Usage:
        """``view`` with every pool lacking racks for one slot of ``unit`` made full."""
        need = self.need(unit)
        free = self.index.pool_healthy_gpus - view.pool_used_gpus
        ok = (need > 0) & (self.left >= need) & (free >= need * self.racks.domain_gpus)
        used = np.where(ok, view.pool_used_gpus, np.maximum(view.pool_used_gpus, self.index.pool_healthy_gpus))
        return replace(view, pool_used_gpus=used)

    def fits(self, unit: _Unit, fill: list[tuple[int, int]]) -> bool:
        need = self.need(unit)
        for p, gpus in fill:
            racks = (gpus // unit.gpus) * int(need[p])
            free = int(self.index.pool_healthy_gpus[p] - self.running.pool_used_gpus[p])
            if need[p] <= 0 or racks > self.left[p] or racks * int(self.racks.domain_gpus[p]) > free:
                return False
        return True

    def take(self, unit: _Unit, fill: list[tuple[int, int]]) -> None:
        """After ``_take``: the racks, and their GPUs beyond the job's own."""
        need = self.need(unit)
        for p, gpus in fill:
            racks = (gpus // unit.gpus) * int(need[p])
            self.left[p] -= racks
            self.running.pool_used_gpus[p] += racks * int(self.racks.domain_gpus[p]) - gpus


def _greedy_answer(units: list[_Unit]) -> Answer:
    out: Answer = []
    for unit in units:
        counts: dict[int, int] = defaultdict(int)
        for fill in unit.greedy.values():
            for p, gpus in fill:
                counts[p] += gpus // unit.gpus
        out.append((len(unit.greedy), dict(counts)))
    return out


def _choose_candidates(index: GridIndex, unit: _Unit, top_k: int) -> None:
    """Best K pools by cost, widened (up to 4K) while they cannot hold the class's demand;
    a covering deployment gets the best K per demand endpoint; the greedy's pools always stay."""
    feasible = np.flatnonzero(unit.mask)
    chosen = {p for fill in unit.greedy.values() for p, _ in fill}
    total = unit.total
    if feasible.size:
        order = feasible[np.argsort(total[feasible], kind="stable")]
        if unit.covering:
            assert unit.spec.inference is not None
            unit.cover = latency_coverage(index, unit.spec)
            cover = unit.cover[:, index.pool_site[order]]
            for row in cover:
                chosen.update(int(p) for p in order[row][:top_k])
            chosen.update(int(p) for p in order[:top_k])
        else:
            held = np.cumsum(unit.checks.pool_free_gpus[order] // unit.gpus)
            enough = int(np.searchsorted(held, unit.demand_slots)) + 1  # pools that hold the whole class
            chosen.update(int(p) for p in order[: min(max(top_k, enough), 4 * top_k)])
    unit.candidates = sorted(chosen)
    unit.candidate_cost = total[unit.candidates]


# --- the CP-SAT model ----------------------------------------------------------------
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class _Row:
    """One linear constraint ``lo <= coeffs . vars <= hi`` (None: that side is open).

    ``lp_scale`` multiplies the coefficients and bounds in the LP only (power rows are in mW:
    kept in kW there so GLOP sees numbers of a sensible size)."""

    vars: IntArray
    coeffs: IntArray
    lo: int | None
    hi: int | None
    lp_scale: float = 1.0
    pool: bool = False  # a pool's GPU row (the knapsack bound keeps these whole)


class _Model:
    """The class model as arrays: one variable per (class, candidate pool), contiguous per class,
    then one ``k`` per replica class. It reaches CP-SAT as one text-format proto (parsed in C++),
    not as one Python call per variable: at 340k variables, ~1 s instead of ~25 s."""

    def __init__(
        self, index: GridIndex, usage: Usage, units: list[_Unit], fair: _Fair | None = None,
        quota: QuotaRules | None = None, racks: TierRacks | None = None,
    ) -> None:
        self.units = units
        n_units, n_pools, n_sites = len(units), len(index.pool_ids), len(index.site_ids)
        free: IntArray = np.maximum(index.pool_healthy_gpus - usage.pool_used_gpus, 0).astype(np.int64)
        headroom_kw = np.maximum(index.site_envelope_kw - usage.site_used_kw, 0.0)  # a site over its envelope: 0
        headroom_mw = np.floor((headroom_kw + 1e-6) * POWER_SCALE).astype(np.int64)
        self.cost_scale, self.big = _scales(units, int(free.sum()))
        lens = np.array([len(u.candidates) for u in units], dtype=np.int64)
        uid = np.repeat(np.arange(n_units, dtype=np.int64), lens)
        pool = _concat([np.asarray(u.candidates, dtype=np.int64) for u in units], np.int64)
        cost = _concat([_candidate_cost(u) for u in units], np.float64)
        unit_gpus = np.array([u.gpus for u in units], dtype=np.int64)
        unit_slots = np.array([u.demand_slots for u in units], dtype=np.int64)
        upper = np.minimum(unit_slots[uid], free[pool] // np.maximum(unit_gpus[uid], 1))
        rack = np.zeros(len(uid), dtype=np.int64)  # racks a slot counts (engine/batch_racks.py); 0: plain
        if racks is not None:
            free = np.minimum(free, racks.free_gpus)
            for u in np.flatnonzero([has_topology(unit.spec) for unit in units]).tolist():
                lo, hi = (int(i) for i in np.searchsorted(uid, [u, u + 1]))
                rack[lo:hi] = racks.slot_racks(index, units[u].spec, units[u].gpus, pool[lo:hi])
            up_racks = racks.whole_domains[pool] // np.maximum(rack, 1)
            upper = np.where(rack > 0, np.minimum(upper, up_racks), np.where(rack < 0, 0, upper))
        keep = upper > 0
        self.var_unit: IntArray = uid[keep]
        self.var_pool: IntArray = pool[keep]
        x_upper: IntArray = upper[keep]
        gpus = unit_gpus[self.var_unit]
        var_rack = rack[keep]
        # A pool's GPU row counts a topology slot's racks' GPUs (engine/batch_racks.py), not its own.
        pool_gpus = gpus if racks is None else np.where(var_rack > 0, var_rack * racks.domain_gpus[self.var_pool], gpus)
        # Same arithmetic, in the same order, as ``cost``: round(total * gpus * scale).
        self.var_cost: IntArray = np.round(cost[keep] * gpus * self.cost_scale).astype(np.int64)
        self.n_x = n_x = len(self.var_pool)
        self.start: IntArray = np.searchsorted(self.var_unit, np.arange(n_units + 1))
        has_x = self.start[1:] > self.start[:-1]
        replica = np.array([not u.gang for u in units], dtype=np.bool_) & has_x
        self.k_index: IntArray = np.full(n_units, -1, dtype=np.int64)
        self.k_index[replica] = n_x + np.arange(int(replica.sum()))
        counts = np.array([len(u.job_ids) for u in units], dtype=np.int64)
        self.upper: IntArray = np.concatenate([x_upper, counts[replica]])
        self.n_vars = len(self.upper)
        self.var_cost_all: IntArray = np.concatenate([self.var_cost, np.zeros(self.n_vars - n_x, dtype=np.int64)])
        self.has_vars = self.n_vars > 0
        values = np.array([u.value for u in units], dtype=np.int64)
        gang_x = np.flatnonzero(~replica[self.var_unit])
        self.w_vars: IntArray = np.concatenate([gang_x, self.k_index[replica]])
        self.w_coeffs: IntArray = np.concatenate([values[self.var_unit[gang_x]], values[replica]])
        # Every job with a candidate placed: a valid bound on W whatever else happens.
        self.w_trivial = int(values[has_x] @ counts[has_x])

        rows: list[_Row] = []
        ids = np.arange(self.n_vars, dtype=np.int64)  # slices of these are views, not copies
        ones = np.ones(max((len(u.candidates) for u in units), default=0) + 1, dtype=np.int64)
        for u, unit in enumerate(units):
            a, b = int(self.start[u]), int(self.start[u + 1])
            if a == b:
                continue
            xs = ids[a:b]
            if unit.gang:
                if int(x_upper[a:b].sum()) > len(unit.job_ids):
                    rows.append(_Row(xs, ones[: b - a], None, len(unit.job_ids)))
                continue
            k = int(self.k_index[u])
            coeffs = ones[: b - a + 1].copy()
            coeffs[-1] = -unit.replicas
            rows.append(_Row(np.concatenate((xs, ids[k:k + 1])), coeffs, 0, 0))
            if unit.covering:
                pool_site = index.pool_site[self.var_pool[a:b]]
                for row in unit.cover if unit.cover is not None else latency_coverage(index, unit.spec):
                    serving = xs[row[pool_site]]
                    if not serving.size:
                        self.upper[k] = 0  # an endpoint no candidate serves: the deployment is out
                        break
                    coeffs = ones[: serving.size + 1].copy()
                    coeffs[-1] = -1
                    rows.append(_Row(np.concatenate((serving, ids[k:k + 1])), coeffs, 0, None))
        # Pools: free GPUs, tightened to the largest sum of candidate sizes that fits (valid:
        # no integer answer uses more); no row where the variables' bounds cannot exceed it.
        load = pool_gpus * x_upper
        order = np.argsort(self.var_pool, kind="stable")
        edges = np.searchsorted(self.var_pool[order], np.arange(n_pools + 1))
        pool_max = np.bincount(self.var_pool, weights=load, minlength=n_pools)
        self.gpus_cut = 0
        for p in np.flatnonzero(pool_max > free):
            idx = order[edges[p]:edges[p + 1]]
            cap = _subset_cap(pool_gpus[idx], x_upper[idx], int(free[p]))
            self.gpus_cut += int(free[p]) - cap
            rows.append(_Row(idx, pool_gpus[idx], None, cap, pool=True))
        if racks is not None:  # racks: whole free domains per pool (engine/batch_racks.py)
            rack_max = np.bincount(self.var_pool, weights=var_rack * x_upper, minlength=n_pools)
            for q in np.flatnonzero(rack_max > racks.whole_domains).tolist():
                idx = order[edges[q]:edges[q + 1]]
                idx = idx[var_rack[idx] > 0]
                rows.append(_Row(idx, var_rack[idx], None, int(racks.whole_domains[q])))
        # Sites: power headroom, in integer mW (needs rounded up, headroom down).
        need = np.ceil(gpus * index.pool_kw_per_gpu[self.var_pool] * POWER_SCALE - 1e-6).astype(np.int64)
        var_site = index.pool_site[self.var_pool]
        site_max = np.bincount(var_site, weights=need * x_upper, minlength=n_sites)
        order = np.argsort(var_site, kind="stable")
        edges = np.searchsorted(var_site[order], np.arange(n_sites + 1))
        for s in np.flatnonzero(site_max > headroom_mw):
            idx = order[edges[s]:edges[s + 1]]
            rows.append(_Row(idx, need[idx], None, int(headroom_mw[s]), 1.0 / POWER_SCALE))
        if quota is not None:  # quotas bind both phases: base rows
            rows.extend(_quota_rows(quota, usage, units, self.var_unit, self.var_pool, gpus))
        # Per tenant: its x variables, their GPUs, its first fair-share variable, the slices' sizes.
        self.fair_groups: list[tuple[IntArray, IntArray, int, IntArray]] = []
        self.n_base, n_rows = self.n_vars, len(rows)
        if fair is not None:
            self._add_fair(fair, rows, gpus, x_upper, int(free.sum()))
        self.rows = rows
        self.cp = cp_model.CpModel()
        text = [f"variables{{domain:0 domain:{u}}}" for u in self.upper[: self.n_base].tolist()]
        text.extend(_linear_text(r.vars, r.coeffs, r.lo, r.hi) for r in rows[:n_rows])
        self.cp.proto.merge_text_format("".join(text))
        # The fair-share variables and rows join the CP-SAT model for the cost phase only: they do
        # not bear on W, so the W phase searches the same model as with fair share off (but for
        # the classes being split by tenant).
        fair_text = [f"variables{{domain:0 domain:{u}}}" for u in self.upper[self.n_base:].tolist()]
        fair_text.extend(_linear_text(r.vars, r.coeffs, r.lo, r.hi) for r in rows[n_rows:])
        self._fair_text = "".join(fair_text)

    def solve(
        self, time_limit_s: float, workers: int, seed: int, greedy: Answer, price_bound: int | None = None
    ) -> _Outcome:
        """Bound W with the LP; maximise W (hinted with the greedy answer) unless the greedy
        answer already meets the bound; then hold W and minimise C. ``price_bound``: a valid bound
        on W over every pool (``batch_bound``, so also on this candidate model); when the greedy
        answer meets it on a large model, the LP is skipped."""
        if not self.has_vars:
            return _Outcome("OPTIMAL", [(0, {}) for _ in self.units], 0.0, {})
        started = time.perf_counter()
        hint = self.vector(greedy)
        w_greedy = int(self.w_coeffs @ hint[self.w_vars])
        w_bound = self.w_trivial if price_bound is None else min(self.w_trivial, price_bound)
        extra: dict[str, float] = {"pool_gpus_cut": float(self.gpus_cut)}
        if price_bound is not None:
            extra["price_weighted_gpus_bound"] = float(price_bound)
        if w_greedy < w_bound or self.n_vars <= LARGE_MODEL_VARS:
            lp_bound, knapsack_bound = self.lp_bound(time_limit_s * LP_SHARE)
            w_bound = min(w_bound, lp_bound, knapsack_bound)
            extra.update(lp_weighted_gpus_bound=float(lp_bound), knapsack_weighted_gpus_bound=float(knapsack_bound))
        extra["lp_time_s"] = time.perf_counter() - started
        values, w_found, proven_w = hint, w_greedy, w_greedy >= w_bound
        answer: Answer | None = None
        if not proven_w:
            self._objective(self.w_vars, self.w_coeffs, maximize=True)
            self._hint(hint[: self.n_base])
            left = time_limit_s - (time.perf_counter() - started)
            first, status1 = _run(self.cp, max(left * PHASE1_SHARE, 0.05), workers, seed, self.n_vars)
            extra["phase1_time_s"] = first.wall_time
            if status1 not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                extra["weighted_gpus_bound"] = float(w_bound)
                return _Outcome(first.status_name(status1), None, float(self.big * w_bound), extra)
            values = _values(first)
            w_found = round(first.objective_value)
            w_bound = min(w_bound, math.floor(first.best_objective_bound + 1e-6))
            proven_w = status1 == cp_model.OPTIMAL or w_found >= w_bound
            answer = self.solution(values)
        extra["weighted_gpus_bound"] = float(w_bound)
        lp_cost_bound = 0.0
        if proven_w:  # the cost bound only counts once W is proven
            t = time.perf_counter()
            lp_cost_bound = self.cost_bound(w_found, time_limit_s * LP_SHARE)
            extra.update(lp_cost_bound=lp_cost_bound, lp_cost_time_s=time.perf_counter() - t)
        self.cp.proto.merge_text_format(_linear_text(self.w_vars, self.w_coeffs, w_found, None))
        if self._fair_text:
            self.cp.proto.merge_text_format(self._fair_text)
            self._fair_text = ""
            if answer is not None:
                values = self.vector(answer)  # the W phase's answer, its fair-share slices filled
        cost_vars = np.flatnonzero(self.var_cost_all)
        self._objective(cost_vars, self.var_cost_all[cost_vars], maximize=False)
        # The greedy answer usually has the lower cost at equal W: hint with it when it qualifies.
        self._hint(hint if w_greedy >= w_found else values)
        left = max(time_limit_s - (time.perf_counter() - started), 0.1)
        second, status2 = _run(self.cp, left, workers, seed, self.n_vars)
        extra["phase2_time_s"] = second.wall_time
        cost_bound = lp_cost_bound
        if status2 in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            answer = self.solution(_values(second))
            cost_bound = max(cost_bound, float(second.best_objective_bound))
            extra.update(cost=float(second.objective_value))
        extra["cost_bound"] = cost_bound
        bound = float(self.big * w_bound) - (cost_bound if proven_w else 0.0)
        both = proven_w and status2 == cp_model.OPTIMAL
        return _Outcome("OPTIMAL" if both else "FEASIBLE", answer, bound, extra)

    def satisfies(self, values: IntArray) -> bool:
        """Every variable within its bounds and every row within its domain."""
        if (values < 0).any() or (values > self.upper).any():
            return False
        for r in self.rows:
            total = int(r.coeffs @ values[r.vars])
            if (r.lo is not None and total < r.lo) or (r.hi is not None and total > r.hi):
                return False
        return True

    def lp_bound(self, time_limit_s: float) -> tuple[int, int]:
        """Two valid upper bounds on W from GLOP's duals ``y`` of the LP relaxation of the same rows.

        Neither is GLOP's objective value: both are recomputed here by weak duality, so they stay
        valid whatever GLOP's tolerances, time limit or sign convention. The LP bound: for any
        ``y`` (sign-matched to each row's finite side), ``W <= y_hi.hi - y_lo.lo + sum_j upper_j *
        max(0, c_j - (A^T y)_j)``. The knapsack bound (a Lagrangian relaxation): the same, but with
        each pool's GPU row kept as a constraint, so a pool contributes its integer knapsack over
        the reduced values (fragments too small for any candidate count for nothing)."""
        obj = np.zeros(self.n_vars, dtype=np.float64)
        obj[self.w_vars] = self.w_coeffs
        y = _glop_duals(obj, self.upper, self.rows, time_limit_s)
        if y is None:
            return self.w_trivial, self.w_trivial
        plus, minus = self._dual_bound(obj, y, self.rows), self._dual_bound(obj, -y, self.rows)
        y = y if plus <= minus else -y
        knapsack = self._dual_bound(obj, y, self.rows, knapsack=True)
        return _floor_bound(min(plus, minus), self.w_trivial), _floor_bound(knapsack, self.w_trivial)

    def cost_bound(self, w_found: int, time_limit_s: float) -> float:
        """A valid lower bound on C over the answers with ``W >= w_found``: the LP's, by weak
        duality as in ``lp_bound`` (max -C <= bound, so C >= -bound). 0 if GLOP gives no duals."""
        obj = -self.var_cost_all.astype(np.float64)
        rows = [*self.rows, _Row(self.w_vars, self.w_coeffs, w_found, None)]
        y = _glop_duals(obj, self.upper, rows, time_limit_s)
        if y is None:
            return 0.0
        upper = min(self._dual_bound(obj, y, rows), self._dual_bound(obj, -y, rows))
        if not math.isfinite(upper):
            return 0.0
        return float(max(0, math.ceil(-upper - 1e-9 * abs(upper) - 1e-6)))  # C is an integer

    def _dual_bound(self, obj: FloatArray, y: FloatArray, rows: list[_Row], *, knapsack: bool = False) -> float:
        lo = np.array([math.nan if r.lo is None else r.lo * r.lp_scale for r in rows], dtype=np.float64)
        hi = np.array([math.nan if r.hi is None else r.hi * r.lp_scale for r in rows], dtype=np.float64)
        y_hi = np.where((y > 0) & ~np.isnan(hi), y, 0.0)
        y_lo = np.where((y < 0) & ~np.isnan(lo), -y, 0.0)
        kept = np.array([r.pool for r in rows], dtype=np.bool_) if knapsack else np.zeros(len(rows), np.bool_)
        y_hi[kept] = 0.0
        y_lo[kept] = 0.0
        net = y_hi - y_lo
        aty = np.zeros(self.n_vars, dtype=np.float64)
        if rows:
            all_vars = np.concatenate([r.vars for r in rows])
            all_coeffs = np.concatenate([r.coeffs * r.lp_scale for r in rows])
            row_of = np.repeat(np.arange(len(rows)), [len(r.vars) for r in rows])
            aty = np.bincount(all_vars, weights=all_coeffs * net[row_of], minlength=self.n_vars).astype(np.float64)
        reduced = obj - aty
        free = np.ones(self.n_vars, dtype=np.bool_)  # variables in no kept row: at their best bound
        total = float(np.nan_to_num(hi) @ y_hi - np.nan_to_num(lo) @ y_lo)
        budget = [KNAPSACK_WORK]
        for r in (r for r, keep in zip(rows, kept, strict=True) if keep):
            free[r.vars] = False
            assert r.hi is not None
            total += _knapsack(r.coeffs, reduced[r.vars], self.upper[r.vars], r.hi, budget)
        return total + float(self.upper[free] @ np.maximum(reduced[free], 0.0))

    def _objective(self, var: IntArray, coeffs: IntArray, *, maximize: bool) -> None:
        self.cp.proto.clear_objective()
        sign = -1 if maximize else 1  # CP-SAT minimises; a maximisation is stored negated
        body = " ".join(f"vars:{v}" for v in var.tolist()) + " " + " ".join(
            f"coeffs:{sign * c}" for c in coeffs.tolist())
        self.cp.proto.merge_text_format(f"objective{{{body} scaling_factor:{sign}}}")

    def _hint(self, values: IntArray) -> None:
        self.cp.proto.clear_solution_hint()
        n = len(values)
        self.cp.proto.merge_text_format(
            "solution_hint{" + " ".join(f"vars:{v}" for v in range(n)) + " "
            + " ".join(f"values:{v}" for v in values.tolist()) + "}")

    def cost(self, unit: _Unit, p: int) -> int:
        """Scaled cost of one job (gang) or one replica in pool ``p``."""
        return round(unit.cost_at(p) * unit.gpus * self.cost_scale)

    def evaluate(self, answer: Answer) -> float:
        """The objective of an answer (the greedy's, say), as the model scores it."""
        total = 0
        for unit, (placed, counts) in zip(self.units, answer, strict=True):
            total += self.big * unit.value * placed - sum(n * self.cost(unit, p) for p, n in counts.items())
        if self.fair_groups:
            values = self.vector(answer)
            total -= int(self.var_cost_all[self.n_x:] @ values[self.n_x:])
        return float(total)

    def _add_fair(self, fair: _Fair, rows: list[_Row], gpus: IntArray, x_upper: IntArray, free_gpus: int) -> None:
        """The fair-share term (engine/fairshare.py rule 4): per tenant, its GPUs placed in this tier
        split over slices (``convex_steps``) whose cost per GPU grows with its weighted share; the
        highest slice of the tier costs one more than the largest policy cost per GPU."""
        tenant_of_unit = [u.spec.tenant for u in self.units]
        tenants = sorted(set(tenant_of_unit))
        if len(tenants) < 2:
            return  # one tenant: nothing to share
        index_of = {t: i for i, t in enumerate(tenants)}
        var_tenant = np.array([index_of[t] for t in tenant_of_unit], dtype=np.int64)[self.var_unit]
        groups = []
        for i, tenant in enumerate(tenants):
            xs = np.flatnonzero(var_tenant == i)
            if not xs.size:
                continue
            most = min(int(gpus[xs] @ x_upper[xs]), free_gpus)
            steps = convex_steps(fair.weighted.get(tenant, 0.0), fair.policy.fair_share.weight(tenant), fair.per_gpu,
                                 most, FAIR_STEPS)
            groups.append((xs, steps))
        top_share = max((share for _, steps in groups for _, share in steps), default=0.0)
        if len(groups) < 2 or top_share <= 0:
            return
        top_cost = max((float(_candidate_cost(u).max()) for u in self.units if u.candidates), default=0.0)
        per_share = (top_cost + 1.0) * self.cost_scale / top_share
        uppers, costs = [self.upper], [self.var_cost_all]
        first = self.n_vars
        for xs, steps in groups:
            sizes = np.array([n for n, _ in steps], dtype=np.int64)
            coeffs = np.array([round(share * per_share) for _, share in steps], dtype=np.int64)
            ys = np.arange(first, first + len(steps), dtype=np.int64)
            rows.append(_Row(np.concatenate((xs, ys)), np.concatenate((gpus[xs], -np.ones(len(ys), np.int64))), 0, 0))
            self.fair_groups.append((xs, gpus[xs], first, sizes))
            uppers.append(sizes)
            costs.append(coeffs)
            first += len(steps)
        self.upper = np.concatenate(uppers)
        self.var_cost_all = np.concatenate(costs)
        self.n_vars = len(self.upper)
        self.big += int(self.var_cost_all[self.n_x:] @ self.upper[self.n_x:]) + 1  # BIG stays above any C

    def vector(self, answer: Answer) -> IntArray:
        """An answer as a value per model variable."""
        values = np.zeros(self.n_vars, dtype=np.int64)
        for u, (placed, counts) in enumerate(answer):
            a, b = int(self.start[u]), int(self.start[u + 1])
            if a == b:
                continue
            at = {int(p): a + i for i, p in enumerate(self.var_pool[a:b].tolist())}
            for p, n in counts.items():
                values[at[p]] = min(n, int(self.upper[at[p]]))
            if self.k_index[u] >= 0:
                values[self.k_index[u]] = placed
        for xs, gpus, first, sizes in self.fair_groups:  # each tenant's GPUs fill its cheapest slices first
            left = int(gpus @ values[xs])
            for i, size in enumerate(sizes.tolist()):
                values[first + i] = min(left, size)
                left -= values[first + i]
        return values

    def solution(self, values: IntArray) -> Answer:
        out: Answer = [(0, {}) for _ in self.units]
        for i in np.flatnonzero(values[: self.n_x]).tolist():
            out[int(self.var_unit[i])][1][int(self.var_pool[i])] = int(values[i])
        for u, (_, counts) in enumerate(out):
            k = int(self.k_index[u])
            out[u] = (int(values[k]) if k >= 0 else sum(counts.values()), counts)
        return out


@dataclass(frozen=True)
class _Outcome:
    status: str
    answer: Answer | None
    bound: float  # on the folded objective BIG * W - C
    extra: dict[str, float]


def _quota_rows(
    quota: QuotaRules, usage: Usage, units: list[_Unit], var_unit: IntArray, var_pool: IntArray, gpus: IntArray
) -> list[_Row]:
    """GPUs added per (tenant, limited group) at most its headroom; per (cohort, group) at most
    what the cohort lends that is free plus its members' unused guaranteed quota."""
    var_tenant = np.array([units[u].spec.tenant for u in var_unit.tolist()], dtype=object)
    var_group = quota.pool_group[var_pool] if len(var_pool) else np.zeros(0, dtype=np.int64)
    rows: list[_Row] = []
    cohort_vars: dict[tuple[str, int], list[IntArray]] = defaultdict(list)
    cohort_room: dict[tuple[str, int], int] = {}
    for (tenant, g), limit in quota.limits.items():
        idx = np.flatnonzero((var_tenant == tenant) & (var_group == g))
        if not idx.size:
            continue
        state = quota.state(usage.tenant_pool_gpus, tenant, g)
        assert state is not None
        rows.append(_Row(idx, gpus[idx], None, state.headroom))
        key = (limit.cohort, g)
        cohort_vars[key].append(idx)
        if key not in cohort_room:
            shared = 0
            spare = 0
            for m in quota.members[key]:
                used = quota.used(usage.tenant_pool_gpus, m.tenant, g)
                shared += max(0, used - m.guaranteed)
                spare += max(0, m.guaranteed - used)
            cohort_room[key] = max(0, quota.lendable[key] - shared) + spare
    for key, parts in cohort_vars.items():
        if len(parts) > 1:
            idx = np.concatenate(parts)
            rows.append(_Row(idx, gpus[idx], None, cohort_room[key]))
    return rows


def _run(
    model: cp_model.CpModel, time_limit_s: float, workers: int, seed: int, n_vars: int
) -> tuple[cp_model.CpSolver, Any]:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    if n_vars > LARGE_MODEL_VARS:
        # Probing in presolve took ~2 s of a 2.5 s budget at 10k jobs x 500 pools (35k variables)
        # on two shared cores, so the search never started; it buys little on this structure.
        solver.parameters.cp_model_probing_level = 0
    if n_vars > HUGE_MODEL_VARS:
        # At 340k variables presolve alone ran 57 s against a 20 s limit (it does not check the
        # clock often enough) and ended with nothing; without it the search starts from the hint
        # at once and the limit holds.
        solver.parameters.cp_model_presolve = False
    return solver, solver.solve(model)


def _values(solver: cp_model.CpSolver) -> IntArray:
    return np.asarray(solver.response_proto.solution, dtype=np.int64)


def _linear_text(var: IntArray, coeffs: IntArray, lo: int | None, hi: int | None) -> str:
    return (
        "constraints{linear{" + " ".join(f"vars:{v}" for v in var.tolist()) + " "
        + " ".join(f"coeffs:{c}" for c in coeffs.tolist())
        + f" domain:{_INT_MIN if lo is None else lo} domain:{_INT_MAX if hi is None else hi}}}}}"
    )


def _concat(parts: list[Any], dtype: type) -> Any:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _glop_duals(obj: FloatArray, upper: IntArray, rows: list[_Row], time_limit_s: float) -> FloatArray | None:
    """GLOP on max obj.x over the rows, 0 <= x <= upper: its row duals (None if it gives none)."""
    proto = linear_solver_pb2.MPModelProto(maximize=True)
    add_var = proto.variable.add
    for ub, c in zip(upper.astype(np.float64).tolist(), obj.tolist(), strict=True):
        add_var(lower_bound=0.0, upper_bound=ub, objective_coefficient=c)
    for r in rows:
        proto.constraint.add(
            var_index=r.vars.tolist(), coefficient=(r.coeffs * r.lp_scale).tolist(),
            lower_bound=-math.inf if r.lo is None else r.lo * r.lp_scale,
            upper_bound=math.inf if r.hi is None else r.hi * r.lp_scale,
        )
    request = linear_solver_pb2.MPModelRequest(
        model=proto, solver_type=linear_solver_pb2.MPModelRequest.GLOP_LINEAR_PROGRAMMING,
        solver_time_limit_seconds=max(time_limit_s, 0.05),
    )
    response = linear_solver_pb2.MPSolutionResponse()
    pywraplp.Solver.SolveWithProto(request, response)
    y = np.asarray(response.dual_value, dtype=np.float64)
    return y if len(y) == len(rows) else None


def _floor_bound(bound: float, trivial: int) -> int:
    """W is an integer: the floor of a float bound, after a margin for its rounding errors."""
    if not math.isfinite(bound):
        return trivial
    return min(trivial, math.floor(bound * (1 + 1e-9) + 1e-6))


def _knapsack(sizes: IntArray, values: FloatArray, counts: IntArray, capacity: int, budget: list[int]) -> float:
    """An upper bound on max values.x, sizes.x <= capacity, 0 <= x <= counts, x integer: exact by
    dynamic programming over capacity (in units of the sizes' gcd, counts split in powers of
    two) while ``budget`` (cells to update, shared by all calls) lasts; then the LP's
    (Dantzig's) bound, which is never below the exact value."""
    keep = (values > 0) & (counts > 0) & (sizes <= capacity)
    sizes, values, counts = sizes[keep], values[keep], counts[keep]
    if not sizes.size:
        return 0.0
    if int(sizes @ counts) <= capacity:
        return float(values @ counts)
    g = int(np.gcd.reduce(sizes))
    cap, units = capacity // g, sizes // g
    counts = np.minimum(counts, cap // units)
    items = zip(units.tolist(), values.tolist(), counts.tolist(), strict=True)
    pieces = [(int(w) * t, float(v) * t) for w, v, c in items for t in _powers(c)]
    work = sum(cap + 1 - w for w, _ in pieces)
    if work > budget[0]:
        order = np.argsort(-values / sizes, kind="stable")  # Dantzig: fill by value density
        left, total = float(capacity), 0.0
        for i in order.tolist():
            take = min(float(counts[i]), left / float(sizes[i]))
            total += take * float(values[i])
            left -= take * float(sizes[i])
            if left <= 0:
                break
        return total
    budget[0] -= work
    best = np.zeros(cap + 1, dtype=np.float64)  # best[c]: most value within c units
    for w, v in pieces:
        best[w:] = np.maximum(best[w:], best[:-w] + v)
    return float(best[-1])


def _powers(count: int) -> list[int]:
    """1, 2, 4, ... and the rest: every number up to ``count`` is a sum of a subset of these."""
    out, chunk = [], 1
    while count > 0:
        take = min(chunk, count)
        out.append(take)
        count -= take
        chunk *= 2
    return out


def _subset_cap(sizes: IntArray, counts: IntArray, free: int) -> int:
    """The largest total <= ``free`` of items of these sizes (at most ``counts`` of each):
    a bounded subset sum, as a bitset in a Python integer (binary splitting of the counts)."""
    per_size: dict[int, int] = defaultdict(int)
    for s, c in zip(sizes.tolist(), counts.tolist(), strict=True):
        per_size[s] += c
    mask = (1 << (free + 1)) - 1
    reach = 1
    for s, c in sorted(per_size.items()):
        c = min(c, free // s)
        chunk = 1
        while c > 0 and reach != mask:
            take = min(chunk, c)
            reach = (reach | (reach << (s * take))) & mask
            c -= take
            chunk *= 2
    return reach.bit_length() - 1


def _candidate_cost(unit: _Unit) -> FloatArray:
    """``unit.total`` at its candidates (kept by ``_choose_candidates``)."""
    if unit.candidate_cost is not None and len(unit.candidate_cost) == len(unit.candidates):
        return unit.candidate_cost
    return unit.total[unit.candidates]


def _scales(units: list[_Unit], free_gpus: int) -> tuple[int, int]:
    """COST_SCALE, and BIG: more than the largest total scaled cost any answer can have.

    Only the folded report uses BIG (Python integers); the solver sees W and C apart."""
    max_cost_per_gpu = max((float(_candidate_cost(u).max()) for u in units if u.candidates), default=0.0)
    placed_gpus_max = max(1, min(free_gpus, sum(u.gpus * u.demand_slots for u in units)))
    # Each placed job's cost is rounded, adding at most 0.5; a job has at least one GPU.
    return COST_SCALE, math.ceil(placed_gpus_max * (max_cost_per_gpu * COST_SCALE + 1)) + 1


def _decode(
    index: GridIndex, policy: Policy, units: list[_Unit], answer: Answer, from_solver: bool
) -> dict[str, Placement]:
    placements: dict[str, Placement] = {}
    for unit, (placed, counts) in zip(units, answer, strict=True):
        if not placed:
            continue
        costs = unit.costs  # once per class: a deployment's own costs are recomputed on each use
        if not from_solver:  # keep the greedy's own job -> pools assignment
            for job_id, fill in unit.greedy.items():
                placements[job_id] = build_placement(index, unit.spec, policy, costs, fill)
            continue
        # Interchangeable jobs: the first in submission order take the cheapest pools; a
        # deployment takes its replicas from the cheapest pools left.
        pools = sorted(counts, key=lambda p: (unit.cost_at(p), p))
        left = dict(counts)
        for job_id in unit.job_ids[:placed]:
            need, fill = unit.replicas, []
            for p in pools:
                take = min(need, left[p])
                if take:
                    fill.append((p, take * unit.gpus))
                    left[p] -= take
                    need -= take
                if not need:
                    break
            placements[job_id] = build_placement(index, unit.spec, policy, costs, sorted(fill))
    return placements
