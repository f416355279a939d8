"""``grid-scheduler fairshare``: per tenant, share vs entitlement, borrowed GPUs and waiting
GPU-hours, through PolicyService.GetFairShare (the parser is registered by cli.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from grid_scheduler.cli_output import print_json, print_table
from grid_scheduler.client import Client

Run = Callable[[argparse.Namespace, Client], int]
Register = Callable[[Any, str, Run, str], argparse.ArgumentParser]


def add_parser(sub: Any, register: Register) -> None:
    register(sub, "fairshare", _fairshare, "fair share per tenant: share, entitlement, borrowed, waiting GPU-hours")


def _fairshare(args: argparse.Namespace, client: Client) -> int:
    reply = client.fair_share()
    if args.json:
        print_json(reply)
        return 0
    state = "on" if reply.enabled else "off (shown, not applied)"
    print(f"fair share {state}, policy v{reply.policy_version}; fleet {reply.fleet_gpus:,} GPUs, "
          f"{reply.fleet_power_kw / 1000:,.1f} MW")
    print_table([[t.tenant, f"{t.weight:g}", f"{t.share:.2%}", f"{t.entitlement:.2%}", f"{t.gpus:,}",
                  f"{t.borrowed_gpus:,}", t.running_jobs, t.waiting_jobs, f"{t.waiting_gpu_hours:,.1f}"]
                 for t in reply.tenants],
                ["tenant", "weight", "share", "entitlement", "GPUs", "borrowed GPUs", "running", "waiting",
                 "waiting GPU-h"])
    return 0
