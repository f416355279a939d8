"""Power in the engine and in the ledger is the same integer watts: a decision the engine
finds feasible never fails its commit by rounding, on envelopes cut to the watt."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import GridIndex, Usage, decide
from grid_scheduler.model import EventType, Grid, JobRecord, JobSpec, JobState, Policy
from grid_scheduler.state import Limits, MemoryStore, Transition
from grid_scheduler.state.store import to_watts
from tests.strategies import training_specs


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=training_specs(), cut_w=st.integers(-3, 3), site=st.integers(0, 4))
def test_a_feasible_decision_always_commits(small_grid: Grid, spec: JobSpec, cut_w: int, site: int) -> None:
    # Place the job on the empty grid, then cut its site's envelope to its need +- a few watts.
    index = GridIndex.build(small_grid)
    data = small_grid.model_dump(mode="json")
    target = data["sites"][site]
    probe = decide(index, Usage.empty(index), spec, Policy()).placement
    if probe is None:
        return
    need_w = sum(to_watts(a.power_kw) for a in probe.assignments if a.site_id == target["id"])
    if need_w:
        target["power_envelope_mw"] = (need_w + cut_w) / 1_000_000
    grid = Grid.model_validate(data)
    index = GridIndex.build(grid)
    store = MemoryStore(Limits.from_grid(grid))
    placement = decide(index, Usage.empty(index), spec, Policy()).placement
    if placement is None:
        return
    record = JobRecord(id="j", spec=spec, state=JobState.RUNNING, placement=placement, created_at=0.0, updated_at=0.0)
    store.create_job(Transition(record, EventType.PLACED, reserve=placement.assignments))  # never CapacityConflict
