"""The simulator against the live server, and ScenarioService end to end over gRPC."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_status import rpc_status

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import scenario_pb2 as spb
from grid_scheduler._proto.v1 import scenario_pb2_grpc as spb_grpc
from grid_scheduler.client import Client
from grid_scheduler.config import EXAMPLES_DIR
from grid_scheduler.model import JobSpec, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.scenario import ScenarioServicer
from grid_scheduler.service.server import RunningServer, start_server
from grid_scheduler.whatif.ledger import carry_over
from grid_scheduler.whatif.report import flatten
from grid_scheduler.whatif.simulator import Simulator, simulate
from tests.conftest import GRIDS
from tests.test_service import bad_request_fields
from tests.whatif_scenarios import TRACE, load, small

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
    # Relative to the server's scenario folder (examples/scenarios): absolute paths are refused.
    data = small(grid="../grids/small.yaml", horizon_days=2,
                 changes=[{"kind": "site_failure", "at_days": 1, "site": "glomfjord"}])
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
    local = simulate(load(data, EXAMPLES_DIR / "scenarios"))
    remote = {m.name: m.value for m in report.metrics}
    expected = {k: float(v) for k, v in flatten(local.summary) if isinstance(v, int | float)}
    assert remote == pytest.approx(expected)
    assert json.loads(report.summary_json)["disruption"] == local.summary["disruption"]


def test_scenario_service_refuses_bad_scenarios_with_field_and_line(
    scenario_server: tuple[RunningServer, spb_grpc.ScenarioServiceStub],
) -> None:
    _, stub = scenario_server
    text = yaml.safe_dump(small(grid="../grids/small.yaml", horizon_days=-1), sort_keys=False)
    with pytest.raises(grpc.RpcError) as info:
        stub.StartScenario(spb.StartScenarioRequest(yaml=text), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(info.value) == ["yaml.horizon_days"]  # the field inside the request's yaml
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
        assert "must be a relative path to a regular file under the server's" in (info.value.details() or "")
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


# --- a hostile caller --------------------------------------------------------------------------

# The fields of a scenario that name a file, and what each needs to be a valid scenario otherwise.
FILE_FIELDS = ("grid", "policy_file", "workload.trace.path")
WAIT_S = 60.0


@dataclass
class Served:
    servicer: ScenarioServicer
    stub: spb_grpc.ScenarioServiceStub
    scenario_dir: Path


@contextmanager
def serve_scenarios(scenario_dir: Path, **kwargs: Any) -> Iterator[Served]:
    """A real gRPC server on loopback with only the ScenarioService, built with ``kwargs``."""
    servicer = ScenarioServicer(scenario_dir=scenario_dir, **kwargs)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    spb_grpc.add_ScenarioServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(servicer, spb_grpc.ScenarioServiceStub(channel), scenario_dir)  # type: ignore[no-untyped-call]
    finally:
        channel.close()
        servicer.stopping.set()  # ends every run and its process
        server.stop(0.5).wait()
        _wait(lambda: not multiprocessing.active_children(), "every run's process ended")


def _wait(ok: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


@pytest.fixture
def scenario_dir(tmp_path: Path) -> Path:
    """A scenario folder of its own: a copy of the small grid, the example trace by a symlink
    that stays inside the server's data folders (allowed), and files just outside it."""
    folder = tmp_path / "srv" / "site" / "scenarios"
    folder.mkdir(parents=True)
    shutil.copy(GRIDS / "small.yaml", folder / "small.yaml")
    (folder / "trace.csv").symlink_to(TRACE)
    (folder / "data").mkdir()
    (tmp_path / "srv" / "x.yaml").write_text("secret_key: 1\nother_secret: 2\n")  # = ../../x.yaml
    return folder


def _with_file(field: str, value: str) -> dict[str, Any]:
    """The small scenario, valid but for ``field`` (one of FILE_FIELDS) set to ``value``."""
    data = small(grid="small.yaml", horizon_days=0.25)
    if field == "grid":
        data["grid"] = value
    elif field == "policy_file":
        data["policy_file"] = value
    else:
        data["workload"] = {**data["workload"], "trace": {
            "path": value, "rules": [{"name": "t", "kind": "training", "tenants": {"acme": 1}}]}}
    return data


