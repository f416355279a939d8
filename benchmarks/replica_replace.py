"""A failed node under one replica of an inference deployment: re-place that replica, or re-queue the job.

Side by side on the same deployments (issue 11, "health drives capacity"):

- **replace** (as shipped): ``fleet.apply_node_health`` after the heartbeat that reports the node
  failed; an inference job with replicas elsewhere re-places only the lost one
  (scheduler/replicas.py) and falls back to re-queuing;
- **re-queue** (as before): the job on the failed node is sent back to the queue whole
  (``fleet.requeue_failed``) and the same ``apply_node_health`` then takes the node out and runs the
  queue pass, which places it again.

Deployments: the inference jobs of ``synthetic.job_stream`` with 2 or more replicas, submitted one by
one to ``Scheduler`` on the memory ledger; each one placed on 2 or more assignments then loses the
first node of one assignment (the i-th job, its i mod n-th assignment). Failed nodes accumulate.
Reported per mode: deployments running after, deployments with every endpoint within the SLO after,
the replicas in the assignment that held the failed node (the unit re-placed), replicas restarted
(GPUs whose assignment changed / GPUs per replica; every replica when the job was re-queued, since
its new run restarts them all), attempts added, and the time to handle the failure (the heartbeat's
``apply_node_health``, plus the re-queue call in re-queue mode).

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
from pathlib import Path
from typing import Any

import numpy as np

from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import Grid, JobKind, JobRecord, JobState
from grid_scheduler.model.node_names import default_node_name
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.state.agents import NodeCondition, NodeHealth
from grid_scheduler.synthetic import job_stream, synthetic_grid

MODES = ("replace", "re-queue")


def _within_slo(record: JobRecord) -> bool:
    if record.placement is None or record.spec.inference is None:
        return False
    slo = record.spec.inference.latency_slo_ms
    return all(e.latency_ms <= slo for e in record.placement.endpoint_latencies)


def run(grid: Grid, mode: str, count: int, seed: int) -> dict[str, Any]:
    specs = [j for j in job_stream(grid, count * 8, seed=seed, inference_share=1.0)
             if j.kind is JobKind.INFERENCE and j.inference is not None and j.inference.replicas >= 2][:count]
    ids = iter(range(10**9))
    s = Scheduler(grid, quiet=True, job_ids=lambda: f"job-{next(ids):08d}")
    failed: dict[str, list[NodeCondition]] = {}
    times_ms: list[float] = []
    stats: Counter[str] = Counter()
    for i, spec in enumerate(specs):
        before = s.submit(spec).record
        if before.state is not JobState.RUNNING or before.placement is None or len(before.placement.assignments) < 2:
            stats["not placed on 2+ assignments"] += 1
            continue
        a = before.placement.assignments[i % len(before.placement.assignments)]
        node = a.nodes[0][0]
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
        stats["failures"] += 1
        if after.state is JobState.RUNNING and after.placement is not None:
            stats["running after"] += 1
            stats["within SLO after"] += _within_slo(after)
        stats["replicas in the hit assignment"] += a.gpus // spec.gpus.count
        if after.attempts != before.attempts:  # a new run: the agents restart every replica
            stats["replicas restarted"] += before.placement.gpus // spec.gpus.count
        elif after.placement is not None:
            kept = Counter(x.model_dump_json() for x in before.placement.assignments)
            kept &= Counter(x.model_dump_json() for x in after.placement.assignments)
            moved_gpus = before.placement.gpus - sum(json.loads(k)["gpus"] * n for k, n in kept.items())
            stats["replicas restarted"] += moved_gpus // spec.gpus.count
        stats["attempts added"] += after.attempts - before.attempts
    t = np.array(times_ms) if times_ms else np.zeros(1)
    return {"mode": mode, **stats, "handle p50 ms": float(np.percentile(t, 50)),
            "handle p99 ms": float(np.percentile(t, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--count", type=int, default=0, help="deployments per grid (default 300; 40 with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "replica_replace.json")
    args = ap.parse_args()
    configure("warning")
    count = args.count or (40 if args.quick else 300)
    grids = [("nscale", load_grid(DEFAULT_GRID))]
    if not args.quick:
        grids.append(("synthetic-200", synthetic_grid(sites=200, pools=800, gpus_target=100_000, seed=args.seed)))
    cols = ["failures", "running after", "within SLO after", "replicas in the hit assignment", "replicas restarted",
            "attempts added",
            "handle p50 ms", "handle p99 ms"]
    rows = []
    print("| grid | mode | " + " | ".join(cols) + " |")
    print("|---|---|" + "--:|" * len(cols))
    for name, grid in grids:
        for mode in MODES:
            row = {"grid": name, **run(grid, mode, count, args.seed)}
            rows.append(row)
            cells = [f"{row.get(c, 0):.2f}" if c.endswith("ms") else str(row.get(c, 0)) for c in cols]
            print(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"when": dt.datetime.now(dt.UTC).isoformat(), "python": platform.python_version(),
                                    "count": count, "seed": args.seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
