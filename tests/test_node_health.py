"""Node health drives capacity: a failed node's GPUs leave the pool at once, exactly the jobs that
no longer fit are failed (lowest priority first) and re-queued, a healthy node brings them back;
operator node drains (DrainNodes, `grid-scheduler nodes`) take capacity but keep running jobs.
The ledger refuses commits beyond the healthy capacity on both stores."""

from __future__ import annotations

import json
import re

import grpc
import pytest

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.cli import main
from grid_scheduler.client import Client
from grid_scheduler.model import Assignment, EventType, Grid, JobRecord, JobState
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.state import CapacityConflict, Store, Transition
from grid_scheduler.state.agents import NodeCondition, NodeHealth
from tests.invariants import ledger_from_jobs
from tests.test_service import bad_request_fields
from tests.test_site_agent import POOL, SITE, register, training

POOL_GPUS = 128  # sines-gb300: 32 nodes x 4 GPUs


def free_gpus(client: Client, pool_id: str = POOL) -> int:
    return next(p.free_gpus for s in client.sites() for p in s.pools if p.id == pool_id)


def beat(client: Client, *failed: str, draining: tuple[str, ...] = ()) -> apb.HeartbeatResponse:
    nodes = [apb.NodeStatus(pool_id=POOL, node=n, health=apb.NODE_HEALTH_FAILED, reason="XID 79") for n in failed]
    nodes += [apb.NodeStatus(pool_id=POOL, node=n, health=apb.NODE_HEALTH_DRAINING) for n in draining]
    response: apb.HeartbeatResponse = client.agents.Heartbeat(
        apb.HeartbeatRequest(site_id=SITE, agent_id="a1", nodes=nodes), timeout=10)
    return response


def on_node(job: ppb.Job, node: int) -> bool:
    return any(n.node_index == node for a in job.placement.assignments for n in a.nodes)


def test_a_failed_node_fails_exactly_the_job_on_it_and_its_return_restores_it(client: Client) -> None:
    register(client)
    first = client.submit(training(64, "low", priority=1)).job
    second = client.submit(training(64, "high", priority=5)).job
    assert first.state == second.state == ppb.JOB_STATE_RUNNING and free_gpus(client) == 0
    # The ledger knows the nodes: exactly one of the two holds GPUs on n3 (node 3).
    [hit] = [j for j in (first, second) if on_node(j, 3)]
    [other] = [j for j in (first, second) if j.id != hit.id]
    beat(client, "n3")
    # The job on n3 goes back to the queue (whatever its priority), the other stays.
    assert client.get_job(other.id).state == ppb.JOB_STATE_RUNNING
    lost = client.get_job(hit.id)
    assert lost.state == ppb.JOB_STATE_PENDING and lost.attempts == 1
    assert "n3 (XID 79)" in lost.waiting.summary[0]
    assert free_gpus(client) == POOL_GPUS - 4 - 64
    beat(client, "n3")  # the same report again changes nothing
    assert client.get_job(other.id).state == ppb.JOB_STATE_RUNNING
    assert client.get_job(hit.id).update_time == lost.update_time
    beat(client)  # n3 healthy again: the capacity is back and the queue places the job at once
    back = client.get_job(hit.id)
    assert back.state == ppb.JOB_STATE_RUNNING and back.attempts == 1 and free_gpus(client) == 0


def test_a_failed_node_in_a_pool_with_room_fails_nothing_and_draining_keeps_jobs(client: Client) -> None:
    register(client)
    job = client.submit(training(64, "stays")).job
    beat(client, "n3", draining=("n4", "n5"))
    assert client.get_job(job.id).state == ppb.JOB_STATE_RUNNING
    assert free_gpus(client) == POOL_GPUS - 64 - 3 * 4
    waits = client.submit(training(64, "waits")).job
    assert waits.state == ppb.JOB_STATE_PENDING


def test_operator_node_drains_take_capacity_keep_jobs_and_name_bad_nodes(client: Client) -> None:
    register(client)
    job = client.submit(training(64)).job
    drained = client.drain_nodes(POOL, ["n1", "n2"])
    assert list(drained.drained_nodes) == ["n1", "n2"] and drained.pool.free_gpus == POOL_GPUS - 64 - 8
    assert client.get_job(job.id).state == ppb.JOB_STATE_RUNNING
    beat_response = beat(client)
    assert {n.node for n in beat_response.operator_drained} == {"n1", "n2"}
    with pytest.raises(grpc.RpcError) as e:
        client.drain_nodes(POOL, ["n1", "not-a-node"])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(e.value) == ["nodes[1]"]
    assert list(client.drain_nodes(POOL, ["n1"], drained=False).drained_nodes) == ["n2"]
    assert free_gpus(client) == POOL_GPUS - 64 - 4


def test_nodes_cli(server: object, client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{server.port}"  # type: ignore[attr-defined]
    assert main(["nodes", "drain", SITE, POOL, "n7", "n8", "--address", address]) == 0
    assert "2 nodes drained (n7, n8)" in capsys.readouterr().out
    assert main(["nodes", "undrain", SITE, POOL, "n7", "--address", address, "--json"]) == 0
    assert '"n8"' in capsys.readouterr().out
    assert main(["nodes", "drain", "glomfjord", POOL, "n1", "--address", address]) == 2
    capsys.readouterr()
    register(client)
    assert main(["fleet", "--address", address]) == 0
    out = capsys.readouterr().out
    assert "healthy" in out and "no_agent" in out and "sines sines-gb300 n8: drained" in out
    assert main(["fleet", "--address", address, "--json"]) == 0
    # The in-process server logs to the same stdout: keep the command's own lines.
    lines = capsys.readouterr().out.splitlines()
    printed = "\n".join(line for line in lines if not re.match(r"\d{4}-\d\d-\d\d ", line))
    sites = {s["site_id"]: s for s in json.loads(printed)["sites"]}
    assert sites[SITE]["agent_id"] == "a1" and sites[SITE]["gpus_down"] == 4 and sites[SITE]["nodes_draining"] == 1
    assert main(["sites", "--address", address]) == 0
    assert "last heartbeat" in capsys.readouterr().out


def test_the_ledger_refuses_commits_beyond_the_healthy_capacity(store: Store, small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=store)
    store.register_agent(SITE, "a1", {}, 1.0)
    store.agent_heartbeat(SITE, "a1", [NodeCondition(POOL, "n0", NodeHealth.FAILED)], 2.0)
    assert fleet.apply_node_health(s, SITE) == []
    snap = store.snapshot()
    assert snap.pool_down_gpus is not None and int(snap.pool_down_gpus[s.limits.pool_index[POOL]]) == 4
    first = s.submit(training(POOL_GPUS - 4, "fits")).record
    assert first.state is JobState.RUNNING
    # A commit made on a stale view (as a racing replica's) is refused by the ledger itself.
    record = JobRecord(id="job-x", spec=training(4), state=JobState.RUNNING, created_at=3.0, updated_at=3.0)
    a = Assignment(site_id=SITE, pool_id=POOL, gpu_type="GB300", gpus=4, power_kw=1.0)
    with pytest.raises(CapacityConflict):
        store.create_job(Transition(record, EventType.PLACED, reserve=[a]))
    gpus, _ = ledger_from_jobs(small_grid, store.running_jobs())
    assert gpus[POOL] == POOL_GPUS - 4
