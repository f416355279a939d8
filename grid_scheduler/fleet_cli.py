"""``grid-scheduler nodes drain|undrain`` and ``fleet``: node drains and site health (cli.py registers them)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
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
             "per site: agent, health, last heartbeat, nodes healthy/failed/draining, GPUs up/down")


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
