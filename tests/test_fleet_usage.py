"""Issue 11: `grid-scheduler fleet` shows per-pool usage: GPUs used, out of service and free, nodes
in use, fragmentation (free GPUs in partly used domains) and the largest free domain. Through a
real server on loopback, with a failed node, an operator drain and the grid file's own drained
nodes; each figure recomputed here from the running jobs' reservations and the grid, and the CLI's
``--json`` carrying the same."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler._proto.v1 import topology_pb2 as tpb
from grid_scheduler.client import Client
from grid_scheduler.model import JobSpec
from grid_scheduler.model.node_names import default_node_name
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import RunningServer

BIN = Path(sys.executable).parent


def expected(s: Scheduler, pool_id: str, out_nodes: set[int]) -> dict[str, int]:
    """The pool's usage from first principles: what running jobs hold per node, and which nodes are out."""
    pool = s.grid.pool_by_id[pool_id][1]
    used = [0] * pool.nodes
    for record in s.store.running_jobs():
        assert record.placement is not None
        for a in record.placement.assignments:
            if a.pool_id == pool_id:
                for i, g in a.nodes:
                    used[i] += g
    out = set(out_nodes) | set(range(pool.nodes - pool.drained_nodes, pool.nodes))
    free = [0 if i in out else pool.gpus_per_node - used[i] for i in range(pool.nodes)]
    per_domain = pool.nodes_per_domain
    domains = range(0, pool.nodes, per_domain)
    return {
        "gpus_total": pool.total_gpus, "gpus_used": sum(used), "gpus_out": len(out) * pool.gpus_per_node,
        "gpus_free": sum(free), "nodes_used": sum(1 for u in used if u),
        "fragmented_gpus": sum(sum(free[d:d + per_domain]) for d in domains
                               if sum(used[d:d + per_domain]) and sum(free[d:d + per_domain])),
        "largest_free_domain_gpus": max(sum(free[d:d + per_domain]) for d in domains),
    }


def usage_of(sites: list[tpb.FleetSite], pool_id: str) -> dict[str, int]:
    [u] = [u for site in sites for u in site.pools if u.pool_id == pool_id]
    return {k: getattr(u, k) for k in ("gpus_total", "gpus_used", "gpus_out", "gpus_free", "nodes_used",
                                       "fragmented_gpus", "largest_free_domain_gpus")}


def test_the_fleet_view_shows_each_pools_usage_and_fragmentation(
    client: Client, scheduler: Scheduler, server: RunningServer
) -> None:
    train = client.submit(JobSpec.model_validate({
        "name": "train", "tenant": "acme", "kind": "training", "gpus": {"count": 8, "types": ["GB300"]},
        "residency": {"allowed": ["NO"]}})).job
    assert {a.pool_id for a in train.placement.assignments} == {"glomfjord-gb300"}
    for name, replicas, gpus in (("a", 3, 8), ("b", 4, 3)):
        client.submit(JobSpec.model_validate({
            "name": name, "tenant": "acme", "kind": "inference", "gpus": {"count": gpus},
            "inference": {"replicas": replicas, "latency_slo_ms": 2, "demand": [{"endpoint": "frankfurt"}]}}))
    pool = "frankfurt-h100"
    # A failed node (its replica moves off it) and an operator-drained node (what runs there stays).
    client.agents.RegisterAgent(apb.RegisterAgentRequest(site_id="frankfurt-hub", agent_id="a1"), timeout=10)
    client.agents.Heartbeat(apb.HeartbeatRequest(site_id="frankfurt-hub", agent_id="a1", sequence=1, nodes=[
        apb.NodeStatus(pool_id=pool, node=default_node_name(pool, 0), health=apb.NODE_HEALTH_FAILED,
                       reason="XID 79")]), timeout=10)
    client.drain_nodes(pool, [default_node_name(pool, 1)])

    sites = client.fleet()
    frankfurt = expected(scheduler, pool, {0, 1})
    assert usage_of(sites, pool) == frankfurt
    assert frankfurt["gpus_out"] == 16 and frankfurt["gpus_used"] == 3 * 8 + 4 * 3
    glomfjord = expected(scheduler, "glomfjord-gb300", set())
    assert usage_of(sites, "glomfjord-gb300") == glomfjord
    # The training job went into the rack the grid file's drained nodes had broken already (12 of its
    # 18 nodes in service, 48 GPUs): the 40 left there are fragmented; whole racks stay whole.
    assert glomfjord["fragmented_gpus"] == 40 and glomfjord["largest_free_domain_gpus"] == 72
    assert glomfjord["gpus_out"] == 32  # the grid file drains 8 nodes x 4 GPUs
    assert usage_of(sites, "sines-h100") == expected(scheduler, "sines-h100", set())

    address = f"127.0.0.1:{server.port}"
    result = subprocess.run([str(BIN / "grid-scheduler"), "fleet", "--json", "--address", address],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    pools = {u["pool_id"]: u for site in json.loads(result.stdout)["sites"] for u in site["pools"]}
    assert {k: int(pools[pool].get(k, 0)) for k in frankfurt} == frankfurt
    table = subprocess.run([str(BIN / "grid-scheduler"), "fleet", "--address", address],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "fragmented" in table.stdout and "glomfjord-gb300" in table.stdout
