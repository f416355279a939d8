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

What the class key leaves out, because no check or cost reads it: the name, the tenant
(unless the policy has a rule for it), preemptibility, the training duration, and the
traffic weight of a deployment's only endpoint.

Hard constraints: free GPUs per pool, site power headroom, and through the candidate
masks (``compute_checks`` on the given usage, never re-derived here) residency, GPU type,
workload, health and latency. Quotas: the policy has none yet.

Objective, lexicographic: first maximise ``W``, the sum of ``value = (priority + 1) * GPUs``
over placed jobs (so priority 0 still counts); then, with ``W`` held at what was found,
minimise ``C``, the policy's weighted cost per GPU from ``pool_costs`` (evaluated on the
usage at the start of the cycle) times each job's GPUs, times ``COST_SCALE`` (x1000: three
decimals of a term that lies in [0, sum of weights] per GPU), rounded per job and pool.
The two are solved one after the other (the first at most ``PHASE1_SHARE`` of the time), not
as one weighted sum: a single objective ``BIG * W - C`` is equivalent, but its huge
coefficients leave CP-SAT's LP bound loose by ~10 % where the two phases prove optimality.
For reporting (and comparing with the greedy answer) the pair is folded into that one
number, ``objective = BIG * W - C`` with ``BIG`` larger than any possible ``C``; its bound is
``BIG * bound(W) - bound(C)`` (the cost bound counts only when ``W`` is proven optimal).
Power is in integer milliwatts (``POWER_SCALE``), needs rounded up and headroom rounded
down, so the integer model is never more permissive than the float one.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from grid_scheduler.engine.feasibility import Checks, compute_checks, latency_coverage
from grid_scheduler.engine.index import BoolArray, GridIndex, IntArray, Usage
from grid_scheduler.engine.online import build_placement, decide
from grid_scheduler.engine.scoring import PoolCosts, pool_costs
from grid_scheduler.model import JobKind, JobSpec, Placement, Policy

COST_SCALE = 1000  # cost terms x1000 -> integer (see module doc)
POWER_SCALE = 1_000_000  # kW -> mW
BIG_JOB_GPUS = 512  # gang jobs this large are never aggregated
PHASE1_SHARE = 0.8  # of the time limit, for W; the cost phase gets what is left (at least 0.1 s)
LARGE_MODEL_VARS = 5_000


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
    weighted_gpus: int  # sum of (priority + 1) * GPUs over placed jobs
    big: int  # the lexicographic weight: objective = big * weighted_gpus - scaled cost
    classes: int = 0
    variables: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def scaled_cost(self) -> float:
        return self.big * self.weighted_gpus - self.objective


# An answer, per unit: (jobs or deployments placed, {pool: jobs (gang) or replicas there}).
Answer = list[tuple[int, dict[int, int]]]


@dataclass
class _Unit:
    """A class of interchangeable jobs (see module doc)."""

    spec: JobSpec  # as modelled (gang for training)
    job_ids: list[str]
    checks: Checks
    costs: PoolCosts
    gpus: int  # per job (gang) or per replica
    replicas: int  # 1 for gang classes
    value: int  # (priority + 1) * GPUs of one job
    mask: BoolArray  # candidate-eligible pools
    covering: bool  # several demand endpoints: coverage constraints apply
    candidates: list[int] = field(default_factory=list)
    greedy: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # job -> [(pool, gpus)]

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


def job_value(spec: JobSpec) -> int:
    return (spec.priority + 1) * spec.total_gpus


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
        spec.tenant if spec.tenant in policy.tenant_residency else None,
    )


