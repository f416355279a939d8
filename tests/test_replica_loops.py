"""Background loops with several replicas on one real Redis: each replica runs them, the work is done once.

``serve --processes N`` (and N separately started servers) runs every background loop in every
replica. The batch cycle is leased (state/lease.py); the others rely on the store's re-check of
each job's version. Here two replicas (two Schedulers, each with its own Redis connection, one
scripted clock: no sleeps, no timing) run the loop's pass at the same instant from two threads:

- the site monitor, after a site is lost: its inference job is re-placed once and its training
  job re-queued once (one event each, attempts counted once), nothing double-booked;
- run-time-limit enforcement: a job past its limit is stopped once (one event);
- retention: finished jobs past it are archived once between them (the counts add up).

The pending retry commits through the same re-check as a submission (test_redis_concurrency);
the audit writer writes the records of the calls its own process served only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest

from grid_scheduler.model import EventType, Grid, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.scheduler.site_monitor import SiteMonitor
from grid_scheduler.state import Limits
from grid_scheduler.state.agents import JobPhase, JobReport
from grid_scheduler.state.redis_store import RedisStore
from tests.test_site_loss import Clock, check_ledger, inference, where

TIMEOUT_S = 10.0
GRACE_S = 20.0
PASSES = 3  # each replica's loop passes after the loss: the later ones must change nothing
ROUNDS = 3  # fresh ledgers, so the two threads interleave differently


@pytest.fixture
def replicas(redis_url: str, small_grid: Grid) -> Iterator[tuple[Scheduler, Scheduler, Clock]]:
    limits, name, clock = Limits.from_grid(small_grid), f"loops-{uuid4().hex[:12]}", Clock()
    stores = [RedisStore(limits, redis_url, name) for _ in range(2)]
    pair = [Scheduler(small_grid, store=store, clock=clock) for store in stores]
    for s in pair:
        s.heartbeat_timeout_s, s.site_grace_s = TIMEOUT_S, GRACE_S
    yield pair[0], pair[1], clock
    for store in stores:
        store.close()


def at_once(passes: list[Callable[[], object]]) -> None:
    """Each callable PASSES times, all threads released together; any exception fails the test."""
    barrier, failures = threading.Barrier(len(passes)), []

    def run(step: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=60)
            for _ in range(PASSES):
                step()
        except Exception as e:  # reported below, on the test's thread
            failures.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in passes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures and not any(t.is_alive() for t in threads), failures


def events_since(s: Scheduler, sequence: int, job_id: str) -> list[EventType]:
    return [e.type for e in s.store.events_after(sequence, 0.0) if e.job_id == job_id]


@pytest.mark.redis
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_replicas_monitors_move_a_lost_sites_jobs_once(
    replicas: tuple[Scheduler, Scheduler, Clock], round_: int,
) -> None:
    a, b, clock = replicas
    chat_site, train_site = "london-hub", "glomfjord"
    a.store.register_agent(chat_site, "a1", {}, clock())
    a.store.register_agent(train_site, "g1", {}, clock())
    chat = a.submit(inference()).record
    train = b.submit(JobSpec.model_validate(
        {"name": "train", "tenant": "acme", "kind": "training", "priority": 7,
         "gpus": {"count": 480, "types": ["GB300"]}, "residency": {"allowed": ["NO"]}})).record
    assert where(a, chat.id) == {chat_site} and where(b, train.id) == {train_site}
    fleet.apply_report(a, chat_site, "a1", JobReport(chat.id, JobPhase.RUNNING, 1))
    monitors = [SiteMonitor(a), SiteMonitor(b)]
    at_once([m.check for m in monitors])  # both healthy: nothing to do
    sequence = a.store.last_sequence()

    clock.now_s += TIMEOUT_S + GRACE_S + 1  # both agents silent past the grace: both sites LOST
    at_once([m.check for m in monitors])

    moved, waiting = a.get(chat.id), b.get(train.id)
    assert moved.state is JobState.RUNNING and chat_site not in where(a, chat.id) and moved.attempts == 1
    assert waiting.state is JobState.PENDING and waiting.attempts == 1
    # One move each, whichever replica made it (off the lost site, then placed elsewhere or left
    # waiting); the other replica's identical step found the job changed and did nothing.
    assert events_since(a, sequence, chat.id) == [EventType.PENDING, EventType.PLACED]
    assert events_since(a, sequence, train.id) == [EventType.PENDING]
    check_ledger(a)
    check_ledger(b)


@pytest.mark.redis
def test_two_replicas_stop_a_job_past_its_run_time_limit_once(
    replicas: tuple[Scheduler, Scheduler, Clock],
) -> None:
    a, b, clock = replicas
    job = a.submit(JobSpec.model_validate(
        {"name": "short", "tenant": "acme", "kind": "training", "gpus": {"count": 8},
         "training": {}, "max_run_hours": 1.0})).record
    assert job.state is JobState.RUNNING
    sequence = a.store.last_sequence()
    clock.now_s += 3601.0
    at_once([lambda: fleet.stop_runaways(a), lambda: fleet.stop_runaways(b)])
    stopped = b.get(job.id)
    assert stopped.state is JobState.CANCELLED
    assert events_since(a, sequence, job.id) == [EventType.CANCELLED]
    check_ledger(a)


@pytest.mark.redis
def test_two_replicas_archive_each_finished_job_once(replicas: tuple[Scheduler, Scheduler, Clock]) -> None:
    a, b, clock = replicas
    finished = 12
    for i in range(finished):
        job = a.submit(JobSpec.model_validate(
            {"name": f"done{i}", "tenant": "acme", "kind": "training", "gpus": {"count": 8}, "training": {}}),
            request_id=f"done-{i}").record
        a.cancel(job.id)
    clock.now_s += 3600.0
    archived: list[int] = []
    at_once([lambda: archived.append(a.archive_finished(60.0)), lambda: archived.append(b.archive_finished(60.0))])
    assert sum(archived) == finished
    assert a.store.list_jobs(frozenset(), "", 100) == []
    check_ledger(b)
