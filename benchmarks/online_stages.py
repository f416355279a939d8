"""Where one SubmitJob's microseconds go, stage by stage, on the online_placement job stream.

For each job of ``synthetic.job_stream`` (the stream ``online_placement.py`` submits) on the
ledger as it stands, the pure stages are timed ``--repeat`` times on the same input and the least
is kept (a shared, loaded machine inflates single timings; the least is the stage's own cost):

- service: ``parse_spec`` (proto -> JobSpec), ``new_placed`` (the JobRecord), ``job_to_pb`` (the reply's Job);
- engine: ``compute_checks``, ``pool_costs``, ``decide`` (split by job kind);
- the ledger: ``NodeView.updated`` (the node view brought forward by one commit's pools).

Then the job is submitted through ``PlacementServicer.SubmitJob`` called directly (no gRPC,
the principal bound as the interceptor would), timed once, so the ledger moves on as on a
server (``handler`` row; its CPU time too, which a loaded machine inflates less).
The oldest job is cancelled (untimed) once more than ``--window`` are live, as in online_placement.

    .venv/bin/python benchmarks/online_stages.py            # 1,000 jobs at synthetic-500 and nscale
    .venv/bin/python benchmarks/online_stages.py --quick    # 150 jobs
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from report import machine as report_machine
from report import write as write_report

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.engine import decide
from grid_scheduler.engine.feasibility import compute_checks
from grid_scheduler.engine.scoring import pool_costs
from grid_scheduler.gc_tuning import settle_heap
from grid_scheduler.logging import configure
from grid_scheduler.model import Grid
from grid_scheduler.scheduler import Scheduler, WrongState, transitions
from grid_scheduler.service.auth.principal import ANONYMOUS, bind
from grid_scheduler.service.convert import job_to_pb, spec_to_pb
from grid_scheduler.service.placement import PlacementServicer, parse_spec
from grid_scheduler.synthetic import job_stream, synthetic_grid

RESULTS = Path(__file__).resolve().parent / "results" / "online_stages.json"
STAGES = ("parse_spec", "new_placed (JobRecord)", "job_to_pb", "compute_checks", "pool_costs",
          "decide (inference)", "decide (training)", "NodeView.updated", "handler (wall, once)",
          "handler (CPU, once)")


class _Context:
    """What the handler reads of a grpc.ServicerContext when it refuses a call."""

    def abort_with_status(self, status: grpc.Status) -> None:
        raise RuntimeError(status)


def least_us(call: Callable[[], Any], repeat: int) -> float:
    best = None
    for _ in range(repeat):
        start = time.perf_counter_ns()
        call()
        took = time.perf_counter_ns() - start
        best = took if best is None or took < best else best
    assert best is not None
    return best / 1000.0


def run_grid(
    label: str, grid: Grid, calls: int, window: int, repeat: int, seed: int, settle: bool = True
) -> dict[str, Any]:
    jobs = job_stream(grid, calls, seed=seed)
    scheduler = Scheduler(grid)
    for spec in jobs:  # the caches a long-running server has filled (as online_placement warms them)
        decide(scheduler.index, scheduler.usage(), spec, scheduler.policy)
    specs = [spec_to_pb(s) for s in jobs]
    servicer = PlacementServicer(scheduler, threading.Event())
    bind(ANONYMOUS)
    context = _Context()
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    live: deque[str] = deque()
    gc.collect()
    if settle:  # what ``serve`` does once its state is loaded (grid_scheduler/gc_tuning.py)
        settle_heap()
    for n, (spec, message) in enumerate(zip(jobs, specs, strict=True)):
        usage, policy, index = scheduler.usage(), scheduler.policy, scheduler.index
        times["parse_spec"].append(least_us(lambda: parse_spec(message, True), repeat))  # noqa: B023
        checks = compute_checks(index, usage, spec, policy)
        times["compute_checks"].append(least_us(lambda: compute_checks(index, usage, spec, policy), repeat))  # noqa: B023
        times["pool_costs"].append(least_us(lambda: pool_costs(index, checks, spec, policy), repeat))  # noqa: B023
        kind = "decide (inference)" if spec.inference is not None else "decide (training)"
        times[kind].append(least_us(lambda: decide(index, usage, spec, policy), repeat))  # noqa: B023
        decision = decide(index, usage, spec, policy)
        if decision.placement is not None:
            placement = decision.placement

            def record() -> Any:
                return transitions.new_placed("job", spec, "req", placement, 0.0, "anonymous",  # noqa: B023
                                              policy_version=0)

            times["new_placed (JobRecord)"].append(least_us(record, repeat))
            made = record().record
            times["job_to_pb"].append(least_us(lambda: job_to_pb(made, None, message), repeat))  # noqa: B023
            view = usage.nodes(index)
            if view is not None:
                pools = sorted({index.pool_index[a.pool_id] for a in placement.assignments})
                times["NodeView.updated"].append(least_us(
                    lambda: view.updated(usage.node_used_gpus, usage.node_out, pools), repeat))  # noqa: B023
        request = pb.SubmitJobRequest(spec=message, request_id=f"req-{n}", view=pb.JOB_VIEW_BASIC)
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        response = servicer.SubmitJob(request, context)  # type: ignore[arg-type]
        times["handler (CPU, once)"].append((time.thread_time_ns() - cpu) / 1000.0)
        times["handler (wall, once)"].append((time.perf_counter_ns() - wall) / 1000.0)
        if response.job.state in (pb.JOB_STATE_RUNNING, pb.JOB_STATE_PENDING):
            live.append(response.job.id)
        while len(live) > window:
            with contextlib.suppress(WrongState):
                scheduler.cancel(live.popleft())
    rows = [{"stage": s, "calls": len(v), "mean_us": round(float(np.mean(v)), 1),
             "p50_us": round(float(np.percentile(v, 50)), 1), "p99_us": round(float(np.percentile(v, 99)), 1)}
            for s, v in times.items() if v]
    return {"grid": label, "sites": len(grid.sites), "pools": sum(len(s.pools) for s in grid.sites), "rows": rows}


def print_table(results: Sequence[dict[str, Any]]) -> None:
    print("| stage | " + " | ".join(f"{r['grid']} mean µs | p50 | p99" for r in results) + " |")
    print("|---|" + "--:|--:|--:|" * len(results))
    for stage in STAGES:
        cells = []
        for r in results:
            row = next((x for x in r["rows"] if x["stage"] == stage), None)
            cells.append(f"{row['mean_us']:,.0f} | {row['p50_us']:,.0f} | {row['p99_us']:,.0f}" if row else "- | - | -")
        print(f"| {stage} | " + " | ".join(cells) + " |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="150 jobs per grid")
    parser.add_argument("--repeat", type=int, default=5, help="timings per pure stage; the least is kept")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--default-gc", action="store_true",
                        help="CPython's gc settings (default: gc_tuning.settle_heap after loading, as serve)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    calls = 150 if args.quick else args.calls
    configure("warning")
    load_at_start, started = os.getloadavg(), time.perf_counter()
    grids = [("synthetic-500", synthetic_grid(500, 2000, 266_000, seed=args.seed)), ("nscale", load_grid(DEFAULT_GRID))]
    results = [run_grid(label, grid, calls, args.window, args.repeat, args.seed, not args.default_gc)
               for label, grid in grids]
    print_table(results)
    report = {
        "benchmark": "online_stages",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": report_machine(load_at_start),
        "config": {"calls": calls, "repeat": args.repeat, "window": args.window, "seed": args.seed,
                   "gc": "CPython defaults" if args.default_gc else "settle_heap (as serve)"},
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(args.out, report, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
