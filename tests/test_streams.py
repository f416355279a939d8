"""Watch streams against unary calls, and watches that resume past the retained events.

A real server on 127.0.0.1 (port 0) with the real client, as in test_service.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from uuid import uuid4

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler._proto.v1 import scenario_pb2, scenario_pb2_grpc
from grid_scheduler.client import Client
from grid_scheduler.model import Grid, JobSpec
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service import watch
from grid_scheduler.service.server import RunningServer, start_server
from grid_scheduler.state import Limits, MemoryStore, Store
from tests.redis_fixture import RedisServer


def training(count: int = 8, name: str = "t") -> JobSpec:
    return JobSpec.model_validate(
        {"name": name, "tenant": "acme", "kind": "training", "gpus": {"count": count, "types": ["GB300"]},
         "residency": {"allowed": ["EU"]}}
    )


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def wait_open(running: RunningServer, n: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while running.open_streams != n:
        assert time.monotonic() < deadline, f"{running.open_streams} streams open, expected {n}"
        time.sleep(0.01)


def test_more_streams_than_workers_never_starve_submit(small_grid: Grid) -> None:
    # The defaults: 16 unary workers. 20 dashboards used to hold all 16 threads, and SubmitJob
    # then waited in the pool's queue until its deadline while health said SERVING.
    running = start_server(Scheduler(small_grid), "127.0.0.1:0", pending_retry_s=None, batch_interval_s=None)
    address = f"127.0.0.1:{running.port}"
    streams: list[Iterator[pb.WatchJobsResponse]] = []
    try:
        with Client(address, timeout_s=10) as watcher, Client(address, timeout_s=10) as client:
            streams = [watcher.watch(timeout_s=30) for _ in range(20)]
            time.sleep(0.5)  # every stream subscribed (each starts at "now")
            job = client.submit(training()).job  # a 10 s deadline: generous
            assert job.state == pb.JOB_STATE_RUNNING
            # The streams were open, not queued: every one of them sees the placement.
            for stream in streams:
                event = next(stream)
                assert (event.job_id, event.type) == (job.id, pb.EVENT_TYPE_PLACED)
    finally:
        for stream in streams:
            stream.cancel()  # type: ignore[attr-defined]
        running.stop(grace_s=0.5)


def test_a_stream_past_the_cap_is_refused_at_once(small_grid: Grid) -> None:
    running = start_server(Scheduler(small_grid), "127.0.0.1:0", max_workers=2, max_streams=2,
                           pending_retry_s=None, batch_interval_s=None)
    address = f"127.0.0.1:{running.port}"
    try:
        with Client(address, timeout_s=10) as watcher, Client(address, timeout_s=10) as client:
            first, second = watcher.watch(timeout_s=30), watcher.watch(timeout_s=30)
            wait_open(running, 2)
            with pytest.raises(grpc.RpcError) as exc:
                next(watcher.watch(timeout_s=5))
            assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "2 streams" in (exc.value.details() or "")
            info = error_info(exc.value)
            assert (info.reason, info.metadata["max_streams"]) == ("TOO_MANY_STREAMS", "2")
            # One cap for every response stream: WatchScenario is refused before it looks the id up.
            scenarios = scenario_pb2_grpc.ScenarioServiceStub(watcher.channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError) as exc:
                next(scenarios.WatchScenario(scenario_pb2.WatchScenarioRequest(id="op-unknown"), timeout=5))
            assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Unary calls keep their workers.
            assert client.submit(training()).job.state == pb.JOB_STATE_RUNNING
            # A stream that ends gives its slot back.
            first.cancel()  # type: ignore[attr-defined]
            wait_open(running, 1)
            with pytest.raises(grpc.RpcError) as exc:
                next(scenarios.WatchScenario(scenario_pb2.WatchScenarioRequest(id="op-unknown"), timeout=5))
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
            wait_open(running, 1)  # the refused and the finished streams hold nothing
            third = watcher.watch(timeout_s=30)
            wait_open(running, 2)
            for stream in (second, third):
                stream.cancel()  # type: ignore[attr-defined]
            wait_open(running, 0)
    finally:
        running.stop(grace_s=0.5)


# --- resuming past the retained events --------------------------------------------------------
SMALL_WINDOW = 10
EVENTS_PAST_WINDOW = 320  # Redis trims with MAXLEN ~, whole 100-entry stream nodes at a time


@pytest.fixture(params=["memory", "redis"])
def small_window_store(
    request: pytest.FixtureRequest, small_grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Store]:
    """A fresh store that keeps only about SMALL_WINDOW events."""
    from grid_scheduler.state import memory, redis_store

    monkeypatch.setattr(memory, "MAX_EVENTS", SMALL_WINDOW)
    monkeypatch.setattr(redis_store, "MAX_EVENTS", SMALL_WINDOW)
    limits = Limits.from_grid(small_grid)
    if request.param == "memory":
        store: Store = MemoryStore(limits)
    else:
        store = redis_store.RedisStore(limits, request.getfixturevalue("redis_url"), f"streams-{uuid4().hex[:12]}")
    yield store
    store.close()


def make_events(scheduler: Scheduler, pairs: int) -> None:
    """Two events per pair: the placement and the cancel."""
    for i in range(pairs):
        scheduler.cancel(scheduler.submit(training(name=f"e{i}")).record.id)


@pytest.fixture
def trimmed_server(small_grid: Grid, small_window_store: Store) -> Iterator[tuple[Client, Scheduler]]:
    scheduler = Scheduler(small_grid, store=small_window_store)
    make_events(scheduler, EVENTS_PAST_WINDOW // 2)
    running = start_server(scheduler, "127.0.0.1:0", pending_retry_s=None, batch_interval_s=None)
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=10) as client:
            yield client, scheduler
    finally:
        running.stop(grace_s=0.5)


def test_resume_before_the_oldest_retained_event_is_out_of_range(trimmed_server: tuple[Client, Scheduler]) -> None:
    client, scheduler = trimmed_server
    first, last = scheduler.store.first_sequence(), scheduler.store.last_sequence()
    assert 1 < first <= last - SMALL_WINDOW + 1
    with pytest.raises(grpc.RpcError) as exc:
        next(client.watch(after_sequence=1, timeout_s=10))
    assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert f"the oldest is {first}" in (exc.value.details() or "")
    info = error_info(exc.value)
    assert (info.reason, info.metadata["first_sequence"], info.metadata["after_sequence"]) == (
        "EVENTS_TRIMMED", str(first), "1")
    # Right at the window's start, and from the start, every retained event comes in order.
    for stream in (client.watch(after_sequence=first - 1, timeout_s=10), client.watch(from_start=True, timeout_s=10)):
        got = [next(stream).sequence for _ in range(last - first + 1)]
        stream.cancel()  # type: ignore[attr-defined]
        assert got == list(range(first, last + 1))


def test_resume_after_the_newest_event_is_out_of_range(trimmed_server: tuple[Client, Scheduler]) -> None:
    client, scheduler = trimmed_server
    last = scheduler.store.last_sequence()
    with pytest.raises(grpc.RpcError) as exc:
        next(client.watch(after_sequence=last + 5, timeout_s=10))
    assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE
    info = error_info(exc.value)
    assert (info.reason, info.metadata["last_sequence"]) == ("SEQUENCE_AHEAD", str(last))
    # At the newest event exactly: a watcher that has seen everything waits for the next one.
    stream = client.watch(after_sequence=last, timeout_s=10)
    time.sleep(0.3)
    job = client.submit(training()).job
    event = next(stream)
    stream.cancel()  # type: ignore[attr-defined]
    assert (event.sequence, event.job_id) == (last + 1, job.id)


def test_a_watcher_that_falls_behind_the_window_ends_out_of_range(
    trimmed_server: tuple[Client, Scheduler], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, scheduler = trimmed_server
    monkeypatch.setattr(watch, "MAX_QUEUED_EVENTS", 4)
    stream = client.watch(timeout_s=10)
    time.sleep(0.3)  # subscribed
    job = client.submit(training()).job
    assert next(stream).job_id == job.id
    # No stream may send now: this one falls behind while its queue overflows and the store trims.
    monkeypatch.setattr(watch, "SEND_WIDTH", 0)
    seen = scheduler.store.last_sequence()
    make_events(scheduler, EVENTS_PAST_WINDOW // 2)
    assert scheduler.store.first_sequence() > seen + 1
    monkeypatch.setattr(watch, "SEND_WIDTH", 1)
    with pytest.raises(grpc.RpcError) as exc:
        for _ in range(EVENTS_PAST_WINDOW):
            next(stream)
    assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE
    info = error_info(exc.value)
    assert info.reason == "EVENTS_TRIMMED"
    assert info.metadata["first_sequence"] == str(scheduler.store.first_sequence())


def test_a_watcher_whose_queue_overflows_reads_the_rest_from_the_store(
    small_grid: Grid, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The events are still retained: falling behind the queue alone loses nothing.
    monkeypatch.setattr(watch, "MAX_QUEUED_EVENTS", 4)
    scheduler = Scheduler(small_grid)
    feed = watch.EventFeed(scheduler.store)
    sub = feed.subscribe(scheduler.store.last_sequence())
    try:
        monkeypatch.setattr(watch, "SEND_WIDTH", 0)
        make_events(scheduler, 30)
        time.sleep(3 * watch.POLL_S)  # the reader has queued (and dropped) them
        monkeypatch.setattr(watch, "SEND_WIDTH", 1)
        got: list[int] = []
        while len(got) < 60:
            assert sub.wait_turn(5.0)
            got.extend(m.sequence for m in sub.take())
            sub.end_turn()
        assert got == list(range(1, 61))
    finally:
        sub.close()


def test_watchers_get_unavailable_with_their_resume_point_when_redis_goes(
    small_grid: Grid, redis_factory: Callable[[], RedisServer]
) -> None:
    from grid_scheduler.state.redis_store import RedisStore

    redis = redis_factory()
    store = RedisStore(Limits.from_grid(small_grid), redis.url(), "streams-outage")
    running = start_server(Scheduler(small_grid, store=store), "127.0.0.1:0", pending_retry_s=None,
                           batch_interval_s=None, health_poll_s=0.1)
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=10) as client:
            streams = [client.watch(timeout_s=20) for _ in range(3)]
            time.sleep(0.3)
            job = client.submit(training()).job
            for stream in streams:
                assert next(stream).job_id == job.id
            redis.stop()
            for stream in streams:
                with pytest.raises(grpc.RpcError) as exc:
                    next(stream)
                assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "resume with after_sequence=1" in (exc.value.details() or "")
            wait_open(running, 0)
    finally:
        running.stop(grace_s=0.5)
        store.close()
