"""The batch cycle: run by the server on a timer; on Redis by one replica at a time."""

from __future__ import annotations

import time
import uuid

from grid_scheduler.model import Grid, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import start_server
from grid_scheduler.state import Limits
from grid_scheduler.state.factory import batch_commit_store, batch_lease
from grid_scheduler.state.redis_store import RedisStore

SPEC = JobSpec.model_validate(
    {"name": "q", "tenant": "acme", "kind": "training", "gpus": {"count": 32, "types": ["GB300"]},
     "residency": {"allowed": ["EU"]}}
)


def test_the_server_runs_the_batch_cycle_on_a_timer(small_grid: Grid) -> None:
    scheduler = Scheduler(small_grid)
    running = start_server(scheduler, "127.0.0.1:0", pending_retry_s=None, batch_interval_s=0.2)
    try:
        scheduler.set_drained("sines-gb300", True)
        queued = [scheduler.submit(SPEC).record.id for _ in range(3)]
        # Reopen the pool behind the scheduler's back: no online retry, only the cycle can place them.
        scheduler.store.set_drained("sines-gb300", False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(scheduler.get(j).state is JobState.RUNNING for j in queued):
                break
            time.sleep(0.1)
        assert all(scheduler.get(j).state is JobState.RUNNING for j in queued)
    finally:
        running.stop(0.5)


def test_one_replica_at_a_time_commits_batch_results(small_grid: Grid, redis_url: str) -> None:
    limits = Limits.from_grid(small_grid)
    grid_name = f"batch-{uuid.uuid4().hex[:8]}"
    a, b = RedisStore(limits, redis_url, grid_name), RedisStore(limits, redis_url, grid_name)
    lease_a, lease_b = batch_lease(a, ttl_s=30), batch_lease(b, ttl_s=30)
    assert lease_a is not None and lease_b is not None
    try:
        with batch_commit_store(a, lease_a) as holder:
            assert holder is not None
            with batch_commit_store(b, lease_b) as other:
                assert other is None
        with batch_commit_store(b, lease_b) as now_b:
            assert now_b is not None  # released after a's cycle
    finally:
        for store in (a, b):
            store.close()
        lease_a.close()
        lease_b.close()


def test_the_embedded_store_needs_no_lease(small_grid: Grid) -> None:
    scheduler = Scheduler(small_grid)
    assert batch_lease(scheduler.store, ttl_s=1) is None
    with batch_commit_store(scheduler.store, None) as store:
        assert store is scheduler.store
