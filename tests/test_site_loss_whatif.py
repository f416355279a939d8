"""A what-if site failure is the live server's lost-site transition (issue 11).

The same ledger meets the same site loss twice: live, a Scheduler on a scripted clock whose site
agent goes silent past its heartbeat timeout and grace period (the site monitor's pass, then the
queue pass); and in the simulator, started from that ledger (a live start) with a ``site_failure``
at the same instant. Both must end with the same jobs (state, attempts, priority, submit, queue and
start times, placement, and the reason they wait: "site ... lost: ...; re-queued (attempt 2)")
and the same GPUs and watts in use. Scripted, then over random job mixes (hypothesis).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.model import Grid, JobRecord, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.scheduler.live import read_live
from grid_scheduler.whatif.changes import DAY_S
from grid_scheduler.whatif.live import LiveStart, start_from_live
from grid_scheduler.whatif.scenario import load_scenario_data
from grid_scheduler.whatif.simulator import Simulator, quiet_logs
from tests.strategies import job_specs

LOSS_S = 432.0  # after the snapshot: the failure in the simulation, the loss live
TIMEOUT_S = 100.0
GRACE_S = LOSS_S - TIMEOUT_S - 1.0  # silent since the snapshot: lost exactly at LOSS_S


def scenario(site: str) -> dict[str, Any]:
    return {
        "name": "loss", "horizon_days": 2 * LOSS_S / DAY_S,
        # A stream is required; at this rate nothing arrives within the horizon (checked below).
        "workload": {"generated": [{"name": "t", "kind": "training", "tenants": {"acme": 1},
                                    "arrivals_per_day": 0.001, "gpus": {"min": 8, "max": 8},
                                    "duration_hours": {"min": 1, "max": 1}}]},
        "changes": [{"kind": "site_failure", "at_days": LOSS_S / DAY_S, "site": site}],
    }


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000_000.0

    def __call__(self) -> float:
        return self.now_s


def inference(name: str, endpoint: str = "london") -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": "acme", "kind": "inference", "priority": 5,
        "gpus": {"count": 8, "types": ["H100", "H200", "B200"]}, "residency": {"allowed": ["EU", "UK"]},
        "inference": {"replicas": 1, "demand": [{"endpoint": endpoint, "weight": 1.0}], "latency_slo_ms": 20},
    })


def training(name: str, gpus: int, types: list[str], priority: int) -> JobSpec:
    return JobSpec.model_validate({"name": name, "tenant": "acme", "kind": "training", "priority": priority,
                                   "gpus": {"count": gpus, "types": types}, "training": {"duration_hours": 48}})


def spread(name: str) -> JobSpec:
    """Three replicas, one near each of three metros: london-hub, frankfurt-hub and manchester-edge."""
    return JobSpec.model_validate({
        "name": name, "tenant": "acme", "kind": "inference", "priority": 5, "gpus": {"count": 8},
        "inference": {"replicas": 3, "latency_slo_ms": 12,
                      "demand": [{"endpoint": e} for e in ("london", "frankfurt", "manchester")]},
    })


def both_ways(grid: Grid, specs: list[JobSpec], site: str) -> tuple[Scheduler, Simulator, float]:
    """The live scheduler after the loss, the simulation after the failure, and the snapshot's time."""
    clock = Clock()
    live = Scheduler(grid, clock=clock)
    live.heartbeat_timeout_s, live.site_grace_s = TIMEOUT_S, GRACE_S
    for spec in specs:
        live.submit(spec)
        clock.now_s += 1.0
    state = read_live(live, clock)
    live.store.register_agent(site, "agent", {}, clock())  # its last word: silent from the snapshot on

    clock.now_s = state.read_at + TIMEOUT_S + 1.0
    assert fleet.check_sites(live)[site] is fleet.SiteHealth.UNHEALTHY
    clock.now_s = state.read_at + LOSS_S
    assert fleet.check_sites(live)[site] is fleet.SiteHealth.LOST

    quiet_logs()
    loaded = load_scenario_data(scenario(site), "loss", Path.cwd(), live_grid=state.grid)
    sim = Simulator(start_from_live(loaded, LiveStart("test", state)))
    sim.run()
    assert all(log.source == "live" for log in sim.jobs.values())  # no arrivals of its own
    return live, sim, state.read_at


def job_view(record: JobRecord, t0: float, site: str) -> tuple[Any, ...]:
    def at(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 6)

    summary = list(record.waiting.summary[:1]) if record.waiting and record.waiting.summary else []
    if summary and summary[0].startswith(f"site {site} lost: "):
        # The cause's detail differs by nature: live, the last heartbeat; simulated, the change.
        summary = [f"site {site} lost: ...;" + summary[0].rsplit(";", 1)[1]]
    return (record.id, record.state, record.attempts, record.spec.priority, at(record.created_at),
            at(record.queued_at), at(record.started_at),
            record.placement.model_dump_json() if record.placement else None,
            summary if record.state is JobState.PENDING and record.attempts else None)


