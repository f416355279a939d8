"""``grid-scheduler nodes drain|undrain`` and ``fleet``: node drains and site health (cli.py registers them)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grid_scheduler._proto.v1 import topology_pb2 as tpb
from grid_scheduler.cli_output import print_json, print_table
from grid_scheduler.client import Client

Register = Callable[[Any, str, Callable[[argparse.Namespace, Client], int], str], argparse.ArgumentParser]


def add_parser(sub: Any, register: Register) -> None:
    nodes = sub.add_parser("nodes", help="drain or undrain single nodes of a pool")
    nsub = nodes.add_subparsers(dest="nodes_command", required=True)
    for name, help in (("drain", "take nodes out of service: their GPUs leave the pool's capacity, jobs stay"),
                       ("undrain", "put drained nodes back; waiting jobs are retried")):
        p = register(nsub, name, _drain_nodes, help)
        p.add_argument("site")
        p.add_argument("pool")
        p.add_argument("node", nargs="+")
        p.set_defaults(drained=name == "drain")


def add_fleet_parser(sub: Any, register: Register) -> None:
    register(sub, "fleet", _fleet,
             "per site: agent, health, last heartbeat, nodes healthy/failed/draining, GPUs up/down; "
             "per pool: GPUs used/out/free, nodes in use, fragmentation")


def add_agent_parser(sub: Any, register: Register) -> None:
    p = register(sub, "agent", _agent, "run the reference site agent for one site (commands, or --simulate)")
    p.add_argument("--site", required=True)
    p.add_argument("--scheduler", dest="address", help="the scheduler's address (same as --address)")
    p.add_argument("--agent-id", default="", help="default: host, pid and start time")
    p.add_argument("--heartbeat", type=float, default=5.0, metavar="SECONDS", help="heartbeat interval")
    p.add_argument("--start", default="",
                   help="command per job start, e.g. 'sbatch --wait ... {job_id} {gpus} {nodes}'")
    p.add_argument("--stop", default="", help="command per job stop, e.g. 'scancel --name {job_id}'")
    p.add_argument("--update", default="",
                   help="command when a running job's GPUs here change (a replica re-placed); fields as --start")
    p.add_argument("--simulate", action="store_true", help="run each job for its duration / --speedup")
    p.add_argument("--speedup", type=float, default=3600.0, help="simulated hours per real hour (default: 3600)")
    p.add_argument("--fail-rate", type=float, default=0.0, metavar="PER_NODE_HOUR",
                   help="simulated node failures per node-hour of simulated time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--state-file", default=None, help="what runs here, kept across restarts (reconciliation)")


def _agent(args: argparse.Namespace, client: Client) -> int:
    from grid_scheduler.site_agent import AgentConfig, SiteAgent

    config = AgentConfig(site_id=args.site, heartbeat_s=args.heartbeat, start=args.start, stop=args.stop,
                         update=args.update,
                         simulate=args.simulate, speedup=args.speedup, fail_rate_per_node_hour=args.fail_rate,
                         seed=args.seed, state_file=Path(args.state_file) if args.state_file else None)
    if args.agent_id:
        config.agent_id = args.agent_id
    agent = SiteAgent(client, config)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    agent.run()
    return 0


def health_name(health: int) -> str:
    return tpb.SiteHealth.Name(health).removeprefix("SITE_HEALTH_").lower()


def heartbeat_text(site: tpb.FleetSite) -> str:
    if not site.HasField("last_heartbeat"):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(site.last_heartbeat.ToNanoseconds() / 1e9))


def _fleet(args: argparse.Namespace, client: Client) -> int:
    sites = client.fleet()
    if args.json:
        print_json(tpb.GetFleetResponse(sites=sites))
        return 0
    print_table([[s.site_id, s.agent_id or "-", health_name(s.health), heartbeat_text(s), s.nodes_healthy,
                  s.nodes_failed, s.nodes_draining, s.gpus_up, s.gpus_down] for s in sites],
                ["site", "agent", "health", "last heartbeat (UTC)", "nodes ok", "failed", "draining", "gpus up",
                 "down"])
    for s in sites:
        for n in s.nodes:
            print(f"  {s.site_id} {n.pool_id} {n.node}: {n.health}" + (f" ({n.reason})" if n.reason else ""))
    print()
    print_table([[s.site_id, u.pool_id, u.gpus_total, u.gpus_used, u.gpus_out, u.gpus_free, u.nodes_used,
                  u.fragmented_gpus, u.largest_free_domain_gpus] for s in sites for u in s.pools],
                ["site", "pool", "gpus", "used", "out", "free", "nodes used", "fragmented", "largest free domain"])
    return 0


def _drain_nodes(args: argparse.Namespace, client: Client) -> int:
    site = next((s for s in client.sites() if s.id == args.site), None)
    if site is None or args.pool not in {p.id for p in site.pools}:
        print(f"error: {args.pool} is not a pool of site {args.site}", file=sys.stderr)
        return 2
    response = client.drain_nodes(args.pool, list(args.node), args.drained)
    if args.json:
        print_json(response)
        return 0
    pool = response.pool
    print(f"pool {pool.id}: {len(response.drained_nodes)} nodes drained"
          + (f" ({', '.join(response.drained_nodes)})" if response.drained_nodes else "")
          + f"; {pool.free_gpus} GPUs free")
    return 0
