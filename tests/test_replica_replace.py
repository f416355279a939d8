"""Issue 11, "health drives capacity": an inference deployment that loses one replica to a failed
node re-places only that replica (scheduler/replicas.py). The other assignments stay byte-identical,
the job stays RUNNING on the same attempt, every demand endpoint stays within its SLO, and the
ledger holds exactly what the running jobs reserve; with no room within the SLO the deployment
is re-queued as before. On memory (a property test), on Redis, and through the real server."""

from __future__ import annotations

from uuid import uuid4

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.client import Client
from grid_scheduler.model import Assignment, Grid, JobRecord, JobSpec, JobState
from grid_scheduler.model.node_names import default_node_name
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.site_agent import AgentConfig, SiteAgent, _shares
from grid_scheduler.state import Limits
from grid_scheduler.state.agents import JobPhase, JobReport, NodeCondition, NodeHealth

# Every change a test sees is its own call's: no background batch cycle moves a job meanwhile.
pytestmark = pytest.mark.no_batch_cycle

UK_DE = ["london", "frankfurt", "manchester"]


def serve(replicas: int, slo_ms: float, endpoints: list[str], gpus: int = 8, name: str = "serve") -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": "acme", "kind": "inference", "gpus": {"count": gpus},
        "inference": {"replicas": replicas, "latency_slo_ms": slo_ms,
                      "demand": [{"endpoint": e} for e in endpoints]},
    })


def fail_node(s: Scheduler, a: Assignment, node: int) -> list[str]:
    """The site's agent reports ``node`` of ``a``'s pool failed; capacity follows at once."""
    if s.store.site_agent(a.site_id) is None:
        s.store.register_agent(a.site_id, "a1", {}, s.now())
    s.store.agent_heartbeat(a.site_id, "a1", [NodeCondition(a.pool_id, default_node_name(a.pool_id, node),
                                                            NodeHealth.FAILED, "XID 79")], s.now())
    return fleet.apply_node_health(s, a.site_id)


def assert_ledger_is_the_running_reservations(s: Scheduler) -> None:
    """Pool and node arrays of the ledger equal the sum of what running jobs hold."""
    snap = s.store.snapshot()
    pools = np.zeros_like(snap.pool_used_gpus)
    nodes = [np.zeros_like(n) for n in snap.node_used_gpus]
    for record in s.store.running_jobs():
        assert record.placement is not None
        for a in record.placement.assignments:
            p = s.limits.pool_index[a.pool_id]
            pools[p] += a.gpus
            for i, g in a.nodes:
                nodes[p][i] += g
    assert snap.pool_used_gpus.tolist() == pools.tolist()
    assert [n.tolist() for n in snap.node_used_gpus] == [n.tolist() for n in nodes]


def assert_within_slo(record: JobRecord) -> None:
    assert record.placement is not None and record.spec.inference is not None
    latencies = {e.endpoint_id: e for e in record.placement.endpoint_latencies}
    assert sorted(latencies) == sorted(d.endpoint for d in record.spec.inference.demand)
    sites = {a.site_id for a in record.placement.assignments}
    for e in latencies.values():
        assert e.site_id in sites and e.latency_ms <= record.spec.inference.latency_slo_ms


def expected_kept(a: Assignment, replica_gpus: int, node: int) -> tuple[tuple[int, int], ...]:
    """The (node, GPUs) ``a`` keeps when ``node`` fails: the GPUs of every replica not touching it,
    its replicas being its GPUs one by one in node order, ``replica_gpus`` at a time."""
    slots = [n for n, gpus in a.nodes for _ in range(gpus)]
    kept: dict[int, int] = {}
    for k in range(0, len(slots), replica_gpus):
        replica = slots[k:k + replica_gpus]
        if node not in replica:
            for n in replica:
                kept[n] = kept.get(n, 0) + 1
    return tuple(sorted(kept.items()))


