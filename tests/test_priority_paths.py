"""One meaning of priority on every path (issue 8): each fault reproduced, on both stores.

Each test here failed on the code before the fix (see the commit): resubmissions evicting
running jobs, a waiting priority-9 job starved by priority-0 backfill, the batch cycle placing
a 128-GPU priority-0 job over a 60-GPU priority-1 job, and GetJob FULL without reasons for a
running job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from uuid import uuid4

import grpc
import pytest

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.client import Client
from grid_scheduler.model import EventType, Grid, JobSpec, JobState
from grid_scheduler.scheduler import AlreadyExists, InvalidJob, Scheduler
from grid_scheduler.service.server import RunningServer, start_server
from grid_scheduler.state import Limits, MemoryStore, Store

SchedulerFactory = Callable[[], Scheduler]


@pytest.fixture(params=["memory", "redis"])
def store_factory(request: pytest.FixtureRequest, small_grid: Grid) -> Iterator[Callable[[], Store]]:
    """A fresh, empty store per call; every call of one test returns the same shared ledger."""
    limits = Limits.from_grid(small_grid)
    if request.param == "memory":
        shared = MemoryStore(limits)
        yield lambda: shared
        return
    from grid_scheduler.state.redis_store import RedisStore

    url = request.getfixturevalue("redis_url")
    name = f"prio-{uuid4().hex[:12]}"
    opened: list[Store] = []

    def make() -> Store:
        opened.append(RedisStore(limits, url, name))  # each call: another replica's connection
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def replicas(small_grid: Grid, store_factory: Callable[[], Store]) -> SchedulerFactory:
    """Each call: one more scheduler (a replica with its own lock) on the same ledger."""
    return lambda: Scheduler(small_grid, store=store_factory())


def eu_gb300(name: str, gpus: int, priority: int = 0, preemptible: bool = False, tenant: str = "acme") -> JobSpec:
    """Only sines-gb300 (128 GB300) can take it: the one EU GB300 pool of the small grid."""
    return JobSpec.model_validate({
        "name": name, "tenant": tenant, "kind": "training", "priority": priority, "preemptible": preemptible,
        "gpus": {"count": gpus, "types": ["GB300"]}, "residency": {"allowed": ["EU"]},
    })


def b200(name: str, gpus: int, priority: int = 0, preemptible: bool = False) -> JobSpec:
    """Only london-b200 (64 B200) can take it."""
    return JobSpec.model_validate({
        "name": name, "tenant": "acme", "kind": "training", "priority": priority, "preemptible": preemptible,
        "gpus": {"count": gpus, "types": ["B200"]},
    })


# --- fault 1: a resubmission evicts running jobs for nothing --------------------------------
def _twins(schedulers: list[Scheduler], spec: JobSpec, request_id: str) -> list[object]:
    """The same submission from each scheduler at once; what each got back (or raised)."""
    start = threading.Barrier(len(schedulers))
    results: list[object] = []

    def twin(s: Scheduler) -> None:
        start.wait()
        try:
            results.append(s.submit(spec, request_id=request_id))
        except Exception as e:  # a twin must never fail: it gets the job
            results.append(e)

    threads = [threading.Thread(target=twin, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_concurrent_twins_on_two_replicas_create_one_job_and_evict_only_for_it(replicas: SchedulerFactory) -> None:
    a, b = replicas(), replicas()
    for round_ in range(6):
        victim = a.submit(b200(f"low-{round_}", 64, preemptible=True)).record
        assert victim.state is JobState.RUNNING
        results = _twins([a, b], b200(f"high-{round_}", 64, priority=5), f"retry-{round_}")
        outcomes = [r for r in results if not isinstance(r, Exception)]
        assert len(outcomes) == 2, results
        ids = {o.record.id for o in outcomes}  # type: ignore[attr-defined]
        assert len(ids) == 1, "twins made two jobs"
        assert sorted(o.created for o in outcomes) == [False, True]  # type: ignore[attr-defined]
        job_id = ids.pop()
        preempted = [e for e in a.store.events_after(0, 0) if e.type is EventType.PREEMPTED]
        # Every eviction names the job that exists and runs; exactly one per round.
        assert all(e.message == f"preempted by {a.get(e.message.removeprefix('preempted by ')).id}" for e in preempted)
        assert sum(1 for e in preempted if e.message == f"preempted by {job_id}") == 1
        assert a.get(job_id).state is JobState.RUNNING
        assert a.get(victim.id).state is JobState.PENDING
        a.cancel(job_id)
        a.cancel(victim.id)


def test_same_request_id_with_another_spec_is_already_exists(replicas: SchedulerFactory) -> None:
    s = replicas()
    first = s.submit(eu_gb300("one", 8), request_id="r-1").record
    with pytest.raises(AlreadyExists) as exc:
        s.submit(eu_gb300("other", 16), request_id="r-1")
    assert exc.value.job_id == first.id
    # Request ids are per tenant: another tenant's r-1 is a new job, not acme's.
    theirs = s.submit(eu_gb300("one", 8, tenant="globex"), request_id="r-1")
    assert theirs.created and theirs.record.id != first.id


def test_a_retry_after_the_grid_changed_returns_the_job_before_validating(
    small_grid: Grid, store_factory: Callable[[], Store]
) -> None:
    s = Scheduler(small_grid, store=store_factory())
    spec = b200("b", 8)
    first = s.submit(spec, request_id="r-b").record
    # The grid loses its B200 pool and type: the same spec no longer validates...
    data = small_grid.model_dump(mode="json")
    data["gpu_types"] = [t for t in data["gpu_types"] if t["name"] != "B200"]
    for site in data["sites"]:
        site["pools"] = [p for p in site["pools"] if p["gpu_type"] != "B200"]
    retried = Scheduler(Grid.model_validate(data), store=store_factory())
    with pytest.raises(InvalidJob):
        retried.validate(spec)
    # ...but a retry of the acknowledged submission still gets its job back.
    again = retried.submit(spec, request_id="r-b")
    assert (again.record.id, again.created) == (first.id, False)


def test_cancel_is_idempotent_and_eviction_staleness_is_no_error(replicas: SchedulerFactory) -> None:
    a, b = replicas(), replicas()
    job = a.submit(eu_gb300("j", 8)).record
    first = a.cancel(job.id)
    assert b.cancel(job.id) == first


# --- fault 2: a waiting high-priority job never gets its capacity ----------------------------
def test_a_waiting_priority_9_job_is_not_starved_by_priority_0_backfill(replicas: SchedulerFactory) -> None:
    s = replicas()
    fillers = [s.submit(eu_gb300(f"fill-{i}", 8)).record for i in range(16)]
    assert all(r.state is JobState.RUNNING for r in fillers)
    big = s.submit(eu_gb300("big", 128, priority=9)).record
    assert big.state is JobState.PENDING
    s.complete(fillers[0].id)  # 8 GPUs free: not enough for the big job
    late = s.submit(eu_gb300("late", 8)).record
    assert late.state is JobState.PENDING, "a later priority-0 job took capacity the priority-9 job waits for"
    assert late.waiting is not None and "held" in late.waiting.summary[0]
    # A preemptible priority-0 job may backfill: the big job can take it back at any moment.
    backfill = s.submit(eu_gb300("backfill", 8, preemptible=True)).record
    assert backfill.state is JobState.RUNNING
    for filler in fillers[1:]:
        s.complete(filler.id)
    assert s.get(big.id).state is JobState.RUNNING  # evicting the backfill made the last room
    assert s.get(backfill.id).state is JobState.PENDING
    assert s.get(late.id).state is JobState.PENDING
    events = [e for e in s.store.events_after(0, 0) if e.job_id in (big.id, backfill.id)]
    evicted = next(i for i, e in enumerate(events) if e.type is EventType.PREEMPTED)
    assert events[evicted + 1].job_id == big.id and events[evicted + 1].type is EventType.PLACED


def test_preemption_runs_for_waiting_jobs_on_a_queue_pass(replicas: SchedulerFactory) -> None:
    s = replicas()
    holder = s.submit(b200("holder", 64)).record  # not preemptible
    waiting = s.submit(b200("waiting", 64, priority=5)).record
    assert waiting.state is JobState.PENDING
    s.complete(holder.id)
    assert s.get(waiting.id).state is JobState.RUNNING
    low = s.submit(b200("low", 8, preemptible=True)).record
    assert low.state is JobState.PENDING  # the pool is full
    s.complete(waiting.id)
    assert s.get(low.id).state is JobState.RUNNING
    # A higher job that waits (it arrived while the pool was drained) preempts at the next pass.
    s.set_drained("london-b200", True)
    high = s.submit(b200("high", 64, priority=7)).record
    assert high.state is JobState.PENDING
    s.set_drained("london-b200", False)
    assert s.get(high.id).state is JobState.RUNNING
    assert s.get(low.id).state is JobState.PENDING


# --- fault 3: the batch cycle inverts priority -----------------------------------------------
def test_optimize_places_60_gpus_at_priority_1_over_128_at_priority_0(replicas: SchedulerFactory) -> None:
    s = replicas()
    s.set_drained("sines-gb300", True)
    small = s.submit(eu_gb300("sixty", 60, priority=1)).record
    large = s.submit(eu_gb300("all", 128, priority=0)).record
    assert small.state is large.state is JobState.PENDING
    s.store.set_drained("sines-gb300", False)  # another replica undrained: no queue pass ran here
    outcome = s.optimize_pending(time_limit_s=2.0, workers=1)
    assert set(outcome.result.placements) == {small.id}
    assert [t.priority for t in outcome.result.tiers] == [1, 0]
    assert outcome.result.tiers[0].placed == 1 and outcome.result.tiers[1].placed == 0
    assert s.get(small.id).state is JobState.RUNNING
    assert s.get(large.id).state is JobState.PENDING


# --- fault 7: GetJob FULL gives no reasons for a running job ---------------------------------
@pytest.fixture
def served(small_grid: Grid, store_factory: Callable[[], Store]) -> Iterator[Client]:
    running: RunningServer = start_server(Scheduler(small_grid, store=store_factory()), "127.0.0.1:0",
                                          pending_retry_s=None, batch_interval_s=None)
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=30) as client:
            yield client
    finally:
        running.stop(0.5)


def test_get_job_full_gives_every_other_sites_reasons_for_a_running_job(served: Client, small_grid: Grid) -> None:
    job = served.submit(eu_gb300("run", 8)).job
    assert job.state == pb.JOB_STATE_RUNNING
    full = served.get_job(job.id, full=True)
    sites = {r.site_id for r in full.reasons}
    assert sites == {s.id for s in small_grid.sites} - {"sines"}
    assert any(r.code == pb.REASON_CODE_RESIDENCY and r.site_id == "glomfjord" for r in full.reasons)


def test_already_exists_over_grpc_names_the_job(served: Client) -> None:
    first = served.submit(eu_gb300("one", 8), request_id="dup").job
    with pytest.raises(grpc.RpcError) as exc:
        served.submit(eu_gb300("two", 8), request_id="dup")
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.id in (exc.value.details() or "")
