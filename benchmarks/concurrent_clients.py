"""SubmitJob from 1 and from 8 client processes against one real server: does throughput scale?

One server (``start_server``, the real one, defaults but for logging at WARNING, with the collector
settled by ``gc_tuning.settle_heap`` once the grid is loaded, as ``serve`` does; ``--default-gc`` to
compare) runs in its own process on 127.0.0.1, over the in-memory store and then over Redis (a private ``redis-server``
started here, as ``store_throughput.py`` does, unless ``--redis-url``). Clients are separate
processes (spawned once, reused for every row), each with its own channel, started together at
one agreed instant; each runs for ``--seconds`` and times every call with ``perf_counter``.

Rows, per store: SubmitJob from 1 client and from 8 clients, then the standard health Check (an
empty RPC) from 1 and from 8, on the same server. Jobs come from ``synthetic.job_stream`` on the
example grid (client ``i`` of ``k`` takes jobs ``i, i + k, ...``), each with a unique request id;
a client cancels its oldest live job (untimed, but inside the row's wall time) once it holds more
than ``--window / k``, so the ledger holds about the same number of jobs in every row.

Throughput = calls of the row / its wall time (first start to last end); percentiles over every
call of the row. Targets (issue 13): 8 clients >= 1.5 x the single client's throughput, and their
p99 <= 5 x the single client's p99, on both stores.

    .venv/bin/python benchmarks/concurrent_clients.py            # 4 s per row, ~1.5 min
    .venv/bin/python benchmarks/concurrent_clients.py --quick    # 1.5 s per row
    .venv/bin/python benchmarks/concurrent_clients.py --server-processes 1,2,3   # + Redis rows, 2 and 3 processes

``--server-processes N`` (a comma-separated list; default 1): for each N > 1 the server is
``grid-scheduler serve --processes N --store redis://...`` (N replicas on one port, SO_REUSEPORT),
started as a user would, with ``--metrics-address`` only to know when every replica is up; Redis
rows only (the in-memory store is one process by definition).

CPU per call, per row: each client's process CPU (time.process_time over its loop), the server's
(utime + stime from /proc of the server process and its descendants) and Redis's (INFO cpu), each
divided by the row's calls. On this machine's cores, ``cores / (their sum)`` is the most calls/s
that the CPU allows whatever the code's concurrency: the ``cpu_ceiling_calls_per_s`` column.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, write
from store_throughput import _given, free_port, private_redis  # the same private redis-server

RESULTS = Path(__file__).resolve().parent / "results" / "concurrent_clients.json"
TARGET_THROUGHPUT_RATIO = 1.5  # 8 clients' SubmitJob calls/s >= 1.5 x one client's
TARGET_P99_RATIO = 5.0  # 8 clients' SubmitJob p99 <= 5 x one client's
JOBS = 4_000
GRID_NAME = "bench-concurrent"


def serve(store: str, url: str, out: Connection, workers: int = 0, settle: bool = True) -> None:
    """The server process: the example grid, the given store, the real server; runs until told to stop."""
    from grid_scheduler.config import DEFAULT_GRID, load_grid
    from grid_scheduler.gc_tuning import settle_heap
    from grid_scheduler.logging import configure
    from grid_scheduler.scheduler import Scheduler
    from grid_scheduler.service.server import start_server
    from grid_scheduler.state import Limits
    from grid_scheduler.state.redis_store import RedisStore

    configure("warning")  # what is measured is the call, not log rendering
    grid = load_grid(DEFAULT_GRID)
    ledger = RedisStore(Limits.from_grid(grid), url, GRID_NAME) if store == "redis" else None
    options = {"max_workers": workers} if workers else {}  # 0: start_server's default
    scheduler = Scheduler(grid, store=ledger)
    if settle:  # what ``serve`` does once its state is loaded (grid_scheduler/gc_tuning.py)
        settle_heap()
    server = start_server(scheduler, "127.0.0.1:0", **options)
    out.send(server.port)
    out.recv()  # stop
    server.stop(1.0)
    out.send("stopped")


def client(commands: Connection, specs: list[bytes]) -> None:
    """A client process: runs the rows it is sent, returns each row's latencies."""
    from grid_scheduler._proto.v1 import placement_pb2 as ppb
    from grid_scheduler.client import Client

    live_states = (ppb.JOB_STATE_RUNNING, ppb.JOB_STATE_PENDING)
    jobs = [ppb.JobSpec.FromString(b) for b in specs]
    while True:
        command = commands.recv()
        if command is None:
            return
        address, rpc, me, of, start_at, seconds, window, tag = command
        with Client(address, timeout_s=60) as c:
            for _ in range(20):  # channel up, both sides' threads warm
                c.check_health()
            mine = jobs[me::of]
            live: deque[str] = deque()
            ns: list[int] = []
            n = 0
            time.sleep(max(0.0, start_at - time.time()))
            began = time.time()
            cpu_began = time.process_time()
            first = time.perf_counter()
            stop_at = first + seconds
            while True:
                t0 = time.perf_counter_ns()
                if rpc == "submit":
                    response = c.submit(mine[n % len(mine)], request_id=f"{tag}-{me}-{n}")
                else:
                    c.check_health()
                ns.append(time.perf_counter_ns() - t0)
                n += 1
                if rpc == "submit" and response.job.state in live_states:
                    live.append(response.job.id)
                    while len(live) > window:
                        _cancel(c, live.popleft())
                if time.perf_counter() >= stop_at:
                    break
            last = time.perf_counter()
            cpu_s = time.process_time() - cpu_began
            for job_id in live:  # leave the ledger as the row found it
                _cancel(c, job_id)
        commands.send((ns, began, last - first, cpu_s))


