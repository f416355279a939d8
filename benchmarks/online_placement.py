"""Online placement latency and throughput: the engine alone, SubmitJob over gRPC, and an empty RPC.

For the example grid and for a synthetic grid (500 sites / 2,000 pools / ~266k GPUs) this
measures, side by side in one run and on one stream of jobs:

- ``engine decide``: ``grid_scheduler.engine.decide`` on the live ledger snapshot;
- ``Scheduler.submit``: decide + commit to the in-memory ledger, in process, no gRPC;
- ``SubmitJob (gRPC)``: through a real server on 127.0.0.1 (in this process) and the real client;
- ``Health Check (gRPC)``: the standard ``grpc.health.v1`` Check, an empty RPC, interleaved
  with SubmitJob on the same channel;
- optionally both RPCs again from N client threads (``--threads``).

Only the calls named are timed. To keep the ledger from filling up, the oldest live job is
cancelled (untimed) once more than ``--window`` jobs are live. Logging is set to WARNING so
that what is measured is the placement path, not log rendering.

    .venv/bin/python benchmarks/online_placement.py            # full run (~1-2 min)
    .venv/bin/python benchmarks/online_placement.py --quick    # smoke run (seconds)
    .venv/bin/python benchmarks/online_placement.py --client-process   # the gRPC client in its own process
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import multiprocessing as mp
import os
import platform
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from report import machine as report_machine
from report import write as write_report

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.client import Client
from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.engine import decide
from grid_scheduler.gc_tuning import settle_heap
from grid_scheduler.logging import configure
from grid_scheduler.model import Grid, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler, WrongState
from grid_scheduler.service.convert import spec_to_pb
from grid_scheduler.service.server import start_server
from grid_scheduler.synthetic import job_stream, synthetic_grid

RESULTS = Path(__file__).resolve().parent / "results" / "online_placement.json"
TARGET_P99_RATIO = 2.0  # SubmitJob p99 <= 2 x empty-RPC p99
TARGET_THROUGHPUT_RATIO = 0.5  # SubmitJob calls/s >= 0.5 x empty-RPC calls/s
WORKLOAD = (
    "synthetic.job_stream(grid, calls, seed): ~60% inference deployments (1-8 replicas x 1-8 GPUs, "
    "1-3 demand endpoints admitted by the residency rule, SLO 10/20/30/50 ms), ~40% training "
    "(8-256 GPUs, 80% gang; 10% factory-scale 1,024-4,096 GB300/VR200 gangs; 15% read a dataset); "
    "residency none 40% / EU 30% / UK 10% / EU-or-UK 10% / EEA 5% / US 5%. Each job is submitted once "
    "with a unique request_id and JOB_VIEW_BASIC; specs are converted to protobuf before timing. "
    "Once more than WINDOW jobs are live, the oldest is cancelled (untimed), so the ledger holds at "
    "most WINDOW jobs. Caches that a long-running server fills on first use (residency and GPU-type "
    "masks, dataset transfer times) are warmed by one untimed decide per job before timing."
)


@dataclass
class Series:
    name: str
    ns: list[int] = field(default_factory=list)
    wall_s: float = 0.0  # for concurrent runs: wall time of the timed chunks

    def row(self) -> dict[str, Any]:
        us = np.asarray(self.ns, dtype=np.float64) / 1000.0
        busy_s = self.wall_s or float(us.sum()) / 1e6
        return {
            "path": self.name,
            "calls": len(self.ns),
            "p50_us": round(float(np.percentile(us, 50)), 1),
            "p99_us": round(float(np.percentile(us, 99)), 1),
            "mean_us": round(float(us.mean()), 1),
            "calls_per_s": round(len(self.ns) / busy_s, 1),
        }


def timed(series: Series, call: Callable[[], Any]) -> Any:
    start = time.perf_counter_ns()
    out = call()
    series.ns.append(time.perf_counter_ns() - start)
    return out


class Window:
    """The live jobs; hands back the oldest to cancel once more than ``size`` are live."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.live: deque[str] = deque()

    def add(self, job_id: str, state: JobState) -> list[str]:
        if state in (JobState.RUNNING, JobState.PENDING):
            self.live.append(job_id)
        out = []
        while len(self.live) > self.size:
            out.append(self.live.popleft())
        return out


