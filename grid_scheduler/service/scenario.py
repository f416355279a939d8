"""ScenarioService: what-if runs as long-running operations over gRPC.

StartScenario validates the scenario in the call (a bad file is INVALID_ARGUMENT naming each
field inside the request, ``yaml.changes[0].site``, and its line) and queues a run. Each run is
a separate *process* (spawned, so it starts clean and a CPU-bound simulation never starves the
server's threads of the GIL) executing ``grid_scheduler.whatif.service.run_in_child``; it
reports progress through a queue and writes its report to a directory of its own.

A caller is not trusted:

- every file a scenario names resolves only inside the server's folders
  (``grid_scheduler.whatif.paths``; refused with one fixed message, so no oracle);
- at most ``max_queued`` runs are queued or running (RESOURCE_EXHAUSTED beyond), at most
  ``max_running`` of them at once;
- CancelScenario stops a queued run from starting and terminates a running one's process;
  DeleteScenario forgets a finished run and removes its report;
- a finished run is forgotten, report and all, ``retention_s`` after it finished (checked
  whenever a run starts or finishes: no thread of its own).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from grid_scheduler._proto.v1 import scenario_pb2 as pb
from grid_scheduler._proto.v1 import scenario_pb2_grpc as pb_grpc
from grid_scheduler.config import EXAMPLES_DIR, ConfigError
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.live import SnapshotMoved, read_live
from grid_scheduler.service import errors
from grid_scheduler.service.auth import principal as auth
from grid_scheduler.service.handlers import handled
from grid_scheduler.service.live_convert import live_to_pb
from grid_scheduler.service.live_scope import Anonymiser, scope_live
from grid_scheduler.whatif.paths import FileRoots, PathRefused
from grid_scheduler.whatif.scenario import LoadedScenario, ScenarioError
from grid_scheduler.whatif.service import RunSource, run_in_child

__all__ = ["DEFAULT_MAX_QUEUED", "DEFAULT_RETENTION_S", "ScenarioServicer"]

log = structlog.get_logger("grid_scheduler.service.scenario")

MEDIA_TYPES = {".csv": "text/csv", ".png": "image/png", ".html": "text/html", ".json": "application/json"}
WATCH_POLL_S = 0.5
DEFAULT_MAX_QUEUED = 16  # queued + running runs the server holds at once
DEFAULT_RETENTION_S = 24 * 3600.0  # a finished run and its report are kept this long
TERMINATE_GRACE_S = 5.0  # a terminated run's process gets this long before it is killed

FINISHED = (pb.SCENARIO_STATE_SUCCEEDED, pb.SCENARIO_STATE_FAILED, pb.SCENARIO_STATE_CANCELLED)


@dataclass
class Operation:
    id: str
    name: str
    source: RunSource
    out_dir: Path
    horizon_hours: float
    created: float
    request_id: str = ""
    state: int = pb.SCENARIO_STATE_QUEUED
    simulated_hours: float = 0.0
    jobs_arrived: int = 0
    jobs_total: int = 0
    error: str = ""
    updated: float = 0.0
    finished: float | None = None  # when it reached a finished state (retention counts from here)
    version: int = 0
    process: Any = None  # the run's process while it runs
    ended: threading.Event = field(default_factory=threading.Event)  # its runner thread is through

    @property
    def done(self) -> bool:
        return self.state in FINISHED

    def to_pb(self) -> pb.ScenarioOperation:
        created, updated = Timestamp(), Timestamp()
        created.FromNanoseconds(int(self.created * 1e9))
        updated.FromNanoseconds(int((self.updated or self.created) * 1e9))
        progress = 1.0 if self.state == pb.SCENARIO_STATE_SUCCEEDED else (
            min(self.simulated_hours / self.horizon_hours, 1.0) if self.horizon_hours > 0 else 0.0)
        return pb.ScenarioOperation(
            id=self.id, scenario_name=self.name, state=self.state, done=self.done, progress=progress,  # type: ignore[arg-type]
            simulated_hours=self.simulated_hours, horizon_hours=self.horizon_hours,
            jobs_arrived=self.jobs_arrived, jobs_total=self.jobs_total, error=self.error,
            create_time=created, update_time=updated,
        )


def _resource_exhausted(subject: str, message: str) -> grpc.Status:
    failure = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, description=message)])
    info = error_details_pb2.ErrorInfo(reason="SCENARIO_QUEUE_FULL", domain=errors.DOMAIN)
    details = []
    for detail in (failure, info):
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=details))


class ScenarioServicer(pb_grpc.ScenarioServiceServicer):
    """The ScenarioService.

    ``scenario_dir`` is where ``StartScenario.path`` may point and what inline YAML resolves
    against (default ``examples/scenarios``); a scenario's own file fields may point under it or
    under ``data_dirs`` (default: the examples folder, which holds the example grids and trace).
    ``clock`` (seconds, like ``time.time``) stamps operations and drives retention.
    """

    def __init__(
        self,
        out_root: Path | None = None,
        max_running: int = 1,
        stopping: threading.Event | None = None,
        scenario_dir: Path | None = None,
        *,
        data_dirs: Sequence[Path] | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
        retention_s: float = DEFAULT_RETENTION_S,
        clock: Callable[[], float] = time.time,
        scheduler: Scheduler | None = None,
    ) -> None:
        if max_running < 1 or max_queued < 1:
            raise ValueError("max_running and max_queued must be >= 1")
        self.out_root = out_root or Path(tempfile.gettempdir()) / "grid-scheduler-scenarios"
        self.scenario_dir = (scenario_dir or EXAMPLES_DIR / "scenarios").resolve()
        # StartScenario.path names a scenario file under scenario_dir only; the files a scenario
        # names may also be under the data folders.
        self.scenario_files = FileRoots.confined(self.scenario_dir)
        data = (EXAMPLES_DIR,) if data_dirs is None else tuple(data_dirs)
        self.files = FileRoots.confined(self.scenario_dir, *data)
        self.max_queued = max_queued
        self.retention_s = retention_s
        self.clock = clock
        self.stopping = stopping or threading.Event()
        self._slots = threading.Semaphore(max_running)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ops: dict[str, Operation] = {}
        self._by_request: dict[str, str] = {}
        # The live state GetLiveSnapshot reads (None: UNIMPLEMENTED, a servicer without a ledger).
        self.scheduler = scheduler
        self._anonymiser = Anonymiser()

    def healthy(self) -> bool:
        """Whether the worker pool can take runs: the server is not stopping and the report folder,
        where every worker writes, is (or can be made) a writable directory. The ledger is no
        dependency: runs replay on an in-memory ledger of their own."""
        if self.stopping.is_set():
            return False
        try:
            self.out_root.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.out_root, os.W_OK | os.X_OK)

    # --- calls -------------------------------------------------------------------------
    def StartScenario(
        self, request: pb.StartScenarioRequest, context: grpc.ServicerContext
    ) -> pb.StartScenarioResponse:
        self._expire()
        with self._lock:
            existing = self._by_request.get(request.request_id) if request.request_id else None
            if existing is not None:
                return pb.StartScenarioResponse(operation=self._ops[existing].to_pb())
            self._check_room(context)  # before the work of loading, and again before queueing
        loaded, source = self._load(request, context)
        op_id = f"scn-{uuid.uuid4().hex[:16]}"
        now = self.clock()
        op = Operation(op_id, loaded.name, source, self.out_root / op_id, loaded.scenario.horizon_days * 24.0,
                       created=now, updated=now, request_id=request.request_id)
        with self._lock:
            if request.request_id and request.request_id in self._by_request:  # a concurrent start won
                return pb.StartScenarioResponse(operation=self._ops[self._by_request[request.request_id]].to_pb())
            self._check_room(context)
            if request.request_id:
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
            message = f"operation {op.id} is {_state_name(op.state)}; a report exists once it succeeded"
            context.abort_with_status(errors.failed_precondition(f"scenarios/{op.id}", message))
        try:
            summary_text = (op.out_dir / "summary.json").read_text()
            files = []
            for path in sorted(op.out_dir.iterdir()):
                files.append(pb.ScenarioReportFile(
                    name=path.name, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                    path=str(path), size_bytes=path.stat().st_size,
                    content=path.read_bytes() if request.include_content else b"",
                ))
        except OSError:  # deleted, or expired, while we read it
            context.abort_with_status(errors.not_found("scenario operation", op.id))
            raise AssertionError("unreachable") from None
        summary = json.loads(summary_text)
        summary.pop("scenario", None)
        metrics = [pb.ScenarioMetric(name=k, value=float(v)) for k, v in flatten(summary)
                   if isinstance(v, int | float) and not isinstance(v, bool)]
        return pb.GetScenarioReportResponse(operation=op.to_pb(), metrics=metrics, files=files,
                                            summary_json=summary_text)

    def CancelScenario(
        self, request: pb.CancelScenarioRequest, context: grpc.ServicerContext
    ) -> pb.CancelScenarioResponse:
        op = self._get(request.id, context)
        with self._changed:
            if op.state in (pb.SCENARIO_STATE_SUCCEEDED, pb.SCENARIO_STATE_FAILED):
                message = f"operation {op.id} already {_state_name(op.state)}; only a queued or running run can be"
                context.abort_with_status(errors.failed_precondition(f"scenarios/{op.id}", message))
            process = op.process
            self._finish_locked(op, pb.SCENARIO_STATE_CANCELLED, error="cancelled")
        if process is not None:
            process.terminate()  # its runner thread sees CANCELLED, reaps the process (or kills it)
            op.ended.wait(TERMINATE_GRACE_S + 1.0)
        log.info("scenario_cancelled", operation=op.id)
        return pb.CancelScenarioResponse(operation=op.to_pb())

    def DeleteScenario(
        self, request: pb.DeleteScenarioRequest, context: grpc.ServicerContext
    ) -> pb.DeleteScenarioResponse:
        op = self._get(request.id, context)
        with self._lock:
            if not op.done:
                context.abort_with_status(errors.failed_precondition(
                    f"scenarios/{op.id}", f"operation {op.id} is {_state_name(op.state)}; cancel it first"))
            if self._ops.pop(op.id, None) is None:  # a concurrent delete won
                context.abort_with_status(errors.not_found("scenario operation", op.id))
            self._forget_locked(op)
        self._remove_report(op)
        log.info("scenario_deleted", operation=op.id)
        return pb.DeleteScenarioResponse()

    @handled  # a ledger that is down is UNAVAILABLE, as for every servicer
    def GetLiveSnapshot(
        self, request: pb.GetLiveSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.GetLiveSnapshotResponse:
        if self.scheduler is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this server has no live ledger to snapshot")
            raise AssertionError("unreachable")
        caller = auth.current()
        try:
            state = read_live(self.scheduler)
        except SnapshotMoved as e:
            context.abort_with_status(errors.unavailable(f"{e}; retry"))
            raise AssertionError("unreachable") from None
        # The table let the caller in on RUN_SCENARIOS; which jobs it sees whole is READ_JOBS scope.
        scoped = scope_live(state, caller.may_read, self._anonymiser)
        log.info("live_snapshot", principal=caller.name, ledger_version=state.ledger_version,
                 running=len(state.running), pending=len(state.pending), anonymised=len(scoped.anonymised_ids))
        return pb.GetLiveSnapshotResponse(snapshot=live_to_pb(scoped.state, scoped.anonymised_ids))

    # --- helpers -------------------------------------------------------------------------
    def _check_room(self, context: grpc.ServicerContext) -> None:
        """Under the lock: refuse a new run when ``max_queued`` are queued or running."""
        active = sum(1 for op in self._ops.values() if not op.done)
        if active >= self.max_queued:
            message = (f"{active} scenario runs are queued or running, the server's limit: "
                       "retry when one finishes, or cancel one")
            context.abort_with_status(_resource_exhausted("scenarios", message))

    def _load(
        self, request: pb.StartScenarioRequest, context: grpc.ServicerContext
    ) -> tuple[LoadedScenario, RunSource]:
        which = request.WhichOneof("source") or "source"
        try:
            if which == "path":
                path = self.scenario_files.resolve(request.path, self.scenario_dir)
                source = RunSource("path", str(path), path.parent, self.files)
            elif which == "yaml":
                source = RunSource("yaml", request.yaml, self.scenario_dir, self.files)
            else:
                context.abort_with_status(errors.invalid_argument([("source", "give path or yaml")]))
                raise AssertionError("unreachable")  # abort_with_status raises
            return source.load(), source
        except PathRefused as e:  # the scenario file itself
            context.abort_with_status(errors.invalid_argument([("path", str(e))]))
        except ScenarioError as e:
            context.abort_with_status(errors.invalid_argument(
                [(which, f"{p.field}: line {p.line}: {p.message}") if p.field == "(document)" else
                 (f"{which}.{p.field}", f"line {p.line}: {p.message}") for p in e.problems]))
        except ConfigError as e:
            context.abort_with_status(errors.invalid_argument([(which, str(e))]))
        raise AssertionError("unreachable")

    def _get(self, op_id: str, context: grpc.ServicerContext) -> Operation:
        with self._lock:
            op = self._ops.get(op_id)
        if op is None:
            context.abort_with_status(errors.not_found("scenario operation", op_id))
            raise AssertionError("unreachable")
        return op

    def _update(self, op: Operation, **changes: Any) -> bool:
        """Apply ``changes`` unless the operation already finished (a cancel wins over a late report)."""
        with self._changed:
            if op.done:
                return False
            for k, v in changes.items():
                setattr(op, k, v)
            self._touch_locked(op)
            return True

    def _finish(self, op: Operation, state: int, error: str = "", **changes: Any) -> bool:
        with self._changed:
            if op.done:
                return False
            for k, v in changes.items():
                setattr(op, k, v)
            self._finish_locked(op, state, error)
            return True

    def _finish_locked(self, op: Operation, state: int, error: str = "") -> None:
        if op.done:
            return
        op.state, op.error, op.process = state, error, None
        op.finished = self.clock()
        self._touch_locked(op)

    def _touch_locked(self, op: Operation) -> None:
        op.updated = self.clock()
        op.version += 1
        self._changed.notify_all()

    def _forget_locked(self, op: Operation) -> None:
        if op.request_id and self._by_request.get(op.request_id) == op.id:
            del self._by_request[op.request_id]

    def _remove_report(self, op: Operation) -> None:
        # out_dir is out_root / the server's own id: never a caller's path.
        shutil.rmtree(op.out_dir, ignore_errors=True)

    def _expire(self) -> None:
        """Forget every run that finished more than ``retention_s`` ago, and remove its report."""
        cutoff = self.clock() - self.retention_s
        with self._lock:
            old = [op for op in self._ops.values() if op.finished is not None and op.finished < cutoff]
            for op in old:
                del self._ops[op.id]
                self._forget_locked(op)
        for op in old:
            self._remove_report(op)
            log.info("scenario_expired", operation=op.id)

    def _run(self, op: Operation) -> None:
        try:
            with self._slots:
                if op.done:  # cancelled while it waited for a runner: it never starts
                    return
                if self.stopping.is_set():
                    self._finish(op, pb.SCENARIO_STATE_FAILED, error="server stopping")
                    return
                ctx = multiprocessing.get_context("spawn")
                messages: Queue[tuple[Any, ...]] = ctx.Queue()
                child = ctx.Process(target=run_in_child, args=(op.source, str(op.out_dir), messages), daemon=True)
                child.start()
                try:
                    if self._update(op, state=pb.SCENARIO_STATE_RUNNING, process=child):
                        self._follow(op, child, messages)
                finally:
                    if child.is_alive():
                        child.terminate()
                    child.join(TERMINATE_GRACE_S)
                    if child.is_alive():
                        child.kill()
                        child.join(1.0)
                    messages.close()
                    if op.state == pb.SCENARIO_STATE_CANCELLED:
                        self._remove_report(op)  # whatever it had begun to write
        finally:
            op.ended.set()
            self._expire()

    def _follow(self, op: Operation, child: Any, messages: Queue[tuple[Any, ...]]) -> None:
        while not op.done:
            if self.stopping.is_set():
                self._finish(op, pb.SCENARIO_STATE_FAILED, error="server stopping")
                return
            try:
                message = messages.get(timeout=0.5)
            except queue.Empty:
                if not child.is_alive():
                    self._finish(op, pb.SCENARIO_STATE_FAILED,
                                 error=f"the run's process ended unexpectedly (exit code {child.exitcode})")
                    return
                continue
            kind = message[0]
            if kind == "progress":
                _, sim_h, arrived, total = message
                self._update(op, simulated_hours=sim_h, jobs_arrived=arrived, jobs_total=total)
            elif kind == "done":
                if self._finish(op, pb.SCENARIO_STATE_SUCCEEDED, simulated_hours=op.horizon_hours):
                    log.info("scenario_done", operation=op.id)
                return
            elif kind == "error":
                if self._finish(op, pb.SCENARIO_STATE_FAILED, error=str(message[1])):
                    log.warning("scenario_failed", operation=op.id, error=str(message[1]))
                return


def _state_name(state: int) -> str:
    return pb.ScenarioState.Name(state).removeprefix("SCENARIO_STATE_").lower()
