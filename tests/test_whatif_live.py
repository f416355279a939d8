"""`whatif run --from`: a simulation that starts from a live server's ledger.

A real server on loopback (with auth: a platform admin, a planner, a submitter) holds running
and waiting jobs of several tenants, tiers and preemptibility, and a drained pool. The
snapshot comes over gRPC (GetLiveSnapshot), and the simulator's ledger at simulated time zero
must be the live ledger exactly: GPUs per pool, watts per site, drains, each running job's
placement, the waiting jobs in queue order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml

from grid_scheduler.cli import main
from grid_scheduler.client import Client
from grid_scheduler.live_fetch import fetch_live
from grid_scheduler.model import Grid, JobRecord, JobSpec, Policy
from grid_scheduler.model.grid import ResidencyRule
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.live import read_live
from grid_scheduler.service.auth.config import AuthConfig
from grid_scheduler.service.server import RunningServer, start_server
from grid_scheduler.state import MemoryStore, Store
from grid_scheduler.whatif.live import LIVE_SOURCE, LiveStart, load_from_live
from grid_scheduler.whatif.simulator import Simulator
from tests.conftest import GRIDS

TOKENS = {"ops": "ops-token-0123456789", "plan": "plan-token-0123456789", "alice": "alice-token-0123456789"}
AUTH = {
    "principals": {
        "ops": {"roles": [{"role": "platform-admin"}]},
        "plan": {"roles": [{"role": "planner"}]},
        "alice": {"roles": [{"role": "submitter", "tenant": "acme"}]},
    },
    "tokens": [{"principal": p, "token": t} for p, t in TOKENS.items()],
    "rate": {"requests_per_s": 1000, "burst": 1000},
}
# globex may run only in the EU: a constraint an anonymised globex job must keep.
POLICY = Policy(tenant_residency={"globex": ResidencyRule(allowed=["EU"])})
DRAINED = "manchester-h100"


def training(name: str, tenant: str, gpus: int, priority: int, preemptible: bool, types: list[str],
             hours: float = 10.0, datasets: tuple[str, ...] = ()) -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": tenant, "kind": "training", "gpus": {"count": gpus, "types": types},
        "priority": priority, "preemptible": preemptible,
        "training": {"duration_hours": hours, "datasets": list(datasets)},
    })


def inference(name: str, tenant: str, replicas: int, priority: int) -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": tenant, "kind": "inference", "gpus": {"count": 8}, "priority": priority,
        "inference": {"replicas": replicas, "demand": [{"endpoint": "london"}], "latency_slo_ms": 20},
    })


# Runs and waits on the small grid: the GB300 pools (glomfjord 480 healthy, sines 128) fill up,
# so the later GB300 jobs wait; the H100 and inference work runs; tiers and preemptibility vary.
HISTORY = [
    training("pretrain", "acme", 300, 50, True, ["GB300"], hours=30),
    training("finetune", "globex", 96, 10, True, ["GB300"], hours=3),  # EU only (policy): Sines
    training("sweep", "acme", 64, 0, False, ["H100"], hours=5),
    inference("chat", "acme", 2, 200),
    training("eval", "labs", 200, 20, True, ["GB300"], hours=2),  # waits: 180 GB300 left
    training("big-eu", "globex", 100, 5, False, ["GB300"], hours=8, datasets=("eu-corpus",)),  # waits
    training("tiny-late", "acme", 190, 30, True, ["GB300"], hours=1),  # waits, ahead of lower tiers
]

SCENARIO: dict[str, Any] = {
    "name": "live-test",
    "seed": 3,
    "horizon_days": 0.5,
    "sample_every_hours": 2,
    "workload": {"generated": [
        {"name": "train", "kind": "training", "tenants": {"acme": 1}, "arrivals_per_day": 8,
         "gpus": {"min": 8, "max": 64}, "duration_hours": {"min": 1, "max": 4}, "gpu_types": ["H100"],
         "priority": 40, "preemptible": True},
    ]},
}


class Live:
    def __init__(self, running: RunningServer, scheduler: Scheduler, ids: dict[str, str]) -> None:
        self.running = running
        self.scheduler = scheduler
        self.address = f"127.0.0.1:{running.port}"
        self.ids = ids  # job name -> id
        self.request_ids = [f"req-{name}" for name in ids]

    def client(self, principal: str) -> Client:
        return Client(self.address, timeout_s=20, tls=None, token=TOKENS[principal])


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    grid = Grid.model_validate(yaml.safe_load((GRIDS / "small.yaml").read_text()))
    scheduler = Scheduler(grid, POLICY)
    scheduler.seed_policy("test")
    # No background passes: the ledger moves only when the test moves it.
    running = start_server(scheduler, "127.0.0.1:0", max_workers=4, pending_retry_s=None, batch_interval_s=None,
                           retention_s=None, auth=AuthConfig.model_validate(AUTH))
    ids: dict[str, str] = {}
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=20, tls=None, token=TOKENS["ops"]) as ops:
            for spec in HISTORY:
                ids[spec.name] = ops.submit(spec, request_id=f"req-{spec.name}").job.id
            ops.drain(DRAINED)
        yield Live(running, scheduler, ids)
    finally:
        running.stop(grace_s=0.5)


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    return path


def _at_time_zero(live: Live, principal: str, scenario_file: Path) -> tuple[LiveStart, Simulator]:
    with live.client(principal) as client:
        start = fetch_live(client, live.address)
    return start, Simulator(load_from_live(scenario_file, start))


def _usage(store: Store) -> tuple[list[int], list[int], list[bool]]:
    snap = store.snapshot()
    return snap.pool_used_gpus.tolist(), snap.site_used_w.tolist(), snap.pool_drained.tolist()


def _capacity(record: JobRecord) -> tuple[object, ...]:
    """What a job is to the ledger and the engine, whoever it belongs to."""
    s = record.spec
    return (s.kind, s.gpus, s.gang, s.priority, s.preemptible, s.residency, s.inference,
            s.training.duration_hours if s.training else None)


def test_the_history_has_running_and_waiting_work(live: Live) -> None:
    store = live.scheduler.store
    assert len(store.running_jobs()) >= 3 and len(store.pending_jobs()) >= 2
    assert {r.spec.tenant for r in store.running_jobs() + store.pending_jobs()} == {"acme", "globex", "labs"}


def test_time_zero_reproduces_the_live_ledger_exactly(live: Live, scenario_file: Path) -> None:
    start, sim = _at_time_zero(live, "ops", scenario_file)
    server, simulated = live.scheduler.store, sim.scheduler.store
    assert start.state.ledger_version == server.ledger_version()
    assert start.anonymised_jobs == 0
    assert sim.scheduler.grid == live.scheduler.grid and sim.scheduler.policy == live.scheduler.policy
    # Same grid, same pool and site order: the arrays compare element by element.
    assert _usage(simulated) == _usage(server)
    assert _usage(simulated)[2][live.scheduler.limits.pool_index[DRAINED]]
    assert {r.id: r.placement for r in simulated.running_jobs()} == {r.id: r.placement for r in server.running_jobs()}
    assert [r.id for r in simulated.pending_jobs()] == [r.id for r in server.pending_jobs()]
    assert [r.spec for r in simulated.pending_jobs()] == [r.spec for r in server.pending_jobs()]
    # The simulator knows them as live jobs: running ones end after their remaining time.
    for record in server.running_jobs():
        log = sim.jobs[record.id]
        assert log.source == LIVE_SOURCE and log.state == "running"
    assert sim.pending == len(server.pending_jobs())
    for record in server.pending_jobs():  # with the reasons it waits at time zero, for the report
        waiting = sim.jobs[record.id].waiting
        assert waiting is not None and waiting.summary[0] == "waiting in the live queue" and waiting.site_counts


def test_remaining_time_is_the_expected_end_minus_the_read_time(live: Live, scenario_file: Path) -> None:
    start, sim = _at_time_zero(live, "ops", scenario_file)
    from grid_scheduler.engine.priority import expected_end

    for record in live.scheduler.store.running_jobs():
        assert record.started_at is not None
        left = expected_end(record.started_at, record.spec) - start.state.read_at
        assert sim.jobs[record.id].remaining_s == pytest.approx(max(left, 0.0), abs=1e-6)


def test_the_run_goes_on_from_the_live_state(live: Live, scenario_file: Path) -> None:
    _, sim = _at_time_zero(live, "ops", scenario_file)
    remaining = {job_id: log.remaining_s for job_id, log in sim.jobs.items() if log.state == "running"}
    sim.check_invariants = True  # after every event: ledger == running jobs, nothing over capacity
    result = sim.run()
    live_jobs = [j for j in result.jobs if j.source == LIVE_SOURCE]
    assert len(live_jobs) == len(HISTORY)
    # The 3- and 5-hour jobs end inside the 12-hour horizon, each after exactly its remaining time.
    for name in ("finetune", "sweep"):
        log = sim.jobs[live.ids[name]]
        assert log.state == "completed" and log.runs[0].ended == "completed"
        assert log.runs[0].end_s == remaining[live.ids[name]]
    assert sim.jobs[live.ids["pretrain"]].state == "running"


def test_a_planner_sees_other_tenants_only_as_capacity(live: Live, scenario_file: Path) -> None:
    with live.client("plan") as client:
        raw = client.live_snapshot()
        again = client.live_snapshot()
    _, sim = _at_time_zero(live, "plan", scenario_file)
    server, simulated = live.scheduler.store, sim.scheduler.store
    jobs = list(raw.running) + list(raw.pending)
    assert raw.anonymised_jobs == len(jobs) == len(HISTORY) and all(j.anonymised for j in jobs)
    # Nothing that names a job, its tenant or its data leaves the server.
    data = raw.SerializeToString()
    for secret in [*live.ids.values(), *live.request_ids, *(s.name for s in HISTORY), "acme", "labs"]:
        assert secret.encode() not in data, secret
    for job in jobs:
        assert job.id.startswith("anon-") and job.spec.name == job.id
        assert job.spec.tenant.startswith("anon-tenant-")
        assert all(d.startswith("anon-ds-") for d in job.spec.training.datasets)
    # Stable: the same job has the same opaque id in every snapshot.
    assert [j.id for j in again.running] == [j.id for j in raw.running]
    assert [j.id for j in again.pending] == [j.id for j in raw.pending]
    # ... and still the exact capacity: usage, drains, placements, and the queue in order.
    assert _usage(simulated) == _usage(server)
    assert sorted(r.placement.model_dump_json() for r in simulated.running_jobs() if r.placement) == sorted(
        r.placement.model_dump_json() for r in server.running_jobs() if r.placement)
    assert [_capacity(r) for r in simulated.pending_jobs()] == [_capacity(r) for r in server.pending_jobs()]
    # Constraints are kept by copies: globex's residency rule under its opaque tenant, the dataset
    # under its opaque id with the real one's home and residency.
    globex = {r.spec.tenant for r in simulated.pending_jobs() if r.spec.name.startswith("anon-")
              and r.spec.priority == 5}
    (alias,) = globex
    assert sim.scheduler.policy.tenant_residency[alias] == POLICY.tenant_residency["globex"]
    aliases = [d for d in sim.scheduler.grid.datasets if d.id.startswith("anon-ds-")]
    real = live.scheduler.grid.dataset_by_id["eu-corpus"]
    assert len(aliases) == 1
    assert (aliases[0].home_site, aliases[0].residency, aliases[0].size_tb) == (real.home_site, real.residency,
                                                                               real.size_tb)


def test_a_submitter_may_not_snapshot(live: Live) -> None:
    with live.client("alice") as client, pytest.raises(grpc.RpcError) as refused:
        client.live_snapshot()
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_cli_run_from_a_live_server(live: Live, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {**SCENARIO, "grid": str(GRIDS / "nscale.yaml")}  # named, but the live grid wins (with a warning)
    path = tmp_path / "named-grid.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "report"
    code = main(["whatif", "run", str(path), "--from", live.address, "--token", TOKENS["plan"], "--out", str(out),
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "warning: scenario grid" in captured.err and "ignored" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    meta = summary["scenario"]["live"]
    assert meta["address"] == live.address
    assert meta["ledger_version"] == live.scheduler.store.ledger_version()
    assert meta["anonymised_jobs"] == len(HISTORY)
    assert summary["scenario"]["grid"] == live.scheduler.grid.name
    assert f"ledger version {meta['ledger_version']}" in captured.out
    with (out / "jobs.csv").open() as f:
        live_rows = [row for row in csv.DictReader(f) if row["source"] == LIVE_SOURCE]
    assert len({row["job_id"] for row in live_rows}) == len(HISTORY)
    assert all(row["job_id"].startswith("anon-") and float(row["arrival_s"]) <= 0 for row in live_rows)


def test_cli_run_from_as_a_submitter_is_refused(live: Live, scenario_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["whatif", "run", str(scenario_file), "--from", live.address, "--token", TOKENS["alice"],
                 "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_scenario_without_a_grid_needs_a_live_start(scenario_file: Path) -> None:
    from grid_scheduler.whatif.scenario import ScenarioError, load_scenario

    with pytest.raises(ScenarioError, match="grid"):
        load_scenario(scenario_file)


def test_read_live_is_one_read_of_an_embedded_scheduler(small_grid: Grid) -> None:
    """Without a server: the read carries the ledger version its parts were read at."""
    scheduler = Scheduler(small_grid, store=MemoryStore(Scheduler(small_grid).limits))
    for spec in HISTORY[:3]:
        scheduler.submit(spec)
    state = read_live(scheduler)
    assert state.ledger_version == scheduler.store.ledger_version()
    assert state.event_sequence == scheduler.store.last_sequence()
    assert [r.id for r in state.running] == [r.id for r in scheduler.store.running_jobs()]
    used = np.zeros(len(scheduler.limits.pool_ids), dtype=np.int64)
    for record in state.running:
        assert record.placement is not None
        for a in record.placement.assignments:
            used[scheduler.limits.pool_index[a.pool_id]] += a.gpus
    assert used.tolist() == scheduler.store.snapshot().pool_used_gpus.tolist()


def test_cli_run_from_over_mutual_tls(tmp_path: Path, small_grid: Grid, capsys: pytest.CaptureFixture[str]) -> None:
    """The same TLS flags as every client command: a planner with a client certificate and a token."""
    from grid_scheduler.service.tls import ClientTls, ServerTls
    from tests.pki import Pki

    pki = Pki(tmp_path / "pki")
    cert, key = pki.client("planner.test")
    scheduler = Scheduler(small_grid, POLICY)
    served = start_server(scheduler, "127.0.0.1:0", max_workers=2, pending_retry_s=None, batch_interval_s=None,
                          retention_s=None, tls=ServerTls(pki.server_cert, pki.server_key, pki.ca),
                          auth=AuthConfig.model_validate(AUTH))
    address = f"127.0.0.1:{served.port}"
    try:
        with Client(address, timeout_s=20, tls=ClientTls(pki.ca, cert, key), token=TOKENS["ops"]) as ops:
            for spec in HISTORY[:3]:
                ops.submit(spec)
        path = tmp_path / "live.yaml"
        path.write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
        out = tmp_path / "report"
        code = main(["whatif", "run", str(path), "--from", address, "--tls-ca", str(pki.ca), "--tls-cert", str(cert),
                     "--tls-key", str(key), "--token", TOKENS["plan"], "--out", str(out), "--quiet"])
        assert code == 0, capsys.readouterr().err
        meta = json.loads((out / "summary.json").read_text())["scenario"]["live"]
        assert meta["ledger_version"] == scheduler.store.ledger_version()
        assert meta["running_jobs"] == len(scheduler.store.running_jobs()) == 3
        # Without the CA the client cannot trust the server: nothing runs, nothing is written.
        code = main(["whatif", "run", str(path), "--from", address, "--token", TOKENS["plan"],
                     "--out", str(tmp_path / "no-tls"), "--quiet"])
        assert code == 1 and not (tmp_path / "no-tls").exists()
    finally:
        served.stop(grace_s=0.5)
