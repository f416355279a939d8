"""What-if replay speed: simulated jobs per second of wall time, and a 100,000-job replay.

The Alibaba GPU trace (../shared/data/alibaba-gpu-v2023/openb_pod_list_default.csv, 8,152
tasks over 149 days, 7,064 of them with GPUs) is replayed end to end on the example grid
(examples/grids/nscale.yaml), over and over (``repeat``) until ``--jobs`` jobs have arrived,
through the production ``Scheduler`` with an in-memory ledger and a simulated clock (every
arrival is ``submit``, every completion ``complete`` and its retry of the queue). Mapping:
LS (latency-sensitive) tasks -> single-endpoint inference deployments (1 replica of
8 x trace GPUs, SLO 20 ms, endpoints weighted by metro); every other task -> gang training
of 8 x trace GPUs; a fractional GPU share counts as one GPU. Arrival times and durations
are the trace's own (durations at least 60 s).

Only ``Simulator.run`` is timed (the workload is built first, untimed, and reported apart);
writing the report is timed separately with ``--report DIR``. Target: 100,000 jobs <= 60 s.

    .venv/bin/python benchmarks/whatif_speed.py                 # 100,000 jobs (~1 min)
    .venv/bin/python benchmarks/whatif_speed.py --jobs 10000    # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from grid_scheduler.config import DEFAULT_GRID
from grid_scheduler.whatif.scenario import load_scenario_data
from grid_scheduler.whatif.simulator import Simulator, quiet_logs

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "examples" / "data" / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"  # copy of ../shared/data
RESULTS = ROOT / "benchmarks" / "results" / "whatif_speed.json"
TRACE_GPU_TASKS = 7_064
TRACE_DAYS = 149.4
TARGET_S = 60.0


def scenario(jobs: int, gpu_scale: float = 8, time_scale: float = 1.0) -> dict[str, Any]:
    repeat = jobs // TRACE_GPU_TASKS + 1
    return {
        "name": f"trace-replay-{jobs}",
        "grid": str(DEFAULT_GRID),
        "seed": 1,
        "horizon_days": round(repeat * TRACE_DAYS * time_scale + 30, 1),
        "sample_every_hours": 24,
        "workload": {
            "max_jobs": jobs,
            "trace": {
                "path": str(TRACE),
                "repeat": repeat,
                "time_scale": time_scale,
                "rules": [
                    {"name": "ls-inference", "match": {"qos": ["LS"]}, "kind": "inference",
                     "tenants": {"acme-ai": 2, "globex": 1}, "gpu_scale": gpu_scale, "replicas": 1,
                     "endpoints": {"london": 3, "frankfurt": 2, "paris": 2, "amsterdam": 1, "madrid": 1,
                                   "ashburn": 3, "new-york": 2, "chicago": 1},
                     "latency_slo_ms": 20, "priority": 200},
                    {"name": "batch-training", "kind": "training", "tenants": {"acme-ai": 1, "research-lab": 2},
                     "gpu_scale": gpu_scale, "priority": 50},
                ],
            },
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--gpu-scale", type=float, default=8, help="grid GPUs per trace GPU (load)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="simulated s per trace s for arrivals (< 1 compresses them: a deep queue)")
    parser.add_argument("--report", type=Path, default=None, help="also write the report here (timed apart)")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()

    quiet_logs(cache=True)  # WARNING and above: the scheduler logs every decision at info
    t0 = time.perf_counter()
    loaded = load_scenario_data(scenario(args.jobs, args.gpu_scale, args.time_scale), "whatif_speed", ROOT)
    sim = Simulator(loaded)
    setup_s = time.perf_counter() - t0
    result = sim.run()
    wall = result.perf["wall_s"]
    report_s = None
    if args.report is not None:
        from grid_scheduler.whatif.report import write_run_report

        t1 = time.perf_counter()
        write_run_report(result, loaded, args.report)
        report_s = time.perf_counter() - t1

    s = result.summary
    rows = [
        ("jobs simulated", f"{len(result.jobs):,} (grid GPUs per trace GPU: {args.gpu_scale:g})"),
        ("events", f"{sim.events:,}"),
        ("most jobs waiting at once", f"{sim.peak_pending:,} (arrival time scale {args.time_scale:g})"),
        ("simulated days", f"{loaded.scenario.horizon_days:,.0f}"),
        ("workload build + scheduler setup (s, untimed)", f"{setup_s:.2f}"),
        ("simulation wall time (s)", f"{wall:.2f}"),
        ("jobs per second", f"{len(result.jobs) / wall:,.0f}"),
        ("events per second", f"{sim.events / wall:,.0f}"),
        ("placed / never placed", f"{s['jobs']['placed']:,} / {s['never_placed']['count']:,}"),
        ("fleet utilisation", f"{s['utilisation']['fleet']['utilisation']:.4f}"),
        ("queue delay p99 (h)", f"{s['queue_delay_hours']['all'].get('p99', 0.0):.3f}"),
        ("residency violations", f"{s['residency']['violations']}"),
        (f"target: {args.jobs:,} jobs <= {TARGET_S:.0f} s", "met" if wall <= TARGET_S else "NOT met"),
    ]
    if report_s is not None:
        rows.append(("report writing (s)", f"{report_s:.2f}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    record = {
        "benchmark": "whatif_speed",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "jobs": len(result.jobs), "gpu_scale": args.gpu_scale, "time_scale": args.time_scale,
        "peak_pending": sim.peak_pending, "events": sim.events, "setup_s": setup_s, "wall_s": wall,
        "jobs_per_s": len(result.jobs) / wall, "report_s": report_s, "target_s": TARGET_S,
        "summary": {"placed": s["jobs"]["placed"], "never_placed": s["never_placed"]["count"],
                    "utilisation": s["utilisation"]["fleet"]["utilisation"],
                    "residency_violations": s["residency"]["violations"]},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
