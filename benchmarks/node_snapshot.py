"""What per-node usage costs the ledger snapshot (issue 11), and why one string per pool.

On the example grid (examples/grids/nscale.yaml: 51 pools, 72,754 nodes), side by side in one run:

- **redis, no node detail**: ``RedisStore.snapshot()`` of a store that tracks no nodes (Limits
  without node counts): the snapshot as it was before nodes, the floor;
- **redis, node strings, every pool**: ``RedisStore.snapshot()`` as shipped, its node cache emptied
  before each read: one string per pool, one byte per node used + one per node out (``BITFIELD
  u8``), read undecoded in the same script (a replica's first read);
- **redis, node strings, one pool moved**: the same, the cache kept, one pool's node version bumped
  between reads (what a submission's probe pays after one commit: only that pool's string travels);
- **redis, node hashes (alternative)**: the same snapshot script reading a hash per pool instead
  (field ``<node>`` = used GPUs for busy nodes only, ``o<node>`` for out nodes), parsed into the
  same arrays: cheaper when few nodes are busy, dearer as they fill;
- **memory, no node detail / node arrays**: ``MemoryStore.snapshot()`` (copies of the arrays).

Each at 10 % and 90 % of nodes busy (random, seeded) and 1 % out; one round trip each on Redis;
``--repeat`` reads per row (at most 30 for the hash layout), median and p99, plus the node
data in the reply on Redis. Then what it costs a
submission: ``Scheduler.submit`` on Redis (benchmarks/quota_overhead.py's loop: 8 GB300 in the EU,
the oldest cancelled once 8 are live; every commit moves the ledger, so every probe brings a
snapshot) with a store that tracks no nodes and with one that does, 10 s each (2 s with --quick).
A private ``redis-server`` is started on a free loopback port unless ``--redis-url`` is given.

    .venv/bin/python benchmarks/node_snapshot.py            # 200 reads per row
    .venv/bin/python benchmarks/node_snapshot.py --quick    # 30 reads per row
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
from quota_overhead import run as submit_loop
from store_throughput import private_redis

from grid_scheduler.config import DEFAULT_GRID, load_grid
from grid_scheduler.logging import configure
from grid_scheduler.model import Policy
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.state import Limits, MemoryStore
from grid_scheduler.state.redis_conn import redis_client
from grid_scheduler.state.redis_store import _LUA_SNAPSHOT, RedisStore

RESULTS = Path(__file__).resolve().parent / "results" / "node_snapshot.json"
HASH_READS = 30  # the hash layout's reads take 50 ms to 1 s each: fewer of them

NODE_STRING_READ = "redis.call('GET', P .. 'nodes:' .. pools[i]) or ''"
NODE_HASH_READ = "redis.call('HGETALL', P .. 'nodeh:' .. pools[i])"
assert NODE_STRING_READ in _LUA_SNAPSHOT
_LUA_HASH_SNAPSHOT = _LUA_SNAPSHOT.replace(NODE_STRING_READ, NODE_HASH_READ)


def timed(read: Callable[[], Any], repeat: int, before: Callable[[], Any] | None = None) -> dict[str, float]:
    read()  # warm: script load, connections
    ms = []
    for _ in range(repeat):
        if before is not None:
            before()  # untimed
        t = time.perf_counter()
        read()
        ms.append((time.perf_counter() - t) * 1000.0)
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def fill(limits: Limits, busy: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    assert limits.pool_nodes is not None and limits.pool_gpus_per_node is not None
    rng = np.random.default_rng(seed)
    used, out = [], []
    for n, per_node in zip(limits.pool_nodes, limits.pool_gpus_per_node, strict=True):
        u = np.where(rng.random(int(n)) < busy, rng.integers(1, int(per_node) + 1, int(n)), 0).astype(np.uint8)
        used.append(u)
        out.append((rng.random(int(n)) < 0.01).astype(np.uint8))
    return used, out


def hash_parse(limits: Limits, nodes: list[list[bytes | str]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    assert limits.pool_nodes is not None
    used, out = [], []
    for n, flat in zip(limits.pool_nodes, nodes, strict=True):
        u = np.zeros(int(n), dtype=np.int32)
        o = np.zeros(int(n), dtype=np.bool_)
        for raw, value in zip(flat[::2], flat[1::2], strict=True):
            field = raw.decode() if isinstance(raw, bytes) else raw  # the scripts' lane decodes replies
            if field[:1] == "o":
                o[int(field[1:])] = True
            else:
                u[int(field)] = int(value)
        used.append(u)
        out.append(o)
    return used, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 reads per row instead of 200")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of a private redis-server")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    repeat = args.repeat or (30 if args.quick else 200)
    configure(level="warning", json=True)
    grid = load_grid(DEFAULT_GRID)
    limits = Limits.from_grid(grid)
    bare = dataclasses.replace(limits, pool_nodes=None, pool_gpus_per_node=None, pool_grid_drained_nodes=None)
    rows: list[dict[str, Any]] = []
    redis_ctx = contextlib.nullcontext(args.redis_url) if args.redis_url else private_redis()
    with redis_ctx as url:
        for busy in (0.1, 0.9):
            used, out = fill(limits, busy, seed=0)
            tracked = RedisStore(limits, url, f"bench-nodes-{uuid4().hex[:8]}")
            plain = RedisStore(bare, url, f"bench-nodes-{uuid4().hex[:8]}")
            r = tracked._r
            hashed_script = r.register_script(_LUA_HASH_SNAPSHOT)
            for pool_id, u, o in zip(limits.pool_ids, used, out, strict=True):
                r.set(tracked.prefix + "nodes:" + pool_id, u.tobytes() + o.tobytes())
                fields: dict[str, int] = {str(i): int(u[i]) for i in np.flatnonzero(u)}
                fields.update({f"o{i}": 1 for i in np.flatnonzero(o)})
                if fields:
                    r.hset(tracked.prefix + "nodeh:" + pool_id, mapping=fields)  # type: ignore[arg-type]
            none_held = tracked._node_cache  # before the first read: holds no pool
            full_args = [*tracked._snapshot_args, none_held.known]
            snap = tracked.snapshot()
            assert all(np.array_equal(a, b) for a, b in zip(snap.node_used_gpus, used, strict=True))
            moved = limits.pool_ids[int(np.argmax(limits.pool_nodes))]  # the largest pool

            # The hash read can take longer than the store's short socket timeout on a busy box.
            slow = redis_client(url, socket_timeout_s=60.0, decode=False)

            def hashed(store: RedisStore = tracked, script: Any = hashed_script, args: Any = full_args,
                       client: Any = slow) -> Any:
                reply = store._run(script, args, client)
                return hash_parse(limits, reply[7])

            def every_pool(store: RedisStore = tracked, none: Any = none_held) -> Any:
                store._node_cache = none
                return store.snapshot()

            def bump(store: RedisStore = tracked, pool_id: str = moved) -> None:
                store._r.hincrby(store.prefix + "pool:" + pool_id, "nv", 1)

            reply_bytes = {
                "node strings, every pool": sum(len(x) for x in tracked._run(tracked._snapshot, full_args,
                                                                             tracked._raw)[7]),
                "node strings, one pool moved": 2 * int(limits.pool_nodes.max()),
                "node hashes": sum(len(f) + len(v) for flat in tracked._run(hashed_script, full_args,
                                                                            tracked._raw)[7]
                                   for f, v in zip(flat[::2], flat[1::2], strict=True)),
                "no node detail": 0,
            }
            mem_plain, mem_nodes = MemoryStore(bare), MemoryStore(limits)
            for label, store_name, read, before in (
                ("no node detail", "redis", plain.snapshot, None),
                ("node strings, every pool", "redis", every_pool, None),
                ("node strings, one pool moved", "redis", tracked.snapshot, bump),
                ("node hashes", "redis", hashed, None),
                ("no node detail", "memory", mem_plain.snapshot, None),
                ("node arrays", "memory", mem_nodes.snapshot, None),
            ):
                reads = min(repeat, HASH_READS) if label == "node hashes" else repeat
                row = {"busy": busy, "store": store_name, "layout": label, "reads": reads,
                       **timed(read, reads, before)}
                if store_name == "redis":
                    row["node_reply_kib"] = reply_bytes[label] / 1024
                rows.append(row)
            tracked.close()
            slow.connection_pool.disconnect()
            plain.close()
        submits = []
        for label, lim in (("no node detail", bare), ("node strings", limits)):
            store = RedisStore(lim, url, f"bench-nodes-{uuid4().hex[:8]}")
            result = submit_loop(Scheduler(grid, Policy(), store=store, quiet=True), 2.0 if args.quick else 10.0)
            store.close()
            submits.append({"layout": label, **result})
    assert limits.pool_nodes is not None
    nodes = int(limits.pool_nodes.sum())
    pools = len(limits.pool_ids)
    print(f"Ledger snapshot, {DEFAULT_GRID.name} ({pools} pools, {nodes:,} nodes), {repeat} reads per row")
    print(f"{'busy':>5} {'store':<7} {'layout':<28} {'p50 ms':>8} {'p99 ms':>8} {'node KiB':>9}")
    for row in rows:
        kib = f"{row['node_reply_kib']:>9.0f}" if "node_reply_kib" in row else f"{'':>9}"
        print(f"{row['busy']:>5.0%} {row['store']:<7} {row['layout']:<28} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}"
              f" {kib}")
    print("\nScheduler.submit on Redis (8 GB300, EU)")
    print(f"{'layout':<28} {'submits/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for row in submits:
        print(f"{row['layout']:<28} {row['per_s']:>10.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
        "repeat": repeat, "rows": rows, "submits": submits}, indent=2) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