def assert_same(live: Scheduler, simulated: Scheduler, t0: float, site: str) -> list[JobRecord]:
    # The snapshot carries running and waiting jobs (one rejected at submission is not in it).
    live_jobs = live.store.list_jobs(frozenset({JobState.RUNNING, JobState.PENDING}), "", 1 << 30)
    sim_jobs = simulated.store.list_jobs(frozenset(JobState), "", 1 << 30)
    assert [job_view(r, t0, site) for r in live_jobs] == [job_view(r, 0.0, site) for r in sim_jobs]
    a, b = live.store.snapshot(), simulated.store.snapshot()
    assert a.pool_used_gpus.tolist() == b.pool_used_gpus.tolist()
    assert a.site_used_w.tolist() == b.site_used_w.tolist()
    return live_jobs


def test_a_site_failure_in_the_simulator_is_the_live_lost_site(small_grid: Grid) -> None:
    site = "london-hub"
    specs = [
        inference("chat"),  # london-hub: re-placed at once elsewhere within its SLO
        training("b200", 8, ["B200"], 7),  # only london-hub has B200: waits, its place kept
        inference("near"),  # london-hub too
        training("big", 480, ["GB300"], 3),  # glomfjord: untouched
    ]
    live, sim, t0 = both_ways(small_grid, specs, site)
    jobs = {r.spec.name: r for r in assert_same(live, sim.scheduler, t0, site)}
    chat, b200 = jobs["chat"], jobs["b200"]
    assert chat.state is JobState.RUNNING and chat.attempts == 1 and chat.placement is not None
    assert site not in chat.placement.site_ids
    assert b200.state is JobState.PENDING and b200.attempts == 1 and b200.waiting is not None
    assert b200.waiting.summary[0].startswith(f"site {site} lost: ") and b200.waiting.summary[0].endswith(
        "; re-queued (attempt 2)")
    assert jobs["near"].attempts == 1 and jobs["big"].attempts == 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(job_specs(), min_size=1, max_size=12),
       site=st.sampled_from(["london-hub", "sines", "glomfjord", "frankfurt-hub"]), spread_first=st.booleans())
def test_any_site_loss_is_the_same_live_and_simulated(
    small_grid: Grid, specs: list[JobSpec], site: str, spread_first: bool
) -> None:
    # (spread_first: a deployment with a replica at each hub, so some replica moves alone)
    live, sim, t0 = both_ways(small_grid, [spread("spread"), *specs] if spread_first else specs, site)
    assert_same(live, sim.scheduler, t0, site)


def test_a_deployment_with_replicas_elsewhere_moves_only_those_at_the_lost_site(small_grid: Grid) -> None:
    """Live and simulated alike: the replica at the lost site is re-placed within the SLO, the
    others stay byte-identical and the deployment keeps its run (no new attempt); a training job
    there is re-queued as before; a one-replica deployment there moves whole (a new attempt)."""
    site = "london-hub"
    specs = [spread("spread"), training("b200", 8, ["B200"], 7), inference("chat")]
    before = Scheduler(small_grid, quiet=True)
    placed = {spec.name: before.submit(spec).record for spec in specs}
    live, sim, t0 = both_ways(small_grid, specs, site)
    jobs = {r.spec.name: r for r in assert_same(live, sim.scheduler, t0, site)}
    was, now = placed["spread"].placement, jobs["spread"]
    assert was is not None and now.placement is not None and site in was.site_ids
    assert now.state is JobState.RUNNING and now.attempts == 0 and site not in now.placement.site_ids
    kept = [a for a in was.assignments if a.site_id != site]
    assert now.placement.assignments[:len(kept)] == kept
    assert sum(a.gpus for a in now.placement.assignments[len(kept):]) == 8
    slo = now.spec.inference.latency_slo_ms if now.spec.inference else 0.0
    assert all(e.latency_ms <= slo for e in now.placement.endpoint_latencies)
    assert jobs["b200"].state is JobState.PENDING and jobs["b200"].attempts == 1
    assert jobs["chat"].attempts == 1 and jobs["chat"].state is JobState.RUNNING
    # The simulation's run of the deployment splits where its replica moved; its GPU-hours follow.
    runs = sim.jobs[now.id].runs
    assert [r.ended for r in runs] == ["replicas moved", "running"]
    assert runs[0].assignments == tuple(was.assignments) and runs[1].assignments == tuple(now.placement.assignments)
    assert runs[0].end_s == runs[1].start_s and runs[0].displaced_by is not None