def cancel_quietly(cancel: Callable[[str], Any], job_id: str) -> None:
    try:
        cancel(job_id)
    except (WrongState, grpc.RpcError) as e:  # already finished: nothing to free
        if isinstance(e, grpc.RpcError) and e.code() is not grpc.StatusCode.FAILED_PRECONDITION:
            raise


def warm(scheduler: Scheduler, jobs: Sequence[JobSpec], settle: bool) -> None:
    for spec in jobs:
        decide(scheduler.index, scheduler.usage(), spec, scheduler.policy)
    gc.collect()  # so that a collection of the set-up's garbage does not land in a timed call
    if settle:  # what ``serve`` does once its state is loaded (grid_scheduler/gc_tuning.py)
        settle_heap()


def in_process(grid: Grid, jobs: Sequence[JobSpec], window: int, settle: bool) -> tuple[Series, Series]:
    """The engine's decision alone, then Scheduler.submit, each in its own pass over the jobs.

    Separate passes so that neither runs right after the other on the same job (with the
    CPU caches warm from it): each call sees the job as the server would, for the first time.
    """
    engine, submit = Series("engine decide (in-process)"), Series("Scheduler.submit (in-process)")
    for series in (engine, submit):
        scheduler = Scheduler(grid)
        warm(scheduler, jobs, settle)
        live = Window(window)
        for n, spec in enumerate(jobs):
            if series is engine:
                usage = scheduler.usage()
                timed(engine, lambda: decide(scheduler.index, usage, spec, scheduler.policy))  # noqa: B023
                outcome = scheduler.submit(spec, f"req-{n}")  # untimed: moves the ledger on
            else:
                outcome = timed(submit, lambda: scheduler.submit(spec, f"req-{n}"))  # noqa: B023
            for job_id in live.add(outcome.record.id, outcome.record.state):
                cancel_quietly(scheduler.cancel, job_id)
    return engine, submit


STATE_FROM_PB = {ppb.JOB_STATE_RUNNING: JobState.RUNNING, ppb.JOB_STATE_PENDING: JobState.PENDING,
                 ppb.JOB_STATE_REJECTED: JobState.REJECTED}


def over_grpc(
    grid: Grid, jobs: Sequence[JobSpec], window: int, threads: int, client_process: bool = False,
    settle: bool = True,
) -> tuple[list[Series], Counter[str], dict[str, list[int]]]:
    """SubmitJob and the health Check, interleaved on one channel; then from ``threads`` threads.

    ``client_process``: the client runs in a process of its own (spawned), so that it shares
    neither the server's interpreter nor its GIL; by default it runs in this process."""
    scheduler = Scheduler(grid)
    warm(scheduler, jobs, settle)
    specs = [spec_to_pb(s) for s in jobs]
    server = start_server(scheduler, "127.0.0.1:0")
    address = f"127.0.0.1:{server.port}"
    try:
        if not client_process:
            return client_run(address, specs, window, threads)
        ctx = mp.get_context("spawn")
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_client_process, args=(theirs, address, [x.SerializeToString() for x in specs],
                                                         window, threads))
        proc.start()
        try:
            result: tuple[list[Series], Counter[str], dict[str, list[int]]] = mine.recv()
        finally:
            proc.join(30)
        return result
    finally:
        server.stop(1.0)


def _client_process(out: Connection, address: str, specs: list[bytes], window: int, threads: int) -> None:
    configure("warning")
    out.send(client_run(address, [ppb.JobSpec.FromString(b) for b in specs], window, threads))


