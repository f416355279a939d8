"""A deployment whose demand weights are tiny (every gain under the tie tolerance) still never gets a
replica in a pool without room for it: the pick among tied candidates is only among slots that fit."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import decide
from grid_scheduler.model import Grid, JobSpec
from grid_scheduler.scheduler import Scheduler
from tests.invariants import ledger_from_jobs, over_capacity, placement_violations
from tests.strategies import ENDPOINTS, job_specs


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    endpoints=st.lists(st.sampled_from(ENDPOINTS), unique=True, min_size=1, max_size=3),
    gpus=st.sampled_from([4, 8, 16]),
    replicas=st.integers(2, 24),
    weight=st.sampled_from([1e-15, 1e-12, 1e-10]),
    history=st.lists(job_specs(), max_size=6),
)
def test_tiny_demand_weights_never_over_allocate(
    small_grid: Grid, endpoints: list[str], gpus: int, replicas: int, weight: float, history: list[JobSpec]
) -> None:
    # SLO 30 ms: every endpoint of the small grid has sites within it, so the deployment is placed
    # when capacity allows, and its replicas run pools out of slots.
    spec = JobSpec.model_validate({
        "name": "serve", "tenant": "acme", "kind": "inference", "gpus": {"count": gpus},
        "inference": {"replicas": replicas, "latency_slo_ms": 30,
                      "demand": [{"endpoint": e, "weight": weight} for e in endpoints]},
    })
    scheduler = Scheduler(small_grid)
    for earlier in history:
        scheduler.submit(earlier)
    decision = decide(scheduler.index, scheduler.usage(), spec, scheduler.policy)
    if decision.placement is None:
        return
    used, power_kw = ledger_from_jobs(small_grid, scheduler.store.list_jobs(frozenset(), "", 10_000))
    for a in decision.placement.assignments:
        used[a.pool_id] = used.get(a.pool_id, 0) + a.gpus
        power_kw[a.site_id] = power_kw.get(a.site_id, 0.0) + a.power_kw
    assert over_capacity(small_grid, used, power_kw) == []
    assert placement_violations(small_grid, spec, decision.placement) == []


def test_a_deployment_of_tiny_weight_spreads_over_pools_with_room(small_grid: Grid) -> None:
    """24 x 16 GPUs at weight 1e-10: every gain ties, and the cheapest pool (64 GPUs) fills first."""
    spec = JobSpec.model_validate({
        "name": "serve", "tenant": "acme", "kind": "inference", "gpus": {"count": 16},
        "inference": {"replicas": 24, "latency_slo_ms": 30, "demand": [{"endpoint": "london", "weight": 1e-10}]},
    })
    scheduler = Scheduler(small_grid)
    decision = decide(scheduler.index, scheduler.usage(), spec, scheduler.policy)
    assert decision.placement is not None
    pools = {p.id: p.total_gpus for s in small_grid.sites for p in s.pools}
    assert all(a.gpus <= pools[a.pool_id] for a in decision.placement.assignments)
    assert decision.placement.gpus == 24 * 16
