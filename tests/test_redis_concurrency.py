"""Real scheduler processes on one real Redis: replicas racing, a replica killed, Redis restarted.

Every test ends by recomputing the ledger from the jobs themselves (the sum of the RUNNING jobs'
placements) and comparing it with the counters Redis holds: any double booking, lost release
or half-written commit shows up there. Load runs for a bounded time, never asserts timings.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.client import Client
from grid_scheduler.model import EventType, Grid, JobRecord, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import start_server
from grid_scheduler.state import Limits, Transition
from grid_scheduler.state.redis_conn import redis_client
from grid_scheduler.state.redis_store import RedisStore
from grid_scheduler.state.store import to_watts
from tests.conftest import GRIDS
from tests.net import free_port
from tests.redis_fixture import RedisServer

SMALL = GRIDS / "small.yaml"
READY_TIMEOUT_S = 40.0  # several interpreters importing grpc/numpy/ortools at once on 2 shared cores
CALL_TIMEOUT_S = 10.0
MAX_LIVE_PER_CLIENT = 12
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def spec(gpus: int) -> JobSpec:
    return JobSpec.model_validate(
        {"name": "load", "tenant": "acme", "kind": "training", "gpus": {"count": gpus}, "training": {}}
    )


class ServerProcess:
    """``grid-scheduler serve --store redis://...`` as its own process, on its own loopback port."""

    def __init__(self, store_url: str, log_dir: Path, name: str) -> None:
        self.store_url = store_url
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        script = Path(sys.executable).parent / "grid-scheduler"
        command = [str(script)] if script.exists() else [
            sys.executable, "-c", "import sys; from grid_scheduler.cli import main; sys.exit(main())"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "serve", "--grid", str(SMALL), "--store", self.store_url, "--address", self.address,
                 "--workers", "8", "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with Client(self.address, timeout_s=1.0) as client:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
                try:
                    if client.check_health() == SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready: {self.log_path.read_text()[-3000:]}")
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[[str, int], list[ServerProcess]]]:
    started: list[ServerProcess] = []

    def start(store_url: str, n: int) -> list[ServerProcess]:
        batch = [ServerProcess(store_url, tmp_path, f"server-{len(started) + i}").start() for i in range(n)]
        started.extend(batch)
        for server in batch:
            server.wait_ready()
        return batch

    yield start
    for server in started:
        server.stop()


@dataclass
class Load:
    """What the clients saw: a job counts only once its reply arrived."""

    acked: dict[str, str] = field(default_factory=dict)  # request_id -> job id
    sent: dict[str, JobSpec] = field(default_factory=dict)  # request_id -> the spec sent with it
    unacked: dict[str, JobSpec] = field(default_factory=dict)  # no reply: may or may not have been committed
    cancelled: set[str] = field(default_factory=set)
    unavailable: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(address: Callable[[], str], stop: threading.Event, load: Load, seed: int, cancel_share: float) -> None:
    rng = random.Random(seed)
    mine: list[str] = []
    client = Client(address(), timeout_s=CALL_TIMEOUT_S)
    try:
        while not stop.is_set():
            try:
                # Bounded live jobs per client: the grid stays full and contended, the pending queue short.
                if mine and (len(mine) > MAX_LIVE_PER_CLIENT or rng.random() < cancel_share):
                    job_id = mine.pop(rng.randrange(len(mine)))
                    client.cancel(job_id)
                    with load.lock:
                        load.cancelled.add(job_id)
                else:
                    request_id = f"req-{seed}-{uuid4().hex[:10]}"
                    job_spec = spec(rng.choice((8, 16, 32)))
                    with load.lock:
                        load.unacked[request_id] = job_spec
                        load.sent[request_id] = job_spec
                    response = client.submit(job_spec, request_id=request_id)
                    with load.lock:
                        del load.unacked[request_id]
                        load.acked[request_id] = response.job.id
                    mine.append(response.job.id)
            except grpc.RpcError as e:
                if e.code() is grpc.StatusCode.UNAVAILABLE:
                    # Its server is down: a fresh channel reconnects at once when it is back,
                    # instead of waiting out gRPC's reconnect backoff.
                    with load.lock:
                        load.unavailable += 1
                    client.close()
                    time.sleep(0.05)
                    client = Client(address(), timeout_s=CALL_TIMEOUT_S)
                else:
                    with load.lock:
                        load.errors.append(f"{e.code()}: {e.details()}")
    finally:
        client.close()


