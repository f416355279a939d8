"""In-process claims (scheduler/claims.py): concurrent deciders of one scheduler take disjoint nodes.

Threads submit to one scheduler at once, on both stores. Whatever the interleaving: no node, pool
or site holds more than its limit, the ledger equals the running jobs' placements node by node,
every job ends running or waiting with reasons, and (without preemption, quotas or cancels, the
paths that decide without claims) no commit of this process is refused for capacity: a refusal
would mean two of its deciders chose the same capacity.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from uuid import uuid4

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import GridIndex, Usage
from grid_scheduler.model import Assignment, Grid, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.claims import Claims
from grid_scheduler.scheduler.observer import NullObserver
from grid_scheduler.state import Limits, MemoryStore, Store, Transition, to_watts
from grid_scheduler.state.redis_store import RedisStore
from tests.test_concurrent_submit import run_together

THREADS = 6
MAX_EXAMPLES = 12


class Refusals(NullObserver):
    """Records the refused commits (a real observer: the scheduler reports every commit to it)."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self._lock = threading.Lock()

    def committed(self, seconds: float, transitions: Sequence[Transition], conflict: str | None) -> None:
        if conflict is not None:
            with self._lock:
                self.refused.append(conflict)


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, small_grid: Grid) -> Iterator[Callable[[], Store]]:
    """A fresh store per hypothesis example (on Redis, one server, a key prefix each)."""
    made: list[RedisStore] = []
    limits = Limits.from_grid(small_grid)
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    def new() -> Store:
        if not url:
            return MemoryStore(limits)
        store = RedisStore(limits, url, f"claims-{uuid4().hex[:12]}")
        made.append(store)
        return store

    yield new
    for s in made:
        s.close()


job = st.fixed_dictionaries({
    "gpus": st.sampled_from([4, 8, 16, 24, 32, 64, 72, 128]),
    "types": st.sampled_from([["H100"], ["GB300"], ["H100", "GB300"], ["H200", "B200"]]),
    "gang": st.booleans(),
    "priority": st.integers(0, 2),
    "preemptible": st.booleans(),
    "tenant": st.sampled_from(["acme", "bank"]),
})


def spec(n: int, j: dict[str, object], preemption: bool) -> JobSpec:
    return JobSpec.model_validate({
        "name": f"c{n}", "tenant": j["tenant"], "kind": "training", "gang": j["gang"],
        "priority": j["priority"] if preemption else 0, "preemptible": j["preemptible"] if preemption else False,
        "gpus": {"count": j["gpus"], "types": j["types"]}, "training": {"duration_hours": 1},
    })


def run_threads(s: Scheduler, specs: list[JobSpec]) -> list[str]:
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        try:
            for n in range(t, len(specs), THREADS):
                record = s.submit(specs[n], request_id=f"r{n}").record
                with lock:
                    ids.append(record.id)
        except BaseException as e:  # reported below
            errors.append(e)

    run_together(work, ((t,) for t in range(THREADS)), "a submission hung")
    assert errors == []
    assert len(ids) == len(specs)
    return ids


def check_ledger(store: Store, grid: Grid, ids: list[str]) -> None:
    limits = Limits.from_grid(grid)
    index = GridIndex.build(grid)
    pools = np.zeros(len(limits.pool_ids), dtype=np.int64)
    watts = np.zeros(len(limits.site_ids), dtype=np.int64)
    nodes = [np.zeros(p.nodes, dtype=np.int64) for p in index.pools]
    for job_id in ids:
        record = store.get_job(job_id)
        assert record is not None
        if record.state is JobState.RUNNING:
            assert record.placement is not None
            for a in record.placement.assignments:
                p = limits.pool_index[a.pool_id]
                pools[p] += a.gpus
                watts[limits.site_index[a.site_id]] += to_watts(a.power_kw)
                assert a.nodes, "a placement on a node ledger names its nodes"
                for node, gpus in a.nodes:
                    nodes[p][node] += gpus
        else:  # waiting, rejected, or evicted back to the queue: with reasons, never half-placed
            assert record.state in (JobState.PENDING, JobState.REJECTED)
            assert record.waiting is not None and (record.waiting.site_counts or record.waiting.summary)
    fresh = store.snapshot()
    np.testing.assert_array_equal(fresh.pool_used_gpus, pools)
    np.testing.assert_array_equal(fresh.site_used_w, watts)
    assert np.all(pools <= limits.pool_gpus)
    assert np.all(watts <= limits.site_power_w)
    for p, pool in enumerate(index.pools):
        assert np.all(nodes[p] <= pool.gpus_per_node), f"node over-allocated in {pool.id}"
        np.testing.assert_array_equal(np.asarray(fresh.node_used_gpus[p]), nodes[p])


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=st.lists(job, min_size=THREADS, max_size=40))
def test_threads_deciding_at_once_take_disjoint_nodes(
    make_store: Callable[[], Store], small_grid: Grid, jobs: list[dict[str, object]],
) -> None:
    """No preemption, no quotas, no cancels: every decision is claimed, so none is refused."""
    store = make_store()
    s = Scheduler(small_grid, store=store, quiet=True)
    refusals = Refusals()
    s.observer = refusals
    ids = run_threads(s, [spec(n, j, preemption=False) for n, j in enumerate(jobs)])
    check_ledger(store, small_grid, ids)
    # LedgerMoved is not a collision: an unread view's commit found the ledger moved (by a concurrent
    # commit of this process that started meanwhile) and was decided again on the snapshot it brought.
    collisions = [r for r in refusals.refused if r != "LedgerMoved"]
    assert collisions == [], "two deciders of one process chose the same capacity"
    assert s.claims.in_flight() == 0  # every claim ended with its commit


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=st.lists(job, min_size=THREADS, max_size=40))
def test_threads_with_priorities_and_preemption_never_over_allocate(
    make_store: Callable[[], Store], small_grid: Grid, jobs: list[dict[str, object]],
) -> None:
    store = make_store()  # type: ignore[operator]
    s = Scheduler(small_grid, store=store, quiet=True)
    ids = run_threads(s, [spec(n, j, preemption=True) for n, j in enumerate(jobs)])
    check_ledger(store, small_grid, ids)


