"""What topology inside pools costs the online decision (issue 11), side by side.

On examples/grids/nscale.yaml (51 pools, 78,986 nodes; every GB300 pool in 72-GPU NVL72 racks),
with the ledger 40% used, ``engine.decide`` is timed for:

- ``pool level``: a snapshot without node detail (what every store gives until per-node usage
  lands), unconstrained jobs: today's path;
- ``node detail, view cached``: the same usage with per-node arrays; the NodeView (free GPUs per
  node and domain) is built once per ledger version and shared by every decision on it;
- ``node detail, view rebuilt``: the first decision after a ledger change, which builds it;

each for unconstrained, whole-domain and 8-GPU-slice GB300 gangs of 72-1,152 GPUs (the same
sizes for every mode). The node arrays make 40% of racks wholly busy and 30% one node short
(partly used), so fragmentation is real and whole free racks remain.

    .venv/bin/python benchmarks/topology_decide.py            # 2,000 decisions per row
    .venv/bin/python benchmarks/topology_decide.py --quick    # 200 per row (seconds)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.engine import Usage, decide
from grid_scheduler.engine.index import GridIndex
from grid_scheduler.model import JobSpec, Policy

RESULTS = Path(__file__).resolve().parent / "results" / "topology_decide.json"
SIZES = (72, 144, 288, 576, 1152)
MODES: dict[str, dict[str, object]] = {
    "none": {},
    "whole_domains": {"mode": "whole_domains"},
    "slices of 8": {"mode": "slices", "slice_gpus": 8},
}


def usage_with_nodes(index: GridIndex, used_share: float, seed: int) -> tuple[Usage, Usage]:
    """The same ledger twice: pool level only, and with per-node arrays."""
    rng = np.random.default_rng(seed)
    used_nodes, out_nodes = [], []
    for pool, shape in zip(index.pools, index.pool_shapes, strict=True):
        used = np.zeros(pool.nodes, dtype=np.int32)
        racks = -(-pool.nodes // shape.nodes_per_domain)
        draw = rng.random(racks)
        for d in range(racks):
            first = d * shape.nodes_per_domain
            if draw[d] < used_share:  # a whole rack busy (whole-domain jobs)
                used[first : first + shape.nodes_per_domain] = pool.gpus_per_node
            elif draw[d] < used_share + 0.3:  # a rack with its first node busy: partly used
                used[first] = pool.gpus_per_node
        out = np.arange(pool.nodes) >= pool.nodes - pool.drained_nodes
        used[out] = 0
        used_nodes.append(used)
        out_nodes.append(out)
    pool_used = np.array([int(u.sum()) for u in used_nodes], dtype=np.int64)
    site_kw = np.zeros(len(index.site_ids))
    np.add.at(site_kw, index.pool_site, pool_used * index.pool_kw_per_gpu)
    drained = np.zeros(len(index.pool_ids), dtype=np.bool_)
    flat = Usage(pool_used, site_kw, drained)
    return flat, Usage(pool_used, site_kw, drained, node_used_gpus=tuple(used_nodes), node_out=tuple(out_nodes))


def job(gpus: int, topology: dict[str, object]) -> JobSpec:
    return JobSpec.model_validate({"name": "bench", "tenant": "acme", "kind": "training", "gang": True,
                                   "gpus": {"count": gpus, "types": ["GB300"]}, "topology": topology})


def time_rows(index: GridIndex, calls: int) -> list[dict[str, Any]]:
    policy = Policy()
    flat, nodes = usage_with_nodes(index, 0.4, seed=11)
    rows = []
    for mode, topology in MODES.items():
        specs = [job(SIZES[i % len(SIZES)], topology) for i in range(calls)]
        for label, usage, rebuild in (("pool level", flat, False), ("node detail, view cached", nodes, False),
                                      ("node detail, view rebuilt", nodes, True)):
            decide(index, usage, specs[0], policy)  # warm the masks
            gc.collect()
            ns, placed = [], 0
            for spec in specs:
                if rebuild:
                    usage.node_view_cache.clear()
                start = time.perf_counter_ns()
                decision = decide(index, usage, spec, policy)
                ns.append(time.perf_counter_ns() - start)
                placed += decision.placement is not None
            us = np.asarray(ns, dtype=np.float64) / 1000.0
            rows.append({"job topology": mode, "ledger": label, "calls": calls, "placed": placed,
                         "p50_us": round(float(np.percentile(us, 50)), 1),
                         "p99_us": round(float(np.percentile(us, 99)), 1),
                         "mean_us": round(float(us.mean()), 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 decisions per row")
    parser.add_argument("--out", type=Path, default=None, help=f"JSON results (default without --quick: {RESULTS})")
    args = parser.parse_args()
    calls = 200 if args.quick else 2000
    index = GridIndex.build(load_grid(DEFAULT_GRID))
    load = os.getloadavg()[0]
    rows = time_rows(index, calls)
    print("| job topology | ledger | calls | placed | p50 µs | p99 µs | mean µs |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['job topology']} | {r['ledger']} | {r['calls']} | {r['placed']} | {r['p50_us']:,.0f} "
              f"| {r['p99_us']:,.0f} | {r['mean_us']:,.0f} |")
    print(f"\nload average (1 min) {load:.2f} at start, {os.getloadavg()[0]:.2f} at end; {os.cpu_count()} cores")
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        out.write_text(json.dumps({"grid": str(DEFAULT_GRID.name), "rows": rows}, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
