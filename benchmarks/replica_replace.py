"""A failed node or a lost site under inference replicas: re-place the lost replicas, or re-queue the job.

Side by side on the same deployments (issue 11, "health drives capacity" and "site loss"):

- **replace** (as shipped): a node failure is ``fleet.apply_node_health`` after the heartbeat that
  reports the node failed; a site loss is ``fleet.requeue_site`` (the live server's LOST transition
  and the what-if ``site_failure``). An inference job with replicas elsewhere re-places only the
  lost ones (scheduler/replicas.py): for a node, the replicas on it (each replica sits on one node
  when they fit so, engine/topology.py ``assign_replica_nodes``); for a site, its assignments there.
  Either falls back to re-queuing;
- **re-queue** (as before): every job hit is sent back to the queue whole (``fleet.requeue_failed``)
  and the queue pass places it again.

Deployments: the inference jobs of ``synthetic.job_stream`` with 2 or more replicas, submitted one by
one to ``Scheduler`` on the memory ledger.

- *node failure*: each one placed on 2 or more assignments, or on 2 or more nodes of one, then loses
  one of its nodes (the i-th job: its i mod n-th assignment, that one's i mod m-th node). Failed
  nodes accumulate.
- *site loss*: all submitted; then one of the sites holding replicas of the most deployments is
  lost (its pools out of service, as a silent site's are, then the transition and the queue pass);
  each site's loss starts again from the same ledger, so both modes hit the same jobs.

Reported per event and mode: jobs hit, jobs running after, with every endpoint within the SLO after,
the replicas in the assignments hit (what moved before node-level re-placement: an assignment
holds all of a deployment's replicas in one pool), the replicas lost (on the failed node, or at
the lost site), replicas restarted (GPUs no longer on
the same node of the same pool, over GPUs per replica; every replica when the job was re-queued,
since its new run restarts them all), attempts added, and the time to handle one event.

    .venv/bin/python benchmarks/replica_replace.py            # 300 deployments per grid
    .venv/bin/python benchmarks/replica_replace.py --quick    # 40, nscale only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import Assignment, Grid, JobKind, JobRecord, JobSpec, JobState
from grid_scheduler.model.node_names import default_node_name
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.scheduler.replicas import replica_nodes
from grid_scheduler.state.agents import NodeCondition, NodeHealth
from grid_scheduler.synthetic import job_stream, synthetic_grid

MODES = ("replace", "re-queue")
EVENTS = ("node failure", "site loss")


def _within_slo(record: JobRecord) -> bool:
    if record.placement is None or record.spec.inference is None:
        return False
    slo = record.spec.inference.latency_slo_ms
    return all(e.latency_ms <= slo for e in record.placement.endpoint_latencies)


def _deployments(grid: Grid, count: int, seed: int) -> list[JobSpec]:
    return [j for j in job_stream(grid, count * 8, seed=seed, inference_share=1.0)
            if j.kind is JobKind.INFERENCE and j.inference is not None and j.inference.replicas >= 2][:count]


def _scheduler(grid: Grid) -> Scheduler:
    ids = iter(range(10**9))
    return Scheduler(grid, quiet=True, job_ids=lambda: f"job-{next(ids):08d}")


def _shares(assignments: list[Assignment]) -> Counter[tuple[str, int, int]]:
    """GPUs per (pool, node); a share without node detail counts as node -1."""
    out: Counter[tuple[str, int, int]] = Counter()
    for a in assignments:
        for node, gpus in (a.nodes or ((-1, a.gpus),)):
            out[(a.pool_id, node, gpus)] += 1
    return out


def _restarted(before: JobRecord, after: JobRecord) -> int:
    """Replicas restarted: every one after a new attempt, else the GPUs not on the same node as before."""
    assert before.placement is not None
    per_replica = before.spec.gpus.count
    if after.attempts != before.attempts or after.placement is None:
        return before.placement.gpus // per_replica
    kept = _shares(list(before.placement.assignments)) & _shares(list(after.placement.assignments))
    kept_gpus = sum(gpus * n for (_, _, gpus), n in kept.items())
    return -(-(before.placement.gpus - kept_gpus) // per_replica)


def _tally(stats: Counter[str], before: JobRecord, after: JobRecord, lost: int, in_hit: int) -> None:
    stats["jobs hit"] += 1
    stats["replicas in hit assignments"] += in_hit
    if after.state is JobState.RUNNING and after.placement is not None:
        stats["running after"] += 1
        stats["within SLO after"] += _within_slo(after)
    stats["replicas lost"] += lost
    stats["replicas restarted"] += _restarted(before, after)
    stats["attempts added"] += after.attempts - before.attempts


def run_node_failures(grid: Grid, mode: str, count: int, seed: int) -> tuple[Counter[str], list[float]]:
    s = _scheduler(grid)
    failed: dict[str, list[NodeCondition]] = {}
    times_ms: list[float] = []
    stats: Counter[str] = Counter()
    for i, spec in enumerate(_deployments(grid, count, seed)):
        before = s.submit(spec).record
        if before.state is not JobState.RUNNING or before.placement is None or (
                len(before.placement.assignments) < 2 and len(before.placement.assignments[0].nodes) < 2):
            stats["not on 2+ assignments or nodes"] += 1
            continue
        a = before.placement.assignments[i % len(before.placement.assignments)]
        node = a.nodes[i % len(a.nodes)][0]
        if s.store.site_agent(a.site_id) is None:
            s.store.register_agent(a.site_id, "bench", {}, s.now())
        failed.setdefault(a.site_id, []).append(
            NodeCondition(a.pool_id, default_node_name(a.pool_id, node), NodeHealth.FAILED, "XID 79"))
        s.store.agent_heartbeat(a.site_id, "bench", failed[a.site_id], s.now())
        start = time.perf_counter()
        if mode == "re-queue":
            fleet.requeue_failed(s, before.id, a.site_id, "node failed", retry_queue=False)
        fleet.apply_node_health(s, a.site_id)
        times_ms.append((time.perf_counter() - start) * 1000.0)
        after = s.store.get_job(before.id)
        assert after is not None
        lost = sum(1 for r in replica_nodes(a, spec.gpus.count) if any(n == node for n, _ in r))
        _tally(stats, before, after, lost, a.gpus // spec.gpus.count)
    return stats, times_ms


def _submitted(grid: Grid, specs: list[JobSpec]) -> Scheduler:
    s = _scheduler(grid)
    for spec in specs:
        s.submit(spec)
    return s


def run_site_losses(grid: Grid, mode: str, count: int, seed: int, losses: int) -> tuple[Counter[str], list[float]]:
    specs = _deployments(grid, count, seed)
    holders: Counter[str] = Counter()
    for record in _submitted(grid, specs).store.running_jobs():
        assert record.placement is not None
        holders.update(set(record.placement.site_ids))
    times_ms: list[float] = []
    stats: Counter[str] = Counter()
    for site_id, _ in holders.most_common(losses):
        s = _submitted(grid, specs)  # each loss from the same ledger: the same jobs are hit in both modes
        hit = {r.id: r for r in s.store.running_jobs() if fleet.runs_at(r, site_id)}
        start = time.perf_counter()
        for pool in s.grid.site_by_id[site_id].pools:  # a silent site's pools take no work
            s.store.set_pool_down(pool.id, pool.healthy_gpus)
        why = fleet.site_lost_why(site_id, "benchmark")
        if mode == "replace":
            fleet.requeue_site(s, site_id, why)
        else:
            for job_id in hit:
                fleet.requeue_failed(s, job_id, site_id, why, retry_queue=False)
        s.place_pending()
        times_ms.append((time.perf_counter() - start) * 1000.0)
        for before in hit.values():
            after = s.store.get_job(before.id)
            assert after is not None and before.placement is not None
            lost = sum(a.gpus for a in before.placement.assignments if a.site_id == site_id) // before.spec.gpus.count
            _tally(stats, before, after, lost, lost)
    return stats, times_ms


def run(grid: Grid, event: str, mode: str, count: int, seed: int, losses: int) -> dict[str, Any]:
    runner: Callable[[], tuple[Counter[str], list[float]]] = (
        (lambda: run_node_failures(grid, mode, count, seed)) if event == "node failure"
        else (lambda: run_site_losses(grid, mode, count, seed, losses)))
    stats, times_ms = runner()
    t = np.array(times_ms) if times_ms else np.zeros(1)
    return {"event": event, "mode": mode, "events": len(times_ms), **stats,
            "handle p50 ms": float(np.percentile(t, 50)), "handle p99 ms": float(np.percentile(t, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--count", type=int, default=0, help="deployments per grid (default 300; 40 with --quick)")
    ap.add_argument("--losses", type=int, default=0, help="sites lost per grid (default 5; 3 with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "replica_replace.json")
    args = ap.parse_args()
    configure("warning")
    count = args.count or (40 if args.quick else 300)
    losses = args.losses or (3 if args.quick else 5)
    grids = [("nscale", load_grid(DEFAULT_GRID))]
    if not args.quick:
        grids.append(("synthetic-200", synthetic_grid(sites=200, pools=800, gpus_target=100_000, seed=args.seed)))
    cols = ["events", "jobs hit", "running after", "within SLO after", "replicas in hit assignments", "replicas lost",
            "replicas restarted", "attempts added", "handle p50 ms", "handle p99 ms"]
    rows = []
    print("| grid | event | mode | " + " | ".join(cols) + " |")
    print("|---|---|---|" + "--:|" * len(cols))
    for name, grid in grids:
        for event in EVENTS:
            for mode in MODES:
                row = {"grid": name, **run(grid, event, mode, count, args.seed, losses)}
                rows.append(row)
                cells = [f"{row.get(c, 0):.2f}" if c.endswith("ms") else str(row.get(c, 0)) for c in cols]
                print(f"| {name} | {event} | {mode} | " + " | ".join(cells) + " |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"when": dt.datetime.now(dt.UTC).isoformat(), "python": platform.python_version(),
                                    "count": count, "losses": losses, "seed": args.seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
