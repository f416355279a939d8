"""``grid-scheduler serve --processes 2`` on one real Redis: two replicas behind one loopback address.

Each connection lands on one of the two processes (SO_REUSEPORT); which one is read from the
per-process metrics endpoints (PORT and PORT+1), so the test knows, for each connection, which
replica answered it. Then: concurrent submissions over separate connections reach both, the ledger
is exactly the sum of the running jobs' placements, a watcher on one process sees the other's
placements, a retried request id through the other process returns the first job, and SIGTERM to
the parent stops both. Bounded in calls and time; nothing is timed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import placement_pb2_grpc
from grid_scheduler.model import Grid, JobSpec
from grid_scheduler.service.convert import spec_to_pb
from grid_scheduler.state import Limits
from grid_scheduler.state.redis_store import RedisStore
from tests.conftest import GRIDS
from tests.net import free_port
from tests.redis_fixture import RedisServer
from tests.serve_process import ServeProcess
from tests.test_redis_concurrency import assert_ledger_matches_jobs

SMALL = GRIDS / "small.yaml"
BIN = Path(sys.executable).parent
CALL_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 120.0  # two interpreters importing grpc/numpy/ortools at once on 2 shared cores
MAX_CONNECTIONS = 24  # a connection lands on either process; 24 all on one would be 2**-23
THREADS, SUBMITS_PER_THREAD = 6, 12


def spec(gpus: int = 8) -> JobSpec:
    return JobSpec.model_validate(
        {"name": "load", "tenant": "acme", "kind": "training", "gpus": {"count": gpus}, "training": {}})


class Connection:
    """A channel of its own: gRPC would otherwise share one TCP connection between channels to one address."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        self.stub = placement_pb2_grpc.PlacementServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def submit(self, job: JobSpec, request_id: str) -> ppb.SubmitJobResponse:
        request = ppb.SubmitJobRequest(spec=spec_to_pb(job), request_id=request_id)
        response: ppb.SubmitJobResponse = self.stub.SubmitJob(request, timeout=CALL_TIMEOUT_S)
        return response

    def cancel(self, job_id: str) -> None:
        self.stub.CancelJob(ppb.CancelJobRequest(id=job_id), timeout=CALL_TIMEOUT_S)

    def close(self) -> None:
        self.channel.close()


def submissions(metrics_port: int) -> float:
    """Submissions this one process answered, over every kind and outcome."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "grid_scheduler_submissions_total")


def full_log(process: ServeProcess) -> str:
    return process.log_path.read_text()


def log_events(process: ServeProcess) -> list[dict[str, object]]:
    """The JSON log lines of every process. Two processes append to one file, so a line can end
    where another process's line begins ("}{"): split there too; anything else unparsable is skipped."""
    events = []
    for piece in re.split(r"\n|(?<=\})(?=\{)", full_log(process)):
        try:
            events.append(json.loads(piece))
        except ValueError:
            continue
    return events


def started_pids(process: ServeProcess) -> list[int]:
    found = re.search(r'"pids": \[([0-9, ]+)\]', full_log(process))
    return [int(p) for p in found.group(1).split(",")] if found else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purpose.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def serve_command(url: str, address: str, metrics_port: int, processes: int = 2) -> list[str]:
    return [str(BIN / "grid-scheduler"), "serve", "--processes", str(processes), "--grid", str(SMALL),
            "--store", url, "--address", address, "--metrics-address", f"127.0.0.1:{metrics_port}",
            "--workers", "8", "--log-level", "info", "--log-json"]


