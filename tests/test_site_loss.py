"""Site loss, judged from heartbeat times in the store (a scripted clock: no sleeps, no timing):
a silent site takes no new work, after the grace period its inference jobs are re-placed within
their SLO elsewhere and its training jobs re-queued, nothing is double-booked; an agent back within
the grace keeps its jobs, one back after it is told to stop what moved. Both stores."""

from __future__ import annotations

import pytest

from grid_scheduler.model import Grid, JobSpec, JobState, ReasonCode
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.state import Store
from grid_scheduler.state.agents import JobPhase, JobReport
from tests.invariants import ledger_from_jobs, over_capacity, placement_violations

TIMEOUT_S = 10.0
GRACE_S = 20.0


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000_000.0

    def __call__(self) -> float:
        return self.now_s


def inference(name: str = "chat") -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": "acme", "kind": "inference", "priority": 5,
        "gpus": {"count": 8, "types": ["H100", "H200", "B200"]}, "residency": {"allowed": ["EU", "UK"]},
        "inference": {"replicas": 1, "demand": [{"endpoint": "london", "weight": 1.0}], "latency_slo_ms": 20},
    })


@pytest.fixture
def setup(store: Store, small_grid: Grid) -> tuple[Scheduler, Clock]:
    clock = Clock()
    s = Scheduler(small_grid, store=store, clock=clock)
    s.heartbeat_timeout_s, s.site_grace_s = TIMEOUT_S, GRACE_S
    return s, clock


def check_ledger(s: Scheduler) -> None:
    running = s.store.running_jobs()
    gpus, power = ledger_from_jobs(s.grid, running)
    assert not over_capacity(s.grid, gpus, power)
    snap = s.store.snapshot()
    for pool_id, n in gpus.items():
        assert int(snap.pool_used_gpus[s.limits.pool_index[pool_id]]) == n
    for record in running:
        assert record.placement is not None
        assert not placement_violations(s.grid, record.spec, record.placement)


def where(s: Scheduler, job_id: str) -> set[str]:
    record = s.get(job_id)
    return {a.site_id for a in record.placement.assignments} if record.placement else set()


def test_a_lost_site_takes_no_work_then_its_jobs_move_and_the_returning_agent_stops_them(
    setup: tuple[Scheduler, Clock],
) -> None:
    s, clock = setup
    site = "london-hub"
    s.store.register_agent(site, "a1", {}, clock())
    chat = s.submit(inference()).record
    assert where(s, chat.id) == {site}
    fleet.apply_report(s, site, "a1", JobReport(chat.id, JobPhase.RUNNING, 1))
    assert fleet.check_sites(s)[site] is fleet.SiteHealth.HEALTHY

    clock.now_s += TIMEOUT_S + 1
    assert fleet.check_sites(s)[site] is fleet.SiteHealth.UNHEALTHY
    assert where(s, chat.id) == {site}  # within the grace period, it keeps running there
    newcomer = s.submit(inference("newcomer")).record
    assert newcomer.state is JobState.RUNNING and site not in where(s, newcomer.id)  # no new work there
    _, reasons = s.explain(inference("asks"))
    here = [r for r in reasons if r.site_id == site]
    assert here and all(r.code is ReasonCode.HEALTH for r in here)
    assert all(f"site {site} is unhealthy: last heartbeat" in r.message for r in here)
    check_ledger(s)

    clock.now_s += GRACE_S
    assert fleet.check_sites(s)[site] is fleet.SiteHealth.LOST
    moved = s.get(chat.id)
    assert moved.state is JobState.RUNNING and site not in where(s, chat.id) and moved.attempts == 1
    check_ledger(s)  # re-placed within its SLO, nothing double-booked
    fleet.check_sites(s)  # judged again: nothing more happens
    assert s.get(chat.id).version == moved.version

    # The agent is back and says what it runs: what moved is to stop there; nothing runs twice.
    s.store.register_agent(site, "a2", {}, clock())
    fleet.apply_node_health(s, site)
    fleet.apply_report(s, site, "a2", JobReport(chat.id, JobPhase.RUNNING, 2))
    desired = fleet.desired_state(s, site)
    assert [(x.job_id, x.reason) for x in desired.stop] == [(chat.id, fleet.StopReason.MOVED)]
    assert chat.id not in {r.job_id for r in desired.run}
    # A late SUCCEEDED from the old site does not finish the job that runs elsewhere now.
    fleet.apply_report(s, site, "a2", JobReport(chat.id, JobPhase.SUCCEEDED, 3))
    assert s.get(chat.id).state is JobState.RUNNING
    check_ledger(s)