def client_run(
    address: str, specs: Sequence[ppb.JobSpec], window: int, threads: int
) -> tuple[list[Series], Counter[str], dict[str, list[int]]]:
    """The client side of ``over_grpc``: the timed calls against the server at ``address``."""
    client = Client(address)
    outcomes: Counter[str] = Counter()
    by_outcome: dict[str, list[int]] = {}
    try:
        for _ in range(50):  # channel up, handlers and the pools' threads warm
            client.check_health()
        gc.collect()
        live = Window(window)
        submit, empty = Series("SubmitJob (gRPC)"), Series("Health Check (gRPC, empty)")
        for n, spec in enumerate(specs):
            if n % 2:  # alternate the order so neither call always follows a cancel
                timed(empty, client.check_health)
            response = timed(submit, lambda: client.submit(spec, request_id=f"req-{n}"))  # noqa: B023
            if not n % 2:
                timed(empty, client.check_health)
            state = STATE_FROM_PB.get(response.job.state, JobState.REJECTED)
            outcomes[state.value] += 1
            by_outcome.setdefault(state.value, []).append(submit.ns[-1])
            for job_id in live.add(response.job.id, state):
                cancel_quietly(client.cancel, job_id)
        for job_id in live.live:
            cancel_quietly(client.cancel, job_id)
        series = [submit, empty]
        if threads > 0:
            series += concurrent(client, specs, window, threads)
    finally:
        client.close()
    return series, outcomes, by_outcome


def concurrent(client: Client, specs: Sequence[ppb.JobSpec], window: int, threads: int) -> list[Series]:
    """Calls from ``threads`` threads in chunks of ``window``; live jobs are cancelled between chunks."""
    submit = Series(f"SubmitJob (gRPC, {threads} threads)")
    empty = Series(f"Health Check (gRPC, empty, {threads} threads)")
    chunk = max(window, threads)
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(specs), chunk):
            part = list(enumerate(specs[start : start + chunk], start))
            t0 = time.perf_counter()
            responses = list(pool.map(lambda p: timed(submit, lambda: client.submit(p[1], f"mt-{p[0]}")), part))
            submit.wall_s += time.perf_counter() - t0
            for r in responses:
                if r.job.state in (ppb.JOB_STATE_RUNNING, ppb.JOB_STATE_PENDING):
                    cancel_quietly(client.cancel, r.job.id)
            t0 = time.perf_counter()
            list(pool.map(lambda _: timed(empty, client.check_health), part))
            empty.wall_s += time.perf_counter() - t0
    return [submit, empty]


def ratios(submit: dict[str, Any], empty: dict[str, Any]) -> dict[str, float]:
    return {
        "p99_ratio": round(submit["p99_us"] / empty["p99_us"], 2),
        "throughput_ratio": round(submit["calls_per_s"] / empty["calls_per_s"], 3),
    }


