"""Property: any live ledger, through the snapshot and back, is the simulation's ledger at time zero.

Random histories on the small grid (submissions of every kind, tier and preemptibility, so
some preempt; cancels and completions; drains) on the production Scheduler; then the whole way
a live start goes except the socket: read_live -> scope (as an admin, and as a caller who may
read no tenant) -> LiveSnapshot protobuf -> back -> seeded Simulator. Exactly the same GPUs per
pool, watts per site, drains, placement per running job, and queue, in order.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.model import Grid, JobRecord, Policy
from grid_scheduler.model.grid import ResidencyRule
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.errors import WrongState
from grid_scheduler.scheduler.live import read_live
from grid_scheduler.service.live_convert import live_from_pb, live_to_pb
from grid_scheduler.service.live_scope import Anonymiser, scope_live
from grid_scheduler.whatif.live import LiveStart, start_from_live
from grid_scheduler.whatif.scenario import load_scenario_data
from grid_scheduler.whatif.simulator import Simulator, quiet_logs
from tests.strategies import job_specs

POLICY = Policy(tenant_residency={"bank": ResidencyRule(allowed=["EU", "UK"])})
SCENARIO: dict[str, Any] = {
    "name": "prop", "horizon_days": 0.1,
    "workload": {"generated": [{"name": "t", "kind": "training", "tenants": {"acme": 1}, "arrivals_per_day": 1,
                                "gpus": {"min": 8, "max": 8}, "duration_hours": {"min": 1, "max": 1}}]},
}
POOLS = ["sines-h100", "london-b200", "glomfjord-gb300", "frankfurt-h100"]

steps = st.lists(st.one_of(
    st.tuples(st.just("submit"), job_specs(), st.booleans()),
    st.tuples(st.just("finish"), st.integers(0, 40), st.booleans()),
    st.tuples(st.just("drain"), st.sampled_from(POOLS), st.booleans()),
), min_size=1, max_size=25)


def _history(grid: Grid, plan: list[tuple[Any, ...]]) -> Scheduler:
    s = Scheduler(grid, POLICY)
    ids: list[str] = []
    for kind, what, flag in plan:
        if kind == "submit":
            ids.append(s.submit(what.model_copy(update={"preemptible": flag})).record.id)
        elif kind == "finish" and ids:
            job_id = ids[what % len(ids)]
            with contextlib.suppress(WrongState):  # not running, or already over: the history goes on
                s.complete(job_id) if flag else s.cancel(job_id)
        elif kind == "drain":
            s.set_drained(what, flag)
    return s


def _at_time_zero(s: Scheduler, may_read: bool, anonymiser: Anonymiser) -> Simulator:
    scoped = scope_live(read_live(s), lambda tenant: may_read, anonymiser)
    back = live_from_pb(live_to_pb(scoped.state, scoped.anonymised_ids))
    loaded = load_scenario_data(SCENARIO, "prop", Path.cwd(), live_grid=back.grid)
    return Simulator(start_from_live(loaded, LiveStart("test", back, len(scoped.anonymised_ids))))


def _usage(s: Scheduler) -> tuple[list[int], list[int], list[bool]]:
    snap = s.store.snapshot()
    return snap.pool_used_gpus.tolist(), snap.site_used_w.tolist(), snap.pool_drained.tolist()


def _placements(records: list[JobRecord], rename: Any) -> dict[str, str]:
    return {rename(r.id): r.placement.model_dump_json() for r in records if r.placement is not None}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=steps)
def test_the_snapshot_is_the_ledger_at_time_zero(small_grid: Grid, plan: list[tuple[Any, ...]]) -> None:
    quiet_logs()
    live = _history(small_grid, plan)
    anonymiser = Anonymiser()
    for may_read, rename in ((True, lambda i: i), (False, anonymiser.job_id)):
        sim = _at_time_zero(live, may_read, anonymiser).scheduler
        assert _usage(sim) == _usage(live)
        assert _placements(sim.store.running_jobs(), str) == _placements(live.store.running_jobs(), rename)
        assert [r.id for r in sim.store.pending_jobs()] == [rename(r.id) for r in live.store.pending_jobs()]
        for mine, theirs in zip(sim.store.pending_jobs(), live.store.pending_jobs(), strict=True):
            expected = theirs.spec if may_read else theirs.spec.model_copy(update={
                "name": mine.id, "tenant": anonymiser.tenant(theirs.spec.tenant),
                "training": theirs.spec.training and theirs.spec.training.model_copy(
                    update={"datasets": [anonymiser.dataset(d) for d in theirs.spec.datasets]})})
            assert mine.spec == expected
