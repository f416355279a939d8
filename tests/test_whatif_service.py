"""The simulator against the live server, and ScenarioService end to end over gRPC."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc
import pytest
import yaml

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import scenario_pb2 as spb
from grid_scheduler._proto.v1 import scenario_pb2_grpc as spb_grpc
from grid_scheduler.client import Client
from grid_scheduler.model import JobSpec, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import RunningServer, start_server
from grid_scheduler.whatif.ledger import carry_over
from grid_scheduler.whatif.report import flatten
from grid_scheduler.whatif.simulator import Simulator, simulate
from tests.test_service import bad_request_fields
from tests.whatif_scenarios import load, small

PROBES = [
    {"name": "eu-train", "tenant": "acme", "kind": "training", "gpus": {"count": 64, "types": ["GB300"]},
     "residency": {"allowed": ["EU"]}},
    {"name": "any-train", "tenant": "labs", "kind": "training", "gpus": {"count": 128}},
    {"name": "split", "tenant": "labs", "kind": "training", "gpus": {"count": 160, "types": ["H100"]}, "gang": False},
    {"name": "serve", "tenant": "acme", "kind": "inference", "gpus": {"count": 4},
     "inference": {"replicas": 3, "demand": [{"endpoint": "london"}, {"endpoint": "manchester", "weight": 2}],
                   "latency_slo_ms": 12}},
    {"name": "uk-serve", "tenant": "acme", "kind": "inference", "gpus": {"count": 8}, "residency": {"allowed": ["UK"]},
     "inference": {"replicas": 2, "demand": [{"endpoint": "london"}], "latency_slo_ms": 5}},
    {"name": "huge", "tenant": "acme", "kind": "training", "gpus": {"count": 480, "types": ["GB300"]}},
]


def _where(assignments: object) -> list[tuple[str, str, int]]:
    return [(a.site_id, a.pool_id, a.gpus) for a in assignments]  # type: ignore[attr-defined]


def test_simulator_and_live_server_give_the_same_placement_for_the_same_state() -> None:
    sim = Simulator(load(small(horizon_days=1.5)))
    sim.run()
    assert sim.running, "the simulation should end with work running"
    # The server gets the simulator's state: its running and pending jobs re-committed to a fresh ledger.
    served = carry_over(sim.scheduler, sim.scheduler.grid, clock=time.time).scheduler
    assert served.store.snapshot().pool_used_gpus.tolist() == sim.scheduler.store.snapshot().pool_used_gpus.tolist()
    running = start_server(served, "127.0.0.1:0", max_workers=4, pending_retry_s=None)
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=10) as client:
            states = set()
            for probe in PROBES:
                spec = JobSpec.model_validate(probe)
                reply = client.submit(spec).job
                outcome = sim.scheduler.submit(spec)
                in_sim = outcome.record
                assert ppb.JobState.Name(reply.state).removeprefix("JOB_STATE_").lower() == in_sim.state.value
                if in_sim.placement is not None:
                    assert _where(reply.placement.assignments) == _where(in_sim.placement.assignments)
                    assert reply.placement.score.total == pytest.approx(in_sim.placement.score.total)
                states.add(in_sim.state)
            assert JobState.RUNNING in states and len(states) > 1  # both placements and waits were compared
    finally:
        running.stop(grace_s=0.5)


@pytest.fixture
def scenario_server() -> Iterator[tuple[RunningServer, spb_grpc.ScenarioServiceStub]]:
    running = start_server(Scheduler(load(small()).grid), "127.0.0.1:0", max_workers=4, pending_retry_s=None)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield running, spb_grpc.ScenarioServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        channel.close()
        running.stop(grace_s=0.5)


def test_scenario_service_runs_watches_and_reports(
    scenario_server: tuple[RunningServer, spb_grpc.ScenarioServiceStub],
) -> None:
    _, stub = scenario_server
    data = small(horizon_days=2, changes=[{"kind": "site_failure", "at_days": 1, "site": "glomfjord"}])
    text = yaml.safe_dump(data, sort_keys=False)
    start = stub.StartScenario(spb.StartScenarioRequest(yaml=text, request_id="plan-1"), timeout=30).operation
    assert start.scenario_name == "small-test" and start.horizon_hours == 48 and not start.done
    again = stub.StartScenario(spb.StartScenarioRequest(yaml=text, request_id="plan-1"), timeout=30).operation
    assert again.id == start.id
    updates = list(stub.WatchScenario(spb.WatchScenarioRequest(id=start.id), timeout=120))
    assert updates[-1].operation.done
    assert updates[-1].operation.state == spb.SCENARIO_STATE_SUCCEEDED, updates[-1].operation.error
    progress = [u.operation.progress for u in updates]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert stub.GetScenario(spb.GetScenarioRequest(id=start.id)).operation.state == spb.SCENARIO_STATE_SUCCEEDED

    report = stub.GetScenarioReport(spb.GetScenarioReportRequest(id=start.id, include_content=True), timeout=30)
    files = {f.name: f for f in report.files}
    assert {"summary.json", "metrics.csv", "timeseries.csv", "report.html", "utilisation_sites.png"} <= set(files)
    assert files["utilisation_sites.png"].content.startswith(b"\x89PNG")
    assert files["report.html"].media_type == "text/html" and b"data:image/png;base64," in files["report.html"].content
    # The remote run, in its own process, measured exactly what a local run measures.
    local = simulate(load(data))
    remote = {m.name: m.value for m in report.metrics}
    expected = {k: float(v) for k, v in flatten(local.summary) if isinstance(v, int | float)}
    assert remote == pytest.approx(expected)
    assert json.loads(report.summary_json)["disruption"] == local.summary["disruption"]


def test_scenario_service_refuses_bad_scenarios_with_field_and_line(
    scenario_server: tuple[RunningServer, spb_grpc.ScenarioServiceStub],
) -> None:
    _, stub = scenario_server
    text = yaml.safe_dump(small(horizon_days=-1), sort_keys=False)
    with pytest.raises(grpc.RpcError) as info:
        stub.StartScenario(spb.StartScenarioRequest(yaml=text), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(info.value) == ["horizon_days"]
    assert "line 4: must be > 0" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.StartScenario(spb.StartScenarioRequest(path="/nowhere/scenario.yaml"), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Only files under the server's scenario folder can be named: no reading /etc through it.
    for outside in ("/etc/passwd", "../../pyproject.toml"):
        with pytest.raises(grpc.RpcError) as info:
            stub.StartScenario(spb.StartScenarioRequest(path=outside), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(info.value) == ["path"]
        assert "must name a scenario file under" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.StartScenario(spb.StartScenarioRequest(path="no-such-scenario.yaml"), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.StartScenario(spb.StartScenarioRequest(), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        stub.GetScenario(spb.GetScenarioRequest(id="scn-nope"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stub.GetScenarioReport(spb.GetScenarioReportRequest(id="scn-nope"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