# --- the registry itself ---------------------------------------------------------------------

def _a(pool: str, site: str, nodes: tuple[tuple[int, int], ...], kw: float = 7.0) -> Assignment:
    return Assignment(site_id=site, pool_id=pool, gpu_type="H100", gpus=sum(g for _, g in nodes), power_kw=kw,
                      nodes=nodes)


def _usage(store: MemoryStore, limits: Limits) -> tuple[int, Usage]:
    from grid_scheduler.scheduler.ledger_view import usage_of

    snap = store.snapshot()
    return snap.version, usage_of(snap, limits)


def test_a_claim_is_taken_from_every_later_read_until_the_view_counts_it(small_grid: Grid) -> None:
    index = GridIndex.build(small_grid)
    limits = Limits.from_grid(small_grid)
    version, usage = _usage(MemoryStore(limits), limits)
    claims = Claims(index)
    p = index.pool_index["sines-h100"]
    first = claims.read(usage, version)
    assert first.claimed is usage  # nothing claimed: the view itself
    claim = claims.register(first, "acme", [_a("sines-h100", "sines", ((0, 8), (1, 8)))])
    assert claim
    later = claims.read(usage, version)
    assert later.claimed.pool_used_gpus[p] == 16 and later.claimed.tenant_pool_gpus["acme"][p] == 16
    view = later.claimed.nodes(index)
    assert view is not None and view.node_free[p][0] == 0 and view.node_free[p][2] == 8
    assert usage.pool_used_gpus[p] == 0 and not usage.tenant_pool_gpus  # the view is not changed
    claims.committed(claim, version + 1)
    assert claims.read(usage, version).claimed.pool_used_gpus[p] == 16  # the view at ``version`` lacks it
    assert claims.read(usage, version + 1).claimed is usage  # a view at the commit's version counts it
    assert claims.in_flight() == 0


def test_an_overlapping_claim_registered_meanwhile_sends_the_decider_back(small_grid: Grid) -> None:
    index = GridIndex.build(small_grid)
    limits = Limits.from_grid(small_grid)
    version, usage = _usage(MemoryStore(limits), limits)
    claims = Claims(index)
    a, b = claims.read(usage, version), claims.read(usage, version)  # two deciders read at once
    assert claims.register(a, "acme", [_a("sines-h100", "sines", ((0, 8),))])
    assert claims.register(b, "bank", [_a("sines-h100", "sines", ((0, 8),))]) is None  # same node
    assert claims.register(b, "bank", [_a("sines-h100", "sines", ((1, 8),))])  # other nodes: both fit
    c = claims.read(usage, version)
    # Sines' envelope is 350 kW: two claims of 200 kW each fit alone, not together.
    assert claims.register(claims.read(usage, version), "acme", [_a("sines-gb300", "sines", ((0, 4),), kw=200.0)])
    assert claims.register(c, "bank", [_a("sines-h100", "sines", ((5, 8),), kw=200.0)]) is None
    refused = claims.read(usage, version)
    assert claims.register(refused, "bank", [_a("sines-h100", "sines", ((5, 8),), kw=10.0)])
    ended = claims.read(usage, version)
    claim = claims.register(ended, "acme", [_a("london-h200", "london-hub", ((0, 8),))])
    assert claim
    claims.end(claim)  # refused at commit: no longer taken
    assert claims.read(usage, version).claimed.pool_used_gpus[index.pool_index["london-h200"]] == 0


def test_a_claim_committed_and_counted_since_a_read_still_refuses_that_reader(small_grid: Grid) -> None:
    """The decider that read before a claim was registered cannot see it in its view, even after
    the claim's commit is in the ledger and newer views count it."""
    index = GridIndex.build(small_grid)
    limits = Limits.from_grid(small_grid)
    version, usage = _usage(MemoryStore(limits), limits)
    claims = Claims(index)
    slow = claims.read(usage, version)
    fast = claims.register(claims.read(usage, version), "acme", [_a("sines-h100", "sines", ((0, 8),))])
    assert fast
    claims.committed(fast, version + 1)
    assert claims.read(usage, version + 1).claimed is usage  # newer views count it themselves
    assert claims.register(slow, "bank", [_a("sines-h100", "sines", ((0, 8),))]) is None