def solve_batch(
    index: GridIndex,
    usage: Usage,
    jobs: Sequence[tuple[str, JobSpec]],
    policy: Policy,
    *,
    time_limit_s: float = 5.0,
    workers: int = 2,
    seed: int = 0,
    top_k: int = 8,
) -> BatchResult:
    t0 = time.perf_counter()
    units = _build_units(index, usage, jobs, policy)
    t_units = time.perf_counter()
    _greedy(index, usage, policy, jobs, units)
    greedy_time = time.perf_counter() - t_units
    t1 = time.perf_counter()
    for unit in units:
        _choose_candidates(index, unit, top_k)
    model = _Model(index, usage, units)
    t2 = time.perf_counter()
    greedy_answer = _greedy_answer(units)
    greedy_obj = model.evaluate(greedy_answer)
    outcome = model.solve(time_limit_s, workers, seed)
    t3 = time.perf_counter()
    build_time = (t_units - t0) + (t2 - t1)
    use_solver = outcome.answer is not None and model.evaluate(outcome.answer) >= greedy_obj
    answer = outcome.answer if use_solver and outcome.answer is not None else greedy_answer
    objective = model.evaluate(answer)
    bound = max(outcome.bound, objective) if model.has_vars else objective
    placements = _decode(index, policy, units, answer, use_solver)
    unplaced = [job_id for job_id, _ in jobs if job_id not in placements]
    spec_of = dict(jobs)
    return BatchResult(
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
        extra={"cost_scale": float(model.cost_scale), **outcome.extra},
    )


# --- classes -------------------------------------------------------------------------
def _build_units(index: GridIndex, usage: Usage, jobs: Sequence[tuple[str, JobSpec]], policy: Policy) -> list[_Unit]:
    by_key: dict[Hashable, _Unit] = {}
    units: list[_Unit] = []
    for job_id, original in jobs:
        spec = as_modelled(original)
        replicas = spec.inference.replicas if spec.inference is not None else 1
        covering = spec.inference is not None and replicas > 1 and len(spec.inference.demand) > 1
        individual = covering or spec.total_gpus >= BIG_JOB_GPUS
        key = ("job", job_id) if individual else class_key(spec, policy)
        unit = by_key.get(key)
        if unit is None:
            checks = compute_checks(index, usage, spec, policy)
            mask: BoolArray = checks.pool_feasible
            if spec.inference is not None and replicas == 1:
                # One replica must serve every demand endpoint by itself.
                serves_all = np.asarray(latency_coverage(index, spec).all(axis=0), dtype=np.bool_)
                mask = mask & serves_all[index.pool_site]
            unit = _Unit(
                spec=spec, job_ids=[], checks=checks, costs=pool_costs(index, checks, spec, policy),
                gpus=spec.gpus.count, replicas=replicas, value=job_value(spec), mask=np.asarray(mask),
                covering=covering,
            )
            by_key[key] = unit
            units.append(unit)
        unit.job_ids.append(job_id)
    return units


