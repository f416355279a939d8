"""SiteAgentService against a real gRPC server on loopback: registration, heartbeats, the desired
state stream, job reports applied at most once (hypothesis over orders), and the site scope."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.client import Client
from grid_scheduler.model import Grid, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.service.auth.config import AuthConfig
from grid_scheduler.service.server import start_server
from grid_scheduler.state.agents import JobPhase, JobReport
from tests.test_service import bad_request_fields

SITE = "sines"
POOL = "sines-gb300"


def training(count: int = 64, name: str = "t", priority: int = 0) -> JobSpec:
    return JobSpec.model_validate(
        {"name": name, "tenant": "acme", "kind": "training", "priority": priority,
         "gpus": {"count": count, "types": ["GB300"]}, "residency": {"allowed": ["EU"]}}
    )


def register(client: Client, agent_id: str = "a1", site: str = SITE) -> apb.RegisterAgentResponse:
    response: apb.RegisterAgentResponse = client.agents.RegisterAgent(apb.RegisterAgentRequest(
        site_id=site, agent_id=agent_id,
        pools=[apb.PoolNodes(pool_id=POOL, nodes=[f"n{i}" for i in range(32)])] if site == SITE else [],
    ), timeout=10)
    return response


def report(client: Client, job_id: str, phase: int, sequence: int, reason: str = "",
           agent_id: str = "a1") -> apb.ReportJobResponse:
    response: apb.ReportJobResponse = client.agents.ReportJob(apb.ReportJobRequest(
        site_id=SITE, agent_id=agent_id, job_id=job_id, phase=phase, sequence=sequence, exit_reason=reason,
    ), timeout=10)
    return response


def first_assignments(client: Client, agent_id: str = "a1") -> apb.WatchAssignmentsResponse:
    stream = client.agents.WatchAssignments(apb.WatchAssignmentsRequest(site_id=SITE, agent_id=agent_id), timeout=10)
    try:
        return next(iter(stream))
    finally:
        stream.cancel()


def code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()  # type: ignore[operator]
    return e.value.code()  # type: ignore[no-any-return]


def test_registration_heartbeat_and_the_sites_desired_state(client: Client) -> None:
    assert register(client).generation == 1
    job = client.submit(training()).job
    assert job.state == ppb.JOB_STATE_RUNNING and job.placement.assignments[0].site_id == SITE
    beat = client.agents.Heartbeat(apb.HeartbeatRequest(site_id=SITE, agent_id="a1", nodes=[
        apb.NodeStatus(pool_id=POOL, node="n3", health=apb.NODE_HEALTH_FAILED, reason="XID 79")]), timeout=10)
    assert [(n.node, n.health, n.reason) for n in beat.acknowledged] == [("n3", apb.NODE_HEALTH_FAILED, "XID 79")]
    desired = first_assignments(client)
    assert [r.job_id for r in desired.run] == [job.id]
    assert [(s.pool_id, s.gpus) for s in desired.run[0].shares] == [(POOL, 64)]
    assert not desired.stop
    # An agent of another site sees nothing of this one's.
    client.agents.RegisterAgent(apb.RegisterAgentRequest(site_id="glomfjord", agent_id="g1"), timeout=10)
    other = client.agents.WatchAssignments(apb.WatchAssignmentsRequest(site_id="glomfjord", agent_id="g1"), timeout=10)
    try:
        assert not next(iter(other)).run
    finally:
        other.cancel()


def test_succeeded_completes_failed_requeues_with_attempts_and_duplicates_change_nothing(client: Client) -> None:
    register(client)
    done = client.submit(training(name="done")).job
    assert report(client, done.id, apb.JOB_PHASE_RUNNING, 1).applied
    assert report(client, done.id, apb.JOB_PHASE_SUCCEEDED, 2).applied
    assert client.get_job(done.id).state == ppb.JOB_STATE_COMPLETED
    # A retried or late report is acknowledged and ignored.
    late = report(client, done.id, apb.JOB_PHASE_RUNNING, 1)
    assert not late.applied and late.last_sequence == 2
    failed = client.submit(training(name="fails", priority=5)).job
    assert report(client, failed.id, apb.JOB_PHASE_FAILED, 1, "XID 48 on n7").applied
    again = client.get_job(failed.id)
    # Re-queued and, the capacity being free, placed again at once; its place in the queue kept.
    assert again.state == ppb.JOB_STATE_RUNNING
    assert again.spec.priority == 5 and again.create_time == failed.create_time
    assert again.attempts == 1
    assert not report(client, failed.id, apb.JOB_PHASE_FAILED, 1, "XID 48 on n7").applied
    assert client.get_job(failed.id).state == ppb.JOB_STATE_RUNNING


def test_a_job_the_agent_runs_that_moved_or_ended_is_told_to_stop(client: Client) -> None:
    register(client)
    job = client.submit(training(name="cancelled")).job
    report(client, job.id, apb.JOB_PHASE_RUNNING, 1)
    report(client, "job-unknown", apb.JOB_PHASE_RUNNING, 1)
    client.cancel(job.id)
    stop = {s.job_id: s.reason for s in first_assignments(client).stop}
    assert stop == {job.id: apb.STOP_REASON_CANCELLED, "job-unknown": apb.STOP_REASON_UNKNOWN_JOB}
    report(client, job.id, apb.JOB_PHASE_STOPPED, 2)
    report(client, "job-unknown", apb.JOB_PHASE_STOPPED, 2)
    assert not first_assignments(client).stop


def test_bad_input_names_the_field_and_an_old_agent_is_refused(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as e:
        client.agents.RegisterAgent(apb.RegisterAgentRequest(site_id="atlantis", agent_id=""), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_request_fields(e.value)) == {"site_id", "agent_id"}
    with pytest.raises(grpc.RpcError) as e:
        client.agents.RegisterAgent(apb.RegisterAgentRequest(site_id=SITE, agent_id="a", pools=[
            apb.PoolNodes(pool_id="london-h200", nodes=["x"])]), timeout=10)
    assert bad_request_fields(e.value) == ["pools[0].pool_id"]
    assert code(lambda: client.agents.Heartbeat(apb.HeartbeatRequest(site_id=SITE, agent_id="a1"), timeout=10)) \
        == grpc.StatusCode.FAILED_PRECONDITION  # never registered
    register(client, "a1")
    register(client, "a2")  # a new agent process for the site replaces the old one
    assert code(lambda: client.agents.Heartbeat(apb.HeartbeatRequest(site_id=SITE, agent_id="a1"), timeout=10)) \
        == grpc.StatusCode.FAILED_PRECONDITION
    assert code(lambda: report(client, "j", apb.JOB_PHASE_RUNNING, 1, agent_id="a1")) \
        == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        client.agents.ReportJob(apb.ReportJobRequest(site_id=SITE, agent_id="a2", job_id="j"), timeout=10)
    assert set(bad_request_fields(e.value)) == {"phase", "sequence"}
    with pytest.raises(grpc.RpcError) as e:
        client.agents.Heartbeat(apb.HeartbeatRequest(site_id=SITE, agent_id="a2", nodes=[
            apb.NodeStatus(pool_id=POOL, node="n1")]), timeout=10)
    assert bad_request_fields(e.value) == ["nodes[0].health"]


@pytest.fixture
def scoped(small_grid: Grid) -> Iterator[str]:
    config = AuthConfig.model_validate({
        "principals": {"sines-agent": {"roles": [{"role": "site-agent", "site": SITE}]},
                       "alice": {"roles": [{"role": "submitter", "tenant": "acme"}]},
                       "ops": {"roles": [{"role": "platform-admin"}]}},
        "tokens": [{"principal": "sines-agent", "token": "sines-agent-token-0123"},
                   {"principal": "alice", "token": "alice-token-0123456789"},
                   {"principal": "ops", "token": "ops-token-0123456789"}],
    })
    running = start_server(Scheduler(small_grid), "127.0.0.1:0", max_workers=4, auth=config)
    yield f"127.0.0.1:{running.port}"
    running.stop(grace_s=0.5)


def test_a_site_agent_acts_only_for_its_own_site(scoped: str) -> None:
    with Client(scoped, timeout_s=10, token="sines-agent-token-0123") as agent:
        assert register(agent).generation == 1
        assert code(lambda: register(agent, site="glomfjord")) == grpc.StatusCode.PERMISSION_DENIED
        assert code(lambda: agent.agents.Heartbeat(apb.HeartbeatRequest(site_id="glomfjord", agent_id="x"),
                                                   timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        assert code(lambda: agent.submit(training())) == grpc.StatusCode.PERMISSION_DENIED
    with Client(scoped, timeout_s=10, token="alice-token-0123456789") as alice:
        assert code(lambda: register(alice)) == grpc.StatusCode.PERMISSION_DENIED
    with Client(scoped, timeout_s=10, token="ops-token-0123456789") as ops:
        assert register(ops, "ops-agent", site="glomfjord").generation == 1


# --- reports in any order, duplicated: the outcome is the same ----------------------------------

ORDERS = st.lists(st.integers(0, 2), min_size=3, max_size=8).filter(lambda xs: set(xs) == {0, 1, 2})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=ORDERS, last=st.sampled_from([JobPhase.SUCCEEDED, JobPhase.FAILED]))
def test_duplicated_or_reordered_reports_apply_once(small_grid: Grid, order: list[int], last: JobPhase) -> None:
    clock = itertools.count(1_000_000.0)
    s = Scheduler(small_grid, clock=lambda: next(clock))
    s.store.register_agent(SITE, "a1", {}, s.now())
    job = s.submit(training(priority=3)).record
    assert job.state is JobState.RUNNING
    reports = [JobReport(job.id, JobPhase.STARTING, 1), JobReport(job.id, JobPhase.RUNNING, 2),
               JobReport(job.id, last, 3)]
    applied = [fleet.apply_report(s, SITE, "a1", reports[i])[0] for i in order]
    assert sum(applied) <= 3
    kept = {r.job_id: r for r in s.store.job_reports(SITE)}[job.id]
    assert kept.sequence == 3 and kept.phase is last
    record = s.get(job.id)
    if last is JobPhase.SUCCEEDED:
        assert record.state is JobState.COMPLETED and record.attempts == 0
    else:
        # Failed once, re-queued once (and placed again on the free grid), whatever the order.
        assert record.attempts == 1 and record.state is JobState.RUNNING
        assert record.created_at == job.created_at
