"""The Store contract. Every store implementation must pass these, unchanged.

To add a store, extend the ``store`` fixture's params; each test gets a fresh, empty store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from grid_scheduler.model import Assignment, EventType, Grid, JobRecord, JobSpec, JobState
from grid_scheduler.state import CapacityConflict, Limits, MemoryStore, StaleRecord, Store, Transition, UnknownJob

SPEC = JobSpec.model_validate(
    {"name": "t", "tenant": "acme", "kind": "training", "gpus": {"count": 8}, "priority": 5}
)

StoreFactory = Callable[[Limits], Store]


@pytest.fixture(params=["memory", "redis"])
def store_factory(request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    if request.param == "memory":
        yield MemoryStore
    elif request.param == "redis":
        from uuid import uuid4

        from grid_scheduler.state.redis_store import RedisStore

        # One real redis-server for the session; a fresh grid name gives each test an empty ledger.
        url = request.getfixturevalue("redis_url")
        yield lambda limits: RedisStore(limits, url, f"contract-{uuid4().hex[:12]}")
    else:  # pragma: no cover - other stores register themselves in their own fixture module
        raise ValueError(request.param)


@pytest.fixture
def limits(small_grid: Grid) -> Limits:
    return Limits.from_grid(small_grid)


@pytest.fixture
def store(store_factory: StoreFactory, limits: Limits) -> Iterator[Store]:
    s = store_factory(limits)
    yield s
    s.close()


def record(job_id: str, request_id: str = "", state: JobState = JobState.PENDING, priority: int = 5,
           created_at: float = 1.0, version: int = 0) -> JobRecord:
    spec = SPEC.model_copy(update={"priority": priority})
    return JobRecord(id=job_id, request_id=request_id, spec=spec, state=state, created_at=created_at,
                     updated_at=created_at, version=version)


def a(pool: str, site: str, gpus: int, power_kw: float) -> Assignment:
    return Assignment(site_id=site, pool_id=pool, gpu_type="H100", gpus=gpus, power_kw=power_kw)


def used(store: Store, limits: Limits, pool: str) -> int:
    return int(store.snapshot().pool_used_gpus[limits.pool_index[pool]])


def test_create_and_get(store: Store) -> None:
    created, is_new = store.create_job(Transition(record("job-1"), EventType.PENDING))
    assert is_new
    assert store.get_job("job-1") == created
    assert store.get_job("job-2") is None


def test_request_id_is_idempotent(store: Store, limits: Limits) -> None:
    first, _ = store.create_job(
        Transition(record("job-1", "req-1", JobState.RUNNING), EventType.PLACED,
                   reserve=[a("sines-h100", "sines", 8, 7.0)])
    )
    again, is_new = store.create_job(
        Transition(record("job-2", "req-1", JobState.RUNNING), EventType.PLACED,
                   reserve=[a("sines-h100", "sines", 8, 7.0)])
    )
    assert not is_new
    assert again.id == first.id
    assert store.get_job("job-2") is None
    assert store.job_by_request(SPEC.tenant, "req-1") == first
    assert store.job_by_request(SPEC.tenant, "req-2") is None
    assert used(store, limits, "sines-h100") == 8  # reserved once


def test_reservation_over_pool_capacity_leaves_nothing(store: Store, limits: Limits) -> None:
    before = store.snapshot()
    too_many = [a("sines-h100", "sines", 8, 7.0), a("london-b200", "london-hub", 65, 81.25)]
    with pytest.raises(CapacityConflict):
        store.create_job(Transition(record("job-1", "req-1", JobState.RUNNING), EventType.PLACED, reserve=too_many))
    after = store.snapshot()
    assert store.get_job("job-1") is None
    assert np.array_equal(after.pool_used_gpus, before.pool_used_gpus)
    assert np.array_equal(after.site_used_w, before.site_used_w)
    # The request id was not consumed by the failed attempt.
    ok, is_new = store.create_job(Transition(record("job-1", "req-1"), EventType.PENDING))
    assert is_new and ok.id == "job-1"


def test_reservation_over_site_power_is_refused(store: Store) -> None:
    # sines: 350 kW envelope.
    store.create_job(Transition(record("job-1", state=JobState.RUNNING), EventType.PLACED,
                                reserve=[a("sines-h100", "sines", 200, 349.0)]))
    with pytest.raises(CapacityConflict):
        store.create_job(Transition(record("job-2", state=JobState.RUNNING), EventType.PLACED,
                                    reserve=[a("sines-gb300", "sines", 1, 1.75)]))
    assert store.get_job("job-2") is None


def test_release_restores_the_ledger_exactly(store: Store, limits: Limits) -> None:
    before = store.snapshot()
    placed = record("job-1", state=JobState.RUNNING)
    store.create_job(Transition(placed, EventType.PLACED,
                                reserve=[a("sines-h100", "sines", 24, 21.0000001), a("sines-gb300", "sines", 3, 5.25)]))
    assert used(store, limits, "sines-h100") == 24
    done = placed.model_copy(update={"state": JobState.CANCELLED, "version": 1})
    store.apply("job-1", 0, Transition(done, EventType.CANCELLED, release=True))
    after = store.snapshot()
    assert np.array_equal(after.pool_used_gpus, before.pool_used_gpus)
    assert np.array_equal(after.site_used_w, before.site_used_w)
    assert store.reservation("job-1") == []


def test_apply_refuses_a_stale_version(store: Store) -> None:
    store.create_job(Transition(record("job-1"), EventType.PENDING))
    moved = record("job-1", state=JobState.CANCELLED, version=1)
    store.apply("job-1", 0, Transition(moved, EventType.CANCELLED))
    with pytest.raises(StaleRecord):
        store.apply("job-1", 0, Transition(moved, EventType.CANCELLED))
    with pytest.raises(UnknownJob):
        store.apply("nope", 0, Transition(moved, EventType.CANCELLED))


def test_apply_that_does_not_fit_changes_nothing(store: Store, limits: Limits) -> None:
    store.create_job(Transition(record("job-1"), EventType.PENDING))
    running = record("job-1", state=JobState.RUNNING, version=1)
    with pytest.raises(CapacityConflict):
        store.apply("job-1", 0, Transition(running, EventType.PLACED, reserve=[a("sines-h100", "sines", 999, 1.0)]))
    current = store.get_job("job-1")
    assert current is not None and current.state is JobState.PENDING and current.version == 0
    assert used(store, limits, "sines-h100") == 0


def test_drained_pool_takes_nothing_new(store: Store) -> None:
    assert store.set_drained("sines-h100", True)
    assert not store.set_drained("sines-h100", True)
    assert store.snapshot().pool_drained.any()
    with pytest.raises(CapacityConflict):
        store.create_job(Transition(record("job-1", state=JobState.RUNNING), EventType.PLACED,
                                    reserve=[a("sines-h100", "sines", 8, 7.0)]))
    assert store.set_drained("sines-h100", False)
    store.create_job(Transition(record("job-1", state=JobState.RUNNING), EventType.PLACED,
                                reserve=[a("sines-h100", "sines", 8, 7.0)]))


def test_ledger_version_moves_on_every_change(store: Store) -> None:
    v0 = store.ledger_version()
    store.create_job(Transition(record("job-1", state=JobState.RUNNING), EventType.PLACED,
                                reserve=[a("sines-h100", "sines", 8, 7.0)]))
    v1 = store.ledger_version()
    store.set_drained("sines-h100", True)
    v2 = store.ledger_version()
    assert v0 != v1 != v2 and v0 != v2


def test_list_jobs_pages_in_id_order_and_filters(store: Store) -> None:
    for i in range(7):
        state = JobState.RUNNING if i % 2 else JobState.PENDING
        store.create_job(Transition(record(f"job-{i}", state=state), EventType.PENDING))
    page1 = store.list_jobs(frozenset(), "", 3)
    page2 = store.list_jobs(frozenset(), page1[-1].id, 3)
    page3 = store.list_jobs(frozenset(), page2[-1].id, 3)
    assert [r.id for r in page1 + page2 + page3] == [f"job-{i}" for i in range(7)]
    running = store.list_jobs(frozenset({JobState.RUNNING}), "", 100)
    assert [r.id for r in running] == ["job-1", "job-3", "job-5"]


def test_pending_jobs_by_priority_then_age(store: Store) -> None:
    store.create_job(Transition(record("job-a", priority=1, created_at=1.0), EventType.PENDING))
    store.create_job(Transition(record("job-b", priority=9, created_at=3.0), EventType.PENDING))
    store.create_job(Transition(record("job-c", priority=9, created_at=2.0), EventType.PENDING))
    store.create_job(Transition(record("job-d", state=JobState.RUNNING), EventType.PLACED))
    assert [r.id for r in store.pending_jobs()] == ["job-c", "job-b", "job-a"]


def test_events_are_sequenced_and_waitable(store: Store) -> None:
    start = store.last_sequence()
    assert store.events_after(start, timeout_s=0.05) == []
    store.create_job(Transition(record("job-1"), EventType.PENDING, "waiting"))
    store.create_job(Transition(record("job-2"), EventType.PENDING))
    events = store.events_after(start, timeout_s=1.0)
    assert [e.job_id for e in events] == ["job-1", "job-2"]
    assert events[0].sequence < events[1].sequence
    assert events[0].message == "waiting"
    assert store.events_after(events[0].sequence, 0)[0].job_id == "job-2"


# Redis trims with MAXLEN ~, whole stream nodes (100 entries by default) at a time: enough events
# that the oldest nodes must go, with a small limit on both stores.
SMALL_WINDOW = 10
EVENTS_PAST_WINDOW = 320


def small_event_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from grid_scheduler.state import memory, redis_store

    monkeypatch.setattr(memory, "MAX_EVENTS", SMALL_WINDOW)
    monkeypatch.setattr(redis_store, "MAX_EVENTS", SMALL_WINDOW)


def test_first_sequence_before_and_after_events(store: Store) -> None:
    assert (store.last_sequence(), store.first_sequence()) == (0, 1)  # none yet: the next one's
    store.create_job(Transition(record("job-1"), EventType.PENDING))
    store.create_job(Transition(record("job-2"), EventType.PENDING))
    assert store.first_sequence() == 1
    assert store.events_after(0, 0)[0].sequence == store.first_sequence()


def test_first_sequence_moves_when_events_are_trimmed(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    small_event_window(monkeypatch)
    for i in range(EVENTS_PAST_WINDOW):
        store.create_job(Transition(record(f"job-{i:04d}"), EventType.PENDING))
    first, last = store.first_sequence(), store.last_sequence()
    assert last == EVENTS_PAST_WINDOW
    assert 1 < first <= last - SMALL_WINDOW + 1  # some trimmed, at least the window kept
    # The oldest retained event is the first one a watcher from the start gets, and nothing
    # between it and the newest is missing.
    events = []
    after = 0
    while batch := store.events_after(after, 0):
        events.extend(batch)
        after = batch[-1].sequence
    assert [e.sequence for e in events] == list(range(first, last + 1))


def test_events_carry_their_jobs_tenant(store: Store) -> None:
    store.create_job(Transition(record("j1"), EventType.PENDING))
    (event,) = store.events_after(0, 0)
    assert event.tenant == "acme"


def test_audit_records_are_numbered_and_read_back_in_order(store: Store) -> None:
    from grid_scheduler.model import AuditRecord

    assert store.audit_after(0, 10) == []
    entries = [AuditRecord(time=float(n), principal=f"p{n}", tenant="acme", method="/m", object=f"o{n}", outcome="OK")
               for n in range(5)]
    written = store.append_audit(entries[:1]) + store.append_audit(entries[1:])
    assert store.append_audit([]) == []
    assert [r.sequence for r in written] == [1, 2, 3, 4, 5]
    assert store.audit_after(0, 10) == written
    assert store.audit_after(2, 2) == written[2:4]  # after a sequence, at most limit
    assert store.audit_after(5, 10) == []


def test_probe_reads_the_twin_or_the_versions_and_a_snapshot_only_when_moved(store: Store, limits: Limits) -> None:
    """Store.probe, a submission's one read: the request's job if known; else the versions, and the
    snapshot (equal to ``snapshot()``) only when the ledger is not at the version the caller holds."""
    first = store.probe("acme", "r1", -1)
    assert first.existing is None and first.snapshot is not None
    assert first.snapshot.version == first.versions.ledger == store.versions().ledger
    assert store.probe("acme", "", first.versions.ledger).snapshot is None  # nothing moved
    store.create_job(Transition(record("j1", request_id="r1", state=JobState.RUNNING), EventType.PLACED, "placed",
                                reserve=[a("sines-h100", "sines", 8, 7.0)]))
    twin = store.probe("acme", "r1", first.versions.ledger)
    assert twin.existing is not None and twin.existing.id == "j1" and twin.snapshot is None
    assert store.probe("globex", "r1", first.versions.ledger).existing is None  # request ids are per tenant
    moved = store.probe("acme", "r2", first.versions.ledger)
    assert moved.existing is None and moved.snapshot is not None
    now = store.snapshot()
    assert moved.snapshot.version == now.version == moved.versions.ledger
    assert (moved.snapshot.pool_used_gpus == now.pool_used_gpus).all()
    assert (moved.snapshot.site_used_w == now.site_used_w).all()