def _greedy(
    index: GridIndex, usage: Usage, policy: Policy, jobs: Sequence[tuple[str, JobSpec]], units: list[_Unit]
) -> None:
    """The online decision, job by job, highest priority first, on a running copy of usage."""
    unit_of = {job_id: unit for unit in units for job_id in unit.job_ids}
    running = Usage(usage.pool_used_gpus.copy(), usage.site_used_kw.copy(), usage.pool_drained.copy())
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][1].priority)
    failed: set[int] = set()  # usage only grows, so once a class fails, its later jobs fail too
    for i in order:
        job_id, _ = jobs[i]
        unit = unit_of[job_id]
        if id(unit) in failed:
            continue
        decision = decide(index, running, unit.spec, policy)
        if decision.placement is None:
            failed.add(id(unit))
            continue
        fill = []
        for a in decision.placement.assignments:
            p = index.pool_index[a.pool_id]
            running.pool_used_gpus[p] += a.gpus
            running.site_used_kw[index.pool_site[p]] += a.power_kw
            fill.append((p, a.gpus))
        unit.greedy[job_id] = fill


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
    if feasible.size:
        order = feasible[np.argsort(unit.costs.total[feasible], kind="stable")]
        if unit.covering:
            assert unit.spec.inference is not None
            cover = latency_coverage(index, unit.spec)[:, index.pool_site[order]]
            for row in cover:
                chosen.update(int(p) for p in order[row][:top_k])
            chosen.update(int(p) for p in order[:top_k])
        else:
            held = np.cumsum(unit.checks.pool_free_gpus[order] // unit.gpus)
            enough = int(np.searchsorted(held, unit.demand_slots)) + 1  # pools that hold the whole class
            chosen.update(int(p) for p in order[: min(max(top_k, enough), 4 * top_k)])
    unit.candidates = sorted(chosen)


# --- the CP-SAT model ----------------------------------------------------------------
class _Model:
    def __init__(self, index: GridIndex, usage: Usage, units: list[_Unit]) -> None:
        self.units = units
        self.cp = cp_model.CpModel()
        free: IntArray = np.maximum(index.pool_healthy_gpus - usage.pool_used_gpus, 0)
        headroom_mw = np.floor((index.site_envelope_kw - usage.site_used_kw + 1e-6) * POWER_SCALE).astype(np.int64)
        self.cost_scale, self.big = _scales(units, int(free.sum()))
        self.n: list[dict[int, cp_model.IntVar]] = []
        self.k: list[cp_model.IntVar | None] = []  # replica classes: deployments placed
        pool_terms: dict[int, list[tuple[cp_model.IntVar, int]]] = defaultdict(list)
        site_terms: dict[int, list[tuple[cp_model.IntVar, int]]] = defaultdict(list)
        # What a pool's (site's) variables could take at most: no constraint is needed below its limit.
        pool_max: dict[int, int] = defaultdict(int)
        site_max: dict[int, int] = defaultdict(int)
        self.primary: list[tuple[cp_model.IntVar, int]] = []  # W
        self.cost_terms: list[tuple[cp_model.IntVar, int]] = []  # C
        for u, (unit, (hint_k, hint_n)) in enumerate(zip(units, _greedy_answer(units), strict=True)):
            xs: dict[int, cp_model.IntVar] = {}
            for p in unit.candidates:
                upper = min(unit.demand_slots, int(free[p]) // unit.gpus)
                if upper <= 0:
                    continue
                x = self.cp.new_int_var(0, upper, f"n_{u}_{p}")
                xs[p] = x
                pool_terms[p].append((x, unit.gpus))
                pool_max[p] += unit.gpus * upper
                s = int(index.pool_site[p])
                need = math.ceil(unit.gpus * float(index.pool_kw_per_gpu[p]) * POWER_SCALE - 1e-6)
                site_terms[s].append((x, need))
                site_max[s] += need * upper
                if unit.gang:
                    self.primary.append((x, unit.value))
                self.cost_terms.append((x, self.cost(unit, p)))
                self.cp.add_hint(x, min(hint_n.get(p, 0), upper))
            k: cp_model.IntVar | None = None
            if unit.gang and xs:
                self.cp.add(sum(xs.values()) <= len(unit.job_ids))
            elif xs:
                k = self.cp.new_int_var(0, len(unit.job_ids), f"k_{u}")
                self.cp.add_hint(k, hint_k)
                self.cp.add(sum(xs.values()) == unit.replicas * k)
                self.primary.append((k, unit.value))
                if unit.covering:
                    self._cover(index, unit, xs, k)
            self.n.append(xs)
            self.k.append(k)
        for p, terms in pool_terms.items():
            if pool_max[p] > free[p]:
                self.cp.add(_weighted(terms) <= int(free[p]))
        for s, terms in site_terms.items():
            if site_max[s] > headroom_mw[s]:
                self.cp.add(_weighted(terms) <= int(headroom_mw[s]))
        self.n_vars = sum(len(xs) for xs in self.n) + sum(k is not None for k in self.k)
        self.has_vars = self.n_vars > 0

    def solve(self, time_limit_s: float, workers: int, seed: int) -> _Outcome:
        """Maximise W (hinted with the greedy answer), then hold W and minimise C."""
        if not self.has_vars:
            return _Outcome("OPTIMAL", [(0, {}) for _ in self.units], 0.0, {})
        started = time.perf_counter()
        self.cp.maximize(_weighted(self.primary))
        first, status1 = _run(self.cp, time_limit_s * PHASE1_SHARE, workers, seed, self.n_vars)
        # Every job with a candidate placed: a valid bound on W even when CP-SAT has none yet.
        w_trivial = float(sum(u.value * len(u.job_ids) for u, xs in zip(self.units, self.n, strict=True) if xs))
        if status1 not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return _Outcome(first.status_name(status1), None, self.big * w_trivial, {"weighted_gpus_bound": w_trivial})
        w_found = round(first.objective_value)
        w_bound = min(float(first.best_objective_bound), w_trivial)
        answer = self.solution(first)
        extra = {"weighted_gpus_bound": w_bound, "phase1_time_s": first.wall_time}
        self.cp.clear_hints()  # type: ignore[no-untyped-call]
        for xs, k in zip(self.n, self.k, strict=True):
            for x in xs.values():
                self.cp.add_hint(x, first.value(x))
            if k is not None:
                self.cp.add_hint(k, first.value(k))
        self.cp.add(_weighted(self.primary) >= w_found)
        self.cp.minimize(_weighted(self.cost_terms))
        remaining = max(time_limit_s - (time.perf_counter() - started), 0.1)
        second, status2 = _run(self.cp, remaining, workers, seed, self.n_vars)
        cost_bound = 0.0
        if status2 in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            answer = self.solution(second)
            cost_bound = float(second.best_objective_bound)
            extra.update(cost=float(second.objective_value), cost_bound=cost_bound)
        extra["phase2_time_s"] = second.wall_time
        proven_w = status1 == cp_model.OPTIMAL
        bound = self.big * w_bound - (cost_bound if proven_w else 0.0)
        both = proven_w and status2 == cp_model.OPTIMAL
        return _Outcome("OPTIMAL" if both else "FEASIBLE", answer, bound, extra)

    def cost(self, unit: _Unit, p: int) -> int:
        """Scaled cost of one job (gang) or one replica in pool ``p``."""
        return round(float(unit.costs.total[p]) * unit.gpus * self.cost_scale)

    def _cover(self, index: GridIndex, unit: _Unit, xs: dict[int, cp_model.IntVar], k: cp_model.IntVar) -> None:
        for row in latency_coverage(index, unit.spec):
            serving = [x for p, x in xs.items() if row[index.pool_site[p]]]
            if not serving:
                self.cp.add(k == 0)
                return
            self.cp.add(sum(serving) >= k)

    def evaluate(self, answer: Answer) -> float:
        """The objective of an answer (the greedy's, say), as the model scores it."""
        total = 0
        for unit, (placed, counts) in zip(self.units, answer, strict=True):
            total += self.big * unit.value * placed - sum(n * self.cost(unit, p) for p, n in counts.items())
        return float(total)

    def solution(self, solver: cp_model.CpSolver) -> Answer:
        out: Answer = []
        for xs, k in zip(self.n, self.k, strict=True):
            counts = {p: int(solver.value(x)) for p, x in xs.items() if solver.value(x) > 0}
            out.append((int(solver.value(k)) if k is not None else sum(counts.values()), counts))
        return out


@dataclass(frozen=True)
class _Outcome:
    status: str
    answer: Answer | None
    bound: float  # on the folded objective BIG * W - C
    extra: dict[str, float]


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
    return solver, solver.solve(model)


def _weighted(terms: list[tuple[cp_model.IntVar, int]]) -> cp_model.LinearExprT:
    return cp_model.LinearExpr.weighted_sum([x for x, _ in terms], [c for _, c in terms])


def _scales(units: list[_Unit], free_gpus: int) -> tuple[int, int]:
    """COST_SCALE, and BIG: more than the largest total scaled cost any answer can have.

    Only the folded report uses BIG (Python integers); the solver sees W and C apart."""
    max_cost_per_gpu = max((float(u.costs.total[u.candidates].max()) for u in units if u.candidates), default=0.0)
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
        if not from_solver:  # keep the greedy's own job -> pools assignment
            for job_id, fill in unit.greedy.items():
                placements[job_id] = build_placement(index, unit.spec, policy, unit.costs, fill)
            continue
        # Interchangeable jobs: the first in submission order take the cheapest pools; a
        # deployment takes its replicas from the cheapest pools left.
        pools = sorted(counts, key=lambda p: (float(unit.costs.total[p]), p))
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
            placements[job_id] = build_placement(index, unit.spec, policy, unit.costs, sorted(fill))
    return placements
