"""A what-if run from live state: what the snapshot costs with N live jobs, side by side.

On the example grid (examples/grids/nscale.yaml), jobs from ``synthetic.job_stream`` are
submitted through the production ``Scheduler`` (in-memory ledger, untimed) until ``--jobs``
are running or pending. A real server (``start_server``, in this process, loopback, auth on)
then serves, and each path below is timed ``--repeat`` times (median and max reported):

- **read_live (in-process)**: the consistent read itself, no gRPC;
- **GetLiveSnapshot (platform admin)**: the RPC, every job as it is;
- **GetLiveSnapshot (planner)**: the RPC, every job anonymised (HMAC ids, aliased tenants and datasets);
- **ListJobs, running + pending (gRPC)**: the same jobs paged through the placement API (page 1,000),
  what a client would have to do without the snapshot (and it would not be one consistent read);
- **Health Check (gRPC, empty)**: the floor of a call on the same channel;
- **seed the simulator**: ``Simulator(load_from_live(...))``: the live ledger committed at time zero
  (reasons for every waiting job included).

    .venv/bin/python benchmarks/live_snapshot.py            # 10,000 live jobs
    .venv/bin/python benchmarks/live_snapshot.py --quick    # 500 live jobs, 3 repeats
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from grpc_health.v1 import health_pb2

from grid_scheduler.client import Client
from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.live_fetch import fetch_live
from grid_scheduler.logging import configure
from grid_scheduler.model import JobState, Policy
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.live import read_live
from grid_scheduler.service.auth.config import AuthConfig
from grid_scheduler.service.server import start_server
from grid_scheduler.synthetic import job_stream
from grid_scheduler.whatif.live import load_from_live
from grid_scheduler.whatif.simulator import Simulator

RESULTS = Path(__file__).resolve().parent / "results" / "live_snapshot.json"
TOKENS = {"ops": "bench-ops-token-0123456789", "plan": "bench-plan-token-0123456789"}
AUTH = {
    "principals": {"ops": {"roles": [{"role": "platform-admin"}]}, "plan": {"roles": [{"role": "planner"}]}},
    "tokens": [{"principal": p, "token": t} for p, t in TOKENS.items()],
    "rate": {"requests_per_s": 100_000, "burst": 100_000},
}
SCENARIO = {"name": "bench-live", "horizon_days": 1, "workload": {"generated": [  # seeding is what is timed
    {"name": "trickle", "kind": "training", "tenants": {"acme": 1}, "arrivals_per_day": 1, "gpus": {"min": 8, "max": 8},
     "duration_hours": {"min": 1, "max": 2}}]}}


def build(jobs: int, seed: int) -> tuple[Scheduler, dict[str, int]]:
    grid = load_grid(DEFAULT_GRID)
    s = Scheduler(grid, Policy())
    s.seed_policy("benchmark")
    counts = {"running": 0, "pending": 0, "rejected": 0}
    stream = iter(job_stream(grid, jobs * 4, seed))
    while counts["running"] + counts["pending"] < jobs:
        state = s.submit(next(stream)).record.state
        counts[{JobState.RUNNING: "running", JobState.PENDING: "pending"}.get(state, "rejected")] += 1
    return s, counts


def timed(repeat: int, run: Callable[[], Any]) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="running + pending jobs to build")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="500 jobs, 3 repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.repeat = 500, 3
    configure("WARNING")

    s, counts = build(args.jobs, args.seed)
    print(f"built {counts['running']:,} running + {counts['pending']:,} pending jobs on {DEFAULT_GRID.name}",
          file=sys.stderr)
    server = start_server(s, "127.0.0.1:0", max_workers=4, pending_retry_s=None, batch_interval_s=None,
                          retention_s=None, auth=AuthConfig.model_validate(AUTH))
    address = f"127.0.0.1:{server.port}"
    scenario = Path(tempfile.mkdtemp()) / "bench-live.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    rows: list[dict[str, Any]] = []

    def row(path: str, times: list[float], size_bytes: int | None = None) -> None:
        rows.append({"path": path, "runs": len(times), "median_ms": statistics.median(times) * 1e3,
                     "max_ms": max(times) * 1e3, "bytes": size_bytes})

    try:
        with Client(address, timeout_s=120, token=TOKENS["ops"]) as ops, \
                Client(address, timeout_s=120, token=TOKENS["plan"]) as plan:
            times, _ = timed(args.repeat, lambda: read_live(s))
            row("read_live (in-process)", times)
            times, snap = timed(args.repeat, ops.live_snapshot)
            row("GetLiveSnapshot (platform admin)", times, snap.ByteSize())
            times, snap = timed(args.repeat, plan.live_snapshot)
            row("GetLiveSnapshot (planner, all anonymised)", times, snap.ByteSize())
            states = (JobState.RUNNING, JobState.PENDING)
            times, jobs = timed(args.repeat, lambda: list(ops.list_jobs(states, page_size=1000)))
            row("ListJobs running + pending (gRPC, pages of 1,000)", times, sum(j.ByteSize() for j in jobs))
            check = health_pb2.HealthCheckRequest()
            times, _ = timed(args.repeat, lambda: ops.health.Check(check, timeout=10))
            row("Health Check (gRPC, empty)", times)
            live = fetch_live(plan, address)
            times, sim = timed(args.repeat, lambda: Simulator(load_from_live(scenario, live)))
            row("seed the simulator (Simulator(load_from_live))", times)
            assert sim.scheduler.store.snapshot().pool_used_gpus.tolist() == \
                s.store.snapshot().pool_used_gpus.tolist()
    finally:
        server.stop(grace_s=0.5)

    print(f"\n{counts['running']:,} running + {counts['pending']:,} pending jobs, {DEFAULT_GRID.name}, "
          f"{args.repeat} runs each, load average {os.getloadavg()[0]:.2f}\n")
    print("| path | median ms | max ms | bytes |\n|---|--:|--:|--:|")
    for r in rows:
        size = f"{r['bytes']:,}" if r["bytes"] is not None else ""
        print(f"| {r['path']} | {r['median_ms']:,.1f} | {r['max_ms']:,.1f} | {size} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
        "jobs": counts, "repeat": args.repeat, "rows": rows, "loadavg": os.getloadavg(),
    }, indent=2))
    print(f"\nJSON: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
