"""Site agents' heartbeats against SubmitJob: their handling cost, and SubmitJob's latency with and without them.

One server (in this process, 127.0.0.1, heartbeat timeout on, so the site monitor runs every
second) on the memory store and on Redis (``--store``; Redis is a private ``redis-server`` this
script starts, AOF on, as store_throughput.py). The grid is synthetic (``--grid synthetic``, the
default): ``--agents`` sites of exactly ``--nodes`` nodes each (grid_scheduler/synthetic.py's grid,
its pools resized), so 20 agents really register 1,000 nodes each; ``--grid example`` uses the
nscale example grid (18 sites, fewer nodes each).

Two child processes talk to the server. The agents' process registers one agent per site, every
node of its site, then heartbeats every ``--interval`` s with ``--failed`` of each site's nodes
failed (a stable set: the steady state; the first heartbeat takes their GPUs out of capacity, the
rest change nothing). The submitters' process submits jobs one at a time (8 GPUs; beyond
``--window`` live jobs the oldest is cancelled, untimed).

Phases, per store, on one server: submits alone, submits while the agents heartbeat (each phase
at least ``--calls`` calls and 6 heartbeat intervals, 2 with --quick), and a burst (the agents'
process sends heartbeats back to back, nothing else runs). Server CPU is this process's
``time.process_time``: per heartbeat over the burst, and as a share of one core while no job is
submitted, for as long as a phase's minimum, with and without agents (the server's own loops, and
then the site monitor and the steady heartbeats too).

    .venv/bin/python benchmarks/agent_heartbeats.py            # 2,000 submits per phase, 20 agents x 1,000 nodes
    .venv/bin/python benchmarks/agent_heartbeats.py --quick    # 300 submits per phase
    # --store memory|redis|both, --grid synthetic|example, --agents N, --nodes N, --failed N,
    # --interval S, --burst N, --calls N, --redis-url URL (instead of a private server), --out PATH
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from store_throughput import private_redis

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler.client import Client
from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import Grid, JobSpec
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import start_server
from grid_scheduler.state import Limits
from grid_scheduler.synthetic import synthetic_grid

SPEC = JobSpec.model_validate({"name": "bench", "tenant": "acme", "kind": "training", "gpus": {"count": 8}})


def fleet_grid(sites: int, nodes_per_site: int, seed: int = 0) -> Grid:
    """synthetic_grid's sites and links, each site's pools resized to ``nodes_per_site`` nodes in all
    (split in proportion to their sizes), no drained nodes, and envelopes that fit the GPUs."""
    base = synthetic_grid(sites=sites, pools=sites * 2, seed=seed)
    data = base.model_dump(mode="json")
    board_kw = {g["name"]: g["board_power_kw"] for g in data["gpu_types"]}
    for site in data["sites"]:
        pools = site["pools"]
        weights = [p["nodes"] for p in pools]
        left = nodes_per_site
        for i, pool in enumerate(pools):
            share = left if i == len(pools) - 1 else max(1, round(nodes_per_site * weights[i] / sum(weights)))
            share = min(share, left - (len(pools) - 1 - i))  # every later pool keeps at least one node
            pool["nodes"], pool["drained_nodes"] = share, 0
            left -= share
        draw_kw = sum(p["nodes"] * p["gpus_per_node"] * board_kw[p["gpu_type"]] for p in pools) * site["pue"]
        site["power_envelope_mw"] = math.ceil(draw_kw * 1.2) / 1000.0
    return Grid.model_validate(data)


def load_bench_grid(kind: str, sites: int, nodes: int) -> Grid:
    return fleet_grid(sites, nodes) if kind == "synthetic" else load_grid(DEFAULT_GRID)


def inventories(grid: Grid, count: int, nodes: int) -> list[tuple[str, dict[str, list[str]]]]:
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


def play_agents(address: str, grid_kind: str, count: int, nodes: int, failed: int, interval_s: float,
                stop: Any, burst: int, results: Any) -> None:
    configure("error", json=False)
    sites = inventories(load_bench_grid(grid_kind, count, nodes), count, nodes)
    latencies: list[float] = []
    with Client(address, timeout_s=60) as client:
        beats = []
        for site_id, inventory in sites:
            client.agents.RegisterAgent(apb.RegisterAgentRequest(site_id=site_id, agent_id=f"bench-{site_id}", pools=[
                apb.PoolNodes(pool_id=p, nodes=n) for p, n in inventory.items()]))
            names = [(p, n) for p, ns in inventory.items() for n in ns][:failed]
            beats.append(apb.HeartbeatRequest(site_id=site_id, agent_id=f"bench-{site_id}", nodes=[
                apb.NodeStatus(pool_id=p, node=n, health=apb.NODE_HEALTH_FAILED, reason="XID 79") for p, n in names]))
        for beat in beats:  # the first heartbeat changes capacity: not the steady state
            client.agents.Heartbeat(beat)
        results.put(("registered", (len(sites), sum(len(n) for _, inv in sites for n in inv.values()))))
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


def play_submits(address: str, calls: int, window: int, min_s: float, start: Any, results: Any) -> None:
    """Warm up, then one phase per ``start`` signal: at least ``calls`` submissions, at least ``min_s`` s."""
    configure("error", json=False)
    live: list[str] = []
    with Client(address, timeout_s=60) as client:
        def phase(n: int, seconds: float) -> list[float]:
            out: list[float] = []
            begun = time.monotonic()
            while len(out) < n or time.monotonic() - begun < seconds:
                t0 = time.perf_counter()
                job = client.submit(SPEC).job
                out.append(time.perf_counter() - t0)
                live.append(job.id)
                if len(live) > window:
                    client.cancel(live.pop(0))
            return out

        phase(100, 0.0)
        for _ in range(2):
            name = start.get()
            if name is None:
                break
            results.put((name, phase(calls, min_s)))
        for job_id in live:
            client.cancel(job_id)


def ms(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000.0, q)) if xs else float("nan")


def idle_cpu_share(seconds: float) -> float:
    """This process's CPU over ``seconds`` of wall time, as a share of one core."""
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    return (time.process_time() - cpu0) / (time.monotonic() - wall0)


