"""Optimal inference replicas: every endpoint within SLO, exactly the replicas asked, never worse than greedy."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from grid_scheduler.engine import GridIndex, Usage
from grid_scheduler.engine.inference_opt import solve_inference
from grid_scheduler.engine.verify import check_solution
from grid_scheduler.model import Grid, JobSpec, Policy
from tests.strategies import inference_specs

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
POLICY = Policy()


@pytest.fixture(scope="module")
def index(small_grid: Grid) -> GridIndex:
    return GridIndex.build(small_grid)


@SETTINGS
@given(spec=inference_specs())
def test_placement_is_feasible_and_no_worse_than_greedy(index: GridIndex, small_grid: Grid, spec: JobSpec) -> None:
    assert spec.inference is not None
    result = solve_inference(index, Usage.empty(index), spec, POLICY, time_limit_s=2.0, workers=1)
    if result.placement is None:
        # The model is complete: if it finds nothing, neither does the greedy online path.
        assert result.greedy_score is None
        assert result.reason
        return
    assert check_solution(small_grid, {"job": (spec, result.placement)}, topology=index.topology) == []
    assert result.placement.gpus == spec.inference.replicas * spec.gpus.count
    if result.greedy_score is not None:
        assert result.placement.score.total <= result.greedy_score + 1e-6
    assert result.min_replicas_to_cover is not None
    assert result.min_replicas_to_cover <= spec.inference.replicas


def _serve(replicas: int, slo_ms: float, endpoints: list[str], allowed: list[str] | None = None) -> JobSpec:
    return JobSpec.model_validate({
        "name": "serve", "tenant": "acme", "kind": "inference", "gpus": {"count": 8},
        "residency": {"allowed": allowed or []},
        "inference": {"replicas": replicas, "latency_slo_ms": slo_ms,
                      "demand": [{"endpoint": e} for e in endpoints]},
    })


def test_too_few_replicas_says_how_many_are_needed(index: GridIndex) -> None:
    # Within 2 ms, each of these metros is served only by its own site: three replicas needed.
    result = solve_inference(index, Usage.empty(index), _serve(2, 2, ["london", "frankfurt", "lisbon"]), POLICY,
                             time_limit_s=2.0, workers=1)
    assert result.placement is None
    assert result.min_replicas_to_cover == 3
    assert [u.code for u in result.uncovered] == ["replicas"]


def test_endpoint_out_of_reach_is_named_with_its_reason(index: GridIndex) -> None:
    # Lisbon is served within 2 ms only by Sines, which is in the EU; a UK-only deployment cannot use it.
    result = solve_inference(index, Usage.empty(index), _serve(2, 2, ["london", "lisbon"], ["UK"]), POLICY,
                             time_limit_s=2.0, workers=1)
    assert result.placement is None
    assert [(u.endpoint_id, u.code) for u in result.uncovered] == [("lisbon", "residency")]
    far = solve_inference(index, Usage.empty(index), _serve(1, 0.5, ["london"]), POLICY, time_limit_s=2.0)
    assert [(u.endpoint_id, u.code) for u in far.uncovered] == [("london", "latency")]


def test_full_site_is_a_capacity_reason(index: GridIndex) -> None:
    usage = Usage.empty(index)
    p = index.pool_index["manchester-h100"]
    usage.pool_used_gpus[p] = 64
    result = solve_inference(index, usage, _serve(1, 2, ["manchester"]), POLICY, time_limit_s=2.0)
    assert [(u.endpoint_id, u.code) for u in result.uncovered] == [("manchester", "capacity")]


def test_optimum_covers_every_endpoint_with_exactly_the_replicas(index: GridIndex, small_grid: Grid) -> None:
    spec = _serve(4, 12, ["london", "frankfurt", "manchester", "lisbon"])
    result = solve_inference(index, Usage.empty(index), spec, POLICY, time_limit_s=2.0, workers=1)
    assert result.placement is not None and result.status == "OPTIMAL" and result.gap == 0.0
    assert result.placement.gpus == 32
    assert check_solution(small_grid, {"serve": (spec, result.placement)}, topology=index.topology) == []
    assert all(e.latency_ms <= 12 for e in result.placement.endpoint_latencies)
