"""ScenarioService: what-if runs as long-running operations over gRPC.

StartScenario validates the scenario in the call (a bad file is INVALID_ARGUMENT naming each
field and its line) and queues a run. Each run is a separate *process* (spawned, so it starts
clean and a CPU-bound simulation never starves the server's threads of the GIL); it reports
progress through a queue and writes its report to a directory of its own. At most
``max_running`` runs go at once; the rest wait, QUEUED.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from grid_scheduler._proto.v1 import scenario_pb2 as pb
from grid_scheduler._proto.v1 import scenario_pb2_grpc as pb_grpc
from grid_scheduler.config import EXAMPLES_DIR, ConfigError
from grid_scheduler.service import errors
from grid_scheduler.whatif.scenario import LoadedScenario, ScenarioError, load_scenario, load_scenario_text

log = structlog.get_logger("grid_scheduler.whatif.service")

MEDIA_TYPES = {".csv": "text/csv", ".png": "image/png", ".html": "text/html", ".json": "application/json"}
PROGRESS_EVERY_S = 0.25  # a run reports at most this often
WATCH_POLL_S = 0.5
MAX_REQUEST_ID = 256


@dataclass
class Operation:
    id: str
    name: str
    source: tuple[str, str, str]  # (kind "path" | "yaml", text, base dir)
    out_dir: Path
    horizon_hours: float
    state: int = pb.SCENARIO_STATE_QUEUED
    simulated_hours: float = 0.0
    jobs_arrived: int = 0
    jobs_total: int = 0
    error: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    version: int = 0

    @property
    def done(self) -> bool:
        return self.state in (pb.SCENARIO_STATE_SUCCEEDED, pb.SCENARIO_STATE_FAILED)

    def to_pb(self) -> pb.ScenarioOperation:
        created, updated = Timestamp(), Timestamp()
        created.FromNanoseconds(int(self.created * 1e9))
        updated.FromNanoseconds(int(self.updated * 1e9))
        progress = 1.0 if self.state == pb.SCENARIO_STATE_SUCCEEDED else (
            min(self.simulated_hours / self.horizon_hours, 1.0) if self.horizon_hours > 0 else 0.0)
        return pb.ScenarioOperation(
            id=self.id, scenario_name=self.name, state=self.state, done=self.done, progress=progress,  # type: ignore[arg-type]
            simulated_hours=self.simulated_hours, horizon_hours=self.horizon_hours,
            jobs_arrived=self.jobs_arrived, jobs_total=self.jobs_total, error=self.error,
            create_time=created, update_time=updated,
        )


class ScenarioServicer(pb_grpc.ScenarioServiceServicer):
    def __init__(
        self,
        out_root: Path | None = None,
        max_running: int = 1,
        stopping: threading.Event | None = None,
        scenario_dir: Path | None = None,
    ) -> None:
        self.out_root = out_root
        # A client names scenario files on the server: only those under this folder, so the
        # service cannot be used to read arbitrary files. Inline YAML resolves paths from here too.
        self.scenario_dir = (scenario_dir or EXAMPLES_DIR / "scenarios").resolve()
        self.stopping = stopping or threading.Event()
        self._slots = threading.Semaphore(max_running)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ops: dict[str, Operation] = {}
        self._by_request: dict[str, str] = {}

    # --- calls -------------------------------------------------------------------------
    def StartScenario(
        self, request: pb.StartScenarioRequest, context: grpc.ServicerContext
    ) -> pb.StartScenarioResponse:
        if len(request.request_id) > MAX_REQUEST_ID:
            context.abort_with_status(errors.invalid_argument([("request_id", f"longer than {MAX_REQUEST_ID}")]))
        with self._lock:
            existing = self._by_request.get(request.request_id) if request.request_id else None
            if existing is not None:
                return pb.StartScenarioResponse(operation=self._ops[existing].to_pb())
        loaded, source = self._load(request, context)
        op_id = f"scn-{uuid.uuid4().hex[:16]}"
        root = self.out_root or Path(tempfile.gettempdir()) / "grid-scheduler-scenarios"
        op = Operation(op_id, loaded.name, source, root / op_id, loaded.scenario.horizon_days * 24.0)
        with self._lock:
            if request.request_id:
                if request.request_id in self._by_request:  # a concurrent start with the same key won
                    return pb.StartScenarioResponse(operation=self._ops[self._by_request[request.request_id]].to_pb())
                self._by_request[request.request_id] = op_id
            self._ops[op_id] = op
        threading.Thread(target=self._run, args=(op,), name=f"scenario-{op_id}", daemon=True).start()
        log.info("scenario_started", operation=op_id, scenario=loaded.name)
        return pb.StartScenarioResponse(operation=op.to_pb())

    def GetScenario(self, request: pb.GetScenarioRequest, context: grpc.ServicerContext) -> pb.GetScenarioResponse:
        return pb.GetScenarioResponse(operation=self._get(request.id, context).to_pb())

    def WatchScenario(
        self, request: pb.WatchScenarioRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchScenarioResponse]:
        op = self._get(request.id, context)
        seen = -1
        while context.is_active() and not self.stopping.is_set():
            with self._changed:
                if op.version == seen:
                    self._changed.wait(WATCH_POLL_S)
                if op.version == seen:
                    continue
                seen = op.version
                message = op.to_pb()
            yield pb.WatchScenarioResponse(operation=message)
            if message.done:
                return

    def GetScenarioReport(
        self, request: pb.GetScenarioReportRequest, context: grpc.ServicerContext
    ) -> pb.GetScenarioReportResponse:
        from grid_scheduler.whatif.report import flatten

        op = self._get(request.id, context)
        if op.state != pb.SCENARIO_STATE_SUCCEEDED:
            state = pb.ScenarioState.Name(op.state).removeprefix("SCENARIO_STATE_").lower()
            context.abort_with_status(errors.failed_precondition(
                f"scenarios/{op.id}", f"operation {op.id} is {state}; a report exists once it succeeded"))
        summary_text = (op.out_dir / "summary.json").read_text()
        summary = json.loads(summary_text)
        summary.pop("scenario", None)
        metrics = [pb.ScenarioMetric(name=k, value=float(v)) for k, v in flatten(summary)
                   if isinstance(v, int | float) and not isinstance(v, bool)]
        files = []
        for path in sorted(op.out_dir.iterdir()):
            files.append(pb.ScenarioReportFile(
                name=path.name, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"), path=str(path),
                size_bytes=path.stat().st_size, content=path.read_bytes() if request.include_content else b"",
            ))
        return pb.GetScenarioReportResponse(operation=op.to_pb(), metrics=metrics, files=files,
                                            summary_json=summary_text)

    # --- helpers -------------------------------------------------------------------------
    def _load(
        self, request: pb.StartScenarioRequest, context: grpc.ServicerContext
    ) -> tuple[LoadedScenario, tuple[str, str, str]]:
        which = request.WhichOneof("source")
        try:
            if which == "path":
                path = (self.scenario_dir / request.path).resolve()
                if not path.is_relative_to(self.scenario_dir):
                    context.abort_with_status(errors.invalid_argument(
                        [("path", f"must name a scenario file under the server's {self.scenario_dir}")]))
                return load_scenario(path), ("path", str(path), str(path.parent))
            if which == "yaml":
                base = self.scenario_dir
                return load_scenario_text(request.yaml, "yaml", base), ("yaml", request.yaml, str(base))
        except ScenarioError as e:
            context.abort_with_status(errors.invalid_argument(
                [(which or "source", f"{p.field}: line {p.line}: {p.message}") if p.field == "(document)" else
                 (p.field, f"line {p.line}: {p.message}") for p in e.problems]))
        except ConfigError as e:
            context.abort_with_status(errors.invalid_argument([(which or "source", str(e))]))
        context.abort_with_status(errors.invalid_argument([("source", "give path or yaml")]))
        raise AssertionError("unreachable")  # abort_with_status raises

    def _get(self, op_id: str, context: grpc.ServicerContext) -> Operation:
        with self._lock:
            op = self._ops.get(op_id)
        if op is None:
            context.abort_with_status(errors.not_found("scenario operation", op_id))
            raise AssertionError("unreachable")
        return op

    def _update(self, op: Operation, **changes: Any) -> None:
        with self._changed:
            for k, v in changes.items():
                setattr(op, k, v)
            op.updated = time.time()
            op.version += 1
            self._changed.notify_all()

    def _run(self, op: Operation) -> None:
        with self._slots:
            if self.stopping.is_set():
                self._update(op, state=pb.SCENARIO_STATE_FAILED, error="server stopping")
                return
            self._update(op, state=pb.SCENARIO_STATE_RUNNING)
            ctx = multiprocessing.get_context("spawn")
            messages: Queue[tuple[Any, ...]] = ctx.Queue()
            child = ctx.Process(target=run_in_child, args=(op.source, str(op.out_dir), messages), daemon=True)
            child.start()
            try:
                self._follow(op, child, messages)
            finally:
                if child.is_alive():
                    child.terminate()
                child.join(5)

    def _follow(self, op: Operation, child: Any, messages: Queue[tuple[Any, ...]]) -> None:
        while True:
            if self.stopping.is_set():
                self._update(op, state=pb.SCENARIO_STATE_FAILED, error="server stopping")
                return
            try:
                message = messages.get(timeout=0.5)
            except queue.Empty:
                if not child.is_alive():
                    self._update(op, state=pb.SCENARIO_STATE_FAILED,
                                 error=f"the run's process ended unexpectedly (exit code {child.exitcode})")
                    return
                continue
            kind = message[0]
            if kind == "progress":
                _, sim_h, arrived, total = message
                self._update(op, simulated_hours=sim_h, jobs_arrived=arrived, jobs_total=total)
            elif kind == "done":
                self._update(op, state=pb.SCENARIO_STATE_SUCCEEDED, simulated_hours=op.horizon_hours)
                log.info("scenario_done", operation=op.id)
                return
            elif kind == "error":
                self._update(op, state=pb.SCENARIO_STATE_FAILED, error=str(message[1]))
                log.warning("scenario_failed", operation=op.id, error=str(message[1]))
                return


def run_in_child(source: tuple[str, str, str], out_dir: str, messages: Queue[tuple[Any, ...]]) -> None:
    """A run, in its own process: load, simulate (reporting progress), write the report."""
    try:
        from grid_scheduler.whatif.report import write_run_report
        from grid_scheduler.whatif.simulator import Progress, quiet_logs, simulate

        quiet_logs(cache=True)
        kind, text, base = source
        loaded = load_scenario(text) if kind == "path" else load_scenario_text(text, "yaml", Path(base))
        last = 0.0

        def progress(p: Progress) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or p.sim_s >= p.horizon_s:
                last = now
                messages.put(("progress", p.sim_s / 3600.0, p.arrived, p.arrivals))

        result = simulate(loaded, progress=progress)
        write_run_report(result, loaded, Path(out_dir))
        messages.put(("done",))
    except Exception as e:  # reported to the operation, not lost in a child's stderr
        messages.put(("error", f"{type(e).__name__}: {e}"))
