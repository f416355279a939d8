"""Watch streams against unary calls, and watches that resume past the retained events.

A real server on 127.0.0.1 (port 0) with the real client, as in test_service.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler._proto.v1 import scenario_pb2, scenario_pb2_grpc
from grid_scheduler.client import Client
from grid_scheduler.model import Grid, JobSpec
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import RunningServer, start_server


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
