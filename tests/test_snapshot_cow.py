"""The per-node arrays are copy-on-write: a commit replaces the arrays of the pools it touches.

The memory store hands its node arrays out in snapshots without copying them, and a replica's
view brings its snapshot forward by its own commits (state/ledger_delta.py) sharing every pool
it did not touch. Deciders read those views without a lock while commits happen, so what they
hold must never change: every snapshot taken along a random history still equals, array for
array, the copy made when it was taken; the node usage always equals the sum over the live
jobs' nodes; the view's node arrays equal a fresh snapshot's; and nobody can write to them.

A view follows a commit of the memory store by taking the snapshot the commit hands back
(``Committed.after``), and one of Redis by applying the moves (``apply_commit``): both paths are
held to the fresh snapshot here, and so is the node view each brings forward (``NodeView.updated``).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid_scheduler.engine.index import GridIndex
from grid_scheduler.engine.topology import NodeView, PoolShape
from grid_scheduler.model import Assignment, EventType, JobRecord, JobSpec, JobState
from grid_scheduler.scheduler.ledger_view import LedgerView
from grid_scheduler.state import CapacityConflict, LedgerSnapshot, Limits, MemoryStore, Transition, Update

# 150 pools of 6 nodes x 4 GPUs: more than two chunks of PoolArrays (64 pools each).
POOLS, NODES, PER_NODE = 150, 6, 4
SPEC = JobSpec.model_validate({"name": "c", "tenant": "acme", "kind": "training", "gpus": {"count": 1}})


def limits() -> Limits:
    return Limits(
        pool_ids=tuple(f"p{i}" for i in range(POOLS)), pool_gpus=np.full(POOLS, NODES * PER_NODE, dtype=np.int64),
        site_ids=("s",), site_power_w=np.array([10**12], dtype=np.int64),
        pool_nodes=np.full(POOLS, NODES, dtype=np.int64), pool_gpus_per_node=np.full(POOLS, PER_NODE, dtype=np.int64),
        pool_grid_drained_nodes=np.zeros(POOLS, dtype=np.int64),
    )


# Domains of 4 nodes: 6 nodes make a whole domain and a short one in every pool.
INDEX: GridIndex = SimpleNamespace(pool_shapes=tuple(PoolShape(PER_NODE, 4) for _ in range(POOLS)))  # type: ignore[assignment]


def assert_node_view_is_fresh(view: LedgerView, fresh: LedgerSnapshot) -> None:
    latest = view.latest()
    assert latest is not None
    carried = latest[1].nodes(INDEX)
    built = NodeView.build(INDEX.pool_shapes, fresh.node_used_gpus, fresh.node_out)
    assert carried is not None
    assert [a.tolist() for a in carried.node_free] == [a.tolist() for a in built.node_free]
    assert carried.pool_free_gpus.tolist() == built.pool_free_gpus.tolist()
    assert carried.pool_broken_free_gpus.tolist() == built.pool_broken_free_gpus.tolist()
    assert [carried.domain_free(p).tolist() for p in range(POOLS)] == [built.domain_free(p).tolist()
                                                                        for p in range(POOLS)]


def copied(snap: LedgerSnapshot) -> list[np.ndarray]:
    """The snapshot's arrays as they are now: per node, then per pool and per site."""
    return [np.array(a, copy=True) for a in (*snap.node_used_gpus, snap.pool_used_gpus, snap.site_used_w)]


# One step: place a job on (pool, {node: gpus}) parts, or end the running job at ``pick``.
parts = st.lists(
    st.tuples(st.integers(0, POOLS - 1), st.dictionaries(st.integers(0, NODES - 1), st.integers(1, PER_NODE),
                                                          min_size=1, max_size=NODES)),
    min_size=1, max_size=3, unique_by=lambda p: p[0],
)
steps = st.lists(st.tuples(st.sampled_from(["place", "place", "end"]), parts, st.integers(0, 1_000)),
                 min_size=1, max_size=25)


