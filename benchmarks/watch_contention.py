"""Watch streams against unary calls: SubmitJob with no stream open and with N open WatchJobs streams.

One server (in this process, on 127.0.0.1, the in-memory store, the nscale example grid) and
one SubmitJob loop (this process, one channel, one call at a time). The phases alternate
on the same server in the same run: no stream, N streams, no stream, N streams ... (``--rounds``
pairs), so a drift in the machine's load falls on both sides alike.

During an "N streams" phase a separate client process (so its GIL is not this process's)
holds N WatchJobs streams (every job, from "now") on one channel with grpc.aio and reads
every event; it reports how many events each stream got and the delivery lag (arrival
time minus the event's time). The server's own count of open streams (``RunningServer.open_streams``)
must reach N before the timed loop starts. After the loop the run waits until every stream
has the last event ("drain": the streams send in turns and fall behind during a burst, see
grid_scheduler/service/watch.py), and reports how long that took.

Timed: each SubmitJob call alone. Once more than ``--window`` jobs are live the oldest is
cancelled (untimed), so every submission makes about two events (placed or pending, then
cancelled) that every stream receives. calls/s = calls / sum of their latencies. CPU is
this process's (server + submitting client) ``time.process_time`` over the loop, per call,
and over the loop and the drain ("incl. delivery").

    .venv/bin/python benchmarks/watch_contention.py            # 2 rounds x 2,000 calls per phase (~1 min)
    .venv/bin/python benchmarks/watch_contention.py --quick    # 1 round x 300 calls (seconds)
    # --calls N, --streams N, --rounds N, --rate CALLS_PER_S, --send-width N, --window N, --out PATH
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from online_placement import STATE_FROM_PB, Series, Window, cancel_quietly, timed, warm
from report import machine as report_machine
from report import write as write_report

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import placement_pb2_grpc as ppb_grpc
from grid_scheduler.client import Client
from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service import watch
from grid_scheduler.service.convert import spec_to_pb
from grid_scheduler.service.server import RunningServer, start_server
from grid_scheduler.synthetic import job_stream

SEND_WIDTH = watch.SEND_WIDTH

RESULTS = Path(__file__).resolve().parent / "results" / "watch_contention.json"
TARGET_P99_RATIO = 1.5  # SubmitJob p99 with the streams open <= 1.5 x its p99 without
OPEN_TIMEOUT_S = 30.0


# --- the watchers' process -----------------------------------------------------------
def watchers_main(address: str, streams: int, stop: Any, results: Any, seen: Any) -> None:
    """Hold ``streams`` WatchJobs streams until ``stop`` is set; put per-stream counts and lags on ``results``.

    ``seen[n]`` is the last sequence stream ``n`` received, for the parent to wait on.
    """
    results.put(asyncio.run(_watch_all(address, streams, stop, seen)))


async def _watch_all(address: str, streams: int, stop: Any, seen: Any) -> dict[str, Any]:
    counts = [0] * streams
    lags_ms: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ppb_grpc.PlacementServiceStub(channel)  # type: ignore[no-untyped-call]
        calls = [stub.WatchJobs(ppb.WatchJobsRequest()) for _ in range(streams)]

        async def read(n: int, call: Any) -> None:
            try:
                async for event in call:
                    counts[n] += 1
                    seen[n] = event.sequence
                    if n % 8 == 0:  # lag from every 8th stream: enough samples, little client work
                        lags_ms.append((time.time() - (event.time.seconds + event.time.nanos / 1e9)) * 1000)
            except asyncio.CancelledError:  # call.cancel() below: the end of the phase
                pass
            except grpc.aio.AioRpcError as e:
                if e.code() is not grpc.StatusCode.CANCELLED:
                    counts[n] = -1  # the stream ended with an error: reported, not hidden
                    print(f"watch stream {n}: {e.code().name} {e.details()}", file=sys.stderr)

        readers = [asyncio.create_task(read(n, c)) for n, c in enumerate(calls)]
        await asyncio.to_thread(stop.wait)
        for call in calls:
            call.cancel()
        await asyncio.gather(*readers)
    return {"counts": counts, "lags_ms": lags_ms}


# --- the submitting side -----------------------------------------------------------------
def wait_streams(running: RunningServer, n: int) -> None:
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    while running.open_streams != n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{running.open_streams} streams open on the server after {OPEN_TIMEOUT_S:g} s, "
                               f"expected {n}")
        time.sleep(0.02)


def wait_delivered(seen: Any, target: int, timeout_s: float) -> float | None:
    """Seconds until every stream has received event ``target``; None past ``timeout_s``."""
    start = time.perf_counter()
    while min(seen) < target:
        if time.perf_counter() - start > timeout_s:
            return None
        time.sleep(0.01)
    return time.perf_counter() - start


def submit_phase(
    client: Client, specs: Sequence[ppb.JobSpec], tag: str, window: int, rate: float = 0.0
) -> tuple[Series, float]:
    """SubmitJob for each spec, one at a time (``rate`` > 0: at most that many calls per second)."""
    series = Series(tag)
    live = Window(window)
    gc.collect()
    cpu0 = time.process_time()
    start = time.perf_counter()
    for n, spec in enumerate(specs):
        if rate > 0:
            pause = start + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        response = timed(series, lambda: client.submit(spec, request_id=f"{tag}-{n}"))  # noqa: B023
        state = STATE_FROM_PB.get(response.job.state, JobState.REJECTED)
        for job_id in live.add(response.job.id, state):
            cancel_quietly(client.cancel, job_id)
    for job_id in live.live:
        cancel_quietly(client.cancel, job_id)
    return series, time.process_time() - cpu0


def run(
    calls: int, streams: int, rounds: int, window: int, seed: int, drain_timeout_s: float, rate: float
) -> dict[str, Any]:
    grid = load_grid(DEFAULT_GRID)
    scheduler = Scheduler(grid)
    jobs = job_stream(grid, calls, seed=seed)
    warm(scheduler, jobs, settle=True)  # as serve does (grid_scheduler/gc_tuning.py)
    specs = [spec_to_pb(s) for s in jobs]
    running = start_server(scheduler, "127.0.0.1:0", max_streams=max(streams, 1))
    address = f"127.0.0.1:{running.port}"
    client = Client(address)
    spawn = mp.get_context("spawn")
    by_streams: dict[int, list[Series]] = {0: [], streams: []}
    cpu: dict[int, float] = {0: 0.0, streams: 0.0}
    drain_cpu: dict[int, float] = {0: 0.0, streams: 0.0}
    delivered: list[dict[str, Any]] = []
    try:
        for _ in range(50):  # channel up, handlers and pool threads warm
            client.check_health()
        submit_phase(client, specs[:100], "warmup", window)
        for r in range(rounds):
            for n_streams in (0, streams):
                tag = f"r{r}-s{n_streams}"
                stop, results = spawn.Event(), spawn.Queue()
                seen = spawn.Array("q", max(n_streams, 1), lock=False)
                watchers = None
                if n_streams:
                    watchers = spawn.Process(target=watchers_main, args=(address, n_streams, stop, results, seen),
                                             name="watchers")
                    watchers.start()
                    wait_streams(running, n_streams)
                    time.sleep(0.5)  # let the child settle (its imports and the channel are done by now)
                first = scheduler.store.last_sequence()
                series, cpu_s = submit_phase(client, specs, tag, window, rate)
                expected = scheduler.store.last_sequence() - first
                by_streams[n_streams].append(series)
                cpu[n_streams] += cpu_s
                if watchers is not None:
                    # The loop is over; the streams may still be catching up: how long until
                    # every one has the last event?
                    cpu0 = time.process_time()
                    drain_s = wait_delivered(seen, scheduler.store.last_sequence(), drain_timeout_s)
                    drain_cpu[n_streams] += time.process_time() - cpu0
                    stop.set()
                    got = results.get(timeout=60)
                    watchers.join(timeout=30)
                    wait_streams(running, 0)
                    delivered.append({"round": r, "expected_events": expected, "drain_s": drain_s,
                                      "loop_s": round(sum(series.ns) / 1e9, 2), **got})
    finally:
        client.close()
        running.stop(1.0)

    rows = []
    for n_streams, parts in by_streams.items():
        merged = Series(f"SubmitJob, {n_streams} WatchJobs streams open", [ns for s in parts for ns in s.ns])
        row = merged.row()
        row["streams"] = n_streams
        row["cpu_us_per_call"] = round(cpu[n_streams] / len(merged.ns) * 1e6, 1)
        row["cpu_us_per_call_incl_delivery"] = round((cpu[n_streams] + drain_cpu[n_streams]) / len(merged.ns) * 1e6, 1)
        rows.append(row)
    base, loaded = rows
    lags = [x for d in delivered for x in d["lags_ms"]]
    counts = [c for d in delivered for c in d["counts"]]
    expected_total = [d["expected_events"] for d in delivered]
    # A stream that starts at "now" may miss events from before it subscribed, never after: every
    # stream should see each phase's events (submits and cancels) exactly once.
    complete = all(c >= d["expected_events"] for d in delivered for c in d["counts"])
    drains = [d["drain_s"] for d in delivered]
    return {
        "grid": grid.name,
        "sites": len(grid.sites),
        "pools": sum(len(s.pools) for s in grid.sites),
        "rows": rows,
        "p99_ratio": round(loaded["p99_us"] / base["p99_us"], 2),
        "p50_ratio": round(loaded["p50_us"] / base["p50_us"], 2),
        "throughput_ratio": round(loaded["calls_per_s"] / base["calls_per_s"], 3),
        "target_met": loaded["p99_us"] <= TARGET_P99_RATIO * base["p99_us"],
        "watch": {
            "streams": streams,
            "events_per_phase": expected_total,
            "events_per_stream_min": min(counts) if counts else 0,
            "events_per_stream_max": max(counts) if counts else 0,
            "every_stream_got_every_event": complete,
            "submit_loop_s": [d["loop_s"] for d in delivered],
            "drain_s_after_loop": [None if x is None else round(x, 2) for x in drains],
            "lag_ms_p50": round(float(np.percentile(lags, 50)), 2) if lags else None,
            "lag_ms_p99": round(float(np.percentile(lags, 99)), 2) if lags else None,
            "lag_ms_max": round(max(lags), 2) if lags else None,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"grid {result['grid']} ({result['sites']} sites, {result['pools']} pools), in-memory store")
    print("| WatchJobs streams open | SubmitJob calls | p50 µs | p99 µs | mean µs | calls/s "
          "| CPU µs/call (server+submitter) | same, incl. delivery |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for row in result["rows"]:
        print(f"| {row['streams']} | {row['calls']} | {row['p50_us']:,.0f} | {row['p99_us']:,.0f} "
              f"| {row['mean_us']:,.0f} | {row['calls_per_s']:,.0f} | {row['cpu_us_per_call']:,.0f} "
              f"| {row['cpu_us_per_call_incl_delivery']:,.0f} |")
    w = result["watch"]
    print(f"\np99 ratio {result['p99_ratio']:.2f} (target ≤ {TARGET_P99_RATIO}: "
          f"{'met' if result['target_met'] else 'NOT met'}), p50 ratio {result['p50_ratio']:.2f}, "
          f"calls/s ratio {result['throughput_ratio']:.3f}")
    print(f"watchers: {w['streams']} streams; events per phase {w['events_per_phase']}; per stream "
          f"{w['events_per_stream_min']}-{w['events_per_stream_max']}; every stream got every event: "
          f"{'yes' if w['every_stream_got_every_event'] else 'NO'}")
    print(f"delivery lag (arrival - event time) p50 {w['lag_ms_p50']:,} ms, p99 {w['lag_ms_p99']:,} ms, "
          f"max {w['lag_ms_max']:,} ms; the submit loops took {w['submit_loop_s']} s (sum of call latencies), "
          f"the last stream had every event {w['drain_s_after_loop']} s after each loop ended")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="SubmitJob calls per phase")
    parser.add_argument("--streams", type=int, default=64, help="WatchJobs streams open in the loaded phases")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of phases (no streams, then streams)")
    parser.add_argument("--window", type=int, default=32, help="live jobs kept before cancelling the oldest")
    parser.add_argument("--quick", action="store_true", help="1 round of 300 calls per phase")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="SubmitJob calls per second at most (default 0: back to back)")
    parser.add_argument("--send-width", type=int, default=None,
                        help=f"streams sending at once (service.watch.SEND_WIDTH, default {SEND_WIDTH})")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="seconds to wait for every stream to have the last event after a loop")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    calls, rounds = (300, 1) if args.quick else (args.calls, args.rounds)
    configure("warning")  # what is measured is the calls, not log rendering
    if args.send_width is not None:
        watch.SEND_WIDTH = args.send_width

    started, load_at_start = time.perf_counter(), os.getloadavg()
    result = run(calls, args.streams, rounds, args.window, args.seed, args.drain_timeout, args.rate)
    print_table(result)
    report = {
        "benchmark": "watch_contention",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            **report_machine(load_at_start),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
        },
        "config": {"calls_per_phase": calls, "streams": args.streams, "rounds": rounds, "window": args.window,
                   "send_width": watch.SEND_WIDTH, "rate_per_s": args.rate,
                   "seed": args.seed, "store": "memory", "log_level": "warning"},
        "targets": {"p99_ratio_max": TARGET_P99_RATIO},
        "result": result,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(args.out, report, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
