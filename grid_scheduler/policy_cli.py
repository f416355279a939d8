"""``grid-scheduler policy show | history | validate | diff | apply | rollback``: the live policy
from the command line, through PolicyService (handlers here; parsers registered by cli.py)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import policy_pb2 as pol
from grid_scheduler.cli_output import print_json, print_table
from grid_scheduler.client import Client
from grid_scheduler.config import ConfigError

Run = Callable[[argparse.Namespace, Client], int]
# Registers one client subcommand (--address, --json, credentials) under a parent: cli.client_command.
Register = Callable[[Any, str, Run, str], argparse.ArgumentParser]


def add_parser(sub: Any, register: Register) -> None:
    policy = sub.add_parser("policy", help="the live placement policy: show, history, validate, diff, apply, rollback")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    p = register(psub, "show", _show, "the active policy (or --version N)")
    p.add_argument("--version", type=int, default=0)
    register(psub, "history", _history, "every version: who applied it, when, why, content hash")
    p = register(psub, "validate", _validate, "check a policy file (YAML); every bad field named")
    p.add_argument("file")
    p = register(psub, "diff", _diff, "dry run: what a policy file would change on live jobs (changes nothing)")
    p.add_argument("file")
    p.add_argument("--last-finished", type=int, default=0,
                   help="also re-decide the last N completed or cancelled submissions")
    p.add_argument("--max-jobs", type=int, default=0, help="at most this many jobs listed per kind (default 1000)")
    p = register(psub, "apply", _apply, "make a policy file the active version")
    p.add_argument("file")
    p.add_argument("--reason", required=True, help="why (kept in the history and the audit trail)")
    p.add_argument("--expected-version", type=int, default=None,
                   help="refuse (ABORTED) unless this is still the active version")
    p = register(psub, "rollback", _rollback, "apply an older version's content as a new version")
    p.add_argument("version", type=int)
    p.add_argument("--reason", required=True)
    p.add_argument("--expected-version", type=int, default=None)


def add_quotas_parser(sub: Any, register: Register) -> None:
    p = register(sub, "quotas", _quotas, "quota usage against quota, per tenant and resource group")
    p.add_argument("--tenant", default="", help="only this tenant")


def _quotas(args: argparse.Namespace, client: Client) -> int:
    reply = client.quota_usage(args.tenant)
    if args.json:
        print_json(reply)
        return 0
    if not reply.usage:
        print(f"policy v{reply.policy_version} sets no quotas" + (f" for {args.tenant}" if args.tenant else ""))
        return 0

    def limit(q: pol.QuotaUsage, name: str) -> str:
        return str(getattr(q, name)) if q.HasField(name) else "-"

    print_table([[q.cohort, q.tenant, q.resource_group, q.used_gpus, q.nominal_gpus, q.borrowed_gpus,
                  limit(q, "borrowing_limit_gpus"), limit(q, "lending_limit_gpus"), q.borrowable_gpus,
                  q.headroom_gpus] for q in reply.usage],
                ["cohort", "tenant", "group", "used", "nominal", "borrowed", "borrow limit", "lend limit",
                 "borrowable", "headroom"])
    return 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from e



def _when(v: pol.PolicyVersion) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.apply_time.seconds))


def _summary(v: pol.PolicyVersion) -> str:
    back = f" (rollback to v{v.rollback_of})" if v.rollback_of else ""
    return f"policy v{v.version}{back}  sha256 {v.sha256[:12]}  by {v.applied_by or '-'} at {_when(v)} UTC: {v.reason}"


def _show(args: argparse.Namespace, client: Client) -> int:
    v = client.get_policy(args.version)
    if args.json:
        print_json(v)
    else:
        print(_summary(v))
        print(v.yaml, end="")
    return 0


def _history(args: argparse.Namespace, client: Client) -> int:
    versions = list(client.policy_versions())
    if args.json:
        print_json(pol.ListPolicyVersionsResponse(versions=versions))
        return 0
    print_table([[v.version, _when(v), v.applied_by or "-", v.sha256[:12], f"v{v.rollback_of}" if v.rollback_of else "",
             v.reason] for v in versions], ["version", "applied (UTC)", "by", "sha256", "rollback of", "reason"])
    return 0


def _validate(args: argparse.Namespace, client: Client) -> int:
    v = client.validate_policy(_read(args.file))
    if args.json:
        print_json(v)
    else:
        print(f"{args.file}: valid (sha256 {v.sha256[:12]}); as it would be stored:")
        print(v.yaml, end="")
    return 0


def _diff(args: argparse.Namespace, client: Client) -> int:
    d = client.diff_policy(_read(args.file), args.last_finished, args.max_jobs)
    if args.json:
        print_json(d)
        return 0
    print(f"against active v{d.active_version}; {d.jobs_considered} jobs re-decided (nothing reserved): "
          f"{d.moved_count} move, {d.became_placeable_count} become placeable, "
          f"{d.became_unplaceable_count} become unplaceable, {d.unchanged} unchanged")
    if d.policy_changes:
        print("\npolicy changes:")
        print_table([[c.field, c.before, c.after] for c in d.policy_changes], ["field", "active", "candidate"])
    if d.moved:
        print("\nwould move:")
        print_table([[m.job_id, m.tenant, _where(m.before), _where(m.after),
                 ", ".join(f"{t.term} {t.before:.3f}->{t.after:.3f}" for t in m.terms)] for m in d.moved],
               ["job", "tenant", "from", "to", "cost terms"])
    for title, changes in (("would become placeable", d.became_placeable),
                           ("would become unplaceable", d.became_unplaceable)):
        if changes:
            print(f"\n{title}:")
            print_table([[c.job_id, c.tenant, _where(c.placement), "; ".join(c.reasons)] for c in changes],
                   ["job", "tenant", "placement (the policy that can)", "why the other cannot"])
    if d.queue_shifts:
        print(f"\nqueue order (fair share): {d.queue_shift_count} waiting jobs change turn"
              + (f", first {len(d.queue_shifts)}:" if d.queue_shift_count > len(d.queue_shifts) else ":"))
        print_table([[q.job_id, q.tenant, q.priority, q.position_before, q.position_after,
                      f"{q.position_before - q.position_after:+d}"] for q in d.queue_shifts],
                    ["job", "tenant", "priority", "turn now", "turn under candidate", "earlier by"])
    for title, deltas in (("sites", d.sites), ("tenants", d.tenants)):
        if deltas:
            print(f"\n{title}:")
            print_table([[x.key, x.gpus_before, x.gpus_after, f"{x.gpus_after - x.gpus_before:+d}",
                     f"{x.power_kw_before:.1f}", f"{x.power_kw_after:.1f}"] for x in deltas],
                   ["key", "gpus before", "after", "delta", "power kW before", "after"])
    b, a = d.before, d.after
    print("\ntotals:")
    print_table([["jobs placed", b.jobs_placed, a.jobs_placed], ["GPUs", b.gpus, a.gpus],
            ["power kW", f"{b.power_kw:.1f}", f"{a.power_kw:.1f}"],
            ["carbon kg/h", f"{b.carbon_kg_per_hour:.1f}", f"{a.carbon_kg_per_hour:.1f}"],
            ["energy cost /h", f"{b.energy_cost_per_hour:.1f}", f"{a.energy_cost_per_hour:.1f}"],
            ["mean inference latency ms", f"{b.mean_inference_latency_ms:.2f}", f"{a.mean_inference_latency_ms:.2f}"]],
           ["", "before", "after"])
    return 0


def _apply(args: argparse.Namespace, client: Client) -> int:
    v = client.apply_policy(_read(args.file), args.reason, args.expected_version)
    print_json(v) if args.json else print(f"active: {_summary(v)}")
    return 0


def _rollback(args: argparse.Namespace, client: Client) -> int:
    v = client.rollback_policy(args.version, args.reason, args.expected_version)
    print_json(v) if args.json else print(f"active: {_summary(v)}")
    return 0


def _where(p: ppb.Placement) -> str:
    return ", ".join(f"{a.gpus} in {a.pool_id}" for a in p.assignments) or "-"


