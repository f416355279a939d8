"""Issue 11, "health drives capacity", at node level: a failed node moves only the replicas on it.

An assignment holds all of a deployment's replicas in one pool. The engine puts each replica on
one node when they fit so (engine/topology.py ``assign_replica_nodes``), so a failed node holds
exactly its GPUs / GPUs-per-replica replicas; those are re-placed and the rest of the assignment
stays (same pool, its other nodes' shares byte-identical, fewer GPUs). Where free GPUs were too
scattered for that, a replica may straddle nodes and every replica touching the failed node moves
(conservative). Engine properties, a scheduler property test on the memory ledger (other
deployments scatter the pool's nodes), Redis, and a heartbeat through the real server.
"""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.client import Client
from grid_scheduler.engine.topology import PoolShape, assign_replica_nodes
from grid_scheduler.model import Assignment, Grid, JobRecord, JobSpec, JobState
from grid_scheduler.model.node_names import default_node_name
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.site_agent import AgentConfig, SiteAgent
from grid_scheduler.state import Limits
from grid_scheduler.state.agents import JobPhase
from tests.test_replica_replace import (
    assert_ledger_is_the_running_reservations,
    assert_within_slo,
    expected_kept,
    fail_node,
    serve,
    site_desired,
)

# Every change a test sees is its own call's: no background batch cycle moves a job meanwhile.
pytestmark = pytest.mark.no_batch_cycle

POOL = "frankfurt-h100"  # 16 nodes x 8 GPUs; within 2 ms of frankfurt, and nothing else is
GPUS_PER_NODE = 8


def frankfurt(replicas: int, gpus: int, name: str = "serve") -> JobSpec:
    return serve(replicas, 2.0, ["frankfurt"], gpus=gpus, name=name)


def replicas_of(a: Assignment, replica_gpus: int) -> list[set[int]]:
    """The nodes each replica of ``a`` touches: its GPUs one by one in node order, replica_gpus at a time."""
    slots = [node for node, gpus in a.nodes for _ in range(gpus)]
    return [set(slots[k:k + replica_gpus]) for k in range(0, len(slots), replica_gpus)]


