"""Issue 11, "done when": a node failure report drains exactly that node and fails exactly the job
on it; a duplicated or reordered report changes nothing. On a real gRPC server over loopback, on
the memory and the Redis ledger.

Until the engine fills ``Assignment.nodes`` (branch ``domains``), jobs are placed through the
server and then pinned to nodes with one store commit, as the engine's node assignment will."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.client import Client
from grid_scheduler.model import EventType, Grid
from grid_scheduler.model.node_names import default_node_name, node_indices, node_names
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.site_agent import AgentConfig, SiteAgent
from grid_scheduler.state import Store, Transition, Update
from grid_scheduler.state.agents import NodeCondition, NodeHealth
from tests.test_reference_agent import desired
from tests.test_service import bad_request_fields
from tests.test_site_agent import POOL, SITE, first_assignments, register, report, training

# Every change a test sees is its own call's: no background batch cycle moves a job meanwhile.
pytestmark = pytest.mark.no_batch_cycle


@pytest.fixture
def scheduler(small_grid: Grid, store: Store) -> Scheduler:
    return Scheduler(small_grid, store=store)


def pin(store: Store, job_id: str, nodes: list[tuple[int, int]]) -> None:
    """Give a running job's reservation its nodes, in one commit (release, then reserve with nodes)."""
    record = store.get_job(job_id)
    assert record is not None and record.placement is not None
    (a,) = record.placement.assignments
    pinned = a.model_copy(update={"nodes": tuple(nodes)})
    placement = record.placement.model_copy(update={"assignments": [pinned]})
    new = record.model_copy(update={"placement": placement, "version": record.version + 1})
    store.commit([Update(job_id, record.version, Transition(new, EventType.PLACED, "pinned to nodes",
                                                           reserve=[pinned], release=True))])


def beat(client: Client, sequence: int, failed: tuple[str, ...] = (), draining: tuple[str, ...] = ()
         ) -> apb.HeartbeatResponse:
    nodes = [apb.NodeStatus(pool_id=POOL, node=n, health=apb.NODE_HEALTH_FAILED, reason="XID 79") for n in failed]
    nodes += [apb.NodeStatus(pool_id=POOL, node=n, health=apb.NODE_HEALTH_DRAINING) for n in draining]
    response: apb.HeartbeatResponse = client.agents.Heartbeat(
        apb.HeartbeatRequest(site_id=SITE, agent_id="a1", nodes=nodes, sequence=sequence), timeout=10)
    return response


def nodes_of(scheduler: Scheduler) -> tuple[list[int], list[int]]:
    """The ledger's view of the pool: used GPUs per node, and the out nodes."""
    snap = scheduler.store.snapshot()
    p = scheduler.limits.pool_index[POOL]
    return snap.node_used_gpus[p].tolist(), np.flatnonzero(snap.node_out[p]).tolist()


def placed(client: Client, scheduler: Scheduler) -> dict[str, str]:
    """Three 8-GPU jobs in the pool, pinned to nodes 0-1, 2-3 and 4-5."""
    register(client)
    ids = {}
    for name, first in (("a", 0), ("b", 2), ("c", 4)):
        job = client.submit(training(8, name, priority=3)).job
        assert job.state == ppb.JOB_STATE_RUNNING
        pin(scheduler.store, job.id, [(first, 4), (first + 1, 4)])
        ids[name] = job.id
    return ids