def wait_both_serving(process: ServeProcess, metrics_port: int) -> None:
    """Each replica has its metrics up and said server_started; then the address answers health."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while full_log(process).count('"server_started"') < 2:
        assert process.process.poll() is None, process.log()
        assert time.monotonic() < deadline, f"replicas not started:\n{process.log()}"
        time.sleep(0.2)
    for port in (metrics_port, metrics_port + 1):
        submissions(port)
    process.wait_serving()


@pytest.fixture
def two_processes(redis_factory: type[RedisServer], tmp_path: Path) -> Iterator[tuple[ServeProcess, int, str]]:
    redis = redis_factory()
    # The metrics ports are PORT and PORT+1: find two free neighbours.
    metrics_port = next(p for p in iter(free_port, 0) if _free(p + 1))
    address = f"127.0.0.1:{free_port()}"
    process = ServeProcess(serve_command(redis.url(), address, metrics_port), address, tmp_path / "serve.log")
    try:
        wait_both_serving(process, metrics_port)
        yield process, metrics_port, redis.url()
    finally:
        process.terminate()


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def connections_by_process(address: str, metrics_port: int) -> dict[int, list[Connection]]:
    """Open connections until each process holds at least one; a probe submission says which."""
    found: dict[int, list[Connection]] = {0: [], 1: []}
    for i in range(MAX_CONNECTIONS):
        conn = Connection(address)
        before = [submissions(metrics_port), submissions(metrics_port + 1)]
        conn.submit(spec(1), request_id=f"probe-{i}")
        after = [submissions(metrics_port), submissions(metrics_port + 1)]
        replica = 0 if after[0] > before[0] else 1
        assert after[replica] == before[replica] + 1 and after[1 - replica] == before[1 - replica]
        found[replica].append(conn)
        if found[0] and found[1]:
            break
    assert found[0] and found[1], "every connection landed on one process"
    return found


@pytest.mark.redis
def test_two_processes_share_the_address_the_ledger_and_the_events(
    two_processes: tuple[ServeProcess, int, str], small_grid: Grid,
) -> None:
    process, metrics_port, url = two_processes
    conns = connections_by_process(process.address, metrics_port)
    on0, on1 = conns[0][0], conns[1][0]

    # A watcher on process 0 sees a job that process 1 placed.
    stream = on0.stub.WatchJobs(ppb.WatchJobsRequest(from_start=True), timeout=CALL_TIMEOUT_S)
    seen: list[tuple[str, int]] = []  # (job id, event type), appended by the watcher thread

    def watch() -> None:
        try:
            for response in stream:
                seen.append((response.job_id, response.type))
        except grpc.RpcError:
            pass  # cancelled at the end

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    before = submissions(metrics_port + 1)
    first = on1.submit(spec(8), request_id="twin")
    assert submissions(metrics_port + 1) == before + 1  # process 1 answered it
    assert first.created and first.job.state == ppb.JOB_STATE_RUNNING
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while (first.job.id, ppb.EVENT_TYPE_PLACED) not in seen:
        assert time.monotonic() < deadline, f"process 0's watcher never saw {first.job.id} placed"
        time.sleep(0.05)
    stream.cancel()
    watcher.join(timeout=10)

    # The same request id through the other process: the first job, not a second one.
    before = submissions(metrics_port)
    again = on0.submit(spec(8), request_id="twin")
    assert submissions(metrics_port) == before + 1  # process 0 answered the retry
    assert not again.created and again.job.id == first.job.id

    # Concurrent submissions (and cancels) from several threads, half of them on a connection to
    # each process (gRPC channels are thread-safe): both processes decide and commit at once.
    counts_before = [submissions(metrics_port), submissions(metrics_port + 1)]
    errors: list[str] = []

    def load(t: int) -> None:
        conn = conns[t % 2][0]
        live: list[str] = []
        try:
            for n in range(SUBMITS_PER_THREAD):
                response = conn.submit(spec((8, 16, 32)[n % 3]), request_id=f"load-{t}-{n}")
                if response.job.state == ppb.JOB_STATE_RUNNING:
                    live.append(response.job.id)
                if len(live) > 3:
                    conn.cancel(live.pop(0))
        except grpc.RpcError as e:
            errors.append(f"{e.code()}: {e.details()}")

    threads = [threading.Thread(target=load, args=(t,), daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and not any(t.is_alive() for t in threads)
    counts_after = [submissions(metrics_port), submissions(metrics_port + 1)]
    served = [after - before for before, after in zip(counts_before, counts_after, strict=True)]
    assert sum(served) == THREADS * SUBMITS_PER_THREAD
    assert served == [THREADS // 2 * SUBMITS_PER_THREAD] * 2, served

    for conn in conns[0] + conns[1]:
        conn.close()
    pids = started_pids(process)
    assert len(pids) == 2 and all(alive(p) for p in pids)
    started = {line["replica"]: line["pid"] for line in log_events(process) if line["event"] == "server_started"}
    assert started == {0: pids[0], 1: pids[1]}  # each process says which replica it is
    assert process.terminate() == 0, process.log()  # SIGTERM to the parent
    assert not any(alive(p) for p in pids), "a replica outlived its parent's SIGTERM"
    assert full_log(process).count('"server_stopped"') == 2

    # Stopped, so nothing moves the ledger while it is checked: never over-allocated.
    store = RedisStore(Limits.from_grid(small_grid), url, small_grid.name)
    try:
        jobs = assert_ledger_matches_jobs(store, Limits.from_grid(small_grid))
        assert len({job.request_id for job in jobs}) == len(jobs)
    finally:
        store.close()


@pytest.mark.redis
def test_a_replica_that_dies_stops_the_others_and_serve_exits_non_zero(
    two_processes: tuple[ServeProcess, int, str],
) -> None:
    process = two_processes[0]
    pids = started_pids(process)
    os.kill(pids[0], signal.SIGKILL)
    process.process.wait(timeout=60)
    assert process.process.returncode == 1
    assert '"replica_exited"' in full_log(process)
    assert not alive(pids[1]), "the surviving replica was left running"


@pytest.mark.redis
def test_replicas_stop_by_themselves_when_the_parent_is_killed(
    two_processes: tuple[ServeProcess, int, str],
) -> None:
    process = two_processes[0]
    try:
        pids = started_pids(process)
        process.process.kill()  # SIGKILL: the parent can stop nobody
        process.process.wait()
        deadline = time.monotonic() + 60
        while any(alive(p) for p in pids):
            assert time.monotonic() < deadline, f"replicas outlived their parent:\n{full_log(process)}"
            time.sleep(0.1)
        assert full_log(process).count('"replica_parent_gone"') == 2
    finally:
        for pid in started_pids(process):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_memory_store_is_refused_with_several_processes() -> None:
    result = subprocess.run([str(BIN / "grid-scheduler"), "serve", "--processes", "2", "--store", "memory",
                             "--address", f"127.0.0.1:{free_port()}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--processes 2 needs a shared store (--store redis://...)" in result.stderr


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so_reuseport"])
def test_a_port_held_by_a_foreign_process_fails_clearly(reuse_port: bool) -> None:
    # Even a foreign listener that set SO_REUSEPORT itself (which the replicas could otherwise join).
    with socket.socket() as foreign:
        if reuse_port:
            foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        # The store is never contacted: the port is checked before anything is loaded.
        result = subprocess.run([str(BIN / "grid-scheduler"), "serve", "--processes", "2",
                                 "--store", "redis://127.0.0.1:1/0", "--address", f"127.0.0.1:{port}"],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"--address: [Errno 98] 127.0.0.1:{port} is already in use by another process" in result.stderr


def test_processes_must_be_at_least_one() -> None:
    result = subprocess.run([str(BIN / "grid-scheduler"), "serve", "--processes", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--processes: must be >= 1" in result.stderr


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "so_reuseport"])
def test_one_process_still_refuses_a_taken_port(reuse_port: bool, small_grid: Grid) -> None:
    from grid_scheduler.scheduler import Scheduler
    from grid_scheduler.service.server import start_server

    with socket.socket() as foreign:
        if reuse_port:
            foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        with pytest.raises((OSError, RuntimeError)):
            start_server(Scheduler(small_grid), f"127.0.0.1:{port}", pending_retry_s=None, batch_interval_s=None)
