"""Site agents' heartbeats against SubmitJob: their handling cost, and SubmitJob's latency with and without them.

One server (in this process, 127.0.0.1, the in-memory store, the nscale example grid, heartbeat
timeout on). A child process plays the agents: one per site of the grid (``--agents``, at most the
grid's sites), each registering every node of its site (up to ``--nodes`` per agent) and then
heartbeating every ``--interval`` s with ``--failed`` of its nodes failed (a stable set: the
steady state; the first heartbeat changes capacity, the rest do not). This process submits jobs
one at a time (8 B200 in the EU; beyond ``--window`` live jobs the oldest is cancelled, untimed).

Phases, on the same server: submits alone, submits while the agents heartbeat (each phase at least
``--calls`` calls and 6 heartbeat intervals, 2 with --quick), and a burst (the
child sends heartbeats back to back; this process only serves them): server CPU per heartbeat
is this process's ``time.process_time`` over the burst divided by the heartbeats served.

    .venv/bin/python benchmarks/agent_heartbeats.py            # 2,000 submits per phase, 20 agents x 1,000 nodes
    .venv/bin/python benchmarks/agent_heartbeats.py --quick    # 300 submits per phase
    # --agents N, --nodes N, --failed N, --interval S, --burst N, --calls N, --out PATH
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler.client import Client
from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import JobSpec
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import start_server

SPEC = JobSpec.model_validate({"name": "bench", "tenant": "acme", "kind": "training",
                               "gpus": {"count": 8, "types": ["B200"]}, "residency": {"allowed": ["EU"]}})


def agents(grid_path: str, count: int, nodes: int) -> list[tuple[str, dict[str, list[str]]]]:
    grid = load_grid(grid_path)
    out = []
    for site in grid.sites[:count]:
        inventory: dict[str, list[str]] = {}
        left = nodes
        for pool in site.pools:
            take = min(pool.nodes, left)
            inventory[pool.id] = [f"{pool.id}-n{i}" for i in range(take)]
            left -= take
        out.append((site.id, inventory))
    return out


def play_agents(address: str, grid_path: str, count: int, nodes: int, failed: int, interval_s: float,
                stop: Any, burst: int, results: Any) -> None:
    sites = agents(grid_path, count, nodes)
    latencies: list[float] = []
    with Client(address, timeout_s=30) as client:
        beats = []
        for site_id, inventory in sites:
            client.agents.RegisterAgent(apb.RegisterAgentRequest(site_id=site_id, agent_id=f"bench-{site_id}", pools=[
                apb.PoolNodes(pool_id=p, nodes=n) for p, n in inventory.items()]))
            names = [(p, n) for p, ns in inventory.items() for n in ns][:failed]
            beats.append(apb.HeartbeatRequest(site_id=site_id, agent_id=f"bench-{site_id}", nodes=[
                apb.NodeStatus(pool_id=p, node=n, health=apb.NODE_HEALTH_FAILED, reason="XID 79") for p, n in names]))
        results.put(("registered", len(sites)))
        while not stop.is_set():
            start = time.monotonic()
            for beat in beats:
                t0 = time.perf_counter()
                client.agents.Heartbeat(beat)
                latencies.append(time.perf_counter() - t0)
            stop.wait(max(0.0, interval_s - (time.monotonic() - start)))
        results.put(("steady", latencies))
        t_burst = time.perf_counter()
        for i in range(burst):
            client.agents.Heartbeat(beats[i % len(beats)])
        results.put(("burst", (burst, time.perf_counter() - t_burst)))


def submits(client: Client, calls: int, window: int, live: list[str], min_s: float = 0.0) -> list[float]:
    """At least ``calls`` submissions, for at least ``min_s`` seconds."""
    out: list[float] = []
    start = time.monotonic()
    while len(out) < calls or time.monotonic() - start < min_s:
        t0 = time.perf_counter()
        job = client.submit(SPEC).job
        out.append(time.perf_counter() - t0)
        live.append(job.id)
        if len(live) > window:
            client.cancel(live.pop(0))
    return out


def ms(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000.0, q)) if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--failed", type=int, default=10, help="failed nodes listed in each heartbeat")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--burst", type=int, default=0)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    calls = args.calls or (300 if args.quick else 2000)
    burst = args.burst or (500 if args.quick else 4000)
    configure("error", json=False)
    min_s = args.interval * (2 if args.quick else 6)  # every agent heartbeats several times per phase
    grid_path = str(DEFAULT_GRID)
    scheduler = Scheduler(load_grid(grid_path))
    scheduler.heartbeat_timeout_s, scheduler.site_grace_s = 30.0, 60.0
    running = start_server(scheduler, "127.0.0.1:0", batch_interval_s=None)
    address = f"127.0.0.1:{running.port}"
    live: list[str] = []
    try:
        with Client(address, timeout_s=30) as client:
            submits(client, 100, args.window, live)  # warm-up
            alone = submits(client, calls, args.window, live, min_s)
            ctx = mp.get_context("spawn")
            stop, results = ctx.Event(), ctx.Queue()
            child = ctx.Process(target=play_agents, args=(address, grid_path, args.agents, args.nodes, args.failed,
                                                         args.interval, stop, burst, results))
            child.start()
            _, n_agents = results.get(timeout=300)
            with_agents = submits(client, calls, args.window, live, min_s)
            stop.set()
            _, steady = results.get(timeout=300)
            cpu0 = time.process_time()
            _, (n_burst, burst_s) = results.get(timeout=600)
            cpu_per_beat_ms = (time.process_time() - cpu0) * 1000.0 / n_burst
            child.join(timeout=60)
    finally:
        running.stop(grace_s=1.0)
    rows = [
        ("SubmitJob, no agents", len(alone), ms(alone, 50), ms(alone, 99)),
        (f"SubmitJob, {n_agents} agents heartbeating every {args.interval:g} s", len(with_agents),
         ms(with_agents, 50), ms(with_agents, 99)),
        ("Heartbeat (steady, during the submits)", len(steady), ms(steady, 50), ms(steady, 99)),
    ]
    print(f"{'phase':<58} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, n, p50, p99 in rows:
        print(f"{name:<58} {n:>6} {p50:>8.2f} {p99:>8.2f}")
    print(f"burst: {n_burst} heartbeats ({args.failed} failed nodes listed each) in {burst_s:.2f} s = "
          f"{n_burst / burst_s:.0f}/s; server CPU {cpu_per_beat_ms:.3f} ms per heartbeat")
    nodes_each = min(args.nodes, max(sum(len(n) for n in inv.values()) for _, inv in agents(grid_path, args.agents,
                                                                                              args.nodes)))
    print(f"({n_agents} agents, up to {nodes_each} nodes each; {platform.processor() or platform.machine()})")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "args": vars(args), "agents": n_agents,
            "rows": [{"phase": r[0], "calls": r[1], "p50_ms": r[2], "p99_ms": r[3]} for r in rows],
            "burst": {"heartbeats": n_burst, "seconds": burst_s, "server_cpu_ms_per_heartbeat": cpu_per_beat_ms},
        }, indent=2))


if __name__ == "__main__":
    main()
