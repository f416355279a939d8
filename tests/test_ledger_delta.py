"""A replica's ledger view, brought forward by its own commits, equals a fresh snapshot.

This is the invariant that lets a submission skip reading the snapshot after the replica's own
commit (scheduler/ledger_view.py, state/ledger_delta.py): after any history of commits on
either store (reservations, releases, evictions with a placement in one commit, waiting jobs,
conflicts, drains and node health that the view does not follow), whenever the view claims the
ledger's current version its snapshot is the store's, array for array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import uuid4

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine.topology import NodeView
from grid_scheduler.model import Assignment, EventType, Grid, JobRecord, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.ledger_view import LedgerView
from grid_scheduler.state import (
    CapacityConflict,
    LedgerSnapshot,
    Limits,
    MemoryStore,
    Store,
    Transition,
    Update,
)
from grid_scheduler.state.ledger_delta import apply_commit
from tests.strategies import job_specs

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TENANTS = ["acme", "bank", "cern"]

StoreFactory = Callable[[Limits], Store]


@pytest.fixture(params=["memory", "redis"])
def store_factory(request: pytest.FixtureRequest) -> Iterator[StoreFactory]:
    if request.param == "memory":
        yield MemoryStore
        return
    from grid_scheduler.state.redis_store import RedisStore

    url = request.getfixturevalue("redis_url")
    opened: list[Store] = []

    def make(limits: Limits) -> Store:
        opened.append(RedisStore(limits, url, f"delta-{uuid4().hex[:12]}"))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


def assert_same(view: LedgerSnapshot, fresh: LedgerSnapshot) -> None:
    assert view.version == fresh.version
    np.testing.assert_array_equal(view.pool_used_gpus, fresh.pool_used_gpus)
    np.testing.assert_array_equal(view.site_used_w, fresh.site_used_w)
    np.testing.assert_array_equal(view.pool_drained, fresh.pool_drained)
    np.testing.assert_array_equal(
        view.pool_down_gpus if view.pool_down_gpus is not None else 0,
        fresh.pool_down_gpus if fresh.pool_down_gpus is not None else 0)
    assert view.tenant_pool_gpus.keys() == fresh.tenant_pool_gpus.keys()
    for tenant, row in fresh.tenant_pool_gpus.items():
        np.testing.assert_array_equal(view.tenant_pool_gpus[tenant], row)


# --- the stores' reports, followed by a view ----------------------------------------
# One step of a history: place a job (its assignments), end a running job, evict running jobs
# and place one in the same commit, store a waiting job, or change drains / node health.
Step = tuple[str, int, list[tuple[int, int, float]], int]  # kind, tenant, [(pool, gpus, kw)], pick

steps = st.lists(
    st.tuples(
        st.sampled_from(["place", "place", "place", "end", "end", "evict", "wait", "drain", "down"]),
        st.integers(0, len(TENANTS) - 1),
        st.lists(st.tuples(st.integers(0, 99), st.integers(1, 96), st.sampled_from([0.7, 1.2, 7.0, 10.35])),
                 min_size=1, max_size=3),
        st.integers(0, 1_000),
    ),
    min_size=1, max_size=30,
)


@SETTINGS
@given(history=steps)
def test_a_view_that_follows_commits_equals_a_fresh_snapshot(
    store_factory: StoreFactory, small_grid: Grid, history: list[Step]
) -> None:
    limits = Limits.from_grid(small_grid)
    store = store_factory(limits)
    view = LedgerView(limits)
    view.reset(store.snapshot())
    site_of = {p.id: s.id for s in small_grid.sites for p in s.pools}
    running: list[JobRecord] = []
    spec = JobSpec.model_validate({"name": "d", "tenant": "acme", "kind": "training", "gpus": {"count": 1}})
    for n, (kind, tenant, parts, pick) in enumerate(history):
        job_spec = spec.model_copy(update={"tenant": TENANTS[tenant]})
        assignments = [Assignment(site_id=site_of[limits.pool_ids[p % len(limits.pool_ids)]],
                                  pool_id=limits.pool_ids[p % len(limits.pool_ids)], gpu_type="H100", gpus=g,
                                  power_kw=kw * g) for p, g, kw in parts]
        placed = JobRecord(id=f"job-{n:04d}", spec=job_spec, state=JobState.RUNNING, created_at=1.0, updated_at=1.0)
        updates: list[Update] = []
        create: Transition | None = None
        if kind == "drain":
            pool = limits.pool_ids[pick % len(limits.pool_ids)]
            store.set_drained(pool, not bool(store.snapshot().pool_drained[limits.pool_index[pool]]))
        elif kind == "down":
            store.set_pool_down(limits.pool_ids[pick % len(limits.pool_ids)], pick % 17)
        elif kind == "wait":
            create = Transition(placed.model_copy(update={"state": JobState.PENDING}), EventType.PENDING)
        elif kind == "end" and running:
            victim = running[pick % len(running)]
            done = victim.model_copy(update={"state": JobState.COMPLETED, "version": victim.version + 1})
            updates = [Update(victim.id, victim.version, Transition(done, EventType.COMPLETED, release=True))]
        else:
            victims = running[pick % max(len(running), 1):][:2] if kind == "evict" else []
            for v in victims:
                back = v.model_copy(update={"state": JobState.PENDING, "version": v.version + 1})
                updates.append(Update(v.id, v.version, Transition(back, EventType.PREEMPTED, release=True)))
            create = Transition(placed, EventType.PLACED, reserve=assignments)
        if updates or create is not None:
            moves = [u.transition for u in updates] + ([create] if create is not None else [])
            try:
                done_commit = store.commit_delta(updates, create)
            except CapacityConflict:
                done_commit = None  # nothing written: nothing to follow
            if done_commit is not None:
                view.follow(done_commit, moves)
                gone = {u.job_id for u in updates}
                running = [r for r in running if r.id not in gone]
                if create is not None and create.reserve:
                    running.append(create.record)
        fresh = store.snapshot()
        current = view.snapshot
        assert current is not None
        if current.version == fresh.version:
            assert_same(current, fresh)
        else:
            # Only a change the view does not follow (drain, node health) may leave it behind.
            assert kind in ("drain", "down") or current.version < fresh.version
            view.reset(fresh)
        if kind not in ("drain", "down") and (updates or create is not None):
            assert current.version == fresh.version, "a commit of this replica alone must be followed"


# --- the scheduler: its view after random submissions, ends and preemptions ------------
ops = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), job_specs(), st.booleans()),
        st.tuples(st.just("cancel"), st.integers(0, 1_000), st.booleans()),
        st.tuples(st.just("complete"), st.integers(0, 1_000), st.booleans()),
    ),
    min_size=1, max_size=20,
)


@SETTINGS
@given(history=ops)
def test_the_schedulers_view_equals_a_fresh_snapshot_after_every_call(
    store_factory: StoreFactory, small_grid: Grid, history: list[tuple[str, object, bool]]
) -> None:
    store = store_factory(Limits.from_grid(small_grid))
    s = Scheduler(small_grid, store=store, quiet=True)
    s.usage()  # the one read; from here on only the scheduler's own commits move the ledger
    jobs: list[str] = []
    for kind, arg, flag in history:
        if kind == "submit":
            assert isinstance(arg, JobSpec)
            jobs.append(s.submit(arg.model_copy(update={"preemptible": flag}), request_id=f"r-{len(jobs)}").record.id)
        elif jobs:
            assert isinstance(arg, int)
            record = s.get(jobs[arg % len(jobs)])
            if kind == "cancel" and not record.state.is_final:
                s.cancel(record.id)
            elif kind == "complete" and record.state is JobState.RUNNING:
                s.complete(record.id)
        fresh = store.snapshot()
        view = s.ledger.snapshot
        assert view is not None
        assert view.version == fresh.version, "every commit of the only replica is followed"
        assert_same(view, fresh)
        # The node view the decisions read, brought forward commit by commit (NodeView.updated),
        # equals one built afresh from the store's snapshot.
        carried = s.usage().nodes(s.index)
        if fresh.node_used_gpus:
            assert carried is not None
            built = NodeView.build(s.index.pool_shapes, fresh.node_used_gpus, fresh.node_out)
            assert [a.tolist() for a in carried.node_free] == [a.tolist() for a in built.node_free]
            assert carried.pool_free_gpus.tolist() == built.pool_free_gpus.tolist()
            assert carried.pool_broken_free_gpus.tolist() == built.pool_broken_free_gpus.tolist()
            assert [carried.domain_free(p).tolist() for p in range(len(built.shapes))] == \
                [built.domain_free(p).tolist() for p in range(len(built.shapes))]


# --- the delta itself: per-node usage, when the snapshot carries it --------------------
@settings(max_examples=60, deadline=None)
@given(moves=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(1, 4)), min_size=1, max_size=8))
def test_node_usage_moves_with_the_assignments_and_release_undoes_reserve(moves: list[tuple[int, int, int]]) -> None:
    limits = Limits(pool_ids=("p0", "p1", "p2", "p3"), pool_gpus=np.full(4, 48, dtype=np.int64),
                    site_ids=("s",), site_power_w=np.array([10**9], dtype=np.int64))
    start = LedgerSnapshot(
        version=7, pool_used_gpus=np.zeros(4, dtype=np.int64), site_used_w=np.zeros(1, dtype=np.int64),
        pool_drained=np.zeros(4, dtype=np.bool_),
        node_used_gpus=tuple(np.zeros(6, dtype=np.int32) for _ in range(4)),
        node_out=tuple(np.zeros(6, dtype=np.bool_) for _ in range(4)),
    )
    taken = [("acme", Assignment(site_id="s", pool_id=f"p{p}", gpu_type="H100", gpus=g, power_kw=0.7 * g,
                                 nodes=((node, g),))) for p, node, g in moves]
    after = apply_commit(start, limits, 8, taken)
    assert after.version == 8
    for pool in range(4):
        assert int(after.node_used_gpus[pool].sum()) == int(after.pool_used_gpus[pool])
        assert int(after.tenant_pool_gpus["acme"][pool]) == int(after.pool_used_gpus[pool])
    assert all(not row.any() for row in start.node_used_gpus), "the snapshot it started from is unchanged"
    back = apply_commit(after, limits, 9, (), taken)
    assert_same(back, LedgerSnapshot(9, start.pool_used_gpus, start.site_used_w, start.pool_drained))
    assert all(not row.any() for row in back.node_used_gpus)
