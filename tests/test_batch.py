"""Batch placement with CP-SAT: feasible when checked independently, never worse than greedy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import GridIndex, Usage, decide
from grid_scheduler.engine.batch import as_modelled, job_value, solve_batch
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


def _greedy_weighted(index: GridIndex, usage: Usage, jobs: list[tuple[str, JobSpec]]) -> int:
    """The online path, highest priority first: what the batch must never fall below."""
    used, kw = usage.pool_used_gpus.copy(), usage.site_used_kw.copy()
    running = Usage(used, kw, usage.pool_drained)
    total = 0
    for _, spec in sorted(jobs, key=lambda j: -j[1].priority):
        placement = decide(index, running, as_modelled(spec), POLICY).placement
        if placement is None:
            continue
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
    assert result.weighted_gpus >= _greedy_weighted(index, usage, jobs)
    assert result.best_bound >= result.objective - 1e-6 * max(1.0, abs(result.objective))
    assert result.gap >= 0


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
    # optimum sends the unrestricted job to sines-h100 or london-b200 instead.
    fill = [0.0] * len(index.pool_ids)
    fill[index.pool_index["glomfjord-gb300"]] = 1.0
    usage = _preload(index, fill)
    jobs = [("anywhere", _train("anywhere", 64, 5)), ("eu-gb300", _train("eu-gb300", 128, 4, ["GB300"], ["EU"]))]
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