@settings(max_examples=40, deadline=None)
@given(history=steps)
def test_snapshots_and_views_never_change_under_later_commits(history: list[tuple[str, list, int]]) -> None:
    lim = limits()
    store = MemoryStore(lim)
    view = LedgerView(lim)
    view.reset(store.snapshot())
    delta = LedgerView(lim)  # follows by applying the moves, as on Redis
    delta.reset(store.snapshot())
    for v in (view, delta):  # built once: from here on each commit brings it forward
        latest = v.latest()
        assert latest is not None and latest[1].nodes(INDEX) is not None
    taken: list[tuple[LedgerSnapshot, list[np.ndarray]]] = []
    running: dict[str, list[Assignment]] = {}
    for n, (kind, job_parts, pick) in enumerate(history):
        if kind == "end" and running:
            job_id = sorted(running)[pick % len(running)]
            record = store.get_job(job_id)
            assert record is not None
            done = record.model_copy(update={"state": JobState.COMPLETED, "version": record.version + 1})
            moves = [Transition(done, EventType.COMPLETED, release=True)]
            commit = store.commit_delta([Update(job_id, record.version, moves[0])])
            del running[job_id]
        else:
            assignments = [Assignment(site_id="s", pool_id=f"p{p}", gpu_type="H100", gpus=sum(nodes.values()),
                                      power_kw=0.5, nodes=tuple(sorted(nodes.items()))) for p, nodes in job_parts]
            record = JobRecord(id=f"job-{n:03d}", spec=SPEC, state=JobState.RUNNING, created_at=1.0, updated_at=1.0)
            moves = [Transition(record, EventType.PLACED, reserve=assignments)]
            try:
                commit = store.commit_delta([], moves[0])
            except CapacityConflict:
                continue
            running[record.id] = assignments
        before = view.snapshot
        assert commit.after is not None  # the memory store hands back every commit that moved the ledger
        view.follow(commit, moves)
        delta.follow(replace(commit, after=None), moves)
        snap = store.snapshot()
        taken.append((snap, copied(snap)))
        after = view.snapshot
        assert before is not None and after is not None and after.version == snap.version
        assert after is commit.after  # taken as the store left it, nothing re-derived
        applied = delta.snapshot
        assert applied is not None and applied.version == snap.version
        np.testing.assert_array_equal(applied.pool_used_gpus, snap.pool_used_gpus)
        np.testing.assert_array_equal(applied.site_used_w, snap.site_used_w)
        assert applied.tenant_pool_gpus.keys() == snap.tenant_pool_gpus.keys()
        for tenant, row in snap.tenant_pool_gpus.items():
            np.testing.assert_array_equal(applied.tenant_pool_gpus[tenant], row)
        for v in (view, delta):
            assert_node_view_is_fresh(v, snap)
        touched = {int(a.pool_id[1:]) for t in moves for a in t.reserve} | {
            int(a.pool_id[1:]) for _, a in commit.released}
        for p in range(POOLS):
            np.testing.assert_array_equal(after.node_used_gpus[p], snap.node_used_gpus[p])
            np.testing.assert_array_equal(applied.node_used_gpus[p], snap.node_used_gpus[p])
            if p not in touched:  # untouched pools: shared, not copied
                assert after.node_used_gpus[p] is before.node_used_gpus[p]
    # Every snapshot still holds what it held when it was taken.
    for snap, at_the_time in taken:
        for got, then in zip((*snap.node_used_gpus, snap.pool_used_gpus, snap.site_used_w), at_the_time, strict=True):
            np.testing.assert_array_equal(got, then)
    # The pool-level arrays too are the store's own, shared and read-only (copy-on-write).
    for snap, _ in taken:
        for array in (snap.pool_used_gpus, snap.site_used_w, snap.pool_drained, *snap.tenant_pool_gpus.values()):
            assert not array.flags.writeable
    # And the ledger is the sum of what the live jobs hold.
    expected = np.zeros((POOLS, NODES), dtype=np.int64)
    for assignments in running.values():
        for a in assignments:
            for node, g in a.nodes:
                expected[int(a.pool_id[1:]), node] += g
    final = store.snapshot()
    np.testing.assert_array_equal(np.stack(list(final.node_used_gpus)), expected)
    np.testing.assert_array_equal(final.pool_used_gpus, expected.sum(axis=1))


def test_a_reader_cannot_write_to_the_ledgers_node_arrays() -> None:
    store = MemoryStore(limits())
    snap = store.snapshot()
    with pytest.raises(ValueError, match="read-only"):
        snap.node_used_gpus[3][0] = 1
    with pytest.raises(ValueError, match="read-only"):
        snap.node_out[3][0] = True
    record = JobRecord(id="j", spec=SPEC, state=JobState.RUNNING, created_at=1.0, updated_at=1.0)
    a = Assignment(site_id="s", pool_id="p3", gpu_type="H100", gpus=3, power_kw=0.5, nodes=((0, 3),))
    store.commit_delta([], Transition(record, EventType.PLACED, reserve=[a]))
    assert snap.node_used_gpus[3][0] == 0 and store.snapshot().node_used_gpus[3][0] == 3
    # The pools the commit did not touch are the same arrays in both snapshots.
    assert store.snapshot().node_used_gpus[4] is snap.node_used_gpus[4]


def test_a_node_refused_at_commit_leaves_nothing_behind() -> None:
    """The node re-check refuses a node out of service or over-filled, naming it, both for a few
    nodes and past the vectorised threshold (a gang naming many nodes)."""
    store = MemoryStore(limits())
    assert store.set_nodes_out("p1", [2])
    record = JobRecord(id="j", spec=SPEC, state=JobState.RUNNING, created_at=1.0, updated_at=1.0)
    before = store.snapshot()
    for nodes in (((2, 1),), tuple((i, 1) for i in range(NODES))):
        a = Assignment(site_id="s", pool_id="p1", gpu_type="H100", gpus=len(nodes), power_kw=0.5, nodes=nodes)
        with pytest.raises(CapacityConflict, match="node 2 is out of service"):
            store.commit_delta([], Transition(record, EventType.PLACED, reserve=[a]))
    full = Assignment(site_id="s", pool_id="p0", gpu_type="H100", gpus=PER_NODE, power_kw=0.5, nodes=((5, PER_NODE),))
    store.commit_delta([], Transition(record, EventType.PLACED, reserve=[full]))
    again = JobRecord(id="k", spec=SPEC, state=JobState.RUNNING, created_at=1.0, updated_at=1.0)
    one_more = full.model_copy(update={"gpus": 1, "nodes": ((5, 1),)})
    with pytest.raises(CapacityConflict, match="node 5 cannot take 1 more GPUs"):
        store.commit_delta([], Transition(again, EventType.PLACED, reserve=[one_more]))
    assert store.snapshot().node_used_gpus[1] is before.node_used_gpus[1]
    assert int(store.snapshot().pool_used_gpus.sum()) == PER_NODE