# --- the engine's rule ------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(
    free=st.lists(st.integers(0, GPUS_PER_NODE), min_size=1, max_size=40),
    replicas=st.integers(1, 20),
    replica_gpus=st.sampled_from([1, 2, 3, 4, 8, 16]),
    per_domain=st.sampled_from([1, 4, 18]),
)
def test_each_replica_on_one_node_whenever_they_fit_so(
    free: list[int], replicas: int, replica_gpus: int, per_domain: int
) -> None:
    shape = PoolShape(GPUS_PER_NODE, per_domain)
    node_free = np.array(free, dtype=np.int64)
    got = assign_replica_nodes(shape, node_free, replicas, replica_gpus)
    fits = replica_gpus <= GPUS_PER_NODE and sum(f // replica_gpus for f in free) >= replicas
    assert (got is not None) == fits
    if got is None:
        return
    assert [i for i, _ in got] == sorted({i for i, _ in got})
    assert sum(g for _, g in got) == replicas * replica_gpus
    for i, g in got:
        assert 0 < g <= free[i] and g % replica_gpus == 0
    assert assign_replica_nodes(shape, node_free, replicas, replica_gpus) == got  # deterministic


def test_a_deployment_on_an_empty_pool_puts_whole_replicas_on_nodes(small_grid: Grid) -> None:
    s = Scheduler(small_grid, quiet=True)
    for gpus in (1, 2, 3, 4, 8):
        record = s.submit(frankfurt(5, gpus, name=f"d{gpus}")).record
        assert record.placement is not None
        for a in record.placement.assignments:
            assert all(g % gpus == 0 for _, g in a.nodes), (gpus, a.nodes)


# --- the scheduler: only the replicas on the failed node move ---------------------------------

def check_node_failure(s: Scheduler, before: JobRecord, a_index: int, node: int) -> None:
    """Fail ``node`` under assignment ``a_index`` of ``before`` and check what the issue asks."""
    assert before.placement is not None
    g = before.spec.gpus.count
    hit = before.placement.assignments[a_index]
    lost = [r for r in replicas_of(hit, g) if node in r]
    kept_total = sum(a.gpus for a in before.placement.assignments) - len(lost) * g
    if all(gpus % g == 0 for _, gpus in hit.nodes):  # whole replicas on nodes: exactly the node's
        assert len(lost) * g == dict(hit.nodes)[node]
    others = {r.id: r for r in s.store.running_jobs() if r.id != before.id and r.placement is not None
              and not any(a.pool_id == hit.pool_id and node in dict(a.nodes) for a in r.placement.assignments)}

    assert before.id in fail_node(s, hit, node)

    after = s.store.get_job(before.id)
    assert after is not None
    if kept_total == 0:  # every replica was on that node: the whole job is re-queued, as before
        assert after.attempts == before.attempts + 1  # (and the queue pass may have placed it again)
    else:
        assert after.state is JobState.RUNNING and after.placement is not None
        assert after.attempts == before.attempts and after.started_at == before.started_at
        n = len(before.placement.assignments)
        for k, a in enumerate(before.placement.assignments):
            if k != a_index:
                assert after.placement.assignments[k].model_dump_json() == a.model_dump_json()
        rest = expected_kept(hit, g, node)
        stays = [x for k, x in enumerate(after.placement.assignments[:n]) if k != a_index]
        if rest:  # the hit assignment keeps its place: same pool, its untouched nodes' shares as they were
            kept = after.placement.assignments[a_index]
            assert (kept.site_id, kept.pool_id, kept.gpu_type) == (hit.site_id, hit.pool_id, hit.gpu_type)
            assert kept.nodes == rest and kept.gpus == sum(gpus for _, gpus in rest)
            new = after.placement.assignments[n:]
        else:
            assert [x.model_dump_json() for x in after.placement.assignments[:n - 1]] == \
                [x.model_dump_json() for x in stays]
            new = after.placement.assignments[n - 1:]
        assert sum(x.gpus for x in new) == len(lost) * g  # exactly the lost replicas, re-placed
        assert not any(x.pool_id == hit.pool_id and node in dict(x.nodes) for x in after.placement.assignments)
        assert_within_slo(after)
    for job_id, record in others.items():  # jobs not on the failed node are untouched
        assert s.store.get_job(job_id) == record
    assert_ledger_is_the_running_reservations(s)
    assert s.store.snapshot().node_used_gpus[s.limits.pool_index[hit.pool_id]][node] == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    replicas=st.integers(2, 6),
    gpus=st.sampled_from([1, 2, 3, 4, 8]),
    others=st.lists(st.tuples(st.integers(1, 3), st.sampled_from([1, 3, 4, 5, 8])), max_size=6),
    pick=st.integers(0, 1_000),
)
def test_a_failed_node_moves_only_the_replicas_on_it(
    small_grid: Grid, replicas: int, gpus: int, others: list[tuple[int, int]], pick: int
) -> None:
    s = Scheduler(small_grid, quiet=True)
    for i, (r, g) in enumerate(others):  # other deployments scatter the pool's free GPUs
        s.submit(frankfurt(r, g, name=f"other-{i}"))
    before = s.submit(frankfurt(replicas, gpus)).record
    assert before.state is JobState.RUNNING and before.placement is not None
    a_index = pick % len(before.placement.assignments)
    hit = before.placement.assignments[a_index]
    node = hit.nodes[pick % len(hit.nodes)][0]
    check_node_failure(s, before, a_index, node)


def test_a_straddling_replica_counts_as_lost_with_its_other_node(small_grid: Grid) -> None:
    """Every node of the pool has 3 GPUs free: an 8-GPU replica must straddle three nodes, and a
    failure of any costs it (its GPUs on the healthy nodes are given up too)."""
    s = Scheduler(small_grid, quiet=True)
    s.submit(frankfurt(16, 5, name="fives"))  # 5 GPUs on each of the 16 nodes
    before = s.submit(frankfurt(3, 8)).record
    assert before.state is JobState.RUNNING and before.placement is not None
    [a] = before.placement.assignments
    assert a.gpus == 24 and [g for _, g in a.nodes] == [3] * 8
    check_node_failure(s, before, 0, a.nodes[1][0])  # under the first replica only (nodes 0, 1, 2)
    after = s.store.get_job(before.id)
    assert after is not None and after.placement is not None
    # The first replica's 2 GPUs on the third node go with it; the second's 1 GPU there stays.
    assert after.placement.assignments[0].nodes == ((a.nodes[2][0], 1), *a.nodes[3:])


@pytest.mark.redis
def test_on_redis_only_the_replicas_on_the_node_move(small_grid: Grid, redis_url: str) -> None:
    from grid_scheduler.state.redis_store import RedisStore

    store = RedisStore(Limits.from_grid(small_grid), redis_url, f"replica-nodes-{uuid4().hex[:12]}")
    try:
        s = Scheduler(small_grid, store=store, quiet=True)
        s.submit(frankfurt(3, 3, name="other"))
        before = s.submit(frankfurt(6, 4)).record
        assert before.placement is not None
        [a] = before.placement.assignments
        assert len(a.nodes) >= 2
        check_node_failure(s, before, 0, a.nodes[-1][0])
        assert fail_node(s, a, a.nodes[-1][0]) == []  # the same report again changes nothing
    finally:
        store.close()