def assert_only_the_lost_replica_moved(s: Scheduler, before: JobRecord, lost: Assignment, node: int) -> JobRecord:
    after = s.store.get_job(before.id)
    assert after is not None and after.placement is not None and before.placement is not None
    assert after.state is JobState.RUNNING and after.attempts == before.attempts
    assert after.started_at == before.started_at
    # The lost assignment keeps the replicas not on the node (tests/test_replica_nodes.py), in its place.
    rest = expected_kept(lost, before.spec.gpus.count, node)
    kept = [a for a in before.placement.assignments if a != lost or rest]
    # The kept assignments come first, byte-identical (nodes included); the rest replace the lost replicas.
    for a, b in zip(after.placement.assignments[:len(kept)], kept, strict=True):
        if b == lost:
            assert (a.pool_id, a.nodes, a.gpus) == (lost.pool_id, rest, sum(g for _, g in rest))
        else:
            assert a.model_dump_json() == b.model_dump_json()
    new = after.placement.assignments[len(kept):]
    assert sum(a.gpus for a in new) == lost.gpus - sum(g for _, g in rest)
    assert not any(a.pool_id == lost.pool_id and any(i == node for i, _ in a.nodes) for a in new)
    assert_within_slo(after)
    snap = s.store.snapshot()
    p = s.limits.pool_index[lost.pool_id]
    assert snap.node_used_gpus[p][node] == 0  # the failed node holds nothing
    return after


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    replicas=st.integers(2, 4),
    gpus=st.sampled_from([1, 4, 8]),
    endpoints=st.lists(st.sampled_from(UK_DE), min_size=1, max_size=3, unique=True),
    slo_ms=st.sampled_from([7.0, 12.0, 20.0]),
    others=st.integers(0, 3),
    pick=st.integers(0, 1_000),
)
def test_one_failed_node_moves_only_its_replica(
    small_grid: Grid, replicas: int, gpus: int, endpoints: list[str], slo_ms: float, others: int, pick: int
) -> None:
    s = Scheduler(small_grid, quiet=True)
    for i in range(others):  # other deployments share the pools and their nodes
        s.submit(serve(1 + i % 2, slo_ms, UK_DE[i % 3:], gpus=4, name=f"other-{i}"))
    before = s.submit(serve(replicas, slo_ms, endpoints, gpus=gpus)).record
    assert before.state is JobState.RUNNING and before.placement is not None
    assignments = before.placement.assignments
    lost = assignments[pick % len(assignments)]
    node = lost.nodes[pick % len(lost.nodes)][0]
    holders = [r.id for r in s.store.running_jobs() if r.placement is not None and any(
        a.pool_id == lost.pool_id and any(i == node for i, _ in a.nodes) for a in r.placement.assignments)]
    others_before = {r.id: r for r in s.store.running_jobs() if r.id not in holders}
    failed = fail_node(s, lost, node)
    assert sorted(failed) == sorted(holders)
    if len(assignments) > 1:
        after = assert_only_the_lost_replica_moved(s, before, lost, node)
        [message] = [e.message for e in s.store.events_after(0, 0)
                     if e.job_id == before.id and "re-placed" in e.message]
        assert message.startswith(f"replica re-placed after node failed in {lost.pool_id}: "
                                  f"{default_node_name(lost.pool_id, node)} (XID 79)")
        assert after.version == before.version + 1
    # Jobs not on the failed node are untouched; the ledger is exactly the running reservations.
    for job_id, record in others_before.items():
        assert s.store.get_job(job_id) == record
    assert_ledger_is_the_running_reservations(s)
    snap = s.store.snapshot()
    assert snap.node_used_gpus[s.limits.pool_index[lost.pool_id]][node] == 0


def test_no_room_within_the_slo_falls_back_to_the_queue(small_grid: Grid) -> None:
    s = Scheduler(small_grid, quiet=True)
    # London and Manchester within 2 ms: only london-hub and manchester-edge serve them.
    job = s.submit(serve(2, 2.0, ["london", "manchester"])).record
    assert job.state is JobState.RUNNING and job.placement is not None
    [edge] = [a for a in job.placement.assignments if a.site_id == "manchester-edge"]
    filler = s.submit(serve(7, 2.0, ["manchester"], name="filler")).record  # manchester-h100 is now full
    assert filler.state is JobState.RUNNING
    assert fail_node(s, edge, edge.nodes[0][0]) == [job.id]
    after = s.store.get_job(job.id)
    assert after is not None and after.state is JobState.PENDING and after.attempts == 1
    assert after.waiting is not None and "node failed in manchester-h100" in after.waiting.summary[0]
    assert s.store.get_job(filler.id) == filler
    assert_ledger_is_the_running_reservations(s)