def run_clients(addresses: list[str], n: int, stop: threading.Event, load: Load,
                cancel_share: float = 0.4) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=client_loop, args=(lambda i=i: addresses[i % len(addresses)], stop, load, i,
                                                   cancel_share), daemon=True)
        for i in range(n)
    ]
    for t in threads:
        t.start()
    return threads


def all_jobs(store: RedisStore) -> list[JobRecord]:
    jobs: list[JobRecord] = []
    while page := store.list_jobs(frozenset(), jobs[-1].id if jobs else "", 500):
        jobs.extend(page)
    return jobs


def assert_ledger_matches_jobs(store: RedisStore, limits: Limits) -> list[JobRecord]:
    """The stored counters are exactly the sum of the running jobs' placements, within every limit."""
    jobs = all_jobs(store)
    pool = np.zeros(len(limits.pool_ids), dtype=np.int64)
    site = np.zeros(len(limits.site_ids), dtype=np.int64)
    for job in jobs:
        held = store.reservation(job.id)
        if job.state is JobState.RUNNING:
            assert job.placement is not None and held == job.placement.assignments, job.id
            for a in held:
                pool[limits.pool_index[a.pool_id]] += a.gpus
                site[limits.site_index[a.site_id]] += to_watts(a.power_kw)
        else:
            assert held == [], f"{job.id} is {job.state.value} but holds {held}"
    snapshot = store.snapshot()
    assert snapshot.pool_used_gpus.tolist() == pool.tolist()
    assert snapshot.site_used_w.tolist() == site.tolist()
    assert (pool <= limits.pool_gpus).all() and (site <= limits.site_power_w).all()
    # Every commit writes its record and its one event together: none lost, none extra.
    assert store.last_sequence() == sum(job.version + 1 for job in jobs)
    return jobs


def test_four_replicas_never_double_book(
    redis_server: RedisServer, servers: Callable[[str, int], list[ServerProcess]], small_grid: Grid
) -> None:
    url = redis_server.url(1)
    redis_client(url).flushdb()  # db 1 belongs to this test
    replicas = servers(url, 4)
    addresses = [s.address for s in replicas]

    # A watcher on the last replica must see every job, whichever replica placed it.
    seen: set[str] = set()
    with Client(addresses[3]) as watch_client:
        stream = watch_client.watch(from_start=True)

        def watch() -> None:
            try:
                for event in stream:
                    seen.add(event.job_id)
            except grpc.RpcError:
                pass  # cancelled at the end

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        load, stop = Load(), threading.Event()
        threads = run_clients(addresses, 8, stop, load)
        stop.wait(6.0)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert load.errors == [] and load.unavailable == 0 and not load.unacked
        job_ids = set(load.acked.values())
        deadline = time.monotonic() + 15
        while not job_ids <= seen and time.monotonic() < deadline:
            time.sleep(0.1)
        stream.cancel()  # type: ignore[attr-defined]  # a grpc call iterator
        watcher.join(timeout=5)
        assert job_ids <= seen

    for server in replicas:  # quiesce: no pending retries moving the ledger while it is checked
        server.stop()
    store = RedisStore(Limits.from_grid(small_grid), url, small_grid.name)
    jobs = assert_ledger_matches_jobs(store, Limits.from_grid(small_grid))
    by_id = {job.id: job for job in jobs}
    assert len(jobs) == len(load.acked) > 0
    assert all(by_id[j].state is JobState.CANCELLED for j in load.cancelled)
    assert Counter(job.request_id for job in jobs).most_common(1)[0][1] == 1
    # The load really contended: some jobs had to wait, some were placed.
    assert any(job.state is JobState.RUNNING for job in jobs)
    store.close()


def test_killed_replica_loses_nothing_acknowledged(
    redis_server: RedisServer, servers: Callable[[str, int], list[ServerProcess]], small_grid: Grid
) -> None:
    url = redis_server.url(2)
    limits = Limits.from_grid(small_grid)
    redis_client(url).flushdb()  # db 2 belongs to this test
    a, b = servers(url, 2)
    load, stop = Load(), threading.Event()
    threads = run_clients([a.address, b.address], 4, stop, load, cancel_share=0.25)
    time.sleep(2.0)
    a.kill()  # kill -9 mid-load: calls in flight on a get no reply
    a.start().wait_ready()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert load.errors == []
    assert load.unavailable > 0, "no call reached the killed replica while it was down"

    with Client(a.address, timeout_s=CALL_TIMEOUT_S) as client:
        # Resubmitting an acknowledged request returns that job, on the restarted replica too.
        for request_id, job_id in load.acked.items():
            again = client.submit(load.sent[request_id], request_id=request_id)
            assert (again.job.id, again.created) == (job_id, False)
        # A request that got no reply may or may not have been committed: resubmitting settles it.
        for request_id, job_spec in load.unacked.items():
            load.acked[request_id] = client.submit(job_spec, request_id=request_id).job.id
        for job_id in load.cancelled:
            assert client.get_job(job_id).state == ppb.JOB_STATE_CANCELLED

    for server in (a, b):
        server.stop()
    store = RedisStore(limits, url, small_grid.name)
    jobs = assert_ledger_matches_jobs(store, limits)
    assert Counter(job.request_id for job in jobs).most_common(1)[0][1] == 1  # never a duplicate
    assert {job.request_id: job.id for job in jobs} == load.acked  # every acknowledged job, nothing else
    store.close()