def test_a_heartbeat_with_a_failed_node_moves_only_the_replica_on_it(client: Client, scheduler: Scheduler) -> None:
    job = client.submit(frankfurt(4, 8)).job
    assert job.state == ppb.JOB_STATE_RUNNING
    before = scheduler.store.get_job(job.id)
    assert before is not None and before.placement is not None
    [a] = before.placement.assignments
    assert [g for _, g in a.nodes] == [8, 8, 8, 8]
    node = a.nodes[2][0]
    client.agents.RegisterAgent(apb.RegisterAgentRequest(site_id=a.site_id, agent_id="a1"), timeout=10)
    response = client.agents.Heartbeat(apb.HeartbeatRequest(site_id=a.site_id, agent_id="a1", sequence=1, nodes=[
        apb.NodeStatus(pool_id=POOL, node=default_node_name(POOL, node), health=apb.NODE_HEALTH_FAILED,
                       reason="XID 79")]), timeout=10)
    assert response.applied
    got = client.get_job(job.id)
    assert got.state == ppb.JOB_STATE_RUNNING and got.attempts == 0
    kept, new = got.placement.assignments[0], got.placement.assignments[1:]
    assert kept.pool_id == POOL and kept.gpus == 24
    assert [(n.node_index, n.gpus) for n in kept.nodes] == [(i, g) for i, g in a.nodes if i != node]
    assert sum(x.gpus for x in new) == 8
    assert_ledger_is_the_running_reservations(scheduler)


def test_the_reference_agent_losing_a_node_keeps_the_deployment_on_its_other_nodes(
    client: Client, scheduler: Scheduler
) -> None:
    """The reference agent's own order: the replicas on the failed node die with it, the deployment
    runs on (no FAILED report, which would move every replica at the site); its heartbeat makes
    the scheduler re-place exactly those; the next desired state resizes the agent's run."""
    job = client.submit(frankfurt(4, 8)).job
    before = scheduler.store.get_job(job.id)
    assert before is not None and before.placement is not None
    [a] = before.placement.assignments
    agent = SiteAgent(client, AgentConfig(site_id="frankfurt-hub", agent_id="sim", simulate=True, seed=1))
    agent.register()
    agent.apply(site_desired(client, agent))
    assert job.id in agent.running
    node = default_node_name(POOL, a.nodes[1][0])
    assert agent._fail_node(POOL, node) == []  # nothing to report as FAILED
    assert job.id in agent.running and (POOL, node) not in agent.running[job.id].nodes
    agent.heartbeat()
    after = scheduler.store.get_job(job.id)
    assert after is not None and after.placement is not None
    assert after.state is JobState.RUNNING and after.attempts == 0
    assert after.placement.assignments[0].nodes == tuple(x for x in a.nodes if x != a.nodes[1])
    assert sum(x.gpus for x in after.placement.assignments) == 32
    assert_within_slo(after)
    assert_ledger_is_the_running_reservations(scheduler)
    report = scheduler.store.job_report("frankfurt-hub", job.id)
    assert report is not None and report.phase is JobPhase.RUNNING
    agent.apply(site_desired(client, agent))  # the run follows its new shares: three old nodes, one new
    run = agent.running[job.id]
    want = {(x.pool_id, default_node_name(x.pool_id, i)) for x in after.placement.assignments for i, _ in x.nodes}
    assert run.nodes == frozenset(want) and (POOL, node) not in run.nodes


def test_an_agent_restarted_from_its_state_file_still_loses_only_the_replicas_on_the_node(
    client: Client, scheduler: Scheduler, tmp_path: Path
) -> None:
    """The state file keeps each run's kind and attempt: the restarted agent knows the run is a
    deployment (a failed node costs it only that node's replicas, no FAILED for the whole job) before
    any desired state arrives, and reports name the run's attempt."""
    job = client.submit(frankfurt(4, 8)).job
    before = scheduler.store.get_job(job.id)
    assert before is not None and before.placement is not None
    [a] = before.placement.assignments
    config = AgentConfig(site_id="frankfurt-hub", agent_id="sim", simulate=True, seed=1,
                         state_file=tmp_path / "agent.json")
    first = SiteAgent(client, config)
    first.register()
    first.apply(site_desired(client, first))
    assert job.id in first.running

    restarted = SiteAgent(client, config)  # a new process: only the state file carries over
    run = restarted.running[job.id]
    assert run.kind == "inference" and restarted.attempts == {job.id: before.attempts}
    node = default_node_name(POOL, a.nodes[1][0])
    assert restarted._fail_node(POOL, node) == []
    assert job.id in restarted.running and (POOL, node) not in restarted.running[job.id].nodes
