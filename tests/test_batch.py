"""Batch placement with CP-SAT: feasible when checked independently, never worse than greedy."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model

from grid_scheduler.engine import GridIndex, Usage, decide
from grid_scheduler.engine.batch import (
    _build_units,
    _choose_candidates,
    _greedy,
    _greedy_answer,
    _knapsack,
    _Model,
    _subset_cap,
    as_modelled,
    solve_batch,
)
from grid_scheduler.engine.priority import Holds, job_value
from grid_scheduler.engine.verify import check_solution
from grid_scheduler.model import Grid, JobSpec, Policy
from tests.strategies import inference_specs, training_specs

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
POLICY = Policy()


@pytest.fixture(scope="module")
def index(small_grid: Grid) -> GridIndex:
    return GridIndex.build(small_grid)


def _jobs(specs: list[JobSpec]) -> list[tuple[str, JobSpec]]:
    return [(f"job-{i:03d}", s.model_copy(update={"name": f"job-{i:03d}"})) for i, s in enumerate(specs)]


def _preload(index: GridIndex, fill: list[float]) -> Usage:
    """Some pools partly used already (power counted), as a running grid would be."""
    used = np.array([int(index.pool_healthy_gpus[p] * f) for p, f in enumerate(fill)], dtype=np.int64)
    kw = np.bincount(index.pool_site, weights=used * index.pool_kw_per_gpu, minlength=len(index.site_ids))
    return Usage(used, kw.astype(np.float64), np.zeros(len(used), dtype=np.bool_))


def _greedy_weighted(index: GridIndex, usage: Usage, jobs: list[tuple[str, JobSpec]], tier: int | None = None) -> int:
    """The online path in queue order, holds included: what the batch's top tier must never fall below."""
    used, kw = usage.pool_used_gpus.copy(), usage.site_used_kw.copy()
    running = Usage(used, kw, usage.pool_drained)
    holds = Holds(index)
    total = 0
    for _, spec in sorted(jobs, key=lambda j: -j[1].priority):
        placement = decide(index, holds.overlay(running, spec), as_modelled(spec), POLICY).placement
        if placement is None:
            holds.hold_for(spec, POLICY)
            continue
        if tier is None or spec.priority == tier:
            total += job_value(spec)
        for a in placement.assignments:
            p = index.pool_index[a.pool_id]
            used[p] += a.gpus
            kw[index.pool_site[p]] += a.power_kw
    return total


job_lists = st.lists(st.one_of(training_specs(), inference_specs()), min_size=1, max_size=14)
fills = st.lists(st.sampled_from([0.0, 0.0, 0.25, 0.5, 0.9]), min_size=7, max_size=7)


@SETTINGS
@given(specs=job_lists, fill=fills)
def test_every_solution_is_feasible_and_never_worse_than_greedy(
    index: GridIndex, small_grid: Grid, specs: list[JobSpec], fill: list[float]
) -> None:
    usage = _preload(index, fill)
    jobs = _jobs(specs)
    result = solve_batch(index, usage, jobs, POLICY, time_limit_s=2.0, workers=1)
    spec_of = dict(jobs)
    placed = {j: (spec_of[j], p) for j, p in result.placements.items()}
    assert check_solution(small_grid, placed, usage, POLICY, index.topology, gang_training=True) == []
    assert set(result.placements).isdisjoint(result.unplaced)
    assert set(result.placements) | set(result.unplaced) == set(spec_of)
    assert result.objective >= result.greedy_objective
    # Tiers are lexicographic: the top tier never does worse than the online path, and every
    # tier never worse than the greedy on what the tiers above left it.
    top = max(spec.priority for spec in spec_of.values())
    assert result.tiers[0].priority == top
    assert result.tiers[0].value >= _greedy_weighted(index, usage, jobs, tier=top)
    assert all(t.value >= t.greedy_value for t in result.tiers)
    assert result.best_bound >= result.objective - 1e-6 * max(1.0, abs(result.objective))
    # The gap is what the module says: per tier |bound - objective| / max(1, |objective|), the worst overall.
    for t in result.tiers:
        assert t.best_bound >= t.objective - 1e-6 * max(1.0, abs(t.objective))
        assert t.gap == pytest.approx(abs(t.best_bound - t.objective) / max(1.0, abs(t.objective)))
    assert result.gap == max(t.gap for t in result.tiers)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=job_lists)
def test_same_input_same_answer_with_one_worker(index: GridIndex, specs: list[JobSpec]) -> None:
    jobs = _jobs(specs)
    usage = Usage.empty(index)
    first = solve_batch(index, usage, jobs, POLICY, time_limit_s=2.0, workers=1, seed=7)
    second = solve_batch(index, usage, jobs, POLICY, time_limit_s=2.0, workers=1, seed=7)
    assert first.placements == second.placements
    assert first.objective == second.objective