@contextmanager
def client_processes(count: int, seed: int) -> Iterator[list[Connection]]:
    """``count`` client processes (spawned, each given the whole job stream of the example grid),
    one command pipe each; told to stop and joined on exit."""
    from grid_scheduler.config import DEFAULT_GRID, load_grid
    from grid_scheduler.service.convert import spec_to_pb
    from grid_scheduler.synthetic import job_stream

    specs = [spec_to_pb(s).SerializeToString() for s in job_stream(load_grid(DEFAULT_GRID), JOBS, seed=seed)]
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    try:
        for _ in range(count):
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=client, args=(theirs, specs), daemon=True)
            p.start()
            pipes.append(mine)
            procs.append(p)
        yield pipes
    finally:
        for pipe in pipes:
            pipe.send(None)
        for p in procs:
            p.join(5)


def _cancel(c: Any, job_id: str) -> None:
    try:
        c.cancel(job_id)
    except grpc.RpcError as e:  # finished meanwhile: nothing to free
        if e.code() is not grpc.StatusCode.FAILED_PRECONDITION:
            raise


def process_cpu_s(root_pid: int) -> float:
    """CPU seconds (user + system) of ``root_pid`` and every process below it, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        todo += [int(c) for c in children]
    return total


def redis_cpu_s(admin: redis.Redis | None) -> float:
    if admin is None:
        return 0.0
    info = admin.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def run_row(pipes: list[Connection], address: str, rpc: str, clients: int, seconds: float, window: int,
            tag: str, server_pid: int = 0, admin: redis.Redis | None = None) -> dict[str, Any]:
    start_at = time.time() + 1.0 + 0.1 * clients  # every client connected and warm by then
    for i, pipe in enumerate(pipes[:clients]):
        pipe.send((address, rpc, i, clients, start_at, seconds, max(1, window // clients), tag))
    # Server and Redis CPU from the agreed start (clients warm up before it) to the last reply.
    time.sleep(max(0.0, start_at - time.time()))
    server_cpu, store_cpu = process_cpu_s(server_pid) if server_pid else 0.0, redis_cpu_s(admin)
    replies = [pipe.recv() for pipe in pipes[:clients]]
    server_cpu = (process_cpu_s(server_pid) - server_cpu) if server_pid else 0.0
    store_cpu = redis_cpu_s(admin) - store_cpu
    starts = [s for _, s, _, _ in replies]
    ends = [s + d for _, s, d, _ in replies]
    wall = max(ends) - min(starts)
    us = np.array([x for ns, _, _, _ in replies for x in ns], dtype=np.float64) / 1000.0
    client_cpu = sum(c for _, _, _, c in replies)
    per_call = {"client": client_cpu / us.size * 1e6, "server": server_cpu / us.size * 1e6,
                "redis": store_cpu / us.size * 1e6}
    return {
        "rpc": "SubmitJob" if rpc == "submit" else "Health Check (empty)", "clients": clients,
        "calls": int(us.size), "seconds": round(wall, 3), "calls_per_s": round(us.size / wall, 1),
        "p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
        "mean_us": round(float(us.mean()), 1),
        "client_cpu_us_per_call": round(per_call["client"], 1),
        "server_cpu_us_per_call": round(per_call["server"], 1),
        "redis_cpu_us_per_call": round(per_call["redis"], 1),
        # What the machine's cores allow if every one of them did nothing but this row's work.
        "cpu_ceiling_calls_per_s": round((os.cpu_count() or 1) * 1e6 / sum(per_call.values()), 1),
        # Of the row's wall time x cores, the share its processes used (the rest: idle or other work).
        "cpu_share_of_machine": round((client_cpu + server_cpu + store_cpu) / (wall * (os.cpu_count() or 1)), 3),
    }


def run_store(store: str, url: str, pipes: list[Connection], seconds: float, window: int,
              many: int, workers: int = 0, settle: bool = True) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    server = ctx.Process(target=serve, args=(store, url, theirs, workers, settle))
    server.start()
    admin = redis.Redis.from_url(url) if store == "redis" else None
    try:
        address = f"127.0.0.1:{mine.recv()}"
        assert server.pid is not None
        rows = run_rows(store, 1, pipes, address, seconds, window, many, server.pid, admin)
        mine.send("stop")
        mine.recv()
    finally:
        server.join(10)
        if server.is_alive():
            server.terminate()
        if admin is not None:
            admin.close()
    return rows


def run_rows(store: str, processes: int, pipes: list[Connection], address: str, seconds: float, window: int,
             many: int, server_pid: int, admin: redis.Redis | None,
             metrics_ports: Sequence[int] = ()) -> list[dict[str, Any]]:
    rows = []
    for rpc in ("submit", "health"):
        for clients in (1, many):
            before = scheduler_counts(metrics_ports)
            row = run_row(pipes, address, rpc, clients, seconds, window, f"{store}-{processes}-{rpc}-{clients}",
                          server_pid, admin)
            if metrics_ports:  # the replicas' own counters, summed: the work behind each answered call
                after = scheduler_counts(metrics_ports)
                row.update({f"{k}_per_call": round((after[k] - before.get(k, 0.0)) / row["calls"], 3) for k in after})
            rows.append({"store": store, "server_processes": processes, **row})
            print(f"  {store} x{processes} processes {row['rpc']} x{clients}: {row['calls_per_s']:,.0f}/s, "
                  f"p99 {row['p99_us']:,.0f} µs", file=sys.stderr)
    return rows


COUNTERS = {  # serve --metrics-address series -> row field (per call)
    "grid_scheduler_decision_duration_seconds_count": "decisions",
    "grid_scheduler_commit_duration_seconds_count": "commits",
    "grid_scheduler_commit_conflicts_total": "conflicts",
}


def scheduler_counts(ports: Sequence[int]) -> dict[str, float]:
    """Decisions, commits and refused commits so far, summed over the replicas' metrics endpoints."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = dict.fromkeys(COUNTERS.values(), 0.0)
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in COUNTERS:
                    counts[COUNTERS[sample.name]] += sample.value
                if sample.name == "grid_scheduler_commit_conflicts_total":
                    kind = f"conflicts_{sample.labels['conflict']}"
                    counts[kind] = counts.get(kind, 0.0) + sample.value
    return counts


