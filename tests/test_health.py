"""grpc.health.v1 per service: each service by name, NOT_SERVING exactly when a dependency it needs is down.

Placement, topology and audit need the ledger; the scenario service needs only its worker pool (and the
report folder its workers write), so it keeps serving what-if runs while Redis is down.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from grid_scheduler.client import Client
from grid_scheduler.model import Grid
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import (
    AUDIT_SERVICE,
    PLACEMENT_SERVICE,
    SCENARIO_SERVICE,
    TOPOLOGY_SERVICE,
    start_server,
)
from grid_scheduler.state import Limits
from tests.redis_fixture import RedisServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("", PLACEMENT_SERVICE, TOPOLOGY_SERVICE, AUDIT_SERVICE, SCENARIO_SERVICE)
WAIT_S = 15.0


def statuses(client: Client) -> dict[str, int]:
    return {service: client.check_health(service) for service in SERVICES}


def wait_for(client: Client, service: str, status: int) -> dict[str, int]:
    deadline = time.monotonic() + WAIT_S
    while client.check_health(service) != status:
        assert time.monotonic() < deadline, f"{service or '(server)'} never became {status}: {statuses(client)}"
        time.sleep(0.05)
    return statuses(client)


def test_placement_and_topology_follow_redis_and_scenarios_do_not(
    redis_factory: Callable[[], RedisServer], small_grid: Grid
) -> None:
    from grid_scheduler.state.redis_store import RedisStore

    redis = redis_factory()
    store = RedisStore(Limits.from_grid(small_grid), redis.url(), small_grid.name)
    running = start_server(Scheduler(small_grid, store=store), "127.0.0.1:0", max_workers=4, health_poll_s=0.1,
                           pending_retry_s=None, batch_interval_s=None)
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=5.0) as client:
            assert statuses(client) == dict.fromkeys(SERVICES, SERVING)

            redis.stop()
            assert wait_for(client, PLACEMENT_SERVICE, NOT_SERVING) == {
                "": NOT_SERVING, PLACEMENT_SERVICE: NOT_SERVING, TOPOLOGY_SERVICE: NOT_SERVING,
                AUDIT_SERVICE: NOT_SERVING, SCENARIO_SERVICE: SERVING,
            }

            redis.start()
            assert wait_for(client, PLACEMENT_SERVICE, SERVING) == dict.fromkeys(SERVICES, SERVING)
    finally:
        running.stop(grace_s=0.5)
        store.close()


def test_scenarios_are_not_serving_while_their_workers_cannot_write_reports(
    small_grid: Grid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scenario service's workers write under <temp dir>/grid-scheduler-scenarios: a file there
    # instead of a folder leaves the pool unable to run anything.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    blocker = tmp_path / "grid-scheduler-scenarios"
    blocker.write_text("not a folder")
    running = start_server(Scheduler(small_grid), "127.0.0.1:0", max_workers=4, health_poll_s=0.1,
                           pending_retry_s=None, batch_interval_s=None)
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=5.0) as client:
            assert statuses(client) == {"": SERVING, PLACEMENT_SERVICE: SERVING, TOPOLOGY_SERVICE: SERVING,
                                        AUDIT_SERVICE: SERVING, SCENARIO_SERVICE: NOT_SERVING}
            blocker.unlink()
            assert wait_for(client, SCENARIO_SERVICE, SERVING) == dict.fromkeys(SERVICES, SERVING)
    finally:
        running.stop(grace_s=0.5)
