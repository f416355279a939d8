"""The reference agent follows a running job whose shares at its site change: a replica lost to a
failed node and re-placed in the same pool keeps the job running on its attempt, with the new
nodes (so a later simulated failure picks the job that really holds the node), and nothing is
stopped or restarted. A job the scheduler restarted here under a newer attempt is restarted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler.client import Client
from grid_scheduler.model import Grid, JobState
from grid_scheduler.model.node_names import default_node_name
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import RunningServer, start_server
from grid_scheduler.site_agent import AgentConfig, SiteAgent, _shares
from grid_scheduler.state import Limits, MemoryStore
from tests.test_replica_replace import UK_DE, serve, site_desired

SITE = "london-hub"


@pytest.fixture
def scheduler(small_grid: Grid) -> Scheduler:
    return Scheduler(small_grid, store=MemoryStore(Limits.from_grid(small_grid)))


@pytest.fixture
def server(scheduler: Scheduler) -> Iterator[RunningServer]:
    running = start_server(scheduler, "127.0.0.1:0", max_workers=8, batch_interval_s=None)
    yield running
    running.stop(grace_s=0.5)


def test_a_replica_replaced_in_the_same_pool_reshapes_the_running_job(client: Client, scheduler: Scheduler) -> None:
    job = client.submit(serve(3, 12.0, UK_DE)).job
    before = scheduler.store.get_job(job.id)
    assert before is not None and before.placement is not None
    [here] = [a for a in before.placement.assignments if a.site_id == SITE]
    agent = SiteAgent(client, AgentConfig(site_id=SITE, agent_id="sim", simulate=True, seed=1))
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
    agent = SiteAgent(client, AgentConfig(site_id=SITE, agent_id="sim", simulate=True, seed=1))
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
