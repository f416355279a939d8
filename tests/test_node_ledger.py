"""The ledger knows nodes (issue 11): both stores keep per-node used GPUs and out-of-service nodes,
refuse a commit that over-fills or touches an out node (nothing written), and release gives back
exactly what reserve took. Hypothesis drives random commits, releases and out sets on both stores
against a plain model of the same."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import uuid4

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.model import Assignment, EventType, Grid, JobRecord, JobSpec, JobState
from grid_scheduler.state import CapacityConflict, Limits, MemoryStore, Store, Transition, Update

SPEC = JobSpec.model_validate({"name": "t", "tenant": "acme", "kind": "training", "gpus": {"count": 4}})
# (site, pool, nodes, GPUs per node, the grid file's drained nodes: the last ones)
POOLS = {"sines-gb300": ("sines", 32, 4, 0), "glomfjord-gb300": ("glomfjord", 128, 4, 8)}

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
        opened.append(RedisStore(limits, url, f"nodes-{uuid4().hex[:12]}"))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


def assignment(pool_id: str, nodes: list[tuple[int, int]]) -> Assignment:
    site = POOLS[pool_id][0]
    return Assignment(site_id=site, pool_id=pool_id, gpu_type="GB300", gpus=sum(g for _, g in nodes),
                      power_kw=0.0, nodes=tuple(sorted(nodes)))


def running(job_id: str, version: int = 0) -> JobRecord:
    return JobRecord(id=job_id, spec=SPEC, state=JobState.RUNNING, created_at=1.0, updated_at=1.0, version=version)


def node_used(store: Store, limits: Limits, pool_id: str) -> np.ndarray:
    return store.snapshot().node_used_gpus[limits.pool_index[pool_id]]


def test_snapshot_has_one_entry_per_node_and_the_grid_drains_start_out(store_factory: StoreFactory,
                                                                      small_grid: Grid) -> None:
    limits = Limits.from_grid(small_grid)
    store = store_factory(limits)
    snap = store.snapshot()
    pools = [p for s in small_grid.sites for p in s.pools]
    assert [len(u) for u in snap.node_used_gpus] == [p.nodes for p in pools]
    assert [int(o.sum()) for o in snap.node_out] == [p.drained_nodes for p in pools]
    g = limits.pool_index["glomfjord-gb300"]
    assert snap.node_out[g][120:].all() and not snap.node_out[g][:120].any()
    # The probe's snapshot is the same read.
    probed = store.probe("acme", "", -1).snapshot
    assert probed is not None and all(np.array_equal(a, b) for a, b in zip(probed.node_out, snap.node_out,
                                                                          strict=True))


def test_commit_adds_node_gpus_release_subtracts_them_and_refusals_write_nothing(
    store_factory: StoreFactory, small_grid: Grid
) -> None:
    limits = Limits.from_grid(small_grid)
    store = store_factory(limits)
    pool = "sines-gb300"
    store.create_job(Transition(running("j1"), EventType.PLACED, reserve=[assignment(pool, [(0, 4), (1, 2)])]))
    assert node_used(store, limits, pool)[:3].tolist() == [4, 2, 0]
    assert store.reservation("j1")[0].nodes == ((0, 4), (1, 2))
    version = store.ledger_version()
    for nodes in ([(1, 3)], [(0, 1)], [(2, 4), (31, 1), (1, 4)]):  # node 1 has 2 free, node 0 none
        with pytest.raises(CapacityConflict):
            store.create_job(Transition(running("j2"), EventType.PLACED, reserve=[assignment(pool, nodes)]))
    with pytest.raises(CapacityConflict):  # the grid file's drained nodes are out from the start
        store.create_job(Transition(running("j2"), EventType.PLACED,
                                    reserve=[assignment("glomfjord-gb300", [(119, 4), (120, 4)])]))
    assert store.ledger_version() == version and store.get_job("j2") is None
    # Out nodes: the set changes once, the version with it; a commit touching one is refused.
    assert store.set_nodes_out(pool, [5, 7]) and not store.set_nodes_out(pool, [7, 5])
    assert store.snapshot().node_out[limits.pool_index[pool]].nonzero()[0].tolist() == [5, 7]
    with pytest.raises(CapacityConflict):
        store.create_job(Transition(running("j2"), EventType.PLACED, reserve=[assignment(pool, [(7, 1)])]))
    # A job already on a node that goes out keeps it until released (draining keeps jobs).
    assert store.set_nodes_out(pool, [0])
    assert node_used(store, limits, pool)[0] == 4
    finished = running("j1", 1).model_copy(update={"state": JobState.COMPLETED})
    store.apply("j1", 0, Transition(finished, EventType.COMPLETED, release=True))
    assert not node_used(store, limits, pool).any()
    # The preemption shape: one commit releases a job and reserves its node for another.
    store.set_nodes_out(pool, [])
    store.create_job(Transition(running("v"), EventType.PLACED, reserve=[assignment(pool, [(3, 4)])]))
    evicted = running("v", 1).model_copy(update={"state": JobState.PENDING})
    store.commit([Update("v", 0, Transition(evicted, EventType.PREEMPTED, release=True))],
                 create=Transition(running("p"), EventType.PLACED, reserve=[assignment(pool, [(3, 4)])]))
    assert node_used(store, limits, pool)[3] == 4


def test_malformed_node_detail_is_refused_before_anything_is_written(store_factory: StoreFactory,
                                                                    small_grid: Grid) -> None:
    limits = Limits.from_grid(small_grid)
    store = store_factory(limits)
    bad = [
        Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300", gpus=4, power_kw=0.0, nodes=((0, 3),)),
        Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300", gpus=4, power_kw=0.0, nodes=((32, 4),)),
        Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300", gpus=8, power_kw=0.0,
                   nodes=((1, 4), (0, 4))),
        Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300", gpus=5, power_kw=0.0, nodes=((0, 5),)),
        # The pool's bounds and the GPUs per node are checked at both ends (first and last node).
        Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300", gpus=4, power_kw=0.0, nodes=((-1, 4),)),
        Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300", gpus=8, power_kw=0.0,
                   nodes=((0, 4), (32, 4))),
        Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300", gpus=4, power_kw=0.0,
                   nodes=((0, 0), (1, 4))),
        Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300", gpus=9, power_kw=0.0,
                   nodes=((0, 4), (1, 5))),
    ]
    for a in bad:
        with pytest.raises(ValueError):
            store.create_job(Transition(running("j"), EventType.PLACED, reserve=[a]))
    with pytest.raises(ValueError):
        store.set_nodes_out("sines-gb300", [32])
    assert store.get_job("j") is None and store.ledger_version() == 0


# One step: reserve (pool, [(node, GPUs)]) as a new job, release the k-th running job, or set a pool's out set.
reserve_step = st.tuples(
    st.just("reserve"), st.sampled_from(sorted(POOLS)),
    st.dictionaries(st.integers(0, 127), st.integers(1, 4), min_size=1, max_size=4),
)
release_step = st.tuples(st.just("release"), st.integers(0, 50))
out_step = st.tuples(st.just("out"), st.sampled_from(sorted(POOLS)), st.sets(st.integers(0, 127), max_size=5))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(reserve_step, reserve_step, release_step, out_step), min_size=1, max_size=20))
def test_random_commits_and_releases_never_overfill_a_node_and_release_returns_what_reserve_took(
    store_factory: StoreFactory, small_grid: Grid, steps: list[tuple[object, ...]]
) -> None:
    limits = Limits.from_grid(small_grid)
    store = store_factory(limits)
    used = {p: np.zeros(n, dtype=np.int64) for p, (_, n, _, _) in POOLS.items()}
    out = {p: set(range(n - d, n)) for p, (_, n, _, d) in POOLS.items()}
    jobs: dict[str, Assignment] = {}
    for i, step in enumerate(steps):
        if step[0] == "reserve":
            pool_id, wanted = str(step[1]), dict(step[2])  # type: ignore[call-overload]
            _, n, per_node, _ = POOLS[pool_id]
            nodes = [(node % n, g) for node, g in wanted.items()]
            if len({node for node, _ in nodes}) != len(nodes):
                continue  # two picks on one node after the modulo: not a well-formed assignment
            a = assignment(pool_id, nodes)
            fits = all(node not in out[pool_id] and used[pool_id][node] + g <= per_node for node, g in nodes)
            job_id = f"j{i}"
            try:
                store.create_job(Transition(running(job_id), EventType.PLACED, reserve=[a]))
            except CapacityConflict:
                assert not fits
                assert store.get_job(job_id) is None
            else:
                assert fits
                jobs[job_id] = a
                for node, g in nodes:
                    used[pool_id][node] += g
        elif step[0] == "release":
            if not jobs:
                continue
            job_id = sorted(jobs)[int(step[1]) % len(jobs)]  # type: ignore[call-overload]
            assert store.reservation(job_id) == [jobs[job_id]]  # the record keeps the nodes
            a = jobs.pop(job_id)
            done = running(job_id, 1).model_copy(update={"state": JobState.COMPLETED})
            store.apply(job_id, 0, Transition(done, EventType.COMPLETED, release=True))
            for node, g in a.nodes:
                used[a.pool_id][node] -= g
        else:
            pool_id = str(step[1])
            _, n, _, d = POOLS[pool_id]
            wanted_out = {node % n for node in step[2]}  # type: ignore[attr-defined]
            before = out[pool_id]
            out[pool_id] = wanted_out | set(range(n - d, n))
            assert store.set_nodes_out(pool_id, sorted(wanted_out)) == (out[pool_id] != before)
        snap = store.snapshot()
        for pool_id, (_, _, per_node, _) in POOLS.items():
            p = limits.pool_index[pool_id]
            assert snap.node_used_gpus[p].tolist() == used[pool_id].tolist()
            assert snap.node_used_gpus[p].max() <= per_node
            assert set(snap.node_out[p].nonzero()[0].tolist()) == out[pool_id]
            # Usage is the sum over the running jobs' nodes, and the pool count agrees with it.
            from_jobs = np.zeros(len(used[pool_id]), dtype=np.int64)
            for record in store.running_jobs():
                for a in store.reservation(record.id):
                    if a.pool_id == pool_id:
                        for node, g in a.nodes:
                            from_jobs[node] += g
            assert from_jobs.tolist() == used[pool_id].tolist()
            assert int(snap.pool_used_gpus[p]) == int(used[pool_id].sum())


@pytest.mark.redis
def test_a_replica_sees_the_other_replicas_node_changes_through_its_node_cache(redis_url: str,
                                                                              small_grid: Grid) -> None:
    """The Redis snapshot sends a pool's node string only when its node version moved since the read
    the store holds: a change made by another replica must still show in the next read."""
    from grid_scheduler.state.redis_store import RedisStore

    limits = Limits.from_grid(small_grid)
    name = f"nodes-{uuid4().hex[:12]}"
    mine, other = RedisStore(limits, redis_url, name), RedisStore(limits, redis_url, name)
    try:
        p, q = limits.pool_index["sines-gb300"], limits.pool_index["sines-h100"]
        assert not mine.snapshot().node_used_gpus[p].any()  # the cache now holds every pool
        other.create_job(Transition(running("j1"), EventType.PLACED,
                                    reserve=[assignment("sines-gb300", [(4, 3)])]))
        snap = mine.snapshot()
        assert snap.node_used_gpus[p][4] == 3 and not snap.node_used_gpus[q].any()
        assert other.set_nodes_out("sines-h100", [2])
        probed = mine.probe("acme", "", snap.version).snapshot
        assert probed is not None and probed.node_out[q].nonzero()[0].tolist() == [2]
        assert probed.node_used_gpus[p][4] == 3  # unchanged pool: from the cache, equal
        probed.node_used_gpus[p][4] = 0  # a caller's copy: the cache is not touched
        assert mine.snapshot().node_used_gpus[p][4] == 3
    finally:
        mine.close()
        other.close()
