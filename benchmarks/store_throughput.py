"""Ledger commit throughput and latency: in-memory vs Redis, 1 and 4 replicas, in one run.

Part A, the store alone. A *reservation* is one ``Store.create_job`` that stores a RUNNING job
and reserves GPUs and power in one pool: the commit every placement ends with (on Redis, one
Lua script re-checks the limits and writes the record, the reservation, the counters, the
request-id index and the event). Limits are set far above what the run can take, so every
commit succeeds and what is measured is the commit, not conflicts. Records are made with
``model_copy`` in the loop, the same cost for every store. A ``PING`` row gives the floor: one
synchronous round trip from this Python client to this Redis.

Part B, the scheduler: ``Scheduler.submit`` (read the ledger, decide on the example grid,
commit) of an 8-GPU training job, and the oldest job cancelled (release) once 16 are live, so
the ledger never fills. Placements/s counts submits over wall time (cancels included in the
time); the latency is the submit's.

Rows: ``memory x1`` (one thread, the embedded default), ``memory x4 threads`` (four threads on
one MemoryStore: its lock serialises them; a MemoryStore cannot be shared by processes),
``redis x1`` (one process, its own RedisStore), ``redis x4 replicas`` (four processes, each with
its own RedisStore, on one Redis), and the Redis rows again with ``appendfsync always``. Part B
also runs 8 threads on one Scheduler per store (concurrent submissions in one process, no RPC), and
counts the round trips each Redis submission sends (commands on the store's connections during
``submit``; the cancels' are not counted).

Part C, paired: memory, Redis and two references (memory plus one no-op EVALSHA per submission,
and per submission and per cancel) run the part B loop in turns of a few cycles in ONE process, so
that all see the same load; their ratio is the one to read on a shared machine (``--paired-only``
runs just this part). It counts round trips per submission and per cancel.

Each row runs in fresh worker processes that start together on a barrier; each worker times
every call with ``perf_counter``; a row's throughput is its operations over its wall time.
A private ``redis-server`` (AOF on, ``--save ''``) is started on a free loopback port in a
temporary directory unless ``--redis-url`` is given; the database is flushed between rows.

    .venv/bin/python benchmarks/store_throughput.py            # ~1.5 min
    .venv/bin/python benchmarks/store_throughput.py --quick    # ~30 s
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np
import redis

from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import Assignment, EventType, JobRecord, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.state import Limits, MemoryStore, Store, Transition
from grid_scheduler.state.redis_conn import ScriptLane, redis_client
from grid_scheduler.state.redis_store import RedisStore

RESULTS = Path(__file__).resolve().parent / "results" / "store_throughput.json"
TARGET_RATIO = 0.3  # Redis ops/s >= 0.3 x in-memory, one replica each
TARGET_SCHEDULE_RATIO = 0.7  # issue 13: Redis Scheduler.submit placements/s >= 0.7 x in-memory
POOLS = 4
WINDOW = 16  # live jobs per scheduler loop before the oldest is cancelled


@dataclass(frozen=True)
class Row:
    part: str  # commit | ping | schedule
    store: str  # memory | redis
    processes: int
    threads: int  # per process
    fsync: str = ""  # redis appendfsync for the row

    @property
    def label(self) -> str:
        fsync = f" fsync {self.fsync}" if self.fsync == "always" else ""
        return f"{self.part} {self.store} {self.processes}x{self.threads}{fsync}"


def limits() -> Limits:
    # Far more than any run takes: every commit fits, so the cost measured is the commit's.
    return Limits(
        pool_ids=tuple(f"pool-{i}" for i in range(POOLS)),
        pool_gpus=np.full(POOLS, 10**12, dtype=np.int64),
        site_ids=("site-0",),
        site_power_w=np.array([10**15], dtype=np.int64),
    )


# Round trips sent by this process's Redis store while a thread is inside ``Scheduler.submit``.
_ROUND_TRIPS = {"sent": 0}
_IN_SUBMIT = threading.local()


def _counted(execute: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        if getattr(_IN_SUBMIT, "on", False):
            _ROUND_TRIPS["sent"] += 1  # (a benign race between threads: the 1-thread rows are exact)
        return execute(*args, **kwargs)
    return counted


def worker(row: Row, url: str, grid: str, seconds: float, index: int, barrier: Barrier, out: Any) -> None:
    """One replica: its own store object, ``row.threads`` threads working for ``seconds``."""
    loop = {"commit": commit_loop, "ping": ping_loop, "schedule": schedule_loop}[row.part](row, url, grid, index)
    latencies: list[list[float]] = [[] for _ in range(row.threads)]
    # Warm up (script load, connections, first allocations) before the clock starts.
    for t in range(row.threads):
        loop(t, time.perf_counter() + 0.2, [])
    _ROUND_TRIPS["sent"] = 0
    barrier.wait()
    started = time.perf_counter()
    stop_at = started + seconds
    threads = [threading.Thread(target=loop, args=(t, stop_at, latencies[t])) for t in range(row.threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - started
    out.put((wall, [x for lat in latencies for x in lat], _ROUND_TRIPS["sent"]))


Loop = Callable[[int, float, list[float]], None]


def commit_loop(row: Row, url: str, grid: str, index: int) -> Loop:
    store: Store = MemoryStore(limits()) if row.store == "memory" else RedisStore(limits(), url, grid)
    spec = JobSpec.model_validate({"name": "bench", "tenant": "acme", "kind": "training", "gpus": {"count": 8}})
    template = JobRecord(id="x", spec=spec, state=JobState.RUNNING, created_at=1.0, updated_at=1.0)
    counter = itertools.count()

    def loop(t: int, stop_at: float, latencies: list[float]) -> None:
        reserve = [Assignment(site_id="site-0", pool_id=f"pool-{(index + t) % POOLS}", gpu_type="H100", gpus=8,
                              power_kw=7.0)]
        while True:
            n = next(counter)
            record = template.model_copy(update={"id": f"job-{index}-{n:09d}", "request_id": f"r-{index}-{n}"})
            transition = Transition(record, EventType.PLACED, "placed", reserve=reserve)
            start = time.perf_counter()
            store.create_job(transition)
            end = time.perf_counter()
            latencies.append(end - start)
            if end >= stop_at:
                return

    return loop


def ping_loop(row: Row, url: str, grid: str, index: int) -> Loop:
    client = redis_client(url)

    def loop(t: int, stop_at: float, latencies: list[float]) -> None:
        while True:
            start = time.perf_counter()
            client.ping()
            end = time.perf_counter()
            latencies.append(end - start)
            if end >= stop_at:
                return

    return loop


def schedule_loop(row: Row, url: str, grid_name: str, index: int) -> Loop:
    configure("warning")  # what is measured is the ledger, not log rendering
    grid = load_grid(DEFAULT_GRID)
    store = None if row.store == "memory" else RedisStore(Limits.from_grid(grid), url, grid_name)
    if store is not None:  # count what submissions send (instrumentation of this benchmark only)
        for client in (store._r, store._raw, store._lane, store._lane_raw):
            client.execute_command = _counted(client.execute_command)  # type: ignore[method-assign]
    scheduler = Scheduler(grid, store=store)
    spec = JobSpec.model_validate(
        {"name": "bench", "tenant": "acme", "kind": "training", "gpus": {"count": 8}, "training": {}}
    )
    counter = itertools.count()

    def loop(t: int, stop_at: float, latencies: list[float]) -> None:
        live: deque[str] = deque()
        while True:
            request_id = f"r-{index}-{next(counter)}"
            start = time.perf_counter()
            _IN_SUBMIT.on = True
            outcome = scheduler.submit(spec, request_id=request_id)
            _IN_SUBMIT.on = False
            end = time.perf_counter()
            latencies.append(end - start)
            live.append(outcome.record.id)
            if len(live) > WINDOW:
                scheduler.cancel(live.popleft())
            if end >= stop_at:
                break
        for job_id in live:  # leave the ledger empty for the next loop
            scheduler.cancel(job_id)

    return loop


# --- C. paired: the stores alternated in one process ---------------------------------------
# On a shared, busy machine the load moves between rows run one after another (the ratio of two rows
# has moved from 0.14 to 1.03 between back-to-back runs of the same code). Here every contender runs
# BURST iterations (a submit, and a cancel of the oldest once WINDOW are live) in turn, many times,
# so each sees the same load; their ratio is the figure to read.
BURST = 25
NOOP_LUA = "return 1"


class _Contender:
    """One scheduler looping submit + cancel; ``noop``: also one EVALSHA of an empty script per submit."""

    def __init__(self, name: str, scheduler: Scheduler, counted: Sequence[redis.Redis | ScriptLane],
                 noop: redis.Redis | None = None, noop_per_cancel: bool = False) -> None:
        self.name, self.scheduler, self.noop_per_cancel = name, scheduler, noop_per_cancel
        # The no-op goes the way the store's scripts go (redis_conn.ScriptLane).
        self.noop = ScriptLane(noop) if noop is not None else None
        self.noop_sha = noop.script_load(NOOP_LUA) if noop is not None else ""
        if self.noop is not None:
            counted = [*counted, self.noop]
        self.live: deque[str] = deque()
        self.submit_s: list[float] = []
        self.cancel_s: list[float] = []
        self.sent = {"submit": 0, "cancel": 0}
        self.phase = ""
        for client in counted:
            client.execute_command = self._count(client.execute_command)  # type: ignore[method-assign]

    def _count(self, execute: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self.phase:
                self.sent[self.phase] += 1
            return execute(*args, **kwargs)
        return counted

    def burst(self, spec: JobSpec, counter: Iterator[int], n: int) -> None:
        for _ in range(n):
            request_id = f"p-{self.name}-{next(counter)}"
            self.phase = "submit"
            start = time.perf_counter()
            outcome = self.scheduler.submit(spec, request_id=request_id)
            if self.noop is not None:
                self.noop.execute_command("EVALSHA", self.noop_sha, 0)
            mid = time.perf_counter()
            self.phase = ""
            self.submit_s.append(mid - start)
            self.live.append(outcome.record.id)
            if len(self.live) > WINDOW:
                self.phase = "cancel"
                self.scheduler.cancel(self.live.popleft())
                if self.noop is not None and self.noop_per_cancel:
                    self.noop.execute_command("EVALSHA", self.noop_sha, 0)
                self.cancel_s.append(time.perf_counter() - mid)
                self.phase = ""

    def result(self) -> dict[str, Any]:
        sub = np.array(self.submit_s) * 1e6
        can = np.array(self.cancel_s) * 1e6
        busy = (float(sub.sum()) + float(can.sum())) / 1e6
        return {
            "contender": self.name, "submits": int(sub.size), "cancels": int(can.size),
            "seconds": round(busy, 3), "per_s": round(sub.size / busy, 1),
            "submit_p50_us": round(float(np.percentile(sub, 50)), 1),
            "submit_p99_us": round(float(np.percentile(sub, 99)), 1),
            "cancel_p50_us": round(float(np.percentile(can, 50)), 1) if can.size else None,
            "round_trips_per_submit": round(self.sent["submit"] / sub.size, 3),
            "round_trips_per_cancel": round(self.sent["cancel"] / can.size, 3) if can.size else None,
        }


def paired(url: str, seconds: float) -> list[dict[str, Any]]:
    """Memory, Redis, and two references, alternated in bursts until each has run about ``seconds``:
    memory plus one no-op EVALSHA per submission (one round trip and an empty script, the least a
    synchronous Redis submission can add), and plus one per cancel too (the least Redis's submit and
    cancel, one round trip each, can add)."""
    configure("warning")
    grid = load_grid(DEFAULT_GRID)
    spec = JobSpec.model_validate(
        {"name": "bench", "tenant": "acme", "kind": "training", "gpus": {"count": 8}, "training": {}}
    )
    store = RedisStore(Limits.from_grid(grid), url, "paired")
    noop = redis_client(url)
    contenders = [
        _Contender("memory", Scheduler(grid), []),
        _Contender("redis", Scheduler(grid, store=store), [store._r, store._raw, store._lane, store._lane_raw]),
        _Contender("memory + no-op EVALSHA", Scheduler(grid), [], noop=noop),
        # The same for each cancel too: Redis's one round trip per submission AND per job end.
        _Contender("memory + no-op EVALSHA per submit and per cancel", Scheduler(grid), [], noop=noop,
                   noop_per_cancel=True),
    ]
    counter = itertools.count()
    for c in contenders:  # warm-up, not measured
        c.burst(spec, counter, 2 * WINDOW)
        c.submit_s.clear(), c.cancel_s.clear()
        c.sent.update(submit=0, cancel=0)
    while min(sum(c.submit_s) + sum(c.cancel_s) for c in contenders) < seconds:
        for c in contenders:
            c.burst(spec, counter, BURST)
    for c in contenders:
        for job_id in c.live:
            c.scheduler.cancel(job_id)
    store.close()
    return [c.result() for c in contenders]


def _paired_worker(url: str, seconds: float, out: Any) -> None:
    out.put(paired(url, seconds))


def run_paired(url: str, seconds: float) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")  # a clean interpreter, as every row
    out = ctx.Queue()
    proc = ctx.Process(target=_paired_worker, args=(url, seconds, out))
    proc.start()
    results: list[dict[str, Any]] = out.get()
    proc.join()
    return results


def run_row(row: Row, url: str, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # clean interpreters: no inherited sockets or locks
    barrier = ctx.Barrier(row.processes)
    out = ctx.Queue()
    grid = "nscale" if row.part == "schedule" else f"bench-{row.processes}"
    procs = [ctx.Process(target=worker, args=(row, url, grid, seconds, i, barrier, out)) for i in range(row.processes)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    walls = [w for w, _, _ in results]
    lat = np.array([x for _, lats, _ in results for x in lats]) * 1e6
    sent = sum(n for _, _, n in results)
    wall = max(walls)
    return {
        "row": row.label, "part": row.part, "store": row.store, "replicas": row.processes,
        "threads_per_replica": row.threads,
        "appendfsync": row.fsync or None, "commits": int(lat.size), "seconds": round(wall, 3),
        "per_s": round(lat.size / wall, 1),
        # Calls per second of the call's own time, per thread: for the schedule rows, submits alone
        # (the cancels that keep the ledger from filling are left out).
        "per_s_of_call_time": round(lat.size / (float(lat.sum()) / 1e6) * row.processes * row.threads, 1),
        "p50_us": round(float(np.percentile(lat, 50)), 1), "p99_us": round(float(np.percentile(lat, 99)), 1),
        "max_us": round(float(lat.max()), 1),
        "round_trips_per_submit": round(sent / lat.size, 3) if row.part == "schedule" and row.store == "redis"
        else None,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def private_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install redis-server, or pass --redis-url")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "everysec", "--dir", tmp, "--logfile", str(Path(tmp) / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


HEADINGS = {
    "commit": "A. store commits: single-pool reservations (Store.create_job)",
    "ping": "A'. round-trip floor: PING, same client library, one synchronous caller",
    "schedule": "B. scheduler: Scheduler.submit (read ledger + decide + commit) on examples/grids/nscale.yaml",
}


def print_table(rows: list[dict[str, Any]]) -> None:
    for part, heading in HEADINGS.items():
        print(heading)
        print("| store | replicas x threads | appendfsync | ops | ops/s | p50 µs | p99 µs | max µs "
              "| round trips per submit |")
        print("|---|--:|---|--:|--:|--:|--:|--:|--:|")
        for r in rows:
            if r["part"] != part:
                continue
            trips = r.get("round_trips_per_submit")
            print(f"| {r['store']} | {r['replicas']} x {r['threads_per_replica']} | {r['appendfsync'] or '-'} "
                  f"| {r['commits']:,} | {r['per_s']:,.0f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} "
                  f"| {r['max_us']:,.0f} | {'-' if trips is None else f'{trips:.2f}'} |")
        print()


def print_paired(pairs: list[dict[str, Any]]) -> None:
    print(f"\nC. paired: Scheduler.submit + cancel of the oldest past {WINDOW}, contenders alternated in bursts of "
          f"{BURST} in one process (ops/s over each one's own time)")
    print("| contender | submits | ops/s | submit p50 µs | submit p99 µs | cancel p50 µs "
          "| round trips per submit | per cancel |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in pairs:
        print(f"| {r['contender']} | {r['submits']:,} | {r['per_s']:,.0f} | {r['submit_p50_us']:,.0f} "
              f"| {r['submit_p99_us']:,.0f} | {r['cancel_p50_us'] or 0:,.0f} | {r['round_trips_per_submit']:.2f} "
              f"| {r['round_trips_per_cancel'] or 0:.2f} |")
    print()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per row")
    parser.add_argument("--quick", action="store_true", help="1 s per row")
    parser.add_argument("--redis-url", default="",
                        help="use this Redis (its database is FLUSHED) instead of a private one")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--paired-only", action="store_true",
                        help="only part C (the stores alternated in one process), printed; no JSON written")
    args = parser.parse_args(argv)
    seconds = 1.0 if args.quick else args.seconds
    if args.paired_only:
        with (private_redis() if not args.redis_url else _given(args.redis_url)) as url:
            redis.Redis.from_url(url).flushdb()
            pairs = run_paired(url, seconds)
        print(f"{seconds:g} s per contender, load average {os.getloadavg()[0]:.2f}")
        print_paired(pairs)
        print(f"redis / memory = {pairs[1]['per_s'] / pairs[0]['per_s']:.3f}; references / memory = "
              f"{pairs[2]['per_s'] / pairs[0]['per_s']:.3f} (per submit), "
              f"{pairs[3]['per_s'] / pairs[0]['per_s']:.3f} (per submit and per cancel)")
        return 0
    rows = [
        Row("commit", "memory", 1, 1),
        Row("commit", "memory", 1, 4),
        Row("commit", "redis", 1, 1, "everysec"),
        Row("commit", "redis", 4, 1, "everysec"),
        Row("commit", "redis", 1, 1, "always"),
        Row("commit", "redis", 4, 1, "always"),
        Row("ping", "redis", 1, 1, "everysec"),
        Row("schedule", "memory", 1, 1),
        Row("schedule", "memory", 1, 8),
        Row("schedule", "redis", 1, 1, "everysec"),
        Row("schedule", "redis", 1, 8, "everysec"),
        Row("schedule", "redis", 4, 1, "everysec"),
    ]
    started = time.perf_counter()
    results = []
    with (private_redis() if not args.redis_url else _given(args.redis_url)) as url:
        admin = redis.Redis.from_url(url)
        for row in rows:
            if row.store == "redis":
                admin.flushdb()
                admin.config_set("appendfsync", row.fsync)
            results.append(run_row(row, url, seconds))
            print(f"  {row.label}: {results[-1]['per_s']:,.0f}/s", file=sys.stderr)
        admin.config_set("appendfsync", "everysec")
        admin.flushdb()
        pairs = run_paired(url, seconds)
        admin.flushdb()
        redis_version = admin.info("server")["redis_version"]

    by = {r["row"]: r for r in results}
    ratios = {
        "commit": by["commit redis 1x1"]["per_s"] / by["commit memory 1x1"]["per_s"],
        "schedule": by["schedule redis 1x1"]["per_s"] / by["schedule memory 1x1"]["per_s"],
    }
    print(f"\n{seconds:g} s per row, {os.cpu_count()} cores, redis {redis_version} on 127.0.0.1, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print_table(results)
    for part, ratio in ratios.items():
        print(f"{part}: redis 1x1 / memory 1x1 = {ratio:.3f} "
              f"(target >= {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    submit_only = (by["schedule redis 1x1"]["per_s_of_call_time"] / by["schedule memory 1x1"]["per_s_of_call_time"])
    print(f"schedule (issue 13, target >= {TARGET_SCHEDULE_RATIO}): {ratios['schedule']:.3f} over wall time "
          f"(submits and the cancels between them); {submit_only:.3f} over the submits' own time; "
          f"{by['schedule redis 1x1']['round_trips_per_submit']:.2f} round trips per Redis submission")
    for store in ("memory", "redis"):
        threads = by[f"schedule {store} 1x8"]["per_s"] / by[f"schedule {store} 1x1"]["per_s"]
        print(f"schedule {store}: 8 threads / 1 thread on one Scheduler = {threads:.2f}")
    print_paired(pairs)
    paired_ratio = pairs[1]["per_s"] / pairs[0]["per_s"]
    print(f"paired (issue 13, target >= {TARGET_SCHEDULE_RATIO}): redis / memory = {paired_ratio:.3f} "
          f"({'met' if paired_ratio >= TARGET_SCHEDULE_RATIO else 'NOT met'}); the references' ratios, "
          f"{pairs[2]['per_s'] / pairs[0]['per_s']:.3f} and {pairs[3]['per_s'] / pairs[0]['per_s']:.3f}, are the "
          f"ceilings of one round trip per submission, and per submission and per cancel")
    report = {
        "benchmark": "store_throughput",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cores": os.cpu_count(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "redis_server": redis_version,
            "redis_py": redis.__version__,
        },
        "config": {"seconds_per_row": seconds, "pools": POOLS, "reservation": "8 GPUs, 7 kW, one pool",
                   "schedule_window": WINDOW, "schedule_grid": "examples/grids/nscale.yaml"},
        "target": {"redis_over_memory_min": TARGET_RATIO,
                   "ratios": {k: round(v, 3) for k, v in ratios.items()},
                   "met": {k: v >= TARGET_RATIO for k, v in ratios.items()},
                   "schedule_issue13_min": TARGET_SCHEDULE_RATIO,
                   "schedule_submit_time_ratio": round(submit_only, 3),
                   "paired_ratio": round(paired_ratio, 3),
                   "paired_reference_ratio": round(pairs[2]["per_s"] / pairs[0]["per_s"], 3),
                   "paired_reference_both_ratio": round(pairs[3]["per_s"] / pairs[0]["per_s"], 3)},
        "results": results,
        "paired": pairs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out} ({report['seconds']} s)")
    return 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    sys.exit(main())
