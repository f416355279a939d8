"""Optimal replica placement for one inference deployment (a facility-location model).

Variables: ``r[p]`` replicas in each pool that can take one, ``open[s]`` per site, and
``a[e, s]``: demand endpoint ``e`` is served by site ``s`` (only pairs within the SLO exist,
so a feasible answer serves every endpoint within its SLO). Exactly ``replicas`` replicas
are placed, within each pool's free GPUs and each site's power headroom.

Objective (minimised) is the deployment's score as ``Placement`` reports it, times its GPUs:
``sum_p gpus_per_replica * r[p] * (carbon + price + packing + data)[p]`` plus
``total GPUs * latency weight * sum_e share_e * min(latency(e, s) / SLO, 1) * a[e, s]``
(each endpoint to the site that serves it, which at the optimum is its nearest chosen one),
times ``COST_SCALE`` (x1000) to make it an integer.

"Minimise replicas" is read as: the fewest replicas that can cover every endpoint is
computed and reported (``min_replicas_to_cover``); a deployment asking for fewer cannot be
served and says so. The placement itself always uses exactly the replicas asked for,
which are the deployment's throughput.

When no placement covers every endpoint, each endpoint that cannot be covered gets a reason:
no site within the SLO at all (``latency``), sites within the SLO all ruled out by a static
rule (``residency``/``gpu_type``/``workload``/``health``), eligible sites but no free room
(``capacity``/``power``), or too few replicas to reach it as well as the others (``replicas``).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from ortools.sat.python import cp_model

from grid_scheduler.engine.feasibility import Checks, compute_checks, demand_rows, latency_coverage
from grid_scheduler.engine.index import BoolArray, GridIndex, Usage
from grid_scheduler.engine.online import Decision, build_placement, decide
from grid_scheduler.engine.scoring import PoolCosts, pool_costs
from grid_scheduler.model import JobSpec, Placement, Policy

COST_SCALE = 1000
POWER_SCALE = 1_000_000  # kW -> mW, needs rounded up, headroom down


@dataclass(frozen=True)
class UncoveredEndpoint:
    endpoint_id: str
    code: str  # latency | residency | gpu_type | workload | health | capacity | power | replicas
    message: str


@dataclass(frozen=True)
class InferenceResult:
    placement: Placement | None
    status: str  # CP-SAT status of the main solve, or INFEASIBLE / NOT_SOLVED with a reason
    objective: float  # scaled cost of the placement (lower is better)
    best_bound: float
    gap: float
    min_replicas_to_cover: int | None
    uncovered: list[UncoveredEndpoint] = field(default_factory=list)
    reason: str = ""
    method: str = "cp-sat"  # or "greedy" when CP-SAT found nothing better in time
    greedy_score: float | None = None  # score.total of the online greedy placement, if any
    solve_time_s: float = 0.0


@dataclass
class _Problem:
    index: GridIndex
    spec: JobSpec
    checks: Checks
    costs: PoolCosts
    cover: BoolArray  # [endpoint, site]
    slots: dict[int, int]  # pool -> replicas it can hold on its own
    need_mw: dict[int, int]  # pool -> mW per replica
    headroom_mw: dict[int, int]  # site -> mW
    latency_weight: float
    time_limit_s: float
    workers: int
    seed: int

    @property
    def sites(self) -> list[int]:
        return sorted({int(self.index.pool_site[p]) for p in self.slots})


def solve_inference(
    index: GridIndex,
    usage: Usage,
    spec: JobSpec,
    policy: Policy,
    *,
    time_limit_s: float = 5.0,
    workers: int = 2,
    seed: int = 0,
    site_fence: BoolArray | None = None,
) -> InferenceResult:
    """``site_fence``: the sites the greedy decision's placement preference reached (None: every
    site the preference allows), so the optimum stays within the entry the greedy filled."""
    assert spec.inference is not None, "solve_inference places inference deployments"
    t0 = time.perf_counter()
    checks = compute_checks(index, usage, spec, policy)
    if site_fence is not None:
        checks = replace(checks, site_preference_ok=site_fence)
    costs = pool_costs(index, checks, spec, policy)
    problem = _problem(index, spec, checks, costs, policy.weights.latency, time_limit_s, workers, seed)
    greedy = decide(index, usage, spec, policy).placement
    greedy_score = greedy.score.total if greedy is not None else None

    def done(**kwargs: object) -> InferenceResult:
        return InferenceResult(greedy_score=greedy_score, solve_time_s=time.perf_counter() - t0, **kwargs)  # type: ignore[arg-type]

    uncovered = _static_gaps(problem)
    if uncovered:
        return done(placement=None, status="INFEASIBLE", objective=0.0, best_bound=0.0, gap=0.0,
                    min_replicas_to_cover=None, uncovered=uncovered,
                    reason=f"{len(uncovered)} demand endpoint(s) cannot be served by any replica")
    replicas = spec.inference.replicas
    min_cover, min_cover_bound = _min_cover(problem)
    if min_cover_bound > replicas:
        missed = _best_partial_cover(problem, replicas)
        need = str(min_cover) if min_cover is not None else f"at least {min_cover_bound}"
        uncovered = [UncoveredEndpoint(e, "replicas", f"{replicas} replica(s) cannot also reach {e}; "
                                                      f"covering every endpoint needs {need}") for e in missed]
        return done(placement=None, status="INFEASIBLE", objective=0.0, best_bound=0.0, gap=0.0,
                    min_replicas_to_cover=min_cover, uncovered=uncovered,
                    reason=f"covering every endpoint needs {need} replicas; the deployment asks for {replicas}")
    status, objective, bound, chosen = _place(problem, replicas)
    if chosen is None:
        fit = _max_fit(problem, replicas)
        return done(placement=None, status=status, objective=0.0, best_bound=bound, gap=0.0,
                    min_replicas_to_cover=min_cover,
                    reason=f"capacity: only {fit} of {replicas} replicas fit in eligible pools "
                           "(free GPUs and power) while covering every endpoint")
    fill = [(p, n * spec.gpus.count) for p, n in sorted(chosen.items())]
    placement = build_placement(index, spec, policy, costs, fill, checks.nodes)
    method = "cp-sat"
    if greedy is not None and greedy.score.total < placement.score.total - 1e-9:
        placement, method = greedy, "greedy"  # only possible when the time limit cut the solve short
    gap = abs(objective - bound) / max(1.0, abs(objective))
    return done(placement=placement, status=status, objective=objective, best_bound=bound, gap=gap,
                min_replicas_to_cover=min_cover, method=method)


def _problem(
    index: GridIndex, spec: JobSpec, checks: Checks, costs: PoolCosts, latency_weight: float,
    time_limit_s: float, workers: int, seed: int,
) -> _Problem:
    g = spec.gpus.count
    headroom = np.floor((checks.site_headroom_kw + 1e-6) * POWER_SCALE).astype(np.int64)
    slots: dict[int, int] = {}
    need_mw: dict[int, int] = {}
    for p in (int(i) for i in np.flatnonzero(checks.pool_eligible)):
        need = math.ceil(g * float(index.pool_kw_per_gpu[p]) * POWER_SCALE - 1e-6)
        s = int(index.pool_site[p])
        n = min(int(checks.pool_free_gpus[p]) // g, int(headroom[s]) // need if need else 10**9)
        if n > 0:
            slots[p] = n
            need_mw[p] = need
    headroom_mw = {int(s): int(headroom[s]) for s in {int(index.pool_site[p]) for p in slots}}
    return _Problem(index, spec, checks, costs, latency_coverage(index, spec), slots, need_mw, headroom_mw,
                    latency_weight, time_limit_s, workers, seed)


def _static_gaps(problem: _Problem) -> list[UncoveredEndpoint]:
    """Endpoints no replica could serve whatever the others do, and why."""
    index, spec, checks = problem.index, problem.spec, problem.checks
    assert spec.inference is not None
    rows, _ = demand_rows(index, spec)
    slo = spec.inference.latency_slo_ms
    slot_sites = {int(index.pool_site[p]) for p in problem.slots}
    out = []
    for e, demand in enumerate(spec.inference.demand):
        within = np.flatnonzero(problem.cover[e])
        if within.size == 0:
            latency = index.topology.endpoint_site_latency_ms[rows[e]]
            nearest = int(np.argmin(latency))
            out.append(UncoveredEndpoint(demand.endpoint, "latency",
                                         f"no site within {slo:g} ms; nearest is {index.site_ids[nearest]} "
                                         f"at {latency[nearest]:.1f} ms"))
            continue
        if slot_sites.intersection(int(s) for s in within):
            continue
        out.append(_why_not(index, checks, demand.endpoint, [int(s) for s in within]))
    return out


def _why_not(index: GridIndex, checks: Checks, endpoint: str, sites: list[int]) -> UncoveredEndpoint:
    """The rule that rules out the sites within SLO of one endpoint: the first found, in
    the order static rules, health, capacity, power (the last ones are transient)."""
    pools = [p for p in range(len(index.pool_ids)) if int(index.pool_site[p]) in sites]
    names = ", ".join(index.site_ids[s] for s in sites)
    if not any(checks.site_residency_ok[s] for s in sites):
        return UncoveredEndpoint(endpoint, "residency", f"sites within SLO ({names}) break the residency rule")
    ok = [p for p in pools if checks.site_residency_ok[index.pool_site[p]]]
    for code, mask in (("gpu_type", checks.pool_type_ok), ("workload", checks.pool_workload_ok),
                       ("health", checks.pool_health_ok)):
        if not any(mask[p] for p in ok):
            return UncoveredEndpoint(endpoint, code, f"no pool at the sites within SLO ({names}) passes {code}")
        ok = [p for p in ok if mask[p]]
    free = max(int(checks.pool_free_gpus[p]) for p in ok)
    if free < checks.need_gpus:
        return UncoveredEndpoint(endpoint, "capacity",
                                 f"at most {free} free GPUs in an eligible pool within SLO < {checks.need_gpus} "
                                 "per replica")
    headroom = max(float(checks.site_headroom_kw[index.pool_site[p]]) for p in ok)
    return UncoveredEndpoint(endpoint, "power",
                             f"at most {max(headroom, 0.0):.1f} kW headroom at an eligible site within SLO "
                             f"< {min(float(checks.pool_need_kw[p]) for p in ok):.1f} kW per replica")


# --- CP-SAT models -----------------------------------------------------------------------
@dataclass
class _Vars:
    model: cp_model.CpModel
    r: dict[int, cp_model.IntVar]
    open: dict[int, cp_model.IntVar]
    covered: dict[int, cp_model.IntVar]  # endpoint row -> "served" boolean


def _base_model(problem: _Problem, max_replicas: int, require_cover: bool) -> _Vars:
    index = problem.index
    model = cp_model.CpModel()
    r = {p: model.new_int_var(0, min(n, max_replicas), f"r_{p}") for p, n in problem.slots.items()}
    by_site: dict[int, list[int]] = defaultdict(list)
    for p in r:
        by_site[int(index.pool_site[p])].append(p)
    opened = {}
    for s, pools in by_site.items():
        o = model.new_bool_var(f"open_{s}")
        model.add(sum(r[p] for p in pools) >= o)
        for p in pools:
            model.add(r[p] <= min(problem.slots[p], max_replicas) * o)
        opened[s] = o
        model.add(sum(problem.need_mw[p] * r[p] for p in pools) <= problem.headroom_mw[s])
    covered = {}
    for e, row in enumerate(problem.cover):
        serving = [opened[s] for s in opened if row[s]]
        c = model.new_constant(1) if require_cover else model.new_bool_var(f"cov_{e}")
        if serving:
            model.add(sum(serving) >= c)
        elif require_cover:
            model.add(c == 0)
        covered[e] = c
    model.add(sum(r.values()) <= max_replicas)
    return _Vars(model, r, opened, covered)


def _solve(problem: _Problem, model: cp_model.CpModel) -> tuple[cp_model.CpSolver, Any]:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = problem.time_limit_s
    solver.parameters.num_workers = problem.workers
    solver.parameters.random_seed = problem.seed
    return solver, solver.solve(model)


def _found(status: Any) -> bool:
    return status in (cp_model.OPTIMAL, cp_model.FEASIBLE)


def _min_cover(problem: _Problem) -> tuple[int | None, int]:
    """The fewest replicas that serve every endpoint within SLO (capacity and power respected),
    if found, and the proven lower bound on it (equal when the solve is optimal)."""
    v = _base_model(problem, max_replicas=sum(problem.slots.values()), require_cover=True)
    v.model.minimize(sum(v.r.values()))
    solver, status = _solve(problem, v.model)
    if status == cp_model.INFEASIBLE:
        return None, 10**9
    value = round(solver.objective_value) if _found(status) else None
    return value, math.ceil(solver.best_objective_bound - 1e-9)


def _best_partial_cover(problem: _Problem, replicas: int) -> list[str]:
    """With the replicas asked for, the endpoints left unserved by the best arrangement."""
    assert problem.spec.inference is not None
    _, weights = demand_rows(problem.index, problem.spec)
    v = _base_model(problem, max_replicas=replicas, require_cover=False)
    scaled = [max(1, round(w / weights.sum() * 10_000)) for w in weights]
    v.model.maximize(sum(k * v.covered[e] for e, k in enumerate(scaled)))
    solver, status = _solve(problem, v.model)
    demand = problem.spec.inference.demand
    if not _found(status):
        return [d.endpoint for d in demand]
    return [d.endpoint for e, d in enumerate(demand) if not solver.value(v.covered[e])]


def _max_fit(problem: _Problem, replicas: int) -> int:
    v = _base_model(problem, max_replicas=replicas, require_cover=False)
    v.model.maximize(sum(v.r.values()))
    solver, status = _solve(problem, v.model)
    return round(solver.objective_value) if _found(status) else 0


def _place(problem: _Problem, replicas: int) -> tuple[str, float, float, dict[int, int] | None]:
    """Exactly ``replicas`` replicas covering every endpoint, at least cost."""
    index, spec, costs = problem.index, problem.spec, problem.costs
    assert spec.inference is not None
    v = _base_model(problem, max_replicas=replicas, require_cover=True)
    model = v.model
    model.add(sum(v.r.values()) == replicas)
    g = spec.gpus.count
    per_gpu = costs.carbon + costs.energy_price + costs.packing + costs.data_movement
    terms = [round(float(per_gpu[p]) * g * COST_SCALE) * x for p, x in v.r.items()]
    # Each endpoint is assigned to one open site within SLO; its latency cost is weighted
    # by its traffic share and the deployment's GPUs, as in Placement's latency term.
    rows, weights = demand_rows(index, spec)
    share = weights / weights.sum()
    latency = index.topology.endpoint_site_latency_ms[rows]
    total_gpus = replicas * g
    for e, row in enumerate(problem.cover):
        pairs = []
        for s, o in v.open.items():
            if not row[s]:
                continue
            a = model.new_bool_var(f"a_{e}_{s}")
            model.add_implication(a, o)
            ratio = min(float(latency[e, s]) / spec.inference.latency_slo_ms, 1.0)
            terms.append(round(problem.latency_weight * share[e] * ratio * total_gpus * COST_SCALE) * a)
            pairs.append(a)
        model.add_exactly_one(pairs)
    model.minimize(sum(terms))
    solver, status = _solve(problem, model)
    name = solver.status_name(status)
    if not _found(status):
        return name, 0.0, float(solver.best_objective_bound), None
    chosen = {p: int(solver.value(x)) for p, x in v.r.items() if solver.value(x) > 0}
    return name, float(solver.objective_value), float(solver.best_objective_bound), chosen


def decide_with_policy(index: GridIndex, usage: Usage, spec: JobSpec, policy: Policy) -> Decision:
    """The decision the policy asks for: the online greedy, and for a deployment under
    ``inference_placement: optimal`` the CP-SAT replicas instead (when they cover every endpoint).

    The one rule every path uses (the scheduler, and a policy diff re-deciding live jobs), so a
    dry run under a candidate policy decides exactly as the scheduler would once it is applied."""
    decision = decide(index, usage, spec, policy)
    if spec.inference is None or policy.inference_placement != "optimal":
        return decision
    result = solve_inference(index, usage, spec, policy, time_limit_s=policy.inference_time_limit_s,
                             site_fence=decision.checks.site_preference_ok)
    if result.placement is None:
        return decision  # the greedy's reasons explain the wait
    return replace(decision, placement=result.placement, uncovered_endpoints=())