def test_the_desired_state_moves_the_lost_share_only(small_grid: Grid) -> None:
    s = Scheduler(small_grid, quiet=True)
    job = s.submit(serve(3, 12.0, UK_DE)).record
    assert job.placement is not None
    by_site = {a.site_id: a for a in job.placement.assignments}
    assert sorted(by_site) == ["frankfurt-hub", "london-hub", "manchester-edge"]
    kept_before = {site: fleet.desired_state(s, site).run for site in ("frankfurt-hub", "manchester-edge")}
    lost = by_site["london-hub"]
    fail_node(s, lost, lost.nodes[0][0])
    after = s.store.get_job(job.id)
    assert after is not None and after.placement is not None and after.state is JobState.RUNNING
    new = after.placement.assignments[-1]
    for site, run in kept_before.items():
        assert fleet.desired_state(s, site).run == run  # the kept shares, unchanged
    [london] = [r for r in fleet.desired_state(s, new.site_id).run if r.job_id == job.id]
    assert [(sh.pool_id, sh.gpus) for sh in london.shares] == [(new.pool_id, new.gpus)]
    assert default_node_name(lost.pool_id, lost.nodes[0][0]) not in {n for sh in london.shares for n in sh.nodes}
    assert london.attempt == 0


@pytest.mark.redis
def test_on_redis_only_the_lost_replica_moves(small_grid: Grid, redis_url: str) -> None:
    from grid_scheduler.state.redis_store import RedisStore

    store = RedisStore(Limits.from_grid(small_grid), redis_url, f"replica-{uuid4().hex[:12]}")
    try:
        s = Scheduler(small_grid, store=store, quiet=True)
        before = s.submit(serve(3, 12.0, UK_DE)).record
        assert before.placement is not None
        lost = before.placement.assignments[1]
        node = lost.nodes[0][0]
        assert fail_node(s, lost, node) == [before.id]
        assert_only_the_lost_replica_moved(s, before, lost, node)
        assert_ledger_is_the_running_reservations(s)
        assert fail_node(s, lost, node) == []  # the same report again changes nothing
    finally:
        store.close()


def test_a_heartbeat_reporting_the_node_failed_moves_only_its_replica(client: Client, scheduler: Scheduler) -> None:
    job = client.submit(serve(3, 12.0, UK_DE)).job
    assert job.state == ppb.JOB_STATE_RUNNING
    before = scheduler.store.get_job(job.id)
    assert before is not None and before.placement is not None
    lost = next(a for a in before.placement.assignments if a.site_id == "manchester-edge")
    node = default_node_name(lost.pool_id, lost.nodes[0][0])
    client.agents.RegisterAgent(apb.RegisterAgentRequest(site_id=lost.site_id, agent_id="a1"), timeout=10)
    response = client.agents.Heartbeat(apb.HeartbeatRequest(site_id=lost.site_id, agent_id="a1", sequence=1, nodes=[
        apb.NodeStatus(pool_id=lost.pool_id, node=node, health=apb.NODE_HEALTH_FAILED, reason="XID 79")]),
        timeout=10)
    assert response.applied
    assert_only_the_lost_replica_moved(scheduler, before, lost, lost.nodes[0][0])
    got = client.get_job(job.id)
    assert got.state == ppb.JOB_STATE_RUNNING and got.attempts == 0
    assert len(got.placement.assignments) == 3
    assert_ledger_is_the_running_reservations(scheduler)


def test_a_failed_report_from_one_site_moves_only_the_replicas_there(small_grid: Grid) -> None:
    s = Scheduler(small_grid, quiet=True)
    before = s.submit(serve(3, 12.0, UK_DE)).record
    assert before.placement is not None
    [edge] = [a for a in before.placement.assignments if a.site_id == "manchester-edge"]
    s.store.register_agent("manchester-edge", "a1", {}, s.now())
    # A report about an earlier run ends nothing; one about this run moves only this site's replica.
    fleet.apply_report(s, "manchester-edge", "a1", JobReport(before.id, JobPhase.FAILED, 1, "exit code 1", attempt=7))
    assert s.store.get_job(before.id) == before
    fleet.apply_report(s, "manchester-edge", "a1", JobReport(before.id, JobPhase.FAILED, 2, "exit code 1", attempt=0))
    after = s.store.get_job(before.id)
    assert after is not None and after.placement is not None
    assert after.state is JobState.RUNNING and after.attempts == 0 and after.version == before.version + 1
    kept = [a for a in before.placement.assignments if a != edge]
    assert after.placement.assignments[:2] == kept
    assert sum(a.gpus for a in after.placement.assignments[2:]) == edge.gpus
    assert_within_slo(after)
    assert_ledger_is_the_running_reservations(s)


def site_desired(client: Client, agent: SiteAgent) -> apb.WatchAssignmentsResponse:
    stream = client.agents.WatchAssignments(apb.WatchAssignmentsRequest(
        site_id=agent.config.site_id, agent_id=agent.config.agent_id), timeout=10)
    try:
        response: apb.WatchAssignmentsResponse = next(iter(stream))
        return response
    finally:
        stream.cancel()


