"""Submissions from many threads of one process: decided outside the scheduler lock, never double-booked.

``Scheduler.submit`` decides a job that fits on its view of the ledger without the lock and
commits it with the store's re-check (scheduler/core.py ``_place_now``); cancels commit outside
the lock too. Eight threads submit and cancel against one scheduler until the grid is full and
beyond; afterwards the ledger must equal the sum of the running jobs' placements, within every
limit, and the scheduler's view must equal a fresh snapshot.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from uuid import uuid4

import numpy as np
import pytest

from grid_scheduler.model import Grid, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler, WrongState
from grid_scheduler.state import Limits, MemoryStore, Store, to_watts
from tests.test_ledger_delta import assert_same

THREADS = 8
CALLS = 30  # per thread
JOIN_TIMEOUT_S = 120.0


def run_together(target: Callable[..., None], args: Iterable[tuple[object, ...]], hung: str = "a thread hung") -> None:
    """One thread per argument tuple, started together and joined (each wait bounded): none may hang."""
    threads = [threading.Thread(target=target, args=a) for a in args]
    for th in threads:
        th.start()
    for th in threads:
        th.join(JOIN_TIMEOUT_S)
    assert not any(th.is_alive() for th in threads), hung


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, small_grid: Grid) -> Iterator[Store]:
    limits = Limits.from_grid(small_grid)
    if request.param == "memory":
        yield MemoryStore(limits)
        return
    from grid_scheduler.state.redis_store import RedisStore

    redis_store = RedisStore(limits, request.getfixturevalue("redis_url"), f"threads-{uuid4().hex[:12]}")
    yield redis_store
    redis_store.close()


def spec(n: int) -> JobSpec:
    gpus = [8, 16, 32, 64, 128][n % 5]
    return JobSpec.model_validate({
        "name": f"t{n}", "tenant": ["acme", "bank"][n % 2], "kind": "training", "priority": n % 3,
        "gpus": {"count": gpus, "types": ["H100", "GB300"]}, "gang": n % 4 != 0,
        "training": {"duration_hours": 1},
    })


def test_threads_submitting_at_once_never_double_book(store: Store, small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=store, quiet=True)
    errors: list[BaseException] = []
    placed: list[str] = []

    def work(t: int) -> None:
        try:
            mine: list[str] = []
            for n in range(CALLS):
                outcome = s.submit(spec(t * CALLS + n), request_id=f"r-{t}-{n}")
                if outcome.record.state is JobState.RUNNING:
                    mine.append(outcome.record.id)
                    placed.append(outcome.record.id)
                if n % 3 == 2 and mine:  # some capacity comes back while others submit
                    with contextlib.suppress(WrongState):  # a finished job: nothing to free
                        s.cancel(mine.pop(0))
        except BaseException as e:  # reported below, with the thread's failure
            errors.append(e)

    run_together(work, ((t,) for t in range(THREADS)), "a submission hung")
    assert errors == []
    assert placed, "nothing was placed: the test proves nothing"

    limits = Limits.from_grid(small_grid)
    pools = np.zeros(len(limits.pool_ids), dtype=np.int64)
    watts = np.zeros(len(limits.site_ids), dtype=np.int64)
    for record in store.running_jobs():
        assert record.placement is not None
        for a in record.placement.assignments:
            pools[limits.pool_index[a.pool_id]] += a.gpus
            watts[limits.site_index[a.site_id]] += to_watts(a.power_kw)
    fresh = store.snapshot()
    np.testing.assert_array_equal(fresh.pool_used_gpus, pools)
    np.testing.assert_array_equal(fresh.site_used_w, watts)
    assert np.all(pools <= limits.pool_gpus)
    assert np.all(watts <= limits.site_power_w)
    view = s.ledger.snapshot
    assert view is not None
    if view.version != fresh.version:  # a view may lag (commits reported out of order), never be wrong
        s.usage()
        view = s.ledger.snapshot
        assert view is not None
    assert_same(view, fresh)


def test_cancels_at_once_still_start_the_waiting_job(store: Store, small_grid: Grid) -> None:
    """Cancels commit outside the lock and coalesce their queue passes (``Scheduler._retry_queue``):
    however they interleave, the pass that runs last sees every release, so the job waiting for
    the freed GPUs starts without any further call. (Which interleaving a run gets is up to the
    threads: this checks the outcome, run after run, not one chosen schedule.)"""
    s = Scheduler(small_grid, store=store, quiet=True)

    def h100(name: str, gpus: int) -> JobSpec:  # only sines-h100 (256 GPUs) takes these
        return JobSpec.model_validate({"name": name, "tenant": "acme", "kind": "training", "gang": True,
                                       "gpus": {"count": gpus, "types": ["H100"]}, "training": {"duration_hours": 1}})

    running = [s.submit(h100(f"fill{i}", 32)).record for i in range(8)]
    assert all(r.state is JobState.RUNNING for r in running)
    waiting = s.submit(h100("big", 128)).record
    assert waiting.state is JobState.PENDING
    errors: list[BaseException] = []

    def cancel(job_id: str) -> None:
        try:
            s.cancel(job_id)
        except BaseException as e:  # reported below
            errors.append(e)

    run_together(cancel, ((r.id,) for r in running))
    assert errors == []
    assert s.get(waiting.id).state is JobState.RUNNING
