"""Group commit on Redis (state/redis_group.py): commits queued while another is on its way go in one call.

Redis is held with ``CLIENT PAUSE ... WRITE`` (scripts that write wait; reads and the unpause do not)
so that the queue fills deterministically, whatever the machine's speed: one commit on its way,
then the others queued one by one, then the pause lifted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest
import redis

from grid_scheduler.model import Assignment, EventType, Grid, JobRecord, JobSpec, JobState
from grid_scheduler.state import CapacityConflict, Limits, Transition
from grid_scheduler.state.redis_store import _LUA_COMMIT, _LUA_GROUP, RedisStore
from tests.test_redis_store import count_sent, manchester

pytestmark = pytest.mark.redis

WAIT_S = 20.0  # the most any step waits for the threads (bounded: a hang fails, it does not block)
PAUSE_MS = 30_000  # Redis lifts the pause by itself after this, should the test fail before unpausing


def spec(name: str) -> JobSpec:
    return JobSpec.model_validate({"name": name, "tenant": "acme", "kind": "training", "gpus": {"count": 8}})


def placed(job_id: str, reserve: Assignment, request_id: str = "") -> Transition:
    record = JobRecord(id=job_id, request_id=request_id, spec=spec(job_id), state=JobState.RUNNING,
                       created_at=1.0, updated_at=1.0)
    return Transition(record, EventType.PLACED, reserve=[reserve])


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


@pytest.fixture
def store(redis_url: str, small_grid: Grid) -> Iterator[RedisStore]:
    s = RedisStore(Limits.from_grid(small_grid), redis_url, f"group-{uuid4().hex[:12]}")
    yield s
    s.close()


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    yield r
    r.execute_command("CLIENT", "UNPAUSE")
    r.close()


def commit_queued(store: RedisStore, admin: redis.Redis,
                  commits: list[Transition]) -> tuple[list[object], list[str]]:
    """Each commit from its own thread: the first on its way while Redis is paused, the rest queued
    behind it in the order given; then the pause is lifted. Returns each one's outcome (its
    ``Committed`` or the exception) and the commands the store sent from the first on (the scripts
    loaded before, as a running server has them)."""
    for lua in (_LUA_COMMIT, _LUA_GROUP):
        admin.script_load(lua)
    sent = count_sent(store)
    outcomes: list[object] = [None] * len(commits)

    def run(i: int) -> None:
        try:
            outcomes[i] = store.commit_delta((), commits[i])
        except Exception as e:  # the outcome under test
            outcomes[i] = e

    admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(commits))]
    threads[0].start()
    wait_for(lambda: store._commits.sending(), "the first commit to be sent")
    for i, th in enumerate(threads[1:], start=1):
        th.start()
        wait_for(lambda i=i: store._commits.queued() == i, f"commit {i} to queue")
    admin.execute_command("CLIENT", "UNPAUSE")
    for th in threads:
        th.join(WAIT_S)
    assert not any(th.is_alive() for th in threads), "a commit hung"
    return outcomes, sent


def test_queued_commits_go_in_one_call_and_a_refused_one_writes_nothing(
    store: RedisStore, admin: redis.Redis, small_grid: Grid
) -> None:
    limits = Limits.from_grid(small_grid)
    pool = limits.pool_index["manchester-h100"]  # 64 GPUs
    commits = [
        placed("lead", manchester(8)),
        placed("a", manchester(48), request_id="req-a"),
        placed("b", manchester(16)),  # 8 + 48 + 16 > 64: refused, after "a" and before "c"
        placed("c", manchester(8)),  # fits once "b" is refused: 64
        placed("a-again", manchester(8), request_id="req-a"),  # a retry of "a": its twin, nothing written
    ]
    outcomes, sent = commit_queued(store, admin, commits)

    # One call for the first, ONE for the four queued behind it.
    assert sent == ["EVALSHA", "EVALSHA"]
    assert store.group_stats.largest == 4
    lead, a, b, c, twin = outcomes
    assert isinstance(b, CapacityConflict), b
    for done, job in ((lead, "lead"), (a, "a"), (c, "c")):
        assert not isinstance(done, BaseException), done
        assert done.created and done.record is not None and done.record.id == job
    # In queue order: each commit found the ledger as the one before it left it.
    assert [(x.ledger_before, x.ledger_after) for x in (lead, a, c)] == [(0, 1), (1, 2), (2, 3)]
    assert not isinstance(twin, BaseException)
    assert not twin.created and twin.record is not None and twin.record.id == "a"

    assert store.get_job("b") is None and store.get_job("a-again") is None
    assert store.reservation("b") == []
    assert int(store.snapshot().pool_used_gpus[pool]) == 64
    assert [e.job_id for e in store.events_after(0, 0.0)] == ["lead", "a", "c"]


def test_a_commit_alone_is_one_call_of_the_single_commit_script(store: RedisStore, admin: redis.Redis) -> None:
    admin.script_load(_LUA_COMMIT)
    sent = count_sent(store)
    done = store.commit_delta((), placed("alone", manchester(8)))
    assert done.created and sent == ["EVALSHA"]
    assert (store.group_stats.calls, store.group_stats.largest) == (1, 1)
