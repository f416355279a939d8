"""What quotas cost a placement: Scheduler.submit without quotas vs under the example quota policy.

Side by side on the example grid (examples/grids/nscale.yaml), in-memory and on Redis: the
same loop of ``Scheduler.submit`` of an 8-GPU GB300 training job in the EU for tenant ``acme``
(limited by ``examples/policies/quotas.yaml`` in group ``gb300-eu``: 64 nominal + 32 borrowed,
so the loop cancels its oldest job once 8 are live and never hits the cap), and the oldest
cancelled. Without quotas the same policy minus its ``quotas:`` section decides. What the
quota rows add: the per-pool quota mask in the decision, per-tenant usage in the ledger, and on
Redis the quota re-check in the commit script. Latency is the submit's (decide + commit).

A private ``redis-server`` is started on a free loopback port unless ``--redis-url`` is given.

    .venv/bin/python benchmarks/quota_overhead.py            # ~1 min
    .venv/bin/python benchmarks/quota_overhead.py --quick    # ~15 s
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import time
from collections import deque
from pathlib import Path
from uuid import uuid4

import numpy as np
import yaml
from store_throughput import private_redis

from grid_scheduler.config import DEFAULT_GRID, EXAMPLES_DIR, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import JobSpec, Policy
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.state import Limits, Store
from grid_scheduler.state.redis_store import RedisStore

RESULTS = Path(__file__).resolve().parent / "results" / "quota_overhead.json"
WINDOW = 8  # live jobs before the oldest is cancelled: 64 GPUs, within acme's nominal quota
SPEC = JobSpec.model_validate({"name": "bench", "tenant": "acme", "kind": "training", "gpus": {"count": 8,
                               "types": ["GB300"]}, "residency": {"allowed": ["EU"]},
                               "training": {"duration_hours": 1}})


def run(scheduler: Scheduler, seconds: float) -> dict[str, float]:
    live: deque[str] = deque()
    latencies: list[float] = []
    for _ in range(20):  # warm up: caches, script load, first allocations
        live.append(scheduler.submit(SPEC).record.id)
        if len(live) >= WINDOW:
            scheduler.cancel(live.popleft())
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        record = scheduler.submit(SPEC).record
        latencies.append(time.perf_counter() - t)
        assert record.placement is not None, "the loop must stay within the quota"
        live.append(record.id)
        if len(live) >= WINDOW:
            scheduler.cancel(live.popleft())
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000.0
    return {"submits": len(latencies), "per_s": len(latencies) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per row instead of 10")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of a private redis-server")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure(level="warning", json=True)
    seconds = 2.0 if args.quick else 10.0
    grid = load_grid(DEFAULT_GRID)
    with_quotas = Policy.model_validate(yaml.safe_load((EXAMPLES_DIR / "policies" / "quotas.yaml").read_text()))
    without = with_quotas.model_copy(update={"quotas": Policy().quotas})
    rows = []
    redis_ctx = contextlib.nullcontext(args.redis_url) if args.redis_url else private_redis()
    with redis_ctx as url:
        for store_name in ("memory", "redis"):
            for label, policy in (("no quotas", without), ("quotas", with_quotas)):
                store: Store | None = None
                if store_name == "redis":
                    store = RedisStore(Limits.from_grid(grid), url, f"bench-quota-{uuid4().hex[:8]}")
                scheduler = Scheduler(grid, policy, store=store, quiet=True)
                result = run(scheduler, seconds)
                scheduler.store.close()
                rows.append({"store": store_name, "policy": label, **result})
    print(f"Scheduler.submit of 8 GB300 in the EU for a tenant with a quota, {DEFAULT_GRID.name}, {seconds:g} s/row")
    print(f"{'store':<8} {'policy':<10} {'submits/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r['store']:<8} {r['policy']:<10} {r['per_s']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
        "seconds_per_row": seconds, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
