"""Batch placement quality: CP-SAT against greedy and four baselines, side by side in one run.

Workloads (each one batch of pending jobs against the free capacity of a grid):

- ``trace``: the Alibaba GPU trace (openb_pod_list_default.csv) mapped onto
  examples/grids/nscale.yaml by the rule printed at the start of the run;
- ``generated``: ``synthetic.job_stream`` jobs on nscale.yaml, the grid preloaded to ~50 %;
- ``synthetic``: the same kind of jobs on a generated 500-pool grid, preloaded to ~50 %.

For each method: placed jobs, placed GPUs, priority-weighted GPU-hours ((priority + 1) x GPUs
x duration), latency-SLO attainment (inference deployments placed with every endpoint within
SLO / submitted), share of the power headroom used, fragmentation (free GPUs in pools too
small for the median waiting job, % of free GPUs), constraint violations by the independent
checker (engine/verify.py; must be 0) and wall time. CP-SAT also reports status and gap.

    .venv/bin/python benchmarks/batch_quality.py              # all workloads (~1-2 min)
    .venv/bin/python benchmarks/batch_quality.py --quick      # smaller, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from baselines import BASELINES, place_all
from workloads import Jobs, TraceMapping, generated_jobs, preload, quality, trace_jobs

from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.engine import GridIndex, Usage, decide
from grid_scheduler.engine.batch import as_modelled, solve_batch
from grid_scheduler.model import Placement, Policy
from grid_scheduler.synthetic import synthetic_grid

RESULTS = Path(__file__).resolve().parent / "results" / "batch_quality.json"
COLUMNS = ["placed_jobs", "placed_gpus", "pw_gpu_hours", "slo_attainment_pct", "power_headroom_used_pct",
           "fragmentation_pct", "violations", "time_s"]


def greedy(index: GridIndex, usage: Usage, jobs: Jobs, policy: Policy) -> dict[str, Placement]:
    """The online path, highest priority first (the batch's warm start), as its own method."""
    running = Usage(usage.pool_used_gpus.copy(), usage.site_used_kw.copy(), usage.pool_drained.copy())
    out: dict[str, Placement] = {}
    for job_id, spec in sorted(jobs, key=lambda j: -j[1].priority):
        placement = decide(index, running, as_modelled(spec), policy).placement
        if placement is None:
            continue
        out[job_id] = placement
        for a in placement.assignments:
            p = index.pool_index[a.pool_id]
            running.pool_used_gpus[p] += a.gpus
            running.site_used_kw[index.pool_site[p]] += a.power_kw
    return out


def run_workload(name: str, index: GridIndex, usage: Usage, jobs: Jobs, hours: dict[str, float],
                 policy: Policy, args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, dict[str, float]] = {}
    methods: dict[str, Any] = {"greedy (online decide)": lambda: greedy(index, usage, jobs, policy)}
    for label, rule in BASELINES.items():
        methods[label] = lambda rule=rule: place_all(index, usage, jobs, policy, rule)
    for label, method in methods.items():
        t = time.perf_counter()
        placements = method()
        elapsed = time.perf_counter() - t
        rows[label] = {**quality(index, usage, jobs, hours, placements, policy), "time_s": elapsed}
    t = time.perf_counter()
    result = solve_batch(index, usage, jobs, policy, time_limit_s=args.time_limit, workers=args.workers,
                         seed=args.seed, top_k=args.top_k)
    elapsed = time.perf_counter() - t
    rows["cp-sat"] = {**quality(index, usage, jobs, hours, result.placements, policy), "time_s": elapsed}
    best_baseline = max(BASELINES, key=lambda b: rows[b]["pw_gpu_hours"])
    best_pwh = rows[best_baseline]["pw_gpu_hours"]
    solver = {
        "status": result.status, "method": result.method, "gap": result.gap,
        "objective": result.objective, "best_bound": result.best_bound, "greedy_objective": result.greedy_objective,
        "classes": result.classes, "variables": result.variables, "build_time_s": result.build_time_s,
        "solve_time_s": result.solve_time_s, "greedy_time_s": result.greedy_time_s,
        "weighted_gpus": result.weighted_gpus,
        "pw_gpu_hours_vs_best_baseline_pct": 100.0 * (rows["cp-sat"]["pw_gpu_hours"] / max(best_pwh, 1e-9) - 1.0),
        "best_baseline": best_baseline,
    }
    _print(name, len(jobs), rows, solver)
    return {"jobs": len(jobs), "rows": rows, "cp_sat": solver}


def _print(name: str, n_jobs: int, rows: dict[str, dict[str, float]], solver: dict[str, Any]) -> None:
    print(f"\n## {name}: {n_jobs} pending jobs")
    header = ["method", "jobs", "GPUs", "prio-wt GPU-h", "SLO %", "power used %", "frag %", "viol", "time s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, r in rows.items():
        cells = [label, f"{r['placed_jobs']:.0f}", f"{r['placed_gpus']:,.0f}", f"{r['pw_gpu_hours']:,.0f}",
                 f"{r['slo_attainment_pct']:.1f}", f"{r['power_headroom_used_pct']:.1f}",
                 f"{r['fragmentation_pct']:.1f}", f"{r['violations']:.0f}", f"{r['time_s']:.2f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"CP-SAT: status {solver['status']}, answer from {solver['method']}, gap {solver['gap']:.2e}, "
          f"{solver['classes']} classes, {solver['variables']} variables, build {solver['build_time_s']:.2f} s, "
          f"solve {solver['solve_time_s']:.2f} s; priority-weighted GPU-hours vs best baseline "
          f"({solver['best_baseline']}): {solver['pw_gpu_hours_vs_best_baseline_pct']:+.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small workloads (seconds)")
    parser.add_argument("--trace-limit", type=int, default=None, help="first N GPU pods of the trace")
    parser.add_argument("--generated", type=int, default=3000, help="generated jobs per grid")
    parser.add_argument("--inference-share", type=float, default=0.3)
    parser.add_argument("--train-scale", type=int, default=TraceMapping.train_gpus_per_pod_gpu)
    parser.add_argument("--time-limit", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.trace_limit = args.trace_limit or 800
        args.generated = min(args.generated, 400)
    policy = Policy()
    report: dict[str, Any] = {"python": sys.version.split()[0], "machine": platform.machine(), "args": dict(vars(args))}
    report["args"]["out"] = str(args.out)

    nscale = load_grid(DEFAULT_GRID)
    index = GridIndex.build(nscale)
    mapping = TraceMapping(train_gpus_per_pod_gpu=args.train_scale)
    print("# Batch placement quality\n\nTrace mapping rule (Alibaba openb_pod_list_default.csv -> nscale.yaml):")
    for line in mapping.describe([e.id for e in nscale.endpoints]):
        print(f"- {line}")
    jobs, hours = trace_jobs(nscale, mapping, args.trace_limit)
    report["trace"] = run_workload("trace on nscale.yaml (empty grid)", index, Usage.empty(index), jobs, hours,
                                   policy, args)
    report["trace"]["mapping"] = mapping.describe([e.id for e in nscale.endpoints])

    jobs, hours = generated_jobs(nscale, args.generated, args.seed, args.inference_share)
    report["generated"] = run_workload(f"generated on nscale.yaml (preloaded ~50 %, inference share "
                                       f"{args.inference_share})", index, preload(index, 0.5, args.seed), jobs,
                                       hours, policy, args)

    pools = 100 if args.quick else 500
    grid = synthetic_grid(sites=pools // 4, pools=pools, gpus_target=133 * pools, seed=args.seed)
    sindex = GridIndex.build(grid)
    jobs, hours = generated_jobs(grid, args.generated, args.seed + 1, args.inference_share)
    report["synthetic"] = run_workload(f"generated on a synthetic grid ({pools} pools, preloaded ~50 %)", sindex,
                                       preload(sindex, 0.5, args.seed), jobs, hours, policy, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