def _train(name: str, gpus: int, priority: int, types: list[str] | None = None, allowed: list[str] | None = None
           ) -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": "acme", "kind": "training", "priority": priority,
        "gpus": {"count": gpus, "types": types or []}, "residency": {"allowed": allowed or []},
    })


def test_beats_greedy_when_an_unrestricted_job_takes_the_only_eu_pool(index: GridIndex, small_grid: Grid) -> None:
    # Glomfjord (the only non-EU GB300) is full. Greedy puts the unrestricted job on
    # sines-gb300 (its cheapest pool), leaving nowhere for the EU-only GB300 job; the
    # optimum sends the unrestricted job to sines-h100 or london-b200 instead. (Both in one
    # tier: across tiers, the higher one is solved first, by itself.)
    fill = [0.0] * len(index.pool_ids)
    fill[index.pool_index["glomfjord-gb300"]] = 1.0
    usage = _preload(index, fill)
    jobs = [("anywhere", _train("anywhere", 64, 5)), ("eu-gb300", _train("eu-gb300", 128, 5, ["GB300"], ["EU"]))]
    assert _greedy_weighted(index, usage, jobs) == job_value(jobs[0][1])
    result = solve_batch(index, usage, jobs, POLICY, time_limit_s=2.0, workers=1)
    assert result.method == "cp-sat"
    assert sorted(result.placements) == ["anywhere", "eu-gb300"]
    assert result.placements["eu-gb300"].assignments[0].pool_id == "sines-gb300"
    assert result.objective > result.greedy_objective
    assert result.status == "OPTIMAL" and result.gap == 0.0


def test_interchangeable_jobs_become_one_class(index: GridIndex) -> None:
    jobs = [(f"j{i}", _train(f"j{i}", 8, 1).model_copy(update={"tenant": f"t{i % 3}"})) for i in range(30)]
    result = solve_batch(index, Usage.empty(index), jobs, POLICY, time_limit_s=2.0, workers=1)
    assert result.classes == 1
    assert len(result.placements) == 30


def test_big_gang_jobs_stay_individual(index: GridIndex) -> None:
    jobs = [(f"big{i}", _train(f"big{i}", 600, 1)) for i in range(2)]
    result = solve_batch(index, Usage.empty(index), jobs, POLICY, time_limit_s=2.0, workers=1)
    assert result.classes == 2
    assert result.unplaced == ["big0", "big1"]  # no pool holds 600 healthy GPUs


def test_empty_batch(index: GridIndex) -> None:
    result = solve_batch(index, Usage.empty(index), [], POLICY)
    assert result.placements == {} and result.unplaced == [] and result.gap == 0.0


def test_multi_endpoint_deployment_covers_every_endpoint(index: GridIndex, small_grid: Grid) -> None:
    spec = JobSpec.model_validate({
        "name": "serve", "tenant": "acme", "kind": "inference", "gpus": {"count": 8},
        "inference": {"replicas": 2, "latency_slo_ms": 3,
                      "demand": [{"endpoint": "london"}, {"endpoint": "frankfurt"}]},
    })
    result = solve_batch(index, Usage.empty(index), [("serve", spec)], POLICY, time_limit_s=2.0, workers=1)
    placement = result.placements["serve"]
    assert sorted(placement.site_ids) == ["frankfurt-hub", "london-hub"]
    assert check_solution(small_grid, {"serve": (spec, placement)}, topology=index.topology) == []


# --- mechanisms of the scalable model ----------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    items=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 4)), min_size=1, max_size=5),
    free=st.integers(0, 60),
)
def test_subset_cap_is_the_largest_reachable_sum(items: list[tuple[int, int]], free: int) -> None:
    sizes = np.array([s for s, _ in items], dtype=np.int64)
    counts = np.array([c for _, c in items], dtype=np.int64)
    reachable = {0}
    for s, c in items:
        reachable = {r + s * t for r in reachable for t in range(c + 1)}
    assert _subset_cap(sizes, counts, free) == max(r for r in reachable if r <= free)


@settings(max_examples=80, deadline=None)
@given(
    items=st.lists(st.tuples(st.integers(1, 9), st.floats(-2.0, 10.0), st.integers(0, 3)), min_size=1, max_size=5),
    capacity=st.integers(0, 30),
)
def test_knapsack_is_exact_within_budget_and_an_upper_bound_beyond(
    items: list[tuple[int, float, int]], capacity: int
) -> None:
    sizes = np.array([s for s, _, _ in items], dtype=np.int64)
    values = np.array([v for _, v, _ in items], dtype=np.float64)
    counts = np.array([c for _, _, c in items], dtype=np.int64)
    best = 0.0
    for take in itertools.product(*(range(c + 1) for _, _, c in items)):
        if sum(t * s for t, (s, _, _) in zip(take, items, strict=True)) <= capacity:
            best = max(best, sum(t * v for t, (_, v, _) in zip(take, items, strict=True)))
    assert _knapsack(sizes, values, counts, capacity, [10**9]) == pytest.approx(best, abs=1e-9)
    assert _knapsack(sizes, values, counts, capacity, [0]) >= best - 1e-9  # Dantzig's bound


