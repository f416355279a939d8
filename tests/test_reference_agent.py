"""The reference agent in-process against a real server on loopback: command templates (exit 0 is
SUCCEEDED, anything else FAILED), a seeded simulated node failure that fails its job and takes the
node's GPUs out of capacity, and a stop that the agent carries out and reports."""

from __future__ import annotations

import time
from pathlib import Path

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.client import Client
from grid_scheduler.site_agent import AgentConfig, SiteAgent
from tests.test_node_health import free_gpus
from tests.test_site_agent import POOL, SITE, training

BOUND_S = 60.0


def desired(client: Client, agent: SiteAgent) -> apb.WatchAssignmentsResponse:
    stream = client.agents.WatchAssignments(apb.WatchAssignmentsRequest(
        site_id=SITE, agent_id=agent.config.agent_id), timeout=10)
    try:
        return next(iter(stream))
    finally:
        stream.cancel()


def wait_for_exit(agent: SiteAgent, job_id: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while job_id in agent.running:
        assert time.monotonic() < deadline, "the command did not end"
        agent.tick(0.1)
        time.sleep(0.05)


def test_command_templates_report_success_and_failure(client: Client, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    agent = SiteAgent(client, AgentConfig(site_id=SITE, agent_id="cmd", heartbeat_s=0.1,
                                          start=f"sh -c 'echo {{job_id}} {{gpus}} >> {marker}; exit 0'",
                                          state_file=tmp_path / "state.json"))
    agent.register()
    ok = client.submit(training(64, "ok")).job
    agent.apply(desired(client, agent))
    wait_for_exit(agent, ok.id)
    assert marker.read_text().split() == [ok.id, "64"]
    assert client.get_job(ok.id).state == ppb.JOB_STATE_COMPLETED

    agent.config.start = "sh -c 'exit 3'"
    bad = client.submit(training(64, "bad")).job
    agent.apply(desired(client, agent))
    wait_for_exit(agent, bad.id)
    # FAILED (exit code 3): re-queued once, and placed again at once on the free pool.
    again = client.get_job(bad.id)
    assert again.attempts == 1 and again.state == ppb.JOB_STATE_RUNNING


def test_a_simulated_node_failure_fails_its_job_and_a_stop_is_carried_out(client: Client, tmp_path: Path) -> None:
    agent = SiteAgent(client, AgentConfig(site_id=SITE, agent_id="sim", simulate=True, speedup=1.0,
                                          fail_rate_per_node_hour=0.0, seed=7))
    agent.register()
    job = client.submit(training(64, "sim")).job
    agent.apply(desired(client, agent))
    assert set(agent.running) == {job.id}
    agent.config.fail_rate_per_node_hour = 1e9  # every node fails within the next tick (seeded)
    agent.tick(1.0)
    assert not agent.running and len(agent.failed_nodes) == 64  # both of the site's pools, 32 nodes each
    failed = client.get_job(job.id)  # the agent sent the nodes' health, then the job's failure
    assert failed.attempts == 1 and failed.state == ppb.JOB_STATE_PENDING  # the whole pool is down
    assert free_gpus(client, POOL) == 0

    agent.failed_nodes.clear()
    agent.heartbeat()  # the nodes are back: capacity returns and the job is placed again
    assert client.get_job(job.id).state == ppb.JOB_STATE_RUNNING
    agent.apply(desired(client, agent))
    assert set(agent.running) == {job.id}
    client.cancel(job.id)
    stop = desired(client, agent)
    assert [(s.job_id, s.reason) for s in stop.stop] == [(job.id, apb.STOP_REASON_CANCELLED)]
    agent.apply(stop)
    assert not agent.running and not desired(client, agent).stop
