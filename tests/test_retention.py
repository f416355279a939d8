"""Bounded memory and one grid per ledger: finished jobs are archived after their retention,
and a replica with another grid file is refused by the shared ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest

from grid_scheduler.model import Grid, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.state import Limits, MemoryStore, Store, open_store
from grid_scheduler.state.factory import GridMismatch, grid_fingerprint

SPEC = JobSpec.model_validate({"name": "t", "tenant": "acme", "kind": "training", "gpus": {"count": 8}})


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, small_grid: Grid) -> Iterator[Callable[[], Store]]:
    limits = Limits.from_grid(small_grid)
    if request.param == "memory":
        yield lambda: MemoryStore(limits)
        return
    from grid_scheduler.state.redis_store import RedisStore

    url = request.getfixturevalue("redis_url")
    opened: list[Store] = []

    def make() -> Store:
        opened.append(RedisStore(limits, url, f"retention-{uuid4().hex[:12]}"))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


def test_finished_jobs_are_archived_after_retention_with_their_request_ids(
    small_grid: Grid, make_store: Callable[[], Store]
) -> None:
    now = [0.0]
    s = Scheduler(small_grid, store=make_store(), clock=lambda: now[0])
    done = s.submit(SPEC, request_id="old").record
    s.complete(done.id)
    cancelled = s.submit(SPEC).record
    s.cancel(cancelled.id)
    now[0] = 100.0
    running = s.submit(SPEC, request_id="live").record
    waiting_spec = SPEC.model_copy(update={"gpus": SPEC.gpus.model_copy(update={"count": 10_000})})
    waiting = s.submit(waiting_spec).record  # too big for any pool: rejected, finished at t=100
    assert waiting.state is JobState.REJECTED
    assert s.archive_finished(retention_s=50.0) == 2  # the two that finished at t=0
    assert s.store.get_job(done.id) is None and s.store.get_job(cancelled.id) is None
    assert s.store.job_by_request("acme", "old") is None  # the request id went with it
    assert s.store.get_job(running.id) is not None and s.store.get_job(waiting.id) is not None
    assert {r.id for r in s.store.list_jobs(frozenset(), "", 100)} == {running.id, waiting.id}
    # A resubmission of the archived request id is a new job.
    again = s.submit(SPEC, request_id="old")
    assert again.created and again.record.id != done.id
    now[0] = 1000.0
    assert s.archive_finished(retention_s=50.0) == 1  # the rejected one; running work stays
    assert s.store.get_job(running.id) is not None


def test_a_replica_with_another_grid_is_refused_until_the_grid_is_rolled(small_grid: Grid, redis_url: str) -> None:
    name = f"grid-{uuid4().hex[:12]}"
    limits = Limits.from_grid(small_grid)
    first = open_store(redis_url, limits, name, grid_fingerprint(small_grid))
    data = small_grid.model_dump(mode="json")
    data["sites"][0]["power_envelope_mw"] = 0.5
    changed = Grid.model_validate(data)
    try:
        with pytest.raises(GridMismatch) as exc:
            open_store(redis_url, Limits.from_grid(changed), name, grid_fingerprint(changed))
        assert "--replace-grid" in str(exc.value)
        same = open_store(redis_url, limits, name, grid_fingerprint(small_grid))  # the same grid: welcome
        same.close()
        rolled = open_store(redis_url, Limits.from_grid(changed), name, grid_fingerprint(changed), replace_grid=True)
        rolled.close()
        with pytest.raises(GridMismatch):  # now the old grid is the stranger
            open_store(redis_url, limits, name, grid_fingerprint(small_grid))
    finally:
        first.close()
