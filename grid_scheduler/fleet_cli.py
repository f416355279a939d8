"""``grid-scheduler nodes drain|undrain``: node-level drains (the handlers; cli.py registers them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from grid_scheduler.cli_output import print_json
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
