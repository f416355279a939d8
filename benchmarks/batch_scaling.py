"""Batch placement at scale: pending jobs x pools -> build time, solve time, gap at the time limit.

Grids come from ``grid_scheduler.synthetic.synthetic_grid`` (pools / 4 sites, ~133 GPUs per
pool on average, so 2,000 pools ~ 266k GPUs), preloaded to ~50 % busy; jobs from
``synthetic.job_stream`` with an inference share of 0.3 (a pending backlog is mostly
training: inference is normally placed online as it arrives). Every answer is checked by the
independent checker (engine/verify.py) and compared with the greedy warm start.

Columns: greedy / build (classes, candidates, model) / LP (GLOP's bound on W, inside the
solve) / solve (LP + both CP-SAT phases, what ``--time-limit`` bounds) / total = greedy + build
+ solve, i.e. everything but generating the workload. "gap" is the folded one of ``BatchResult``
(W first, then cost); "W gap" = (bound on W - W) / W; "cost gap" = (C - bound on C) / C, only
once W is proven optimal (nan otherwise).

From ``--partition-from`` jobs (default 300k, as ``solve_batch``) the batch is solved POP-style
(engine/batch_partition.py): ``--parts`` parts on ``--processes`` worker processes (default: the
machine's cores); "gap" is then W's gap against a bound over every pool of the whole problem
(engine/batch_bound.py), the cost not bounded. "bound" says which bound is reported: price (engine/batch_bound.py,
over every pool: always in a partitioned solve, and in a single one when it is the smallest), knapsack,
lp, cp-sat or all-placed. "CPU s" is user + system time of this
process and its worker processes over the call (the machine is shared: wall time depends on load).

    .venv/bin/python benchmarks/batch_scaling.py --jobs 1000000 --pools 5000   # partitioned, ~10 min with set-up

    .venv/bin/python benchmarks/batch_scaling.py                       # 1k/10k/100k x 50/500/2000 (~10 min)
    .venv/bin/python benchmarks/batch_scaling.py --jobs 1000 10000 --pools 50 500
    .venv/bin/python benchmarks/batch_scaling.py --quick               # 1k x 50 and 10k x 500
    .venv/bin/python benchmarks/batch_scaling.py --quick --fair-share  # the same with fair share on
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from rss_watch import RssWatch
from workloads import preload

from grid_scheduler.engine import GridIndex
from grid_scheduler.engine.batch import solve_batch
from grid_scheduler.engine.verify import check_solution
from grid_scheduler.model import FairShare, Policy
from grid_scheduler.synthetic import synthetic_grid
from grid_scheduler.synthetic_groups import job_groups

RESULTS = Path(__file__).resolve().parent / "results" / "batch_scaling.json"


def run(n_jobs: int, n_pools: int, args: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    grid = synthetic_grid(sites=max(n_pools // 4, 4), pools=n_pools, gpus_target=133 * n_pools, seed=args.seed)
    index = GridIndex.build(grid)
    usage = preload(index, args.preload, args.seed)
    # ``job_stream``'s jobs, as groups of equal specs (the same jobs, ~10x cheaper to make).
    jobs = job_groups(grid, n_jobs, args.seed, args.inference_share)
    setup = time.perf_counter() - t
    groups = len(jobs)
    if args.jobspecs:  # the (job_id, JobSpec) input form, as before
        jobs = [(job_id, spec.model_copy(update={"name": job_id})) for spec, ids in jobs for job_id in ids]
    limit = args.time_limit if n_jobs < 50_000 else args.big_time_limit
    # --fair-share: every tenant weight 1, none running yet (the classes split by tenant, the
    # fair-share slices added: what that costs the model).
    policy = Policy(fair_share=FairShare(enabled=True)) if args.fair_share else Policy()
    partition = n_jobs >= args.partition_from and not args.fair_share
    cpu = _cpu_s()
    t = time.perf_counter()
    with RssWatch(int(args.max_rss_gib * 2**30)) as watch:
        result = solve_batch(index, usage, jobs, policy, time_limit_s=limit, workers=args.workers, seed=args.seed,
                             top_k=args.top_k, weighted_shares={}, partition=partition, parts=args.parts,
                             processes=args.processes, accept_gap=args.accept_gap)
    wall = time.perf_counter() - t
    cpu = _cpu_s() - cpu
    spec_of = {job_id: spec for spec, ids in _as_group_pairs(jobs) for job_id in ids if job_id in result.placements}
    placed = {j: (spec_of[j], p) for j, p in result.placements.items()}
    violations = check_solution(grid, placed, usage, Policy(), index.topology, gang_training=True)
    greedy_w = result.greedy_value  # the greedy's job values, summed over tiers (each tier on what the ones above left)
    row = {
        "jobs": n_jobs, "pools": len(index.pool_ids), "sites": len(index.site_ids),
        "gpus": int(index.pool_healthy_gpus.sum()), "classes": result.classes, "variables": result.variables,
        "setup_s": setup, "greedy_s": result.greedy_time_s, "build_s": result.build_time_s,
        "solve_s": result.solve_time_s, "time_limit_s": limit, "status": result.status, "method": result.method,
        "gap": result.gap, "weighted_gpus": result.weighted_gpus, "greedy_weighted_gpus": greedy_w,
        "gain_vs_greedy_pct": 100.0 * (result.weighted_gpus / max(greedy_w, 1) - 1.0),
        "placed": len(result.placements), "violations": len(violations), **result.extra,
        "parts": int(result.extra.get("parts", 1)), "processes": int(result.extra.get("processes", 1)),
        "bound_source": _bound_source(result.extra, partition), "call_s": wall, "cpu_s": cpu,
        "max_rss_gib": _max_rss_gib(), "peak_rss_sum_gib": watch.peak_rss / 2**30,
        "peak_pss_sum_gib": watch.peak_pss / 2**30, "groups": groups,
        "input": "jobspecs" if args.jobspecs else "groups",
        "accept_gap": args.accept_gap, "loadavg_at_start": os.getloadavg()[0],
    }
    row["total_s"] = result.greedy_time_s + result.build_time_s + result.solve_time_s
    if partition:  # the parts' greedy and build ran inside the workers: the call's wall time is the total
        row["total_s"] = wall
    print(f"| {n_jobs:,} | {row['pools']:,} | {row['gpus']:,} | {row['classes']:,} | {row['variables']:,} | "
          f"{row['greedy_s']:.1f} | {row['build_s']:.1f} | {row.get('lp_time_s', 0.0):.1f} | {row['solve_s']:.1f} | "
          f"{row['total_s']:.1f} | {limit:g} | {row['status']} | {row['gap']:.2e} | "
          f"{row.get('weighted_gpus_gap', 0.0):.2e} | {row.get('cost_gap', float('nan')):.1e} | "
          f"{row['gain_vs_greedy_pct']:+.2f} | {row['violations']} | {row['parts']} | {row['processes']} | "
          f"{row['bound_source']} | {cpu:.1f} | {row['max_rss_gib']:.1f} | {row['peak_rss_sum_gib']:.1f} | "
          f"{row['peak_pss_sum_gib']:.1f} | {setup:.0f} |", flush=True)
    return row


def _as_group_pairs(jobs: Any) -> list[tuple[Any, list[str]]]:
    """(spec, ids) pairs of either input form."""
    if jobs and isinstance(jobs[0][0], str):
        return [(spec, [job_id]) for job_id, spec in jobs]
    return [(spec, list(ids)) for spec, ids in jobs]


def _cpu_s() -> float:
    """User + system seconds of this process and its reaped children (the partitioned solve's workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _max_rss_gib() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return max(own.ru_maxrss, kids.ru_maxrss) / 2**20  # ru_maxrss is in KiB on Linux


def _bound_source(extra: dict[str, float], partition: bool) -> str:
    """Which bound on W is reported (the smallest of those computed)."""
    if partition:
        return "price"
    bound = extra.get("weighted_gpus_bound")
    if bound is None:
        return "-"
    for name, key in (("price", "price_weighted_gpus_bound"), ("knapsack", "knapsack_weighted_gpus_bound"),
                      ("lp", "lp_weighted_gpus_bound")):
        if extra.get(key) == bound:
            return name
    return "cp-sat/all-placed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--pools", type=int, nargs="+", default=[50, 500, 2_000])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--time-limit", type=float, default=5.0, help="seconds, below 50k jobs")
    parser.add_argument("--big-time-limit", type=float, default=30.0, help="seconds, 50k jobs and more")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--preload", type=float, default=0.5)
    parser.add_argument("--inference-share", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fair-share", action="store_true", help="solve with fair share on (engine/fairshare.py)")
    parser.add_argument("--partition-from", type=int, default=300_000, help="jobs from which to partition (POP)")
    parser.add_argument("--parts", type=int, default=4, help="parts of a partitioned solve")
    parser.add_argument("--processes", type=int, default=None, help="worker processes (default: cores)")
    parser.add_argument("--accept-gap", type=float, default=0.0,
                        help="a tier (or part) keeps its warm start (no model) within this gap of its price bound")
    parser.add_argument("--jobspecs", action="store_true", help="pass (job_id, JobSpec) pairs, not groups")
    parser.add_argument("--max-rss-gib", type=float, default=8.0,
                        help="stop the run (SIGKILL) when this process and its workers hold more (summed PSS)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cases = [(1_000, 50), (10_000, 500)] if args.quick else [(j, p) for j in args.jobs for p in args.pools]
    loadavg_before = os.getloadavg()
    print(f"load average before the run: {' '.join(f'{x:.2f}' for x in loadavg_before)} ({os.cpu_count()} cores)")
    print("| jobs | pools | GPUs | classes | variables | greedy s | build s | LP s | solve s | total s | limit s | "
          "status | gap | W gap | cost gap | W vs greedy % | violations | parts | processes | bound | CPU s | "
          "max RSS GiB | peak RSS sum GiB | peak PSS sum GiB | setup s |")
    print("|" + "---|" * 25)
    rows = [run(j, p, args) for j, p in cases]
    report = {"python": sys.version.split()[0], "machine": platform.machine(), "loadavg_before": loadavg_before,
              "loadavg_after": os.getloadavg(),
              "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