@pytest.mark.parametrize("site", ["manchester-edge", "london-hub"])
def test_the_reference_agent_losing_a_node_keeps_the_other_sites_replicas(
    client: Client, scheduler: Scheduler, site: str
) -> None:
    """The reference agent's own order: the node's health in a heartbeat, then FAILED for the job
    that ran on it. Whether the lost replica lands back at the site (london-hub has room in the
    same pool) or elsewhere, the other sites' replicas stay and the job stays on its attempt."""
    job = client.submit(serve(3, 12.0, UK_DE)).job
    before = scheduler.store.get_job(job.id)
    assert before is not None and before.placement is not None
    [lost] = [a for a in before.placement.assignments if a.site_id == site]
    agent = SiteAgent(client, AgentConfig(site_id=site, agent_id="sim", simulate=True, seed=1))
    agent.register()
    agent.apply(site_desired(client, agent))
    assert job.id in agent.running
    failed = agent._fail_node(lost.pool_id, default_node_name(lost.pool_id, lost.nodes[0][0]))
    assert [job_id for job_id, _ in failed] == [job.id]
    agent.heartbeat()
    for job_id, why in failed:
        agent._report(job_id, apb.JOB_PHASE_FAILED, why)
    after = scheduler.store.get_job(job.id)
    assert after is not None and after.placement is not None
    assert after.state is JobState.RUNNING and after.attempts == 0
    assert [a for a in after.placement.assignments if a.site_id != site and a in before.placement.assignments] == \
        [a for a in before.placement.assignments if a.site_id != site]
    assert_within_slo(after)
    assert_ledger_is_the_running_reservations(scheduler)
    assert scheduler.store.snapshot().node_used_gpus[scheduler.limits.pool_index[lost.pool_id]][lost.nodes[0][0]] == 0
    # The agent then runs what the desired state says: the job again if a share is still here.
    agent.apply(site_desired(client, agent))
    assert (job.id in agent.running) == any(a.site_id == site for a in after.placement.assignments)


# The reference agent follows a running job whose shares at its site change: a replica lost to a
# failed node and re-placed in the same pool keeps the job running on its attempt, with the new
# nodes, and nothing is stopped or restarted; a job sent again under a newer attempt is restarted.
RESHAPE_SITE = "london-hub"


def test_a_replica_replaced_in_the_same_pool_reshapes_the_running_job(client: Client, scheduler: Scheduler) -> None:
    job = client.submit(serve(3, 12.0, UK_DE)).job
    before = scheduler.store.get_job(job.id)
    assert before is not None and before.placement is not None
    [here] = [a for a in before.placement.assignments if a.site_id == RESHAPE_SITE]
    agent = SiteAgent(client, AgentConfig(site_id=RESHAPE_SITE, agent_id="sim", simulate=True, seed=1))
    agent.register()
    agent.apply(site_desired(client, agent))
    started = agent.running[job.id]
    reports_before = agent.sequence[job.id]

    # Only the health: the agent does not fail the job itself (a node can die under a job that the
    # scheduler then moves without the agent's report).
    node = default_node_name(here.pool_id, here.nodes[0][0])
    agent.failed_nodes[(here.pool_id, node)] = "XID 79"
    agent.heartbeat()
    after = scheduler.store.get_job(job.id)
    assert after is not None and after.placement is not None
    assert after.state is JobState.RUNNING and after.attempts == before.attempts

    desired = site_desired(client, agent)
    [start] = [j for j in desired.run if j.job_id == job.id]
    assert _shares(start) != (started.pools, started.nodes)  # the scheduler moved GPUs off the node
    agent.apply(desired)
    run = agent.running[job.id]
    assert run is started  # the same run, not a restart
    assert (run.pools, run.nodes) == _shares(start)
    assert (here.pool_id, node) not in run.nodes
    assert agent.sequence[job.id] == reports_before  # no STOPPED, no STARTING


def test_a_newer_attempt_here_restarts_the_job(client: Client, scheduler: Scheduler) -> None:
    job = client.submit(serve(1, 12.0, ["london"])).job
    agent = SiteAgent(client, AgentConfig(site_id=RESHAPE_SITE, agent_id="sim", simulate=True, seed=1))
    agent.register()
    desired = site_desired(client, agent)
    agent.apply(desired)
    old = agent.running[job.id]
    [start] = [j for j in desired.run if j.job_id == job.id]
    newer = apb.WatchAssignmentsResponse()
    newer.CopyFrom(desired)
    for j in newer.run:
        if j.job_id == job.id:
            j.attempt = start.attempt + 1
    agent.apply(newer)
    assert agent.running[job.id] is not old and agent.attempts[job.id] == start.attempt + 1