def run_processes(processes: int, url: str, pipes: list[Connection], seconds: float, window: int,
                  many: int) -> list[dict[str, Any]]:
    """Redis rows against ``grid-scheduler serve --processes N``, started as a user would."""
    address, metrics_port = f"127.0.0.1:{free_port()}", free_port()
    script = Path(sys.executable).parent / "grid-scheduler"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [str(script), "serve", "--processes", str(processes), "--store", url, "--address", address,
             "--metrics-address", f"127.0.0.1:{metrics_port}", "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT)
        admin = redis.Redis.from_url(url)
        try:
            _wait_replicas(server, log, address, [metrics_port + i for i in range(processes)])
            ports = [metrics_port + i for i in range(processes)]
            return run_rows("redis", processes, pipes, address, seconds, window, many, server.pid, admin, ports)
        finally:
            server.terminate()  # SIGTERM: every replica stops gracefully
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            admin.close()


def _wait_replicas(server: subprocess.Popen[bytes], log: Any, address: str, metrics_ports: list[int]) -> None:
    # Each replica's metrics endpoint is up once its scheduler is built, just before its server
    # starts; then the address must answer health, and a moment lets the last one bind.
    from grid_scheduler.client import Client

    deadline = time.monotonic() + 180
    for port in metrics_ports:
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise SystemExit(f"serve --processes exited:\n{log.read().decode()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"replica metrics on port {port} never came up") from None
                time.sleep(0.2)
    with Client(address, timeout_s=5) as c:
        while c.check_health() != 1:  # SERVING
            time.sleep(0.1)
    time.sleep(2.0)


def ratios(rows: list[dict[str, Any]], store: str, many: int, processes: int = 1) -> dict[str, Any]:
    by = {(r["rpc"], r["clients"]): r for r in rows
          if r["store"] == store and r.get("server_processes", 1) == processes}
    one, more = by[("SubmitJob", 1)], by[("SubmitJob", many)]
    e1, em = by[("Health Check (empty)", 1)], by[("Health Check (empty)", many)]
    throughput = more["calls_per_s"] / one["calls_per_s"]
    p99 = more["p99_us"] / one["p99_us"]
    return {
        "throughput_ratio": round(throughput, 3), "p99_ratio": round(p99, 2),
        "met": throughput >= TARGET_THROUGHPUT_RATIO and p99 <= TARGET_P99_RATIO,
        "empty_throughput_ratio": round(em["calls_per_s"] / e1["calls_per_s"], 3),
        "submit_over_empty_calls_per_s": {"1": round(one["calls_per_s"] / e1["calls_per_s"], 3),
                                          str(many): round(more["calls_per_s"] / em["calls_per_s"], 3)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per row")
    parser.add_argument("--quick", action="store_true", help="1.5 s per row")
    parser.add_argument("--clients", type=int, default=8, help="client processes of the concurrent rows")
    parser.add_argument("--window", type=int, default=32, help="live jobs kept (over all clients)")
    parser.add_argument("--stores", default="memory,redis", help="comma-separated: memory, redis")
    parser.add_argument("--redis-url", default="", help="use this Redis (its database is FLUSHED)")
    parser.add_argument("--workers", type=int, default=0,
                        help="gRPC worker threads of the one-process server (0: start_server's default, 16)")
    parser.add_argument("--server-processes", default="1",
                        help="comma-separated: server processes (serve --processes N; N > 1: Redis rows only)")
    parser.add_argument("--default-gc", action="store_true",
                        help="CPython gc settings in the server (default: gc_tuning.settle_heap, as serve)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seconds = 1.5 if args.quick else args.seconds
    stores = [s for s in args.stores.split(",") if s]
    processes = sorted({int(n) for n in args.server_processes.split(",") if n})
    if not processes or processes[0] < 1:
        parser.error("--server-processes: each N must be >= 1")

    started, load_at_start = time.perf_counter(), os.getloadavg()
    rows: list[dict[str, Any]] = []
    redis_version = ""
    with client_processes(args.clients, args.seed) as pipes:
        if "memory" in stores and 1 in processes:
            rows += run_store("memory", "", pipes, seconds, args.window, args.clients, args.workers,
                              not args.default_gc)
        if "redis" in stores:
            with (private_redis() if not args.redis_url else _given(args.redis_url)) as url:
                admin = redis.Redis.from_url(url)
                admin.flushdb()
                redis_version = admin.info("server")["redis_version"]
                for n in processes:
                    if n == 1:
                        rows += run_store("redis", url, pipes, seconds, args.window, args.clients, args.workers,
                                          not args.default_gc)
                    else:
                        rows += run_processes(n, url, pipes, seconds, args.window, args.clients)
                    admin.flushdb()
    measured = [(store, n) for n in processes for store in stores
                if any(r["store"] == store and r["server_processes"] == n for r in rows)]
    by_store = {s: ratios(rows, s, args.clients) for s, n in measured if n == 1}
    by_processes: dict[str, dict[str, Any]] = {}
    for store, n in measured:
        by_processes.setdefault(str(n), {})[store] = ratios(rows, store, args.clients, n)

    print(f"\n{seconds:g} s per row, {os.cpu_count()} cores, load average {load_at_start[0]:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end; server and each client in its own process on 127.0.0.1\n")
    print("| store | server processes | RPC | clients | calls | calls/s | p50 µs | p99 µs | mean µs "
          "| CPU µs/call: client + server + redis | CPU ceiling calls/s | CPU share of machine |")
    print("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['store']} | {r['server_processes']} | {r['rpc']} | {r['clients']} | {r['calls']:,} "
              f"| {r['calls_per_s']:,.0f} | {r['p50_us']:,.0f} | {r['p99_us']:,.0f} | {r['mean_us']:,.0f} "
              f"| {r['client_cpu_us_per_call']:,.0f} + {r['server_cpu_us_per_call']:,.0f} + "
              f"{r['redis_cpu_us_per_call']:,.0f} | {r['cpu_ceiling_calls_per_s']:,.0f} "
              f"| {r['cpu_share_of_machine']:.2f} |")
    print(f"\n| store | server processes | SubmitJob calls/s, {args.clients} / 1 (target ≥ {TARGET_THROUGHPUT_RATIO}) "
          f"| SubmitJob p99, {args.clients} / 1 (target ≤ {TARGET_P99_RATIO:g}) | met "
          f"| empty RPC calls/s, {args.clients} / 1 | SubmitJob / empty calls/s (1; {args.clients}) |")
    print("|---|--:|--:|--:|---|--:|--:|")
    for n, per_store in by_processes.items():
        for store, r in per_store.items():
            over = r["submit_over_empty_calls_per_s"]
            print(f"| {store} | {n} | {r['throughput_ratio']:.2f} | {r['p99_ratio']:.2f} "
                  f"| {'yes' if r['met'] else 'NO'} | {r['empty_throughput_ratio']:.2f} "
                  f"| {over['1']:.2f}; {over[str(args.clients)]:.2f} |")
    counted = [r for r in rows if "decisions_per_call" in r and r["rpc"] == "SubmitJob"]
    if counted:
        print("\nThe replicas' own counters (serve --metrics-address), summed, per SubmitJob answered:\n")
        print("| store | server processes | clients | decisions | commits | refused commits (conflicts) "
              "| of which ledger moved; capacity; stale record |")
        print("|---|--:|--:|--:|--:|--:|--:|")
        for r in counted:
            print(f"| {r['store']} | {r['server_processes']} | {r['clients']} | {r['decisions_per_call']:.2f} "
                  f"| {r['commits_per_call']:.2f} | {r['conflicts_per_call']:.2f} "
                  f"| {r.get('conflicts_ledger_moved_per_call', 0.0):.2f}; "
                  f"{r.get('conflicts_capacity_per_call', 0.0):.2f}; "
                  f"{r.get('conflicts_stale_record_per_call', 0.0):.2f} |")
    report = {
        "benchmark": "concurrent_clients",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            **machine(load_at_start),
            "platform": platform.platform(), "python": platform.python_version(), "grpcio": grpc.__version__,
            "redis_server": redis_version,
        },
        "config": {"seconds_per_row": seconds, "clients": args.clients, "window": args.window, "seed": args.seed,
                   "server_processes": processes, "workers": args.workers or 16,
                   "gc": "CPython defaults" if args.default_gc else "settle_heap (as serve)",
                   "grid": "examples/grids/nscale.yaml", "jobs": f"synthetic.job_stream(grid, {JOBS}, seed)"},
        "targets": {"throughput_ratio_min": TARGET_THROUGHPUT_RATIO, "p99_ratio_max": TARGET_P99_RATIO},
        "ratios": by_store,
        "ratios_by_server_processes": by_processes,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write(args.out, report, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
