"""What-if sweep: the local process pool against Ray (a local Ray started here), side by side.

The same variants of an example scenario (``--param seed=1..N``) run on each backend with the
same number of CPUs; the table gives the wall time of the sweep (Ray's start-up timed apart) and
whether the sweep's files are identical to the pool's (``wall_s`` column and HTML cell aside).
On one machine Ray cannot beat the pool (same cores, plus its own daemons); what it buys is
more machines. This measures its overhead.

    .venv/bin/python benchmarks/sweep_backends.py --quick    # 2 variants, 2 simulated days
    .venv/bin/python benchmarks/sweep_backends.py            # 6 variants, the full 14 days
    # --scenario PATH, --variants N, --cpus N, --out PATH
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from grid_scheduler.whatif.ray_backend import RayBackend, import_ray
from grid_scheduler.whatif.scenario import load_scenario
from grid_scheduler.whatif.sweep import Backend, ProcessBackend, parse_param, run_sweep, variants, write_sweep

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "sweep_backends.json"
HTML_WALL = re.compile(r"<td>[0-9.,]+</td>(<td>-</td></tr>)")


def comparable(out: Path) -> dict[str, str]:
    files = {p.name: p.read_text() for p in sorted(out.iterdir())}
    rows = list(csv.reader(io.StringIO(files["sweep.csv"])))
    wall = rows[0].index("wall_s")
    files["sweep.csv"] = "\n".join(",".join(c for i, c in enumerate(r) if i != wall) for r in rows)
    files["sweep.html"] = HTML_WALL.sub(r"\1", files["sweep.html"])
    return files


def run(backend: Backend, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    loaded = load_scenario(args.scenario)
    params = [parse_param(f"seed={','.join(str(s) for s in range(1, args.variants + 1))}")]
    if args.horizon_days:
        params.append(parse_param(f"horizon_days={args.horizon_days}"))
    items = variants(loaded, params, None)
    start = time.perf_counter()
    results = run_sweep(items, backend)
    wall_s = time.perf_counter() - start
    write_sweep(results, params, out)
    cell_s = [r.perf.get("wall_s", 0.0) for r in results]
    return {"variants": len(results), "failed": sum(r.failed for r in results), "wall_s": round(wall_s, 2),
            "sum_cell_s": round(sum(cell_s), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 variants of 2 simulated days")
    parser.add_argument("--scenario", default=str(ROOT / "examples" / "scenarios" / "norway-eea-not-eu.yaml"))
    parser.add_argument("--variants", type=int, default=6)
    parser.add_argument("--horizon-days", type=float, default=0, help="override the scenario's (0: keep it)")
    parser.add_argument("--cpus", type=int, default=2, help="pool workers = Ray's num_cpus")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.variants, args.horizon_days = 2, 2

    ray = import_ray()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        pool_out, ray_out = Path(tmp) / "pool", Path(tmp) / "ray"
        rows.append({"backend": f"process pool ({args.cpus} workers)",
                     **run(ProcessBackend(args.cpus), args, pool_out), "startup_s": 0.0})
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        startup_s = time.perf_counter() - start
        try:
            rows.append({"backend": f"Ray, local ({args.cpus} CPUs)", **run(RayBackend(), args, ray_out),
                         "startup_s": round(startup_s, 2)})
        finally:
            ray.shutdown()
        same = comparable(pool_out) == comparable(ray_out)
    for row in rows:
        row["files_identical_to_pool"] = same

    header = ["backend", "variants", "failed", "startup_s", "wall_s", "sum_cell_s", "files_identical_to_pool"]
    print(f"scenario {Path(args.scenario).name}, seeds 1-{args.variants}"
          + (f", horizon {args.horizon_days} d" if args.horizon_days else "")
          + f"; load average {os.getloadavg()[0]:.2f}")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[h]) for h in header))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"measured": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                    "scenario": args.scenario, "rows": rows}, indent=1) + "\n")
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
