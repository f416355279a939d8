"""What only the Redis store has: several replicas on one ledger, outages, and the batch lease.

The shared contract (same semantics as MemoryStore) is tests/test_store_contract.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest

from grid_scheduler.model import Assignment, EventType, Grid, JobRecord, JobSpec, JobState
from grid_scheduler.state import CapacityConflict, Limits, StoreUnavailable, Transition, open_store
from grid_scheduler.state.lease import Lease, LeaseKeeper, LeaseLost
from grid_scheduler.state.redis_store import RedisStore
from tests.net import free_port

SPEC = JobSpec.model_validate({"name": "t", "tenant": "acme", "kind": "training", "gpus": {"count": 8}})
Replicas = Callable[[int], list[RedisStore]]


def record(job_id: str, state: JobState = JobState.RUNNING, request_id: str = "") -> JobRecord:
    return JobRecord(id=job_id, request_id=request_id, spec=SPEC, state=state, created_at=1.0, updated_at=1.0)


def manchester(gpus: int = 8) -> Assignment:
    # manchester-h100: 64 GPUs; 8 GPUs draw 7 kW of the site's 100 kW, so the pool binds.
    return Assignment(site_id="manchester-edge", pool_id="manchester-h100", gpu_type="H100", gpus=gpus,
                      power_kw=gpus * 0.875)


def count_sent(store: RedisStore) -> list[str]:
    """The commands ``store`` sends from now on, by name, each one round trip: its scripts (on their
    lanes, state/redis_conn.ScriptLane) and everything else (on the clients). The list grows as it sends."""
    sent: list[str] = []

    def counting(execute: Callable[..., object]) -> Callable[..., object]:
        def counted(*args: object, **kwargs: object) -> object:
            sent.append(str(args[0]))
            return execute(*args, **kwargs)
        return counted

    for target in (store._r, store._raw, store._lane, store._lane_raw):
        target.execute_command = counting(target.execute_command)  # type: ignore[method-assign]
    return sent


@pytest.fixture
def limits(small_grid: Grid) -> Limits:
    return Limits.from_grid(small_grid)


@pytest.fixture
def replicas(redis_url: str, limits: Limits) -> Iterator[Replicas]:
    """n store objects on one Redis and one grid name: n scheduler replicas' view of the ledger."""
    grid = f"replicas-{uuid4().hex[:12]}"
    made: list[RedisStore] = []

    def make(n: int) -> list[RedisStore]:
        stores = [RedisStore(limits, redis_url, grid) for _ in range(n)]
        made.extend(stores)
        return stores

    yield make
    for store in made:
        store.close()


def test_every_call_fails_fast_as_unavailable_when_redis_is_not_there(limits: Limits) -> None:
    store = open_store(f"redis://127.0.0.1:{free_port()}/0", limits, "nowhere")
    calls: list[Callable[[], object]] = [
        lambda: store.create_job(Transition(record("job-1"), EventType.PLACED, reserve=[manchester()])),
        lambda: store.apply("job-1", 0, Transition(record("job-1"), EventType.CANCELLED, release=True)),
        lambda: store.get_job("job-1"),
        lambda: store.job_by_request("acme", "req-1"),
        lambda: store.list_jobs(frozenset(), "", 10),
        store.pending_jobs,
        lambda: store.reservation("job-1"),
        store.snapshot,
        store.ledger_version,
        lambda: store.set_drained("sines-h100", True),
        lambda: store.events_after(0, 0.5),
        store.last_sequence,
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable, match=r"redis at redis://127\.0\.0\.1"):
            call()
    assert not store.healthy()
    store.close()


def test_open_store_refuses_an_unknown_url(limits: Limits) -> None:
    with pytest.raises(ValueError, match="unknown store"):
        open_store("postgres://x", limits, "g")