def test_training_on_a_lost_site_is_requeued_keeping_its_place_and_an_early_return_keeps_jobs(
    setup: tuple[Scheduler, Clock],
) -> None:
    s, clock = setup
    site = "glomfjord"
    s.store.register_agent(site, "g", {}, clock())
    spec = JobSpec.model_validate({"name": "train", "tenant": "acme", "kind": "training", "priority": 7,
                                   "gpus": {"count": 480, "types": ["GB300"]}, "residency": {"allowed": ["NO"]}})
    job = s.submit(spec).record
    assert where(s, job.id) == {site}
    # Back within the grace period: its job never moved.
    clock.now_s += TIMEOUT_S + 1
    fleet.check_sites(s)
    s.store.agent_heartbeat(site, "g", [], clock())
    fleet.check_sites(s)
    assert where(s, job.id) == {site}
    fleet.apply_report(s, site, "g", JobReport(job.id, JobPhase.RUNNING, 1))
    assert not fleet.desired_state(s, site).stop
    # Silent for good: re-queued (no other site may take it), its priority and submit time kept.
    clock.now_s += TIMEOUT_S + GRACE_S + 1
    assert fleet.check_sites(s)[site] is fleet.SiteHealth.LOST
    waiting = s.get(job.id)
    assert waiting.state is JobState.PENDING and waiting.attempts == 1
    assert waiting.created_at == job.created_at and waiting.spec.priority == 7
    assert "site glomfjord lost: last heartbeat" in (waiting.waiting.summary[0] if waiting.waiting else "")
    check_ledger(s)
    # The site is back: capacity returns and the queue places the job again at once.
    s.store.agent_heartbeat(site, "g", [], clock())
    fleet.check_sites(s)
    assert s.get(job.id).state is JobState.RUNNING and where(s, job.id) == {site}
    views = {v.site_id: v for v in fleet.fleet_view(s)}
    assert views[site].health is fleet.SiteHealth.HEALTHY and views["sines"].health is fleet.SiteHealth.NO_AGENT


def spread() -> JobSpec:
    """Three replicas, one near each of three metros: london-hub, frankfurt-hub and manchester-edge."""
    return JobSpec.model_validate({
        "name": "spread", "tenant": "acme", "kind": "inference", "priority": 5, "gpus": {"count": 8},
        "inference": {"replicas": 3, "latency_slo_ms": 12,
                      "demand": [{"endpoint": e} for e in ("london", "frankfurt", "manchester")]},
    })


def test_a_lost_site_moves_only_the_deployments_replica_there_and_the_returning_agent_stops_it(
    setup: tuple[Scheduler, Clock],
) -> None:
    s, clock = setup
    site = "london-hub"
    s.store.register_agent(site, "a1", {}, clock())
    job = s.submit(spread()).record
    assert job.placement is not None and where(s, job.id) == {site, "frankfurt-hub", "manchester-edge"}
    fleet.apply_report(s, site, "a1", JobReport(job.id, JobPhase.RUNNING, 1))
    kept = [a for a in job.placement.assignments if a.site_id != site]

    clock.now_s += TIMEOUT_S + GRACE_S + 1
    assert fleet.check_sites(s)[site] is fleet.SiteHealth.LOST
    after = s.get(job.id)
    assert after.placement is not None and after.spec.inference is not None
    # The same run (no new attempt, same start); the other sites' replicas byte-identical, first.
    assert after.state is JobState.RUNNING and after.attempts == 0 and after.started_at == job.started_at
    assert after.placement.assignments[:2] == kept and site not in where(s, job.id)
    assert sum(a.gpus for a in after.placement.assignments[2:]) == 8
    assert all(e.latency_ms <= after.spec.inference.latency_slo_ms for e in after.placement.endpoint_latencies)
    for a in kept:  # what the kept sites' agents are told to run still holds their share, as it was
        [run] = [r for r in fleet.desired_state(s, a.site_id).run if r.job_id == job.id]
        assert (a.pool_id, a.gpus) in [(sh.pool_id, sh.gpus) for sh in run.shares]
    check_ledger(s)
    fleet.check_sites(s)  # judged again: nothing more happens
    assert s.get(job.id) == after

    # The agent is back and says it still runs the job: its replica there is to stop; the rest run on.
    s.store.register_agent(site, "a2", {}, clock())
    fleet.apply_node_health(s, site)
    fleet.apply_report(s, site, "a2", JobReport(job.id, JobPhase.RUNNING, 2))
    desired = fleet.desired_state(s, site)
    assert [(x.job_id, x.reason) for x in desired.stop] == [(job.id, fleet.StopReason.MOVED)]
    assert job.id not in {r.job_id for r in desired.run}
    # Its late FAILED for the stopped replica (the same run) moves nothing more; nor does a SUCCEEDED.
    fleet.apply_report(s, site, "a2", JobReport(job.id, JobPhase.FAILED, 3, "stopped", attempt=0))
    fleet.apply_report(s, site, "a2", JobReport(job.id, JobPhase.SUCCEEDED, 4, attempt=0))
    assert s.get(job.id) == after
    check_ledger(s)
