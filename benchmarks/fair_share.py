"""Fair share: who gets served in a contended case, with fair share off and on, side by side.

The case (examples/grids/small.yaml, one priority tier): tenant ``hyperscale`` already runs work
on about half of the fleet's training GPUs and, having submitted first, heads the queue with a
backlog; three other tenants (``acme-ai``, ``research-lab``, ``eu-bank`` with weight 2 under
examples/policies/fairshare.yaml) queue theirs after it. The backlog is about twice the free
capacity. The same state is served three ways, each from a fresh copy:

- **queue pass** (``Scheduler.place_pending``, what a completion or the periodic retry runs);
- **batch cycle** (``Scheduler.optimize_pending``: CP-SAT, then the commit);
- **what-if**: examples/scenarios/tenants-contended.yaml replayed under each policy.

For the first two it prints per tenant: entitlement, dominant share before, share after with
fair share off and on, GPUs placed; and the GPU-hours placed in all (fair share chooses among
answers of equal GPU-hours in the batch: the total should not drop). For the what-if: per-tenant
GPU-hours and p95 queue delay under each policy.

    .venv/bin/python benchmarks/fair_share.py            # 60 waiting jobs per tenant (~1 min)
    .venv/bin/python benchmarks/fair_share.py --quick    # 15 per tenant, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from grid_scheduler.config import EXAMPLES_DIR, load_grid, load_policy
from grid_scheduler.engine.fairshare import fair_shares
from grid_scheduler.engine.priority import job_value
from grid_scheduler.model import EventType, Grid, JobRecord, JobSpec, JobState, Policy
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.state import Transition
from grid_scheduler.whatif.scenario import load_scenario
from grid_scheduler.whatif.simulator import quiet_logs, simulate
from grid_scheduler.whatif.tenants import tenant_outcomes

RESULTS = Path(__file__).resolve().parent / "results" / "fair_share.json"
TENANTS = ["hyperscale", "acme-ai", "research-lab", "eu-bank"]


def _spec(name: str, tenant: str, gpus: int, hours: float) -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": tenant, "kind": "training", "gpus": {"count": gpus, "types": ["GB300", "H100"]},
        "training": {"duration_hours": hours}, "priority": 50,
    })


def contended(grid: Grid, policy: Policy, per_tenant: int, seed: int) -> Scheduler:
    """The state of the module doc, the same for every policy (job ids and times from ``seed``)."""
    rng = random.Random(seed)
    clock = [1000.0]
    ids = (f"job-{i:05d}" for i in range(10**6))
    s = Scheduler(grid, policy, None, clock=lambda: clock[0], quiet=True, job_ids=lambda: next(ids))
    total = int(s.index.pool_healthy_gpus.sum())
    while sum(r.placement.gpus for r in s.store.running_jobs() if r.placement) < 0.45 * total:
        outcome = s.submit(_spec("run", "hyperscale", 64, 48.0))
        clock[0] += 1.0
        if outcome.record.state is not JobState.RUNNING:
            s.cancel(outcome.record.id)
            break
    n = 0
    for tenant in TENANTS:  # hyperscale's backlog first: it heads the queue by submission time
        for _ in range(per_tenant):
            n += 1
            spec = _spec(f"w{n}", tenant, rng.choice([16, 32, 64]), rng.choice([4.0, 8.0, 12.0]))
            record = JobRecord(id=f"wait-{n:05d}", spec=spec, state=JobState.PENDING, created_at=clock[0],
                               updated_at=clock[0])
            s.store.create_job(Transition(record, EventType.PENDING))
            clock[0] += 1.0
    return s


def shares(s: Scheduler, policy: Policy) -> dict[str, float]:
    return {t.tenant: t.share for t in fair_shares(s.index, policy, s.store.running_jobs(), s.store.pending_jobs())}


def serve(grid: Grid, policy: Policy, fair: Policy, how: str, per_tenant: int, seed: int,
          time_limit_s: float) -> dict[str, Any]:
    s = contended(grid, policy, per_tenant, seed)
    before = shares(s, fair)
    started = time.perf_counter()
    placed: list[JobRecord] = (s.place_pending() if how == "queue pass" else
                               s.optimize_pending(time_limit_s=time_limit_s, workers=2).committed)
    wall_s = time.perf_counter() - started
    gpus = {t: sum(r.spec.total_gpus for r in placed if r.spec.tenant == t) for t in TENANTS}
    return {"before": before, "after": shares(s, fair), "gpus_placed": gpus, "jobs_placed": len(placed),
            "gpu_hours_placed": sum(job_value(r.spec) for r in placed) / 4.0, "wall_s": wall_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 waiting jobs per tenant")
    parser.add_argument("--per-tenant", type=int, default=60, help="waiting jobs per tenant")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=5.0, help="batch solver time limit, s")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    per_tenant = 15 if args.quick else args.per_tenant
    grid = load_grid(EXAMPLES_DIR / "grids" / "small.yaml")
    off = load_policy(EXAMPLES_DIR / "policies" / "default.yaml")
    on = load_policy(EXAMPLES_DIR / "policies" / "fairshare.yaml")
    state = contended(grid, on, per_tenant, args.seed)
    entitled = {t.tenant: t.entitlement for t in fair_shares(state.index, on, [], state.store.pending_jobs())}
    results: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "per_tenant": per_tenant}
    print(f"small grid, one tier, {per_tenant} waiting jobs per tenant; share = dominant share of the fleet "
          "(GPUs, facility power)\n")
    for how in ("queue pass", "batch cycle"):
        runs = {name: serve(grid, p, on, how, per_tenant, args.seed, args.time_limit)
                for name, p in (("off", off), ("on", on))}
        results[how] = runs
        print(f"## {how}")
        print("| tenant | entitlement | share before | share after, off | share after, on | GPUs placed off | "
              "GPUs placed on |\n|---|--:|--:|--:|--:|--:|--:|")
        for t in TENANTS:
            print(f"| {t} | {entitled[t]:.1%} | {runs['off']['before'].get(t, 0):.1%} | "
                  f"{runs['off']['after'].get(t, 0):.1%} | {runs['on']['after'].get(t, 0):.1%} | "
                  f"{runs['off']['gpus_placed'][t]:,} | {runs['on']['gpus_placed'][t]:,} |")
        print(f"| all: jobs placed | | | {runs['off']['jobs_placed']} | {runs['on']['jobs_placed']} | | |")
        print(f"| all: GPU-hours placed | | | {runs['off']['gpu_hours_placed']:,.0f} | "
              f"{runs['on']['gpu_hours_placed']:,.0f} | | |")
        print(f"| wall time, s | | | {runs['off']['wall_s']:.2f} | {runs['on']['wall_s']:.2f} | | |\n")

    quiet_logs(cache=True)
    scenario = load_scenario(EXAMPLES_DIR / "scenarios" / "tenants-contended.yaml")
    whatif = {}
    for name, policy in (("off", off), ("on", on)):
        result = simulate(replace(scenario, policy=policy))
        whatif[name] = tenant_outcomes(result.jobs, result.horizon_s, policy)
    results["whatif"] = whatif
    print("## what-if: examples/scenarios/tenants-contended.yaml (5 days), default.yaml vs fairshare.yaml")
    print("| tenant | entitlement on | GPU-h off | GPU-h on | share off | share on | p95 delay h off | "
          "p95 delay h on | never started off | never started on |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for t in TENANTS:
        a, b = whatif["off"][t], whatif["on"][t]
        print(f"| {t} | {b['entitlement']:.1%} | {a['gpu_hours']:,.0f} | {b['gpu_hours']:,.0f} | {a['share']:.1%} | "
              f"{b['share']:.1%} | {a['queue_delay_p95_h']:.1f} | {b['queue_delay_p95_h']:.1f} | "
              f"{a['never_started']:.0f} | {b['never_started']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