def test_a_replica_sees_the_other_replicas_commits_and_events(replicas: Replicas) -> None:
    a, b = replicas(2)
    start = b.last_sequence()
    a.create_job(Transition(record("job-1", request_id="req-1"), EventType.PLACED, "placed", reserve=[manchester()]))
    assert b.ledger_version() == a.ledger_version() != 0
    assert b.snapshot().pool_used_gpus.sum() == 8
    assert b.job_by_request("acme", "req-1") == a.get_job("job-1")
    events = b.events_after(start, timeout_s=1.0)
    assert [(e.job_id, e.type, e.message) for e in events] == [("job-1", EventType.PLACED, "placed")]
    # A watcher that restarts resumes from the last sequence it saw.
    a.create_job(Transition(record("job-2", JobState.PENDING), EventType.PENDING))
    assert [e.job_id for e in b.events_after(events[-1].sequence, 1.0)] == ["job-2"]


def test_racing_replicas_never_double_book(replicas: Replicas, limits: Limits) -> None:
    stores = replicas(4)
    won: list[str] = []
    lock = threading.Lock()

    def race(n: int, store: RedisStore) -> None:
        for i in range(6):
            job_id = f"job-{n}-{i}"
            try:
                store.create_job(Transition(record(job_id), EventType.PLACED, reserve=[manchester()]))
            except CapacityConflict:
                continue
            with lock:
                won.append(job_id)

    threads = [threading.Thread(target=race, args=(n, s)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 8  # 64 GPUs / 8: 24 attempts, exactly 8 winners
    assert int(stores[0].snapshot().pool_used_gpus[limits.pool_index["manchester-h100"]]) == 64
    assert len(stores[1].list_jobs(frozenset(), "", 100)) == 8


def test_a_move_releases_and_reserves_in_one_commit(replicas: Replicas, limits: Limits) -> None:
    (store,) = replicas(1)
    store.create_job(Transition(record("job-1"), EventType.PLACED, reserve=[manchester(64)]))
    moved = record("job-1").model_copy(update={"version": 1})
    # All 64 GPUs are taken, but by this very job: releasing them first makes room.
    store.apply("job-1", 0, Transition(moved, EventType.PLACED, reserve=[manchester(32)], release=True))
    assert int(store.snapshot().pool_used_gpus[limits.pool_index["manchester-h100"]]) == 32
    assert store.reservation("job-1") == [manchester(32)]


def test_lease_has_one_holder_and_a_growing_fencing_token(redis_url: str) -> None:
    name = f"batch-{uuid4().hex[:8]}"
    a, b = Lease(redis_url, name, ttl_s=30), Lease(redis_url, name, ttl_s=30)
    token = a.acquire()
    assert token is not None
    assert a.acquire() == token  # already ours: same token
    assert b.acquire() is None
    assert a.renew(token) and a.check(token) and not b.check(token + 1)
    assert a.holder() == (token, a.owner)
    assert a.release(token)
    newer = b.acquire()
    assert newer is not None and newer > token
    assert not a.renew(token) and not a.check(token) and not a.release(token)
    b.release(newer)
    a.close()
    b.close()


def test_an_expired_lease_can_be_taken(redis_url: str) -> None:
    name = f"batch-{uuid4().hex[:8]}"
    a, b = Lease(redis_url, name, ttl_s=0.1), Lease(redis_url, name, ttl_s=30)
    old = a.acquire()
    assert old is not None
    taken = None
    for _ in range(200):  # bounded: the 0.1 s TTL runs out long before
        taken = b.acquire()
        if taken is not None:
            break
        threading.Event().wait(0.02)
    assert taken is not None and taken > old
    assert not a.renew(old)
    b.release(taken)


def test_a_replica_that_lost_the_lease_cannot_commit(replicas: Replicas, redis_url: str) -> None:
    (store,) = replicas(1)
    name = f"batch-{uuid4().hex[:8]}"
    a = Lease(redis_url, name, ttl_s=30, grid_name=store.grid_name)
    b = Lease(redis_url, name, ttl_s=30, grid_name=store.grid_name)
    old = a.acquire()
    assert old is not None
    store.fenced(a, old).create_job(Transition(record("job-1"), EventType.PLACED, reserve=[manchester()]))
    # a stalls past its lease; b takes over.
    a.release(old)
    new = b.acquire()
    assert new is not None
    before = store.snapshot()
    with pytest.raises(LeaseLost):
        store.fenced(a, old).create_job(Transition(record("job-2"), EventType.PLACED, reserve=[manchester()]))
    with pytest.raises(LeaseLost):
        store.fenced(a, old).apply("job-1", 0, Transition(record("job-1"), EventType.CANCELLED, release=True))
    assert store.get_job("job-2") is None
    assert (store.snapshot().pool_used_gpus == before.pool_used_gpus).all()
    store.fenced(b, new).create_job(Transition(record("job-3"), EventType.PLACED, reserve=[manchester()]))
    store.create_job(Transition(record("job-4", JobState.PENDING), EventType.PENDING))  # unfenced: as always


def test_lease_keeper_notices_a_lost_lease(redis_url: str) -> None:
    name = f"batch-{uuid4().hex[:8]}"
    a, b = Lease(redis_url, name, ttl_s=0.3), Lease(redis_url, name, ttl_s=30)
    token = a.acquire()
    assert token is not None
    keeper = LeaseKeeper(a, token)
    a.release(token)  # stands in for an expiry the keeper could not prevent
    assert b.acquire() is not None
    assert keeper.lost.wait(10)
    keeper.stop()


def test_a_submission_costs_two_round_trips(replicas: Replicas, small_grid: Grid) -> None:
    """Issue 13: the probe (request id, versions, snapshot only when the ledger moved) and the commit.
    Counted as commands sent to the real server, for placed and waiting jobs, with and without
    request ids, while another replica keeps moving the ledger in between."""
    from grid_scheduler.scheduler import Scheduler

    mine, other = replicas(2)
    scheduler = Scheduler(small_grid, store=mine)
    scheduler.submit(SPEC.model_copy(update={"name": "warm"}))  # the first call also reads the queue once
    # Both connections: the snapshot and the probe are read undecoded (the per-node bytes), on ``_raw``.
    sent = count_sent(mine)
    other_scheduler = Scheduler(small_grid, store=other)
    states = set()
    for n in range(12):
        sent.clear()
        big = n % 3 == 2  # 480 GB300: only the whole of glomfjord's healthy GPUs, so the second one waits
        gpus = SPEC.gpus.model_copy(update={"count": 480, "types": ["GB300"]}) if big else SPEC.gpus
        outcome = scheduler.submit(SPEC.model_copy(update={"name": f"j{n}", "gpus": gpus}),
                                   request_id=f"r{n}" if n % 2 else "")
        states.add(outcome.record.state)
        assert len(sent) <= 2, (n, sent)
        if n % 4 == 0:  # another replica moves the ledger: the next probe brings the snapshot along
            other_scheduler.submit(SPEC.model_copy(update={"name": f"o{n}"}))
    assert states == {JobState.RUNNING, JobState.PENDING}
    sent.clear()
    twin = scheduler.submit(SPEC.model_copy(update={"name": "j1"}), request_id="r1")
    assert not twin.created and len(sent) == 1  # a retried request: the probe finds it


def test_a_submission_on_a_current_view_costs_one_round_trip(replicas: Replicas, small_grid: Grid) -> None:
    """Issue 13: a submission decides on its view and sends only the commit (which also finds a retried
    request's twin). When another replica moved the ledger elsewhere, a placement still costs one: the
    commit is re-checked against live usage and brings the ledger back, so the view is current again.
    When the other replica took the very nodes decided on, the re-check refuses with the snapshot and
    the decision made again on it commits: two. A job that waits is decided again under the lock on the
    snapshot a refusal brings: two. Counted as commands a real server receives."""
    from grid_scheduler.scheduler import Scheduler

    mine, other = replicas(2)
    scheduler = Scheduler(small_grid, store=mine)
    scheduler.submit(SPEC.model_copy(update={"name": "warm"}))  # the first call also reads the queue once
    sent = count_sent(mine)
    other_scheduler = Scheduler(small_grid, store=other)
    b200 = SPEC.gpus.model_copy(update={"types": ["B200"]})  # not where this replica's jobs go
    states: set[JobState] = set()
    kinds: set[str] = set()
    for n in range(12):
        elsewhere, same_nodes = n % 4 == 1, n % 4 == 3
        if elsewhere:  # another replica moves the ledger in another pool: this replica's view is behind
            other_scheduler.submit(SPEC.model_copy(update={"name": f"o{n}", "gpus": b200}))
        if same_nodes:  # ... or takes the nodes this replica's next decision picks
            other_scheduler.submit(SPEC.model_copy(update={"name": f"o{n}"}))
        sent.clear()
        big = n % 3 == 2  # 480 GB300: only the whole of glomfjord's healthy GPUs, so the second one waits
        gpus = SPEC.gpus.model_copy(update={"count": 480, "types": ["GB300"]}) if big else SPEC.gpus
        outcome = scheduler.submit(SPEC.model_copy(update={"name": f"j{n}", "gpus": gpus}),
                                   request_id=f"r{n}" if n % 2 else "")
        states.add(outcome.record.state)
        waits = outcome.record.state is JobState.PENDING
        twice = (elsewhere or same_nodes) if waits else same_nodes
        assert sent == ["EVALSHA"] * (2 if twice else 1), (n, sent)
        assert scheduler.ledger.version == mine.versions().ledger  # the view is current after that round trip
        if not waits:
            kinds.add("elsewhere" if elsewhere else "same nodes" if same_nodes else "current")
    assert kinds == {"elsewhere", "same nodes", "current"}, kinds
    assert states == {JobState.RUNNING, JobState.PENDING}
    sent.clear()
    twin = scheduler.submit(SPEC.model_copy(update={"name": "j1"}), request_id="r1")
    assert not twin.created and sent == ["EVALSHA"]  # a retried request: the commit finds it


def test_a_cancel_with_nothing_waiting_skips_the_queue_pass(replicas: Replicas, small_grid: Grid) -> None:
    """Issue 13: the waiting jobs are read first, outside the scheduler lock, and the pass (its own two
    reads under the lock) runs only if some wait. A waiting job that is cancelled stops holding capacity
    against lower tiers even so."""
    from grid_scheduler.scheduler import Scheduler

    (mine,) = replicas(1)
    s = Scheduler(small_grid, store=mine)

    def h100(name: str, gpus: int, priority: int = 0) -> JobSpec:  # only sines-h100 (256 GPUs) takes these
        return JobSpec.model_validate({"name": name, "tenant": "acme", "kind": "training", "gang": True,
                                       "priority": priority, "gpus": {"count": gpus, "types": ["H100"]}})

    fill = [s.submit(h100(f"fill{i}", 32)).record for i in range(7)]
    assert all(r.state is JobState.RUNNING for r in fill)
    sent = count_sent(mine)
    s.cancel(fill[0].id)
    # One script: the job as this replica committed it, its release, and the count of waiting jobs
    # (none: no pass). The code before read the job and the waiting jobs around the commit: 3.
    assert sent == ["EVALSHA"], sent
    big = s.submit(h100("big", 96, priority=2)).record  # 64 free: it waits, holding them against tier 0
    assert big.state is JobState.PENDING
    assert s.explain(h100("small", 8))[0].placement is None  # held (explain commits nothing)
    sent.clear()
    s.cancel(big.id)
    assert sent == ["EVALSHA"], sent  # nothing else waits: no pass
    placed = s.submit(h100("small2", 8)).record
    assert placed.state is JobState.RUNNING  # the cancelled job holds nothing any more


def test_a_view_stuck_behind_a_change_hidden_by_the_slack_reads_again(replicas: Replicas, small_grid: Grid) -> None:
    """An unread decision's commit accepts the ledger as far past its view as the replica has claims
    in flight. Another replica's commit hidden in that slack leaves the view behind a gap it cannot
    follow; it must not stay there: once the claims it does not count pass a bound, submissions read
    first and the view catches up. (The claim in flight is held here as a slow decider would.)"""
    from grid_scheduler.scheduler import Scheduler
    from grid_scheduler.scheduler.core import UNREAD_MAX_UNCOUNTED

    mine, other = replicas(2)
    s = Scheduler(small_grid, store=mine)
    s.submit(SPEC.model_copy(update={"name": "warm"}))
    latest = s.ledger.latest()
    assert latest is not None
    slow = s.claims.register(s.claims.read(latest[1], latest[0]), "acme", [
        Assignment(site_id="london-hub", pool_id="london-b200", gpu_type="B200", gpus=8, power_kw=10.0,
                   nodes=((7, 8),))])
    assert slow  # in flight until the end of the test
    b200 = SPEC.gpus.model_copy(update={"types": ["B200"]})  # not where this replica's jobs go: no collision
    Scheduler(small_grid, store=other).submit(SPEC.model_copy(update={"name": "hidden", "gpus": b200}))
    stuck = 0
    for n in range(UNREAD_MAX_UNCOUNTED + 4):
        assert s.submit(SPEC.model_copy(update={"name": f"j{n}"})).record.state is JobState.RUNNING
        stuck += s.ledger.version != mine.versions().ledger
    assert stuck > 0, "the hidden commit left no gap: the test proves nothing"
    assert s.ledger.version == mine.versions().ledger  # caught up: the gap did not stay
    assert s.claims.uncounted(s.ledger.version) == 1  # only the slow decider's claim


def test_a_release_of_this_replica_in_flight_costs_a_submission_no_round_trip(
    replicas: Replicas, small_grid: Grid,
) -> None:
    """A job this replica is ending moves the ledger under a concurrent unread decision: the commit
    accepts that step (the decision merely missed GPUs coming back), so the submission stays at one
    round trip. (The release's commit is played by a second connection while its claim is held.)"""
    from grid_scheduler.scheduler import Scheduler

    mine, other = replicas(2)
    s = Scheduler(small_grid, store=mine)
    s.submit(SPEC.model_copy(update={"name": "warm"}))
    ending = s.submit(SPEC.model_copy(update={"name": "ending"})).record
    sent = count_sent(mine)
    release = s.claims.release()  # this replica's cancel, its commit landed, its reply not back yet
    Scheduler(small_grid, store=other).cancel(ending.id)
    sent.clear()
    assert s.submit(SPEC.model_copy(update={"name": "meanwhile"})).record.state is JobState.RUNNING
    assert sent == ["EVALSHA"], sent
    s.claims.end(release)


def test_ending_a_job_costs_one_round_trip_and_a_stale_record_one_more(replicas: Replicas, small_grid: Grid) -> None:
    """Issue 13: a cancel or completion of a job this replica committed sends one script (it expects the
    version this replica holds, releases, counts the waiting jobs). A job another replica placed is read
    first (two); one another replica moved since is refused with its current record and ended on that
    (two), never on the stale one. Counted as commands a real server receives."""
    from grid_scheduler.scheduler import Scheduler
    from grid_scheduler.scheduler.errors import WrongState

    mine, other = replicas(2)
    s, t = Scheduler(small_grid, store=mine), Scheduler(small_grid, store=other)
    own = [s.submit(SPEC.model_copy(update={"name": f"own{i}"})).record for i in range(3)]
    theirs = t.submit(SPEC.model_copy(update={"name": "theirs"})).record
    sent = count_sent(mine)
    done = s.complete(own[0].id)
    assert sent == ["EVALSHA"] and done.state is JobState.COMPLETED and done.version == own[0].version + 1
    sent.clear()
    assert s.cancel(theirs.id).state is JobState.CANCELLED
    assert sent == ["HGET", "EVALSHA"], sent
    t.complete(own[1].id)  # behind this replica's back: what it holds of own[1] is stale
    sent.clear()
    with pytest.raises(WrongState, match="already completed"):
        s.cancel(own[1].id)
    assert sent == ["EVALSHA"], sent  # the refusal brought the completed record: no read
    t.cancel(own[2].id)
    sent.clear()
    assert s.cancel(own[2].id).state is JobState.CANCELLED  # already cancelled elsewhere: no error
    assert sent == ["EVALSHA"], sent
    for job in (own[0], own[1], own[2], theirs):
        stored = mine.get_job(job.id)
        assert stored is not None and stored.state.is_final
    assert mine.snapshot().pool_used_gpus.sum() == 0  # every reservation given back, once


def test_a_release_with_jobs_waiting_runs_the_queue_pass(replicas: Replicas, small_grid: Grid) -> None:
    """The count of waiting jobs the release's script returns decides the pass: with one waiting, the
    GPUs freed go to it at once."""
    from grid_scheduler.scheduler import Scheduler

    (mine,) = replicas(1)
    s = Scheduler(small_grid, store=mine)

    def h100(name: str, gpus: int) -> JobSpec:  # only sines-h100 (256 GPUs) takes these
        return JobSpec.model_validate({"name": name, "tenant": "acme", "kind": "training", "gang": True,
                                       "gpus": {"count": gpus, "types": ["H100"]}})

    fill = [s.submit(h100(f"fill{i}", 32)).record for i in range(8)]
    assert all(r.state is JobState.RUNNING for r in fill)
    waiting = s.submit(h100("waits", 32)).record
    assert waiting.state is JobState.PENDING
    s.cancel(fill[0].id)
    placed = mine.get_job(waiting.id)
    assert placed is not None and placed.state is JobState.RUNNING


def test_a_failed_run_is_requeued_without_reading_the_job_first(replicas: Replicas, small_grid: Grid) -> None:
    """The end of a run reported by a site (scheduler/fleet.py) commits against the record this replica
    holds: no read before the commit. A job another replica ended since is left alone, decided on the
    record the refusal brought back (no read either)."""
    from grid_scheduler.scheduler import Scheduler, fleet

    mine, other = replicas(2)
    s, t = Scheduler(small_grid, store=mine), Scheduler(small_grid, store=other)
    failing, gone = (s.submit(SPEC.model_copy(update={"name": n})).record for n in ("failing", "gone"))
    assert failing.placement is not None and gone.placement is not None
    t.cancel(gone.id)  # behind this replica's back
    sent = count_sent(mine)
    assert fleet.requeue_failed(s, gone.id, gone.placement.site_ids[0], "boom", retry_queue=False) is None
    assert sent == ["EVALSHA"], sent
    sent.clear()
    queued = fleet.requeue_failed(s, failing.id, failing.placement.site_ids[0], "boom", retry_queue=False)
    assert queued is not None and queued.attempts == 1
    assert sent[0] == "EVALSHA", sent  # then the record read back (the pass may have placed it again)


def test_the_scripts_lane_reconnects_a_connection_redis_closed(replicas: Replicas, redis_url: str) -> None:
    """The scripts' lane (state/redis_conn.ScriptLane) keeps its own idle connections: one that Redis
    closed meanwhile (CLIENT KILL here; a restart alike) is noticed before the next script is sent on
    it, so the call succeeds instead of failing as unavailable; then the ledger is as committed."""
    import redis as redis_py

    (store,) = replicas(1)
    store.create_job(Transition(record("job-1"), EventType.PLACED, reserve=[manchester()]))
    admin = redis_py.Redis.from_url(redis_url)
    killed = admin.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1
    store.create_job(Transition(record("job-2"), EventType.PLACED, reserve=[manchester()]))
    assert int(store.snapshot().pool_used_gpus.sum()) == 16
    admin.close()


def test_a_cancel_with_nothing_waiting_skips_the_pass_while_another_thread_holds_the_lock(
    replicas: Replicas, small_grid: Grid
) -> None:
    """With concurrent calls the scheduler lock is mostly held for a moment by deciders reading the view.
    A job end that counted nothing waiting still ran a full pass (two round trips under the lock) when
    its try of the lock failed: with 8 clients, one job end in four. Now no serial submission running
    or done since is told from counters: the cancel finishes, in one round trip, while the lock is held."""
    from grid_scheduler.scheduler import Scheduler

    (mine,) = replicas(1)
    s = Scheduler(small_grid, store=mine)
    job = s.submit(SPEC).record
    assert job.state is JobState.RUNNING
    sent = count_sent(mine)
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with s.lock:
            held.set()
            done.wait(30.0)  # bounded: released at the end of the test in any case

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10.0)
        cancel = threading.Thread(target=s.cancel, args=(job.id,))
        cancel.start()
        cancel.join(10.0)
        finished = not cancel.is_alive()  # the code before waited for the lock, to run the pass
    finally:
        done.set()
        holder.join(30.0)
        cancel.join(30.0)
    assert finished, "the cancel waited for the scheduler lock"
    assert sent == ["EVALSHA"], sent
    assert s.get(job.id).state is JobState.CANCELLED