def _refusal(stub: spb_grpc.ScenarioServiceStub, data: dict[str, Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.StartScenario(spb.StartScenarioRequest(yaml=yaml.safe_dump(data, sort_keys=False)), timeout=30)
    return info.value


def _status_bytes(error: grpc.RpcError) -> bytes:
    status = rpc_status.from_call(error)
    assert status is not None
    data: bytes = status.SerializeToString()
    return data


# (existing target, missing target): the same refusal for both, so the service is no oracle.
HOSTILE = {
    "absolute": ("/etc/passwd", "/etc/no-such-file.yaml"),
    "home": ("~/x.yaml", "~/no-such-file.yaml"),
    "dotdot": ("../../x.yaml", "../../no-such-file.yaml"),
    "symlink": ("link-to-passwd", "link-to-nothing"),
    "symlinked-dir": ("etc/passwd", "etc/no-such-file.yaml"),
}


@pytest.mark.parametrize("form", sorted(HOSTILE))
@pytest.mark.parametrize("field", FILE_FIELDS)
def test_every_file_field_is_confined_and_no_oracle(
    scenario_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, form: str
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "x.yaml").write_text("secret_key: 1\n")
    monkeypatch.setenv("HOME", str(home))
    (scenario_dir / "link-to-passwd").symlink_to("/etc/passwd")
    (scenario_dir / "link-to-nothing").symlink_to("/etc/no-such-file.yaml")
    (scenario_dir / "etc").symlink_to("/etc")
    existing, missing = HOSTILE[form]
    with serve_scenarios(scenario_dir) as served:
        refused = [_refusal(served.stub, _with_file(field, target)) for target in (existing, missing)]
        assert not multiprocessing.active_children()  # nothing was started
    assert refused[0].details() == refused[1].details()
    assert _status_bytes(refused[0]) == _status_bytes(refused[1])
    for error in refused:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        for secret in ("secret_key", "root:", "No such file", "passwd", "no-such-file", str(tmp_path)):
            assert secret not in (error.details() or "")
        assert bad_request_fields(error) == [f"yaml.{field}"]


@pytest.mark.parametrize("kind", ["directory", "fifo", "/dev/zero"])
def test_a_trace_that_is_not_a_regular_file_is_refused(scenario_dir: Path, kind: str) -> None:
    if kind == "directory":
        name = "data"
    elif kind == "fifo":
        name = "trace.fifo"
        os.mkfifo(scenario_dir / name)
    else:
        name = "zero"
        (scenario_dir / name).symlink_to("/dev/zero")
    try:
        with serve_scenarios(scenario_dir) as served:
            error = _refusal(served.stub, _with_file("workload.trace.path", name))
    finally:
        if kind == "fifo":  # had anything opened the FIFO to read it, let it see end of file
            with contextlib.suppress(OSError):
                os.close(os.open(scenario_dir / name, os.O_WRONLY | os.O_NONBLOCK))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["yaml.workload.trace.path"]
    assert "regular file" in (error.details() or "") and str(scenario_dir) not in (error.details() or "")


def test_files_inside_the_folders_still_load(scenario_dir: Path) -> None:
    # The positive control of the refusals above: the copied grid, a trace reached through a
    # symlink that stays in the data folders, and ../ that stays in them, are all accepted.
    from grid_scheduler.whatif.paths import FileRoots
    from grid_scheduler.whatif.scenario import load_scenario_data

    roots = FileRoots.confined(scenario_dir, EXAMPLES_DIR)
    for field, value in [("grid", "small.yaml"), ("workload.trace.path", "trace.csv"),
                         ("grid", "../scenarios/small.yaml")]:
        loaded = load_scenario_data(_with_file(field, value), "yaml", scenario_dir, files=roots)
        assert loaded.grid.name


def test_start_path_is_confined_the_same_way(scenario_dir: Path) -> None:
    (scenario_dir / "link-to-passwd").symlink_to("/etc/passwd")
    with serve_scenarios(scenario_dir) as served:
        for existing, missing in [("/etc/passwd", "/etc/no-such-file.yaml"), ("../../x.yaml", "../../nope.yaml"),
                                  ("link-to-passwd", "../link-to-nothing")]:
            errors = []
            for target in (existing, missing):
                with pytest.raises(grpc.RpcError) as info:
                    served.stub.StartScenario(spb.StartScenarioRequest(path=target), timeout=30)
                errors.append(info.value)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert bad_request_fields(info.value) == ["path"]
            assert _status_bytes(errors[0]) == _status_bytes(errors[1])


def _start(stub: spb_grpc.ScenarioServiceStub, data: dict[str, Any], **kw: Any) -> spb.ScenarioOperation:
    text = yaml.safe_dump(data, sort_keys=False)
    op: spb.ScenarioOperation = stub.StartScenario(spb.StartScenarioRequest(yaml=text, **kw), timeout=30).operation
    return op


def _state(stub: spb_grpc.ScenarioServiceStub, op_id: str) -> int:
    state: int = stub.GetScenario(spb.GetScenarioRequest(id=op_id), timeout=10).operation.state
    return state


LONG = {"grid": "small.yaml", "horizon_days": 3650}  # runs far longer than any test waits: it is cancelled
SHORT = {"grid": "small.yaml", "horizon_days": 0.1}


def test_the_queue_is_bounded(scenario_dir: Path, tmp_path: Path) -> None:
    with serve_scenarios(scenario_dir, out_root=tmp_path / "out", max_running=1, max_queued=2) as served:
        stub = served.stub
        first = _start(stub, small(**LONG))
        second = _start(stub, small(**LONG), request_id="second")
        with pytest.raises(grpc.RpcError) as info:
            _start(stub, small(**LONG))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 scenario runs are queued or running" in (info.value.details() or "")
        # A retry of an accepted start is not a new run: it still gets its operation.
        assert _start(stub, small(**LONG), request_id="second").id == second.id
        # A cancelled run frees its place.
        stub.CancelScenario(spb.CancelScenarioRequest(id=first.id), timeout=30)
        third = _start(stub, small(**LONG))
        assert third.state == spb.SCENARIO_STATE_QUEUED


def test_cancel_a_queued_run_and_a_running_one(scenario_dir: Path, tmp_path: Path) -> None:
    with serve_scenarios(scenario_dir, out_root=tmp_path / "out", max_running=1) as served:
        stub = served.stub
        running = _start(stub, small(**LONG))
        queued = _start(stub, small(**SHORT))
        _wait(lambda: _state(stub, running.id) == spb.SCENARIO_STATE_RUNNING, "the first run runs")
        _wait(lambda: multiprocessing.active_children(), "its process is up")
        assert _state(stub, queued.id) == spb.SCENARIO_STATE_QUEUED

        cancelled = stub.CancelScenario(spb.CancelScenarioRequest(id=queued.id), timeout=30).operation
        assert cancelled.state == spb.SCENARIO_STATE_CANCELLED and cancelled.done
        cancelled = stub.CancelScenario(spb.CancelScenarioRequest(id=running.id), timeout=30).operation
        assert cancelled.state == spb.SCENARIO_STATE_CANCELLED and cancelled.done
        _wait(lambda: not multiprocessing.active_children(), "the running run's process is terminated")
        # The queued run never starts, though its runner is now free: no process, no report.
        time.sleep(1.0)
        assert not multiprocessing.active_children()
        assert not (tmp_path / "out" / queued.id).exists()
        for op in (running, queued):
            assert _state(stub, op.id) == spb.SCENARIO_STATE_CANCELLED
            with pytest.raises(grpc.RpcError) as info:
                stub.GetScenarioReport(spb.GetScenarioReportRequest(id=op.id), timeout=10)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # A watch of a cancelled run ends at once with it; a retried cancel returns it.
        updates = list(stub.WatchScenario(spb.WatchScenarioRequest(id=running.id), timeout=10))
        assert [u.operation.state for u in updates] == [spb.SCENARIO_STATE_CANCELLED]
        again = stub.CancelScenario(spb.CancelScenarioRequest(id=running.id), timeout=10).operation
        assert again.state == spb.SCENARIO_STATE_CANCELLED
        with pytest.raises(grpc.RpcError) as info:
            stub.CancelScenario(spb.CancelScenarioRequest(id="scn-nope"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_delete_removes_a_finished_run_and_its_report(scenario_dir: Path, tmp_path: Path) -> None:
    with serve_scenarios(scenario_dir, out_root=tmp_path / "out", max_running=2) as served:
        stub = served.stub
        done = _start(stub, small(**SHORT))
        busy = _start(stub, small(**LONG))
        final = list(stub.WatchScenario(spb.WatchScenarioRequest(id=done.id), timeout=120))[-1].operation
        assert final.state == spb.SCENARIO_STATE_SUCCEEDED, final.error
        report_dir = tmp_path / "out" / done.id
        assert (report_dir / "summary.json").is_file()
        # Neither a queued nor a running run can be deleted: cancel it first.
        with pytest.raises(grpc.RpcError) as info:
            stub.DeleteScenario(spb.DeleteScenarioRequest(id=busy.id), timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        stub.DeleteScenario(spb.DeleteScenarioRequest(id=done.id), timeout=10)
        assert not report_dir.exists()
        for call, request in [(stub.GetScenario, spb.GetScenarioRequest(id=done.id)),
                              (stub.DeleteScenario, spb.DeleteScenarioRequest(id=done.id))]:
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        stub.CancelScenario(spb.CancelScenarioRequest(id=busy.id), timeout=30)
        stub.DeleteScenario(spb.DeleteScenarioRequest(id=busy.id), timeout=10)  # cancelled: finished
        assert not (tmp_path / "out" / busy.id).exists()


def test_retention_removes_old_reports(scenario_dir: Path, tmp_path: Path) -> None:
    now = [1_000_000.0]
    with serve_scenarios(scenario_dir, out_root=tmp_path / "out", retention_s=3600, clock=lambda: now[0]) as served:
        stub = served.stub
        old = _start(stub, small(**SHORT), request_id="old")
        final = list(stub.WatchScenario(spb.WatchScenarioRequest(id=old.id), timeout=120))[-1].operation
        assert final.state == spb.SCENARIO_STATE_SUCCEEDED, final.error
        report_dir = tmp_path / "out" / old.id
        assert report_dir.is_dir()
        now[0] += 3599  # not yet old: a new start keeps it
        kept = _start(stub, small(**LONG))
        assert _state(stub, old.id) == spb.SCENARIO_STATE_SUCCEEDED and report_dir.is_dir()
        stub.CancelScenario(spb.CancelScenarioRequest(id=kept.id), timeout=30)
        now[0] += 2  # older than the limit: the next start removes it, and forgets its request id
        new = _start(stub, small(**LONG), request_id="old")
        assert new.id != old.id
        assert not report_dir.exists()
        with pytest.raises(grpc.RpcError) as info:
            stub.GetScenario(spb.GetScenarioRequest(id=old.id), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        stub.CancelScenario(spb.CancelScenarioRequest(id=new.id), timeout=30)


def test_whatif_imports_nothing_of_grpc() -> None:
    # Every module under grid_scheduler/whatif, imported in a clean interpreter: neither grpc nor
    # the generated stubs nor the service layer come with them (directly or through what they import).
    code = (
        "import importlib, pkgutil, sys\n"
        "import grid_scheduler.whatif as w\n"
        "for m in pkgutil.walk_packages(w.__path__, 'grid_scheduler.whatif.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'grpc' or n.startswith(('grpc.', 'grpc_', "
        "'grid_scheduler._proto', 'grid_scheduler.service', 'google.rpc')))\n"
        "print(len(list(pkgutil.walk_packages(w.__path__))), bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    count, bad = out.stdout.strip().split(" ", 1)
    assert int(count) >= 10 and bad == "[]", out.stdout