def states(client: Client, ids: dict[str, str]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for name, job_id in ids.items():
        job = client.get_job(job_id)
        out[name] = (job.state, job.attempts, job.update_time.ToNanoseconds())
    return out


def test_a_failed_node_fails_exactly_the_job_on_it_and_drains_exactly_that_node(
    client: Client, scheduler: Scheduler
) -> None:
    ids = placed(client, scheduler)
    used, out = nodes_of(scheduler)
    assert used[:7] == [4, 4, 4, 4, 4, 4, 0] and out == []
    before = states(client, ids)
    response = beat(client, 1, failed=("n3",))
    assert response.applied
    after = states(client, ids)
    # Exactly b (on nodes 2 and 3) failed: re-queued once (and, with room left, placed again at once).
    assert after["a"] == before["a"] and after["c"] == before["c"]
    assert after["b"][1] == 1 and after["b"][2] != before["b"][2]
    failures = [e.message for e in scheduler.store.events_after(0, 0) if "node failed" in e.message]
    assert len(failures) == 1 and "node failed in sines-gb300: n3 (XID 79)" in failures[0]
    assert [e.job_id for e in scheduler.store.events_after(0, 0) if "node failed" in e.message] == [ids["b"]]
    # Exactly n3 is out; b's GPUs left nodes 2 and 3, a's and c's stayed.
    used, out = nodes_of(scheduler)
    assert out == [3]
    assert used[:2] == [4, 4] and used[4:6] == [4, 4] and used[3] == 0
    # b, placed again at once, holds 8 GPUs on nodes in service (none on n3), and nothing else moved.
    b = scheduler.store.get_job(ids["b"])
    assert b is not None and b.placement is not None
    b_nodes = [n for a in b.placement.assignments if a.pool_id == POOL for n, _ in a.nodes]
    assert 3 not in b_nodes and sum(used) == 24
    snap = scheduler.store.snapshot()
    down = snap.pool_down_gpus
    assert down is not None and int(down[scheduler.limits.pool_index[POOL]]) == 4


def test_a_duplicated_or_reordered_report_changes_nothing(client: Client, scheduler: Scheduler) -> None:
    ids = placed(client, scheduler)
    for sequence, phase in ((1, apb.JOB_PHASE_STARTING), (2, apb.JOB_PHASE_RUNNING)):
        report(client, ids["b"], phase, sequence)
    assert beat(client, 1, failed=("n3",)).applied
    settled = states(client, ids)
    ledger = scheduler.store.snapshot()
    # The same report again (a retry): not applied. A newer one saying the same: applied, no change.
    assert not beat(client, 1, failed=("n3",)).applied
    assert beat(client, 2, failed=("n3",)).applied
    # An older report overtaken by the newer one (n3 still healthy then): ignored, n3 stays out.
    assert not beat(client, 1).applied
    assert states(client, ids) == settled
    now = scheduler.store.snapshot()
    assert now.version == ledger.version
    assert all(np.array_equal(x, y) for x, y in zip(now.node_used_gpus, ledger.node_used_gpus, strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(now.node_out, ledger.node_out, strict=True))
    assert nodes_of(scheduler)[1] == [3]
    # The agent's own FAILED report of the run on n3 (attempt 0), after the scheduler failed that run
    # and placed the job again (attempt 1): kept as a report, it ends nothing. A retry of it neither.
    late = apb.ReportJobRequest(site_id=SITE, agent_id="a1", job_id=ids["b"], phase=apb.JOB_PHASE_FAILED,
                                sequence=3, exit_reason="XID 79 on n3", attempt=0)
    assert client.agents.ReportJob(late, timeout=10).applied
    assert not client.agents.ReportJob(late, timeout=10).applied
    assert states(client, ids) == settled
    # n3 healthy again (a newer report): back in service, nobody failed.
    assert beat(client, 3).applied
    assert nodes_of(scheduler)[1] == [] and states(client, ids) == settled


def test_draining_and_operator_drained_nodes_are_out_but_keep_their_jobs(
    client: Client, scheduler: Scheduler
) -> None:
    ids = placed(client, scheduler)
    before = states(client, ids)
    assert beat(client, 1, draining=("n0",)).applied
    client.drain_nodes(POOL, ["n4", "n9"])
    assert states(client, ids) == before
    used, out = nodes_of(scheduler)
    assert out == [0, 4, 9] and used[:6] == [4, 4, 4, 4, 4, 4]
    client.drain_nodes(POOL, ["n4", "n9"], drained=False)
    assert nodes_of(scheduler)[1] == [0]


def test_the_desired_state_names_each_shares_nodes(client: Client, scheduler: Scheduler) -> None:
    ids = placed(client, scheduler)
    shares = {r.job_id: r.shares[0] for r in first_assignments(client).run}
    assert list(shares[ids["b"]].nodes) == ["n2", "n3"] and list(shares[ids["b"]].node_gpus) == [4, 4]


def test_a_negative_heartbeat_sequence_names_the_field(client: Client) -> None:
    register(client)
    with pytest.raises(grpc.RpcError) as e:
        beat(client, -1)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(e.value) == ["sequence"]


def test_gpus_per_node_fits_in_the_ledgers_byte(small_grid: Grid) -> None:
    data = small_grid.model_dump(mode="json")
    data["sites"][0]["pools"][0]["gpus_per_node"] = 256
    with pytest.raises(ValueError, match="gpus_per_node"):
        Grid.model_validate(data)


def test_node_names_are_the_inventory_position_else_pool_and_index() -> None:
    assert default_node_name("sines-gb300", 7) == "sines-gb300-00007"
    assert node_names("p", 3) == ("p-00000", "p-00001", "p-00002")
    assert node_names("p", 3, ["x", "y"]) == ("x", "y", "p-00002")
    assert dict(node_indices("p", 3, ["x", "p-00002"])) == {"x": 0, "p-00002": 1}


def test_the_reference_agent_fails_the_job_on_the_failed_node_and_the_scheduler_fails_it_once(
    client: Client, scheduler: Scheduler
) -> None:
    agent = SiteAgent(client, AgentConfig(site_id=SITE, agent_id="sim", simulate=True, seed=1))
    agent.register()  # the default names: node i of the ledger is the agent's i-th
    a = client.submit(training(8, "a")).job
    b = client.submit(training(8, "b")).job
    pin(scheduler.store, a.id, [(0, 4), (1, 4)])
    pin(scheduler.store, b.id, [(2, 4), (3, 4)])
    agent.apply(desired(client, agent))
    assert agent.running[b.id].nodes == {(POOL, "sines-gb300-00002"), (POOL, "sines-gb300-00003")}
    assert agent._fail_node(POOL, "sines-gb300-00005") == []  # no job holds GPUs there
    failed = agent._fail_node(POOL, "sines-gb300-00002")
    assert [job_id for job_id, _ in failed] == [b.id]
    agent.heartbeat()  # node health first: the scheduler fails b (on node 2), and only b
    for job_id, why in failed:  # then the agent's own report of that run: it ends nothing more
        agent._report(job_id, apb.JOB_PHASE_FAILED, why)
    assert client.get_job(b.id).attempts == 1 and client.get_job(a.id).attempts == 0
    assert client.get_job(a.id).state == ppb.JOB_STATE_RUNNING
    assert nodes_of(scheduler)[1] == [2, 5]


def test_a_reported_node_the_grid_file_drains_is_not_taken_out_twice(store: Store, small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=store)
    pool = "glomfjord-gb300"  # 128 nodes, the last 8 drained in the grid file
    names = node_names(pool, 128)  # no inventory registered: the default names
    store.register_agent("glomfjord", "g", {}, 1.0)
    store.agent_heartbeat("glomfjord", "g", [NodeCondition(pool, names[125], NodeHealth.FAILED),
                                             NodeCondition(pool, names[3], NodeHealth.FAILED)], 2.0)
    assert fleet.apply_node_health(s, "glomfjord") == []
    snap = store.snapshot()
    p = s.limits.pool_index[pool]
    assert snap.pool_down_gpus is not None and int(snap.pool_down_gpus[p]) == 4  # node 3 only
    assert np.flatnonzero(snap.node_out[p]).tolist() == [3, *range(120, 128)]
