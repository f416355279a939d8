"""Real processes: `grid-scheduler serve` and `grid-scheduler agent --simulate`, killed with -9.

Its site turns UNHEALTHY, then (after the grace) its inference job is re-placed within its SLO
elsewhere, a deployment with replicas at other sites too re-places only its replica there (same
run), and its training job is re-queued; nothing is double-booked (checked from the jobs and the
ledger's pools). The agent comes back with its state file: reconciliation stops what moved and
keeps what did not. Small timeouts (1 s); every wait polls with a generous bound, never a timing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import topology_pb2 as tpb
from grid_scheduler.client import Client
from grid_scheduler.model import JobSpec
from tests.conftest import GRIDS
from tests.net import free_port
from tests.serve_process import ServeProcess

BIN = Path(sys.executable).parent
SITE = "london-hub"
BOUND_S = 120.0
T = TypeVar("T")


def until(what: str, probe: Callable[[], T | None], bound_s: float = BOUND_S) -> T:
    deadline = time.monotonic() + bound_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound_s:.0f} s: {what}")
        time.sleep(0.2)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServeProcess]:
    address = f"127.0.0.1:{free_port()}"
    server = ServeProcess([str(BIN / "grid-scheduler"), "serve", "--grid", str(GRIDS / "small.yaml"),
                           "--address", address, "--heartbeat-timeout", "1", "--site-grace", "1"],
                          address, tmp_path / "serve.log").wait_serving()
    yield server
    server.terminate()


def start_agent(address: str, state: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "grid-scheduler"), "agent", "--site", SITE, "--scheduler", address, "--simulate",
             "--heartbeat", "0.2", "--state-file", str(state)], stdout=out, stderr=subprocess.STDOUT)


def running_here(state: Path) -> set[str]:
    try:
        return set(json.loads(state.read_text())["running"])
    except (OSError, ValueError):
        return set()


def health(client: Client) -> int:
    return next(s.health for s in client.fleet() if s.site_id == SITE)


def sites_of(job: ppb.Job) -> set[str]:
    return {a.site_id for a in job.placement.assignments}


def check_no_double_booking(client: Client) -> None:
    jobs = [j for j in client.list_jobs() if j.state == ppb.JOB_STATE_RUNNING]
    held: dict[str, int] = {}
    for j in jobs:
        for a in j.placement.assignments:
            held[a.pool_id] = held.get(a.pool_id, 0) + a.gpus
    for site in client.sites():
        for pool in site.pools:
            assert held.get(pool.id, 0) <= pool.total_gpus - pool.drained_gpus, pool.id
            if site.id != SITE:  # a silent site's GPUs count as taken in the views; elsewhere used == held
                assert pool.used_gpus == held.get(pool.id, 0), pool.id


def test_kill_9_an_agent_then_bring_it_back(served: ServeProcess, tmp_path: Path) -> None:
    state = tmp_path / "agent.json"
    agent = start_agent(served.address, state, tmp_path / "agent.log")
    try:
        with Client(served.address, timeout_s=10) as client:
            until("the agent registers", lambda: health(client) == tpb.SITE_HEALTH_HEALTHY)
            chat = client.submit(JobSpec.model_validate({
                "name": "chat", "tenant": "acme", "kind": "inference", "priority": 5,
                "gpus": {"count": 8, "types": ["H100", "H200", "B200"]}, "residency": {"allowed": ["EU", "UK"]},
                "inference": {"replicas": 1, "demand": [{"endpoint": "london", "weight": 1.0}],
                              "latency_slo_ms": 20}})).job
            train = client.submit(JobSpec.model_validate({
                "name": "train", "tenant": "acme", "kind": "training", "priority": 7,
                "gpus": {"count": 16, "types": ["B200"]}, "residency": {"allowed": ["UK"]},
                "training": {"duration_hours": 1000}})).job
            # A deployment with a replica at each of three hubs: only the one at this site moves.
            spread = client.submit(JobSpec.model_validate({
                "name": "spread", "tenant": "acme", "kind": "inference", "priority": 5, "gpus": {"count": 8},
                "inference": {"replicas": 3, "latency_slo_ms": 12,
                              "demand": [{"endpoint": e} for e in ("london", "frankfurt", "manchester")]}})).job
            assert sites_of(chat) == sites_of(train) == {SITE}
            assert sites_of(spread) == {SITE, "frankfurt-hub", "manchester-edge"}
            until("the agent runs all three", lambda: running_here(state) == {chat.id, train.id, spread.id})

            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=30)
            until("the site turns unhealthy", lambda: health(client) in (tpb.SITE_HEALTH_UNHEALTHY,
                                                                          tpb.SITE_HEALTH_LOST))
            moved = until("the inference job is re-placed elsewhere", lambda: (
                j if (j := client.get_job(chat.id)).state == ppb.JOB_STATE_RUNNING and SITE not in sites_of(j)
                else None))
            assert moved.attempts == 1
            assert all(e.latency_ms <= 20 for e in moved.placement.endpoint_latencies)
            waiting = client.get_job(train.id)  # no other site has B200 in the UK
            assert waiting.state == ppb.JOB_STATE_PENDING and waiting.attempts == 1
            assert waiting.create_time == train.create_time
            kept = [a for a in spread.placement.assignments if a.site_id != SITE]
            spread_now = until("the deployment's replica there is re-placed", lambda: (
                j if SITE not in sites_of(j := client.get_job(spread.id)) else None))
            assert spread_now.state == ppb.JOB_STATE_RUNNING and spread_now.attempts == 0
            assert list(spread_now.placement.assignments[:2]) == kept
            assert all(e.latency_ms <= 12 for e in spread_now.placement.endpoint_latencies)
            check_no_double_booking(client)

            agent = start_agent(served.address, state, tmp_path / "agent.log")
            until("the site is healthy again", lambda: health(client) == tpb.SITE_HEALTH_HEALTHY)
            # What moved is stopped there; the training job, placed back at its only site, keeps running.
            until("reconciliation", lambda: running_here(state) == {train.id})
            back = until("the training job runs again", lambda: (
                j if (j := client.get_job(train.id)).state == ppb.JOB_STATE_RUNNING else None))
            assert sites_of(back) == {SITE}
            assert SITE not in sites_of(client.get_job(chat.id))
            assert client.get_job(spread.id).placement == spread_now.placement  # its other replicas ran on
            check_no_double_booking(client)
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