@contextmanager
def store_url(store: str, given: str | None) -> Iterator[str]:
    if store == "memory":
        yield "memory"
    elif given:
        yield given
    else:
        with private_redis() as url:
            yield url


def run_store(store: str, url: str, grid: Grid, args: argparse.Namespace, calls: int, burst: int) -> dict[str, Any]:
    min_s = args.interval * (2 if args.quick else 6)  # every agent heartbeats several times per phase
    backend = None
    if store == "redis":
        from grid_scheduler.state.redis_store import RedisStore

        backend = RedisStore(Limits.from_grid(grid), url, f"hb-bench-{time.time_ns()}")
    scheduler = Scheduler(grid, store=backend)
    scheduler.heartbeat_timeout_s, scheduler.site_grace_s = 30.0, 60.0
    running = start_server(scheduler, "127.0.0.1:0", batch_interval_s=None)
    address = f"127.0.0.1:{running.port}"
    ctx = mp.get_context("spawn")
    try:
        start_q, sub_q, agent_q, stop = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
        submitter = ctx.Process(target=play_submits, args=(address, calls, args.window, min_s, start_q, sub_q))
        submitter.start()
        start_q.put("alone")
        _, alone = sub_q.get(timeout=900)
        idle_alone = idle_cpu_share(min_s)  # after the warm-up and the first phase: the steady server
        agents = ctx.Process(target=play_agents, args=(address, args.grid, args.agents, args.nodes, args.failed,
                                                       args.interval, stop, burst, agent_q))
        agents.start()
        _, (n_agents, n_nodes) = agent_q.get(timeout=600)
        idle_agents = idle_cpu_share(min_s)
        start_q.put("with agents")
        _, with_agents = sub_q.get(timeout=900)
        submitter.join(timeout=120)
        stop.set()
        _, steady = agent_q.get(timeout=300)
        cpu0 = time.process_time()
        _, (n_burst, burst_s) = agent_q.get(timeout=900)
        cpu_per_beat_ms = (time.process_time() - cpu0) * 1000.0 / n_burst
        agents.join(timeout=60)
    finally:
        running.stop(grace_s=1.0)
        if backend is not None:
            backend.close()
    rows = [
        ("SubmitJob, no agents", len(alone), ms(alone, 50), ms(alone, 99)),
        (f"SubmitJob, {n_agents} agents heartbeating every {args.interval:g} s", len(with_agents),
         ms(with_agents, 50), ms(with_agents, 99)),
        ("Heartbeat (steady, during the submits)", len(steady), ms(steady, 50), ms(steady, 99)),
    ]
    return {"store": store, "agents": n_agents, "nodes": n_nodes, "rows": rows,
            "burst": {"heartbeats": n_burst, "seconds": burst_s, "server_cpu_ms_per_heartbeat": cpu_per_beat_ms},
            "idle_server_cpu_share": {"no agents": idle_alone, "agents": idle_agents}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--store", choices=["memory", "redis", "both"], default="both")
    parser.add_argument("--grid", choices=["synthetic", "example"], default="synthetic")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--failed", type=int, default=10, help="failed nodes listed in each heartbeat")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--burst", type=int, default=0)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--redis-url", default=None, help="an existing Redis instead of a private redis-server")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    calls = args.calls or (300 if args.quick else 2000)
    burst = args.burst or (500 if args.quick else 4000)
    configure("error", json=False)
    grid = load_bench_grid(args.grid, args.agents, args.nodes)
    results = []
    for store in (["memory", "redis"] if args.store == "both" else [args.store]):
        with store_url(store, args.redis_url) as url:
            results.append(run_store(store, url, grid, args, calls, burst))
    print(f"{'store':<7} {'phase':<58} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        for name, n, p50, p99 in r["rows"]:
            print(f"{r['store']:<7} {name:<58} {n:>6} {p50:>8.2f} {p99:>8.2f}")
    print()
    print(f"{'store':<7} {'heartbeats/s (burst)':>21} {'server CPU ms/heartbeat':>24} "
          f"{'idle CPU, no agents':>20} {'idle CPU, agents':>17}")
    for r in results:
        b, idle = r["burst"], r["idle_server_cpu_share"]
        print(f"{r['store']:<7} {b['heartbeats'] / b['seconds']:>21.0f} {b['server_cpu_ms_per_heartbeat']:>24.3f} "
              f"{idle['no agents']:>19.1%} {idle['agents']:>16.1%}")
    first = results[0]
    print(f"({first['agents']} agents, {first['nodes']:,} nodes registered in all, {args.failed} failed per site, "
          f"grid {grid.name}; {platform.processor() or platform.machine()})")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "args": vars(args), "grid": grid.name,
            "stores": [{**r, "rows": [{"phase": x[0], "calls": x[1], "p50_ms": x[2], "p99_ms": x[3]}
                                      for x in r["rows"]]} for r in results],
        }, indent=2))


if __name__ == "__main__":
    main()
