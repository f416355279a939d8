"""Maximum run time per job (JobSpec.max_run_hours) and per tenant (policy max_run_hours): past it
the scheduler stops the job, keeps why, frees its GPUs and tells its site's agent (TIME_LIMIT)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from grid_scheduler.model import Grid, JobSpec, JobState, Policy
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.service.convert import job_to_pb, spec_dict, spec_to_pb
from grid_scheduler.state.agents import JobPhase, JobReport


def training(tenant: str, max_run_hours: float | None = None, name: str = "t") -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": tenant, "kind": "training", "gpus": {"count": 8, "types": ["H100"]},
        "max_run_hours": max_run_hours, "training": {"duration_hours": 100},
    })


def test_jobs_past_their_own_or_their_tenants_limit_are_stopped_and_the_agent_told(small_grid: Grid) -> None:
    now = [1_000_000.0]
    policy = Policy.model_validate({"max_run_hours": {"tenants": {"acme": 2}}})
    s = Scheduler(small_grid, policy, clock=lambda: now[0])
    own = s.submit(training("acme", 1, "own")).record
    tenant = s.submit(training("acme", None, "tenant")).record
    free = s.submit(training("globex", None, "free")).record
    assert {r.state for r in (own, tenant, free)} == {JobState.RUNNING}
    site = own.placement.site_ids[0] if own.placement else ""
    s.store.register_agent(site, "a", {}, now[0])
    fleet.apply_report(s, site, "a", JobReport(own.id, JobPhase.RUNNING, 1))

    now[0] += 3600.0  # exactly at the limit: still allowed
    assert fleet.stop_runaways(s) == []
    now[0] += 1.0
    assert fleet.stop_runaways(s) == [own.id]
    stopped = s.get(own.id)
    assert stopped.state is JobState.CANCELLED and stopped.end_reason == "time limit: ran past 1 h"
    assert s.store.reservation(own.id) == []
    assert [(x.job_id, x.reason) for x in fleet.desired_state(s, site).stop] == [(own.id, fleet.StopReason.TIME_LIMIT)]
    assert job_to_pb(stopped).end_reason == "time limit: ran past 1 h"
    now[0] += 3600.0
    assert fleet.stop_runaways(s) == [tenant.id]
    now[0] += 100 * 3600.0
    assert fleet.stop_runaways(s) == []  # globex has no limit
    assert s.get(free.id).state is JobState.RUNNING


def test_max_run_hours_round_trips_and_bad_values_are_refused() -> None:
    spec = training("acme", 12.5)
    assert JobSpec.model_validate(spec_dict(spec_to_pb(spec))).max_run_hours == 12.5
    assert JobSpec.model_validate(spec_dict(spec_to_pb(training("acme")))).max_run_hours is None
    with pytest.raises(ValidationError):
        training("acme", -1)
    with pytest.raises(ValidationError):
        Policy.model_validate({"max_run_hours": {"tenants": {"acme": 0}}})
    assert Policy.model_validate({"max_run_hours": {"default": 48}}).max_run_hours.for_tenant("x") == 48
