"""The online engine's faster paths decide exactly what the paths they replace decided.

- Replica node assignment on short pools runs over Python lists (``_assign_replica_nodes_small``);
  the NumPy path it bypasses (``_assign_replica_nodes_arrays``, still used for long pools) is the
  reference: the same (node, GPUs) pairs for any free GPUs per node, domain size and request.
- The replica loop keeps its slot mask from one replica to the next and computes the spreading
  gain only once demand is covered; the loop as it was (tests/reference_online.py) is the
  reference: the same placement, byte for byte, on random synthetic grids filling up and on the
  small grid under quotas that run out.
"""

from __future__ import annotations

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.config import EXAMPLES_DIR
from grid_scheduler.engine import GridIndex, decide
from grid_scheduler.engine.feasibility import compute_checks
from grid_scheduler.engine.online import _place_replicas
from grid_scheduler.engine.scoring import pool_costs
from grid_scheduler.engine.topology import (
    PoolShape,
    _assign_replica_nodes_arrays,
    _assign_replica_nodes_small,
    assign_nodes,
)
from grid_scheduler.model import GpuTopology, Grid, JobSpec, Policy
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.synthetic import job_stream, synthetic_grid
from tests.reference_online import assign_unconstrained_reference, place_replicas_reference
from tests.strategies import inference_specs


@st.composite
def short_pools(draw: st.DrawFn) -> tuple[PoolShape, list[int], int, int]:
    gpn = draw(st.sampled_from([1, 2, 4, 8]))
    shape = PoolShape(gpn, draw(st.integers(1, 18)))
    free = draw(st.lists(st.integers(0, gpn), max_size=64))
    return shape, free, draw(st.integers(1, 12)), draw(st.integers(1, gpn))


@settings(max_examples=400, deadline=None)
@given(case=short_pools())
def test_short_pool_replica_nodes_equal_the_array_path(case: tuple[PoolShape, list[int], int, int]) -> None:
    shape, free, replicas, replica_gpus = case
    got = _assign_replica_nodes_small(shape, free, replicas, replica_gpus)
    assert got == _assign_replica_nodes_arrays(shape, np.array(free, dtype=np.int64), replicas, replica_gpus)
    if got is not None:
        assert all(type(n) is int and type(g) is int for n, g in got)


@st.composite
def gang_pools(draw: st.DrawFn) -> tuple[PoolShape, list[int], int]:
    """A pool of whole free domains, partly used ones and a short last domain, and a gang of up to
    every free GPU in it (the larger ones open many whole domains at once)."""
    gpn = draw(st.sampled_from([1, 2, 4, 8]))
    shape = PoolShape(gpn, draw(st.integers(1, 18)))
    domains = draw(st.integers(1, 12))
    free: list[int] = []
    for _ in range(domains):
        kind = draw(st.sampled_from(["whole", "whole", "used", "empty"]))
        n = shape.nodes_per_domain
        free += [gpn] * n if kind == "whole" else [0] * n if kind == "empty" else \
            draw(st.lists(st.integers(0, gpn), min_size=n, max_size=n))
    free = free[: len(free) - draw(st.integers(0, shape.nodes_per_domain - 1))] or [gpn]
    return shape, free, draw(st.integers(1, max(sum(free), 1)))


@settings(max_examples=400, deadline=None)
@given(case=gang_pools())
def test_gang_nodes_equal_the_one_domain_at_a_time_reference(case: tuple[PoolShape, list[int], int]) -> None:
    shape, free, gpus = case
    got = assign_nodes(shape, np.array(free, dtype=np.int64), gpus, GpuTopology())
    assert got == assign_unconstrained_reference(shape, np.array(free, dtype=np.int64), gpus)
    if got is not None:
        assert sum(g for _, g in got) == gpus
        assert all(type(n) is int and type(g) is int for n, g in got)


def same_placement(scheduler: Scheduler, spec: JobSpec) -> None:
    index, usage, policy = scheduler.index, scheduler.usage(), scheduler.policy
    checks = compute_checks(index, usage, spec, policy)
    costs = pool_costs(index, checks, spec, policy)
    new = _place_replicas(index, spec, policy, checks, costs)
    old = place_replicas_reference(index, spec, policy, checks, costs)
    assert new.uncovered_endpoints == old.uncovered_endpoints
    assert (new.placement is None) == (old.placement is None)
    if new.placement is not None and old.placement is not None:
        assert new.placement.model_dump() == old.placement.model_dump()


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), sites=st.integers(6, 40))
def test_replica_loop_equals_the_reference_on_filling_synthetic_grids(seed: int, sites: int) -> None:
    """No cancellations: the grid fills, so slots, power headroom and coverage all bind."""
    grid = synthetic_grid(sites, sites * 3, sites * 400, seed=seed)
    scheduler = Scheduler(grid)
    for n, spec in enumerate(job_stream(grid, 60, seed=seed, inference_share=0.8)):
        if spec.inference is not None:
            same_placement(scheduler, spec)
        scheduler.submit(spec, f"r{n}")


QUOTAS = Policy.model_validate(yaml.safe_load((EXAMPLES_DIR / "policies" / "quotas.yaml").read_text()))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(inference_specs(), min_size=1, max_size=12), quotas=st.booleans())
def test_replica_loop_equals_the_reference_under_quotas(small_grid: Grid, specs: list[JobSpec], quotas: bool) -> None:
    scheduler = Scheduler(small_grid, QUOTAS if quotas else Policy())
    for n, spec in enumerate(specs):
        same_placement(scheduler, spec)
        scheduler.submit(spec, f"r{n}")


def test_decide_still_places_on_the_index_it_is_given(small_grid: Grid) -> None:
    """A smoke check that decide reaches the loop (a deployment is placed on an empty grid)."""
    index = GridIndex.build(small_grid)
    spec = JobSpec.model_validate({"name": "s", "tenant": "acme", "kind": "inference", "gpus": {"count": 1},
                                   "inference": {"replicas": 3, "demand": [{"endpoint": "london", "weight": 1.0}],
                                                 "latency_slo_ms": 30}})
    from grid_scheduler.engine import Usage

    decision = decide(index, Usage.empty(index), spec, Policy())
    assert decision.placement is not None and sum(a.gpus for a in decision.placement.assignments) == 3
