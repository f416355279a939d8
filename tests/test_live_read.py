"""scheduler.live.read_live: one consistent read even while another replica commits.

The other replica is a second real Scheduler on the same real store (memory, or one Redis);
it commits a real submission in the middle of the read (between the read of the running jobs
and of the queue), which is exactly the interleaving a version check must catch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import uuid4

import numpy as np
import pytest

from grid_scheduler.model import Grid, JobSpec
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.live import READ_ATTEMPTS, SnapshotMoved, read_live
from grid_scheduler.state import Limits, MemoryStore, Store
from grid_scheduler.state.redis_store import RedisStore


def spec(name: str, gpus: int) -> JobSpec:
    return JobSpec.model_validate({"name": name, "tenant": "acme", "kind": "training",
                                   "gpus": {"count": gpus, "types": ["H100"]}, "training": {"duration_hours": 2}})


class Interleaved:
    """A store whose queue read first lets another replica commit ``times`` submissions."""

    def __init__(self, store: Store, other: Callable[[], Scheduler], times: int) -> None:
        self._store = store
        self._other = other
        self.left = times

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def pending_jobs(self) -> list[Any]:
        if self.left > 0:
            self.left -= 1
            self._other().submit(spec(f"racer-{self.left}", 8))
        return self._store.pending_jobs()


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, small_grid: Grid) -> Iterator[Store]:
    limits = Limits.from_grid(small_grid)
    if request.param == "memory":
        yield MemoryStore(limits)
        return
    url = request.getfixturevalue("redis_url")
    redis_store = RedisStore(limits, url, f"live-{uuid4().hex[:12]}")
    yield redis_store
    redis_store.close()


def _replicas(grid: Grid, store: Store, times: int) -> tuple[Scheduler, Interleaved]:
    other = Scheduler(grid, store=store)  # the other replica: its own lock, the same ledger
    seen = Interleaved(store, lambda: other, times)
    return Scheduler(grid, store=seen), seen  # type: ignore[arg-type]


def test_a_commit_during_the_read_is_caught_and_read_again(small_grid: Grid, store: Store) -> None:
    reader, seen = _replicas(small_grid, store, times=2)
    for i in range(3):
        reader.submit(spec(f"base-{i}", 64))
    state = read_live(reader)
    assert seen.left == 0  # both racing commits happened during the read
    # The result is one moment of the ledger: the latest, with the racers in it.
    assert state.event_sequence == store.last_sequence() and state.ledger_version == store.ledger_version()
    assert {r.id for r in state.running} | {r.id for r in state.pending} == (
        {r.id for r in store.running_jobs()} | {r.id for r in store.pending_jobs()})
    assert sum(r.spec.name.startswith("racer-") for r in (*state.running, *state.pending)) == 2
    used = np.zeros(len(reader.limits.pool_ids), dtype=np.int64)
    for record in state.running:
        assert record.placement is not None
        for a in record.placement.assignments:
            used[reader.limits.pool_index[a.pool_id]] += a.gpus
    assert used.tolist() == store.snapshot().pool_used_gpus.tolist()


def test_a_ledger_that_never_stops_moving_is_refused(small_grid: Grid, store: Store) -> None:
    reader, seen = _replicas(small_grid, store, times=READ_ATTEMPTS)
    with pytest.raises(SnapshotMoved):
        read_live(reader)
    assert seen.left == 0
