"""DiffPolicy on live state: how long the dry run of a candidate policy takes with N live jobs.

On the example grid (examples/grids/nscale.yaml), jobs from ``synthetic.job_stream`` are
submitted through the production ``Scheduler`` (in-memory ledger, untimed) until ``--jobs``
are running or pending (rejected ones do not count). Then ``Scheduler.diff_policy`` is timed for
a few candidate policies, each against the built-in one, cold (its decision caches are per call);
wall-clock and CPU seconds are both reported (on a shared machine the CPU time is the steadier figure).
Target: 10,000 live jobs answered in <= 5 s.

    .venv/bin/python benchmarks/policy_diff.py              # 10,000 live jobs
    .venv/bin/python benchmarks/policy_diff.py --quick      # 1,000 live jobs, one run per candidate
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import JobState, Policy, Weights
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.synthetic import job_stream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write

RESULTS = Path(__file__).resolve().parent / "results" / "policy_diff.json"
TARGET_S = 5.0

CANDIDATES: dict[str, Policy] = {
    "carbon x10": Policy(weights=Weights(carbon=5.0)),
    "latency only": Policy(weights=Weights(latency=1.0, carbon=0, energy_price=0, packing=0, data_movement=0)),
    "eu-bank EU-only": Policy(tenant_residency={"eu-bank": {"allowed": ["EU"]}}),
}


def build(jobs: int, seed: int) -> tuple[Scheduler, dict[str, int], float]:
    grid = load_grid(DEFAULT_GRID)
    s = Scheduler(grid, Policy())
    s.seed_policy("benchmark")
    counts = {"running": 0, "pending": 0, "rejected": 0}
    start = time.perf_counter()
    stream = iter(job_stream(grid, jobs * 4, seed))
    while counts["running"] + counts["pending"] < jobs:
        state = s.submit(next(stream)).record.state
        counts[{JobState.RUNNING: "running", JobState.PENDING: "pending"}.get(state, "rejected")] += 1
    return s, counts, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="running + pending jobs to build")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per candidate (median reported)")
    parser.add_argument("--quick", action="store_true", help="1,000 live jobs, one timed run per candidate")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.repeat = 1_000, 1
    configure("WARNING")
    load_at_start, began = os.getloadavg(), time.perf_counter()

    s, counts, build_s = build(args.jobs, args.seed)
    print(f"built {counts['running']:,} running + {counts['pending']:,} pending jobs "
          f"({counts['rejected']:,} rejected) on {DEFAULT_GRID.name} in {build_s:.1f} s", file=sys.stderr)
    version_before = s.store.versions()
    rows: list[dict[str, Any]] = []
    for name, candidate in CANDIDATES.items():
        times, cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            diff, _ = s.diff_policy(candidate)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        rows.append({
            "candidate": name, "jobs": diff.jobs_considered, "median_s": statistics.median(times),
            "max_s": max(times), "cpu_s": statistics.median(cpu), "moved": len(diff.moved),
            "placeable": len(diff.became_placeable),
            "unplaceable": len(diff.became_unplaceable), "sites_changed": len(diff.sites),
            "carbon_kg_h_before": diff.before.carbon_kg_per_hour, "carbon_kg_h_after": diff.after.carbon_kg_per_hour,
        })
    assert s.store.versions() == version_before, "a dry run changed the ledger"

    print(f"\nDiffPolicy on {DEFAULT_GRID.name}, {counts['running'] + counts['pending']:,} live jobs "
          f"(target <= {TARGET_S:.0f} s)\n")
    print("| candidate | jobs | median s | max s | CPU s | moved | placeable | unplaceable | sites changed "
          "| carbon kg/h before -> after |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['candidate']} | {r['jobs']:,} | {r['median_s']:.2f} | {r['max_s']:.2f} | {r['cpu_s']:.2f} "
              f"| {r['moved']:,} "
              f"| {r['placeable']:,} | {r['unplaceable']:,} | {r['sites_changed']} "
              f"| {r['carbon_kg_h_before']:,.0f} -> {r['carbon_kg_h_after']:,.0f} |")
    report = {
        "benchmark": "policy_diff", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(load_at_start), "seconds": round(time.perf_counter() - began, 1),
        "grid": DEFAULT_GRID.name, "seed": args.seed, "live": counts, "build_s": build_s,
        "target_s": TARGET_S, "rows": rows,
        "meets_target": all(r["median_s"] <= TARGET_S for r in rows),
    }
    write(args.out, report, load_at_start)


if __name__ == "__main__":
    main()
