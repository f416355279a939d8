"""A long-running scheduler's memory stays flat: RSS after N submit/complete cycles.

Each cycle submits an 8-GPU training job (the example grid, the in-memory store, the real
``Scheduler``) and completes it, as a busy grid would; every 1,000 cycles the server's archive
step runs (``Scheduler.archive_finished``, here with a retention of 0 s so the run is short: a
server does the same with its ``--retention-days``). The process's resident set size is read
from /proc at each checkpoint, after a ``gc.collect()``. A second column runs the same loop with
archiving off, which is what the server did before: every finished job stays.

The event log is bounded too (the stores keep the newest ``MAX_EVENTS`` events), so memory
grows until that window is full and is flat after it: both are reported.

    .venv/bin/python benchmarks/memory_retention.py                  # 200k cycles, ~6 min
    .venv/bin/python benchmarks/memory_retention.py --quick          # 40k cycles
    .venv/bin/python benchmarks/memory_retention.py --out results/memory_retention.json
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.gc_tuning import settle_heap
from grid_scheduler.logging import configure
from grid_scheduler.model import JobSpec
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.state import memory as memory_store

SPEC = JobSpec.model_validate({"name": "m", "tenant": "acme", "kind": "training", "gpus": {"count": 8}})


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run(cycles: int, checkpoints: list[int], archive: bool, out: mp.Queue, settle: bool = False) -> None:  # type: ignore[type-arg]
    configure("warning")
    scheduler = Scheduler(load_grid(DEFAULT_GRID))
    if settle:
        settle_heap()
    rows = []
    started = time.perf_counter()
    for i in range(1, cycles + 1):
        job = scheduler.submit(SPEC).record
        scheduler.complete(job.id)
        if archive and i % 1000 == 0:
            scheduler.archive_finished(retention_s=0.0)
        if i in checkpoints:
            if not settle:  # settled, the run reads RSS as a server would have it: no forced collection
                gc.collect()
            rows.append({"cycles": i, "rss_mib": round(rss_mib(), 1), "jobs_kept": len(scheduler.store.list_jobs(
                frozenset(), "", 10**9)), "elapsed_s": round(time.perf_counter() - started, 1)})
    out.put(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="40k cycles")
    parser.add_argument("--settled-heap", action="store_true",
                        help="gc_tuning.settle_heap after loading, as serve: frozen start-up state, raised thresholds")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cycles = 40_000 if args.quick else args.cycles
    checkpoints = sorted({c for c in (cycles // 10, cycles // 4, cycles // 2, cycles) if c > 0})
    results = {}
    ctx = mp.get_context("spawn")
    for archive in (True, False):
        queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        # A fresh process per mode, so one mode's heap never inflates the other's RSS.
        proc = ctx.Process(target=run, args=(cycles, checkpoints, archive, queue, args.settled_heap))
        proc.start()
        results["archive" if archive else "no_archive"] = queue.get()
        proc.join()
    collector = "settle_heap() after loading" if args.settled_heap else "CPython's default collector"
    print(f"memory after N submit/complete cycles (in-memory store, MAX_EVENTS={memory_store.MAX_EVENTS}, "
          f"{collector}):")
    print("| cycles | RSS MiB, archiving | jobs kept | RSS MiB, no archiving | jobs kept |")
    print("|---:|---:|---:|---:|---:|")
    for a, b in zip(results["archive"], results["no_archive"], strict=True):
        print(f"| {a['cycles']:,} | {a['rss_mib']} | {a['jobs_kept']:,} | {b['rss_mib']} | {b['jobs_kept']:,} |")
    first, last = results["archive"][0], results["archive"][-1]
    growth = last["rss_mib"] / first["rss_mib"] - 1.0
    print(f"archiving: RSS at {last['cycles']:,} cycles is {100 * growth:+.1f} % of RSS at {first['cycles']:,}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "benchmark": "memory_retention", "python": sys.version.split()[0], "machine": platform.machine(),
            "cpus": os.cpu_count(), "cycles": cycles,
            "settled_heap": args.settled_heap, "max_events": memory_store.MAX_EVENTS, "results": results,
            "growth_first_to_last": growth,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
