"""Where the server's CPU per SubmitJob goes: the scheduler, our service layer, grpcio's machinery.

The server of ``concurrent_clients.py`` (example grid, in-memory store, ``settle_heap`` as ``serve``)
in its own process, with ``time.thread_time()`` accumulated around grpcio's own steps
(``grpc._server``: the polling thread's event processing and dispatch, the worker's call, the
behaviour, the send) and around the pieces of our handlers and ``Scheduler.submit`` / ``cancel``;
every thread's CPU from ``/proc/<pid>/task``. Clients are ``concurrent_clients``' (separate
processes, SubmitJob with unique request ids, cancelling their oldest live job past the window).
Figures are µs of server CPU per submission; each submission also carries its client's CancelJob
(the ``per submission`` column of the calls says how many).

    .venv/bin/python benchmarks/server_cpu.py            # 5 s rows, 1 and 8 clients
    .venv/bin/python benchmarks/server_cpu.py --quick    # 1.5 s rows
    # main's code with this script: PYTHONPATH=/path/to/main /path/to/main/.venv/bin/python benchmarks/server_cpu.py

The wrappers cost ~1 µs per wrapped call (inside the figures). A step grpcio no longer has is
reported as absent rather than failing the run.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrent_clients import client_processes, run_row
from report import machine, write

RESULTS = Path(__file__).resolve().parent / "results" / "server_cpu.json"
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")

# (module attribute, label): grpcio's steps, looked up by name where grpcio calls them.
GRPC_STEPS = (
    ("_process_event_and_continue", "poll: events (all)"),
    ("_handle_call", "poll: dispatch (interceptors, pool submit)"),
    ("_unary_response_in_pool", "worker: call (all)"),
    ("_call_behavior", "worker: behaviour (interceptors + handler)"),
    ("_status", "worker: send reply + status"),
    ("_serialize_response", "worker: serialise"),
)


# The table's order: the scheduler, our layer around it, grpcio's worker side, its polling thread;
# "(all)" lines are the sums the lines above them split.
ORDER = (
    "Scheduler.submit", "Scheduler.cancel",
    "handler: request -> JobSpec (caller_spec)", "handler: replies (job_to_pb)", "handler: job lookup (_manageable)",
    "auth: admit", "auth: audit record", "worker: rest of behaviour (wrappers, handled, handler bodies)",
    "worker: behaviour (interceptors + handler)",
    "worker: deserialise, context", "worker: send reply + status", "worker: serialise", "worker: call (all)",
    "poll: dispatch (interceptors, pool submit)", "poll: the other events", "poll: events (all)",
)


def _timed(acc: collections.Counter[str], label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[label] += time.thread_time() - began
            acc[label + " #"] += 1

    return timed


def serve(out: Connection) -> None:
    """The server process: instruments, builds the scheduler and the real server, answers commands."""
    import threading

    import grpc._server as grpc_server

    from grid_scheduler.config import DEFAULT_GRID, load_grid
    from grid_scheduler.gc_tuning import settle_heap
    from grid_scheduler.logging import configure
    from grid_scheduler.scheduler import Scheduler
    from grid_scheduler.service import placement
    from grid_scheduler.service.auth import interceptor
    from grid_scheduler.service.server import start_server

    configure("warning")
    acc: collections.Counter[str] = collections.Counter()
    absent = []
    for name, label in GRPC_STEPS:
        if hasattr(grpc_server, name):
            setattr(grpc_server, name, _timed(acc, label, getattr(grpc_server, name)))
        else:
            absent.append(name)
    ours: list[tuple[Any, str, str]] = [
        (Scheduler, "submit", "Scheduler.submit"), (Scheduler, "cancel", "Scheduler.cancel"),
        (placement, "caller_spec", "handler: request -> JobSpec (caller_spec)"),
        (placement.convert, "job_to_pb", "handler: replies (job_to_pb)"),
        (placement.PlacementServicer, "_manageable", "handler: job lookup (_manageable)"),
        (interceptor.AuthInterceptor, "_admit", "auth: admit"),
        (interceptor.AuthInterceptor, "_audit", "auth: audit record"),
    ]
    for owner, name, label in ours:
        if hasattr(owner, name):
            setattr(owner, name, _timed(acc, label, getattr(owner, name)))
        else:
            absent.append(name)
    grid = load_grid(DEFAULT_GRID)
    scheduler = Scheduler(grid)
    settle_heap()
    server = start_server(scheduler, "127.0.0.1:0")
    out.send((server.port, absent))
    while True:
        command = out.recv()
        if command == "take":  # the steps so far (and reset), and which thread is which
            out.send((dict(acc), {t.native_id: t.name for t in threading.enumerate()}))
            acc.clear()
            continue
        break
    server.stop(1.0)
    out.send("stopped")


def threads_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds per thread id of ``pid``, from /proc."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) * TICK_S
    return out


def thread_kind(name: str | None) -> str:
    if name is None:
        return "non-Python threads (grpc C core's event engine)"
    if name.startswith("grpc"):
        return "grpc worker threads"
    if "_serve" in name:
        return "grpc polling thread"
    if name == "audit-writer":
        return "audit writer"
    return "other threads (health, retries, main)"


def breakdown(acc: dict[str, float], submissions: int) -> dict[str, float]:
    """Per-submission µs of each step, with the remainders the nesting implies."""
    us = {k: v / submissions * 1e6 for k, v in acc.items() if not k.endswith(" #")}
    ours = [k for k in us if k.startswith(("Scheduler.", "handler:", "auth:"))]
    derived = {
        "worker: rest of behaviour (wrappers, handled, handler bodies)":
            us.get("worker: behaviour (interceptors + handler)", 0.0) - sum(us[k] for k in ours),
        "worker: deserialise, context": us.get("worker: call (all)", 0.0)
            - us.get("worker: behaviour (interceptors + handler)", 0.0) - us.get("worker: send reply + status", 0.0)
            - us.get("worker: serialise", 0.0),
        "poll: the other events": us.get("poll: events (all)", 0.0)
            - us.get("poll: dispatch (interceptors, pool submit)", 0.0),
    }
    return {**us, **derived}


def run_rows(pipes: list[Connection], window: int, many: int, seconds: float) -> tuple[list[dict[str, Any]], list[str]]:
    """The server in its own process, measured under 1 and then ``many`` clients: a row per run, and
    the steps this grpcio or tree could not instrument."""
    rows: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    control, theirs = ctx.Pipe()
    server = ctx.Process(target=serve, args=(theirs,))
    server.start()
    try:
        port, absent = control.recv()
        address = f"127.0.0.1:{port}"
        assert server.pid is not None
        run_row(pipes, address, "submit", 1, 1.0, window, "warm", server.pid)  # both sides warm
        for clients in (1, many):
            control.send("take")
            control.recv()
            before = threads_cpu_s(server.pid)
            row = run_row(pipes, address, "submit", clients, seconds, window, f"row-{clients}", server.pid)
            after = threads_cpu_s(server.pid)
            control.send("take")
            acc, names = control.recv()
            calls = row["calls"]
            by_thread: collections.Counter[str] = collections.Counter()
            for tid, cpu_s in after.items():
                by_thread[thread_kind(names.get(tid))] += cpu_s - before.get(tid, 0.0)
            rows.append({
                "clients": clients, "calls": calls, "calls_per_s": row["calls_per_s"],
                "server_cpu_us_per_submission": row["server_cpu_us_per_call"],
                "steps_us_per_submission": {k: round(v, 1) for k, v in breakdown(acc, calls).items()},
                "steps_calls_per_submission": {k[:-2]: round(v / calls, 2) for k, v in acc.items() if k.endswith(" #")},
                "threads_us_per_submission": {k: round(v / calls * 1e6, 1) for k, v in by_thread.most_common()},
            })
            print(f"  {clients} client(s): {row['calls_per_s']:,.0f}/s, server {row['server_cpu_us_per_call']:,.0f} µs "
                  "per submission", file=sys.stderr)
        control.send("stop")
        control.recv()
    finally:
        server.join(10)
        if server.is_alive():
            server.terminate()
    return rows, absent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per row")
    parser.add_argument("--quick", action="store_true", help="1.5 s per row")
    parser.add_argument("--clients", type=int, default=8, help="client processes of the concurrent row")
    parser.add_argument("--window", type=int, default=32, help="live jobs kept (over all clients)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    seconds = 1.5 if args.quick else args.seconds

    started, load_at_start = time.perf_counter(), os.getloadavg()
    with client_processes(args.clients, args.seed) as pipes:
        rows, absent = run_rows(pipes, args.window, args.clients, seconds)

    print(f"\n{seconds:g} s per row, {os.cpu_count()} cores, load average {load_at_start[0]:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at end; µs of server CPU per submission (its CancelJob included)\n")
    header = " | ".join(f"{r['clients']} client{'s' if r['clients'] > 1 else ''}" for r in rows)
    print(f"| step | {header} |")
    print("|---|" + "--:|" * len(rows))
    found = {k for r in rows for k in r["steps_us_per_submission"]}
    steps = [k for k in ORDER if k in found] + sorted(found - set(ORDER))
    for step in steps:
        cells = " | ".join(f"{r['steps_us_per_submission'].get(step, 0.0):,.0f}" for r in rows)
        print(f"| {step} | {cells} |")
    kinds = sorted({k for r in rows for k in r["threads_us_per_submission"]})
    for kind in kinds:
        cells = " | ".join(f"{r['threads_us_per_submission'].get(kind, 0.0):,.0f}" for r in rows)
        print(f"| thread: {kind} | {cells} |")
    cells = " | ".join(f"**{r['server_cpu_us_per_submission']:,.0f}**" for r in rows)
    print(f"| **server total** | {cells} |")
    calls = " | ".join(f"{r['steps_calls_per_submission'].get('Scheduler.cancel', 0.0):.2f}" for r in rows)
    print(f"| CancelJob calls per submission | {calls} |")
    if absent:
        print(f"\nnot instrumented (absent in this grpcio or tree): {', '.join(absent)}")
    report = {
        "benchmark": "server_cpu",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**machine(load_at_start), "platform": platform.platform(), "python": platform.python_version(),
                    "grpcio": grpc.__version__},
        "config": {"seconds_per_row": seconds, "clients": args.clients, "window": args.window, "seed": args.seed,
                   "grid": "examples/grids/nscale.yaml", "store": "memory", "gc": "settle_heap (as serve)"},
        "not_instrumented": absent,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write(args.out, report, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