def test_redis_restart_under_a_running_server(redis_factory: Callable[[], RedisServer], small_grid: Grid) -> None:
    redis = redis_factory()
    store = RedisStore(Limits.from_grid(small_grid), redis.url(), small_grid.name)
    running = start_server(Scheduler(small_grid, store=store), "127.0.0.1:0", max_workers=4, health_poll_s=0.1)
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=CALL_TIMEOUT_S) as client:
            before = client.submit(spec(8), request_id="before").job
            assert before.placement.assignments

            redis.stop()
            with pytest.raises(grpc.RpcError) as down:
                client.submit(spec(8), request_id="during")
            assert down.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "ledger is unavailable" in down.value.details()
            assert str(redis.port) not in down.value.details()  # no address crosses the trust boundary
            for call in (lambda: client.get_job(before.id), lambda: client.cancel(before.id), client.capacity):
                with pytest.raises(grpc.RpcError) as down:
                    call()
                assert down.value.code() is grpc.StatusCode.UNAVAILABLE
            wait_for_health(client, NOT_SERVING)

            redis.start()  # same port, same directory: the AOF brings the ledger back
            wait_for_health(client, SERVING)
            assert client.get_job(before.id).placement == before.placement
            assert client.submit(spec(8), request_id="before").job.id == before.id
            after = client.submit(spec(8), request_id="after")
            assert after.created and after.job.placement.assignments
            assert client.cancel(before.id).state == ppb.JOB_STATE_CANCELLED
        assert_ledger_matches_jobs(store, Limits.from_grid(small_grid))
    finally:
        running.stop(grace_s=0.5)
        store.close()


def wait_for_health(client: Client, status: int) -> None:
    deadline = time.monotonic() + 15
    while client.check_health() != status:
        assert time.monotonic() < deadline, f"health never became {status}"
        time.sleep(0.05)


def test_capacity_freed_on_one_replica_places_work_waiting_on_another(redis_url: str, small_grid: Grid) -> None:
    grid_name = f"pending-{uuid4().hex[:8]}"
    limits = Limits.from_grid(small_grid)
    store_a, store_b = RedisStore(limits, redis_url, grid_name), RedisStore(limits, redis_url, grid_name)
    a, b = Scheduler(small_grid, store=store_a), Scheduler(small_grid, store=store_b)
    whole_pool = JobSpec.model_validate(
        {"name": "big", "tenant": "acme", "kind": "training", "gpus": {"count": 256, "types": ["H100"]}, "training": {}}
    )
    first = a.submit(whole_pool).record
    waiting = b.submit(whole_pool).record
    assert (first.state, waiting.state) == (JobState.RUNNING, JobState.PENDING)
    a.cancel(first.id)  # a's retry sees the whole shared queue, b's job included
    assert b.get(waiting.id).state is JobState.RUNNING

    # Capacity freed with no local trigger on b (a commit from elsewhere): b's retry ticker finds it.
    again = b.submit(whole_pool).record
    assert again.state is JobState.PENDING
    running = b.get(waiting.id)
    store_a.apply(waiting.id, running.version, Transition(
        running.model_copy(update={"state": JobState.CANCELLED, "version": running.version + 1}),
        EventType.CANCELLED, release=True,
    ))
    server = start_server(b, "127.0.0.1:0", max_workers=2, pending_retry_s=0.1)
    try:
        deadline = time.monotonic() + 15
        while b.get(again.id).state is JobState.PENDING:
            assert time.monotonic() < deadline, "the pending retry never placed the job"
            time.sleep(0.05)
        assert b.get(again.id).state is JobState.RUNNING
    finally:
        server.stop(grace_s=0.5)
        store_a.close()
        store_b.close()
