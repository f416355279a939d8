"""Submissions on a filling grid with preemptible work: what a submission costs as the queue deepens.

On the example grid (examples/grids/nscale.yaml), ``synthetic.job_stream(grid, seed=1)`` is
submitted through the production ``Scheduler`` (in-memory ledger), one job after another, until
``--live`` jobs run or wait: the state ``policy_diff.py`` builds. The grid fills with preemptible
work, so a higher-tier submission evicts, and each eviction runs a full queue pass that plans
preemption for every waiting job (scheduler/queue.py, scheduler/preempt.py). At each mark it prints
the process CPU so far, the CPU of the submissions since the last mark, the dearest single
submission and the jobs waiting. CPU time, not wall time: the machine is shared.

    .venv/bin/python benchmarks/preempting_queue.py --quick   # marks at 500 and 1,000 live jobs
    .venv/bin/python benchmarks/preempting_queue.py           # up to 2,000 (~2 min at load ~1)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import JobState, Policy
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.synthetic import job_stream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write

RESULTS = Path(__file__).resolve().parent / "results" / "preempting_queue.json"


def run(marks: list[int], seed: int) -> list[dict[str, Any]]:
    grid = load_grid(DEFAULT_GRID)
    s = Scheduler(grid, Policy())
    stream = iter(job_stream(grid, 40 * max(marks), seed))
    rows: list[dict[str, Any]] = []
    live = submitted = 0
    began = last = time.process_time()
    worst_s = 0.0
    for mark in sorted(marks):
        while live < mark:
            t0 = time.process_time()
            state = s.submit(next(stream)).record.state
            worst_s = max(worst_s, time.process_time() - t0)
            submitted += 1
            live += state in (JobState.RUNNING, JobState.PENDING)
        now = time.process_time()
        rows.append({"live": live, "submitted": submitted, "waiting": len(s.store.pending_jobs()),
                     "cpu_s": round(now - began, 2), "cpu_s_since_last_mark": round(now - last, 2),
                     "worst_submission_ms": round(worst_s * 1e3, 1)})
        last = now
        print(f"  {live:,} live: {rows[-1]['cpu_s']} s CPU", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--marks", default="1000,1500,2000", help="comma-separated counts of live jobs")
    parser.add_argument("--quick", action="store_true", help="marks at 500 and 1,000 live jobs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure("WARNING")
    marks = [500, 1000] if args.quick else [int(m) for m in args.marks.split(",") if m]
    load_at_start, began = os.getloadavg(), time.perf_counter()
    rows = run(marks, args.seed)
    print(f"\nSubmissions on {DEFAULT_GRID.name}, synthetic.job_stream(seed={args.seed}), in-memory Scheduler\n")
    print("| live jobs | submitted | waiting | CPU s so far | CPU s since last mark | dearest submission ms |")
    print("|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['live']:,} | {r['submitted']:,} | {r['waiting']:,} | {r['cpu_s']:.1f} "
              f"| {r['cpu_s_since_last_mark']:.1f} | {r['worst_submission_ms']:,.0f} |")
    report = {"benchmark": "preempting_queue", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": machine(load_at_start), "seconds": round(time.perf_counter() - began, 1),
              "grid": DEFAULT_GRID.name, "seed": args.seed, "rows": rows}
    write(args.out, report, load_at_start)


if __name__ == "__main__":
    main()