def run_grid(
    label: str, grid: Grid, calls: int, window: int, threads: int, seed: int, client_process: bool = False,
    settle: bool = True,
) -> dict[str, Any]:
    jobs = job_stream(grid, calls, seed=seed)
    t0 = time.perf_counter()
    engine, submit_local = in_process(grid, jobs, window, settle)
    grpc_series, outcomes, by_outcome = over_grpc(grid, jobs, window, threads, client_process, settle)
    rows = [s.row() for s in [engine, submit_local, *grpc_series]]
    sequential = ratios(rows[2], rows[3])
    result: dict[str, Any] = {
        "grid": label,
        "client": "separate process" if client_process else "in the server's process",
        "gc": "settled heap (gc_tuning.settle_heap, as serve)" if settle else "CPython defaults",
        "sites": len(grid.sites),
        "pools": sum(len(s.pools) for s in grid.sites),
        "gpus": sum(p.total_gpus for s in grid.sites for p in s.pools),
        "endpoints": len(grid.endpoints),
        "rows": rows,
        "ratios": sequential,
        "submit_outcomes": dict(outcomes),
        "submit_us_by_outcome": {
            k: {f"p{q}": round(float(np.percentile(v, q)) / 1000, 1) for q in (50, 99)} for k, v in by_outcome.items()
        },
        "target_met": sequential["p99_ratio"] <= TARGET_P99_RATIO
        and sequential["throughput_ratio"] >= TARGET_THROUGHPUT_RATIO,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if threads > 0:
        result["ratios_threads"] = ratios(rows[4], rows[5])
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    print("| grid | path | calls | p50 µs | p99 µs | mean µs | calls/s |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for r in results:
        label = f"{r['grid']} ({r['sites']} sites, {r['pools']} pools, {r['gpus']:,} GPUs)"
        for row in r["rows"]:
            print(f"| {label} | {row['path']} | {row['calls']} | {row['p50_us']:,.0f} | {row['p99_us']:,.0f} "
                  f"| {row['mean_us']:,.0f} | {row['calls_per_s']:,.0f} |")
            label = ""
    print()
    print("| grid | SubmitJob / empty p99 (target ≤ 2) | SubmitJob / empty calls/s (target ≥ 0.5) | met |"
          + (" threads: p99 ratio | threads: calls/s ratio |" if "ratios_threads" in results[0] else ""))
    print("|---|--:|--:|---|" + ("--:|--:|" if "ratios_threads" in results[0] else ""))
    for r in results:
        line = (f"| {r['grid']} | {r['ratios']['p99_ratio']:.2f} | {r['ratios']['throughput_ratio']:.3f} "
                f"| {'yes' if r['target_met'] else 'NO'} |")
        if "ratios_threads" in r:
            line += f" {r['ratios_threads']['p99_ratio']:.2f} | {r['ratios_threads']['throughput_ratio']:.3f} |"
        print(line)
    print()
    for r in results:
        us = r["submit_us_by_outcome"]
        by = ", ".join(f"{k} {v} (p50 {us[k]['p50']:,.0f} µs, p99 {us[k]['p99']:,.0f} µs)"
                       for k, v in sorted(r["submit_outcomes"].items()))
        print(f"{r['grid']}: SubmitJob outcomes: {by}; {r['seconds']} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="jobs per grid (each timed on every path)")
    parser.add_argument("--quick", action="store_true", help="200 calls per grid; a 200-site synthetic grid")
    parser.add_argument("--threads", type=int, default=4, help="client threads for the concurrent run; 0 = skip")
    parser.add_argument("--window", type=int, default=32, help="live jobs kept before cancelling the oldest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-process", action="store_true",
                        help="run the gRPC client in a separate process (default: in the server's process)")
    parser.add_argument("--default-gc", action="store_true",
                        help="CPython's gc settings (default: gc_tuning.settle_heap after loading, as serve)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    calls = 200 if args.quick else args.calls
    configure("warning")  # what is measured is placement, not log rendering

    started, load_at_start = time.perf_counter(), os.getloadavg()
    grids = [("nscale", load_grid(DEFAULT_GRID))]
    if args.quick:
        grids.append(("synthetic-200", synthetic_grid(200, 800, 106_000, seed=args.seed)))
    else:
        grids.append(("synthetic-500", synthetic_grid(500, 2000, 266_000, seed=args.seed)))
    results = [run_grid(label, grid, calls, args.window, args.threads, args.seed, args.client_process,
                        not args.default_gc) for label, grid in grids]

    print(f"workload: {WORKLOAD.replace('WINDOW', str(args.window))}")
    where = "the client in a separate process" if args.client_process else "server and client in this process"
    collector = "CPython defaults" if args.default_gc else "settle_heap() after loading, as serve"
    print(f"logging: structlog at WARNING for the run; {where}, on 127.0.0.1; gc: {collector}.\n")
    print_table(results)
    report = {
        "benchmark": "online_placement",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            **report_machine(load_at_start),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
        },
        "config": {"calls": calls, "threads": args.threads, "window": args.window, "seed": args.seed,
                   "log_level": "warning", "client_process": args.client_process},
        "workload": WORKLOAD.replace("WINDOW", str(args.window)),
        "targets": {"p99_ratio_max": TARGET_P99_RATIO, "throughput_ratio_min": TARGET_THROUGHPUT_RATIO},
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(args.out, report, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
