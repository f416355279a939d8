"""serve --metrics-address: /metrics of a real server process after a scripted history.

The gauges must equal the ledger as the API reports it (ListSites, ListJobs), and the counters
must equal the job events the server streamed (WatchJobs from the start) and the replies it gave.
"""

from __future__ import annotations

import re
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.client import Client
from grid_scheduler.config import EXAMPLES_DIR
from grid_scheduler.model import JobSpec, JobState
from tests.conftest import GRIDS
from tests.net import free_port
from tests.serve_process import ServeProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
OUTCOME = {pb.EVENT_TYPE_PLACED: "placed", pb.EVENT_TYPE_PENDING: "pending", pb.EVENT_TYPE_REJECTED: "rejected"}


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def wait_for_gauge(port: int, name: str, wanted: float) -> None:
    deadline = time.monotonic() + 15
    while (got := value(scrape(port), name)) != wanted:
        assert time.monotonic() < deadline, f"{name} stayed {got}, never {wanted}"
        time.sleep(0.05)


def spec(count: int, priority: int, preemptible: bool = False) -> JobSpec:
    # Only sines has EU GB300s (128): two 64-GPU jobs fill it.
    return JobSpec.model_validate(
        {"name": f"p{priority}", "tenant": "acme", "kind": "training", "preemptible": preemptible,
         "priority": priority, "gpus": {"count": count, "types": ["GB300"]}, "residency": {"allowed": ["EU"]}})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServeProcess, int]]:
    address, metrics_port = f"127.0.0.1:{free_port()}", free_port()
    script = Path(sys.executable).parent / "grid-scheduler"
    process = ServeProcess(
        [str(script), "serve", "--grid", str(GRIDS / "small.yaml"), "--address", address,
         "--metrics-address", f"127.0.0.1:{metrics_port}", "--log-level", "warning"],
        address, tmp_path / "serve.log",
    ).wait_serving()
    yield process, metrics_port
    assert process.terminate() == 0, process.log()


def test_metrics_equal_the_ledger_and_the_events(server: tuple[ServeProcess, int]) -> None:
    process, metrics_port = server
    with Client(process.address, timeout_s=30.0) as client:
        keep = client.submit(spec(64, 1)).job
        victim = client.submit(spec(64, 1, preemptible=True), request_id="victim").job
        assert keep.state == victim.state == pb.JOB_STATE_RUNNING
        again = client.submit(spec(64, 1, preemptible=True), request_id="victim")  # a retry: no new job
        assert not again.created and again.job.id == victim.id
        assert client.submit(spec(64, 1)).job.state == pb.JOB_STATE_PENDING  # same tier never preempts
        assert client.submit(spec(64, 9)).job.state == pb.JOB_STATE_RUNNING  # evicts the preemptible one
        assert client.submit(spec(4096, 1)).job.state == pb.JOB_STATE_REJECTED  # no grid could ever take it
        assert client.cancel(keep.id).state == pb.JOB_STATE_CANCELLED  # the victim starts again in its room
        client.drain("glomfjord-gb300")
        # From here on nothing waiting fits, so background queue passes and batch cycles change nothing.
        solved = client.optimize(dry_run=True, time_limit_s=2.0)

        events = []
        stream = client.watch(from_start=True, timeout_s=3.0)
        try:
            events.extend(stream)  # every event so far, until the stream's deadline ends it
        except grpc.RpcError as e:
            assert e.code() is grpc.StatusCode.DEADLINE_EXCEEDED, e

        # A watcher's stream is counted while it is open.
        live = client.watch()
        wait_for_gauge(metrics_port, "grid_scheduler_open_streams", 1)
        live.cancel()
        wait_for_gauge(metrics_port, "grid_scheduler_open_streams", 0)

        samples = scrape(metrics_port)
        sites = client.sites()
        pending = list(client.list_jobs((JobState.PENDING,)))

    # Fleet gauges, read from the ledger at scrape time: GPUs by pool and state, power by site.
    for site in sites:
        watts = value(samples, "grid_scheduler_site_power_watts", site=site.id)
        assert watts == pytest.approx(site.power_used_mw * 1e6, abs=1.0)
        assert value(samples, "grid_scheduler_site_power_envelope_watts", site=site.id) == site.power_envelope_mw * 1e6
        for pool in site.pools:
            labels = {"site": site.id, "pool": pool.id, "gpu_type": pool.gpu_type}
            assert value(samples, "grid_scheduler_gpus", **labels, state="used") == pool.used_gpus
            assert value(samples, "grid_scheduler_gpus", **labels, state="free") == pool.free_gpus
            assert value(samples, "grid_scheduler_gpus", **labels, state="drained") == pool.drained_gpus
    used_by_site = {s.id: sum(p.used_gpus for p in s.pools) for s in sites}
    assert used_by_site["sines"] == 128  # the urgent job and the restarted victim
    assert value(samples, "grid_scheduler_gpus", site="glomfjord", pool="glomfjord-gb300", gpu_type="GB300",
                 state="drained") == 512

    # Queue depth by tier and main wait reason, against the pending jobs the API lists.
    def main_reason(job: pb.Job) -> str:  # the code ruling out the most sites; ties by name
        counts = job.waiting.site_counts
        return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else "unassessed"

    queue = Counter((str(j.spec.priority), main_reason(j)) for j in pending)
    gauged = {(dict(labels)["priority"], dict(labels)["reason"]): v
              for (name, labels), v in samples.items() if name == "grid_scheduler_queue_jobs"}
    assert gauged == queue and sum(queue.values()) == len(pending) == 1

    # Counters, against the events: a job's first event is its submission's outcome.
    first: dict[str, int] = {}
    for event in events:
        first.setdefault(event.job_id, event.type)
    outcomes = Counter(OUTCOME[t] for t in first.values())
    assert outcomes == {"placed": 3, "pending": 1, "rejected": 1}
    for outcome in ("placed", "pending", "rejected"):
        assert value(samples, "grid_scheduler_submissions_total", kind="training", outcome=outcome) == outcomes[outcome]
    assert value(samples, "grid_scheduler_submissions_total", kind="training", outcome="duplicate") == 1
    assert value(samples, "grid_scheduler_submissions_total", kind="inference", outcome="placed") == 0
    preempted = sum(1 for e in events if e.type == pb.EVENT_TYPE_PREEMPTED)
    assert preempted == 1 and value(samples, "grid_scheduler_preemptions_total") == preempted
    for conflict in ("capacity", "stale_record", "unknown_job"):  # one process: no race to lose
        assert value(samples, "grid_scheduler_commit_conflicts_total", conflict=conflict) == 0
    # Every commit was timed: each submission that made a job, the cancel, the victim's restart.
    assert value(samples, "grid_scheduler_commit_duration_seconds_count") >= len(first) + 2
    assert value(samples, "grid_scheduler_decision_duration_seconds_count") >= len(first)
    assert value(samples, "grid_scheduler_ledger_up") == 1
    # The batch solve (and any periodic cycle that ran meanwhile), by its status.
    assert value(samples, "grid_scheduler_batch_cycles_total", status=solved.solver_status) >= 1
    assert value(samples, "grid_scheduler_batch_solve_duration_seconds_count") >= 1

    # The shipped Grafana dashboard queries only names this server exposes.
    dashboard = (EXAMPLES_DIR / "grafana" / "grid-scheduler.json").read_text()
    used = set(re.findall(r"grid_scheduler_[a-z_]+", dashboard))
    exposed = {name for name, _ in samples}
    assert used and used <= exposed, used - exposed