def _model(index: GridIndex, usage: Usage, jobs: list[tuple[str, JobSpec]]) -> tuple[_Model, list[Any]]:
    units = _build_units(index, usage, jobs, POLICY, Holds(index))
    _greedy(index, usage, POLICY, jobs, units, Holds(index))
    for unit in units:
        _choose_candidates(index, unit, 8)
    return _Model(index, usage, units), _greedy_answer(units)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=job_lists, fill=fills)
def test_lp_and_knapsack_bounds_are_valid(
    index: GridIndex, specs: list[JobSpec], fill: list[float]
) -> None:
    usage = _preload(index, fill)
    jobs = _jobs(specs)
    model, greedy = _model(index, usage, jobs)
    if not model.has_vars:
        return
    lp, knapsack = model.lp_bound(2.0)
    assert lp <= model.w_trivial and knapsack <= model.w_trivial
    # The best W of the candidate model, proven by CP-SAT on its own (no LP involved).
    model._objective(model.w_vars, model.w_coeffs, maximize=True)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 20.0
    assert solver.solve(model.cp) == cp_model.OPTIMAL
    best_w = round(solver.objective_value)
    assert lp >= best_w and knapsack >= best_w
    assert best_w >= int(model.w_coeffs @ model.vector(greedy)[model.w_vars])
    # The LP's bound on the cost, at that W, is below the cheapest answer CP-SAT proves.
    model.cp.add(sum(int(c) * model.cp.get_int_var_from_proto_index(int(v))
                     for v, c in zip(model.w_vars, model.w_coeffs, strict=True)) >= best_w)
    model._objective(np.arange(model.n_vars), model.var_cost_all, maximize=False)
    assert solver.solve(model.cp) == cp_model.OPTIMAL
    assert 0 <= model.cost_bound(best_w, 2.0) <= round(solver.objective_value)


def test_lp_bound_sees_through_fragments(index: GridIndex) -> None:
    # A 64-GPU and a 48-GPU job, one pool with 100 free GPUs: the LP alone would place 64 + 36/48
    # of the second job; with the pool's capacity cut to the largest sum of candidate sizes that
    # fits (64), the bound is what an integer answer can reach.
    pool = index.pool_index["sines-gb300"]
    used = index.pool_healthy_gpus.copy()
    used[pool] -= 100
    kw = np.zeros(len(index.site_ids))  # power left everywhere: only GPUs bind
    usage = Usage(used, kw, np.zeros(len(used), dtype=np.bool_))
    jobs = [("a", _train("a", 64, 0)), ("b", _train("b", 48, 0))]
    model, _ = _model(index, usage, jobs)
    quarter_hours = 4  # each job runs the default hour
    assert model.w_trivial == (64 + 48) * quarter_hours
    assert model.gpus_cut == 100 - 64
    lp, knapsack = model.lp_bound(2.0)
    assert lp == knapsack == 64 * quarter_hours
    result = solve_batch(index, usage, jobs, POLICY, time_limit_s=2.0, workers=1)
    assert result.weighted_gpus == 64 * quarter_hours and result.gap == 0.0 and result.status == "OPTIMAL"
    assert result.extra["weighted_gpus_gap"] == 0.0


def test_classes_differing_only_in_priority_share_checks_and_costs(index: GridIndex) -> None:
    jobs = [("lo", _train("lo", 8, 0)), ("hi", _train("hi", 8, 500)), ("lo2", _train("lo2", 8, 0))]
    units = _build_units(index, Usage.empty(index), jobs, POLICY, Holds(index))
    assert [u.job_ids for u in units] == [["lo", "lo2"], ["hi"]]
    assert units[0].checks is units[1].checks and units[0].total is units[1].total
    assert [u.value for u in units] == [8 * 4, 8 * 4]  # GPU-hours in quarter hours: priority is a tier, not a weight


def test_result_reports_the_gap_of_w_and_of_the_cost_apart(index: GridIndex) -> None:
    jobs = [(f"j{i}", _train(f"j{i}", 8, i % 3)) for i in range(12)]
    result = solve_batch(index, Usage.empty(index), jobs, POLICY, time_limit_s=2.0, workers=1)
    assert result.extra["weighted_gpus_gap"] == 0.0  # all fit: the LP proves it at once
    assert result.extra["lp_weighted_gpus_bound"] == result.weighted_gpus
    assert result.status == "OPTIMAL" and result.extra["cost_gap"] == 0.0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=job_lists, fill=fills)
def test_the_greedy_answer_is_a_point_of_the_array_model(
    index: GridIndex, specs: list[JobSpec], fill: list[float]
) -> None:
    model, greedy = _model(index, _preload(index, fill), _jobs(specs))
    values = model.vector(greedy)
    assert model.satisfies(values)
    assert model.solution(values) == [(placed, counts) for placed, counts in greedy]
