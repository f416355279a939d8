"""PlacementService: submit, explain, get, list, cancel, complete and watch jobs."""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Iterator

import grpc
import structlog
from pydantic import ValidationError

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler._proto.v1 import placement_pb2_grpc as pb_grpc
from grid_scheduler.engine import site_reasons, wait_info
from grid_scheduler.model import JobRecord, JobSpec, JobState, Reason
from grid_scheduler.model.errors import violations
from grid_scheduler.scheduler import InvalidJob, NotFound, Scheduler
from grid_scheduler.scheduler.estimate import CANDIDATE_ID, Estimates, estimate_starts
from grid_scheduler.service import convert, errors, watch
from grid_scheduler.service.auth import Permission, PermissionDenied, Principal, current
from grid_scheduler.service.handlers import handled
from grid_scheduler.state import StoreError

log = structlog.get_logger("grid_scheduler.service")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
WATCH_POLL_S = 0.25
DEFAULT_OPTIMIZE_S = 5.0
# Start estimates replay the whole queue: reused while no job or capacity changed, for at most this long.
ESTIMATE_REUSE_S = 30.0
MAX_OPTIMIZE_S = 120.0


def parse_spec(request_spec: pb.JobSpec, present: bool, prefix: str = "spec") -> JobSpec:
    if not present:
        raise InvalidJob([(prefix, "required")])
    try:
        return JobSpec.model_validate(convert.spec_dict(request_spec))
    except ValidationError as e:
        problems = [(f"{prefix}.{path}" if path != "(document)" else prefix, m) for path, m in violations(e)]
        raise InvalidJob(problems) from None


def caller_spec(request_spec: pb.JobSpec, present: bool, principal: Principal) -> tuple[JobSpec, pb.JobSpec]:
    """The spec as this caller may submit it: its tenant filled from the principal (or checked
    against the principal's scope), then within that tenant's limits (priority, size, preemptibility)."""
    if present:
        tenant = principal.submit_tenant(request_spec.tenant)
        if tenant != request_spec.tenant:
            filled = pb.JobSpec()
            filled.CopyFrom(request_spec)
            filled.tenant = tenant
            request_spec = filled
    spec = parse_spec(request_spec, present)
    principal.admit(spec)
    return spec, request_spec


def _prefixed(exc: InvalidJob, prefix: str) -> InvalidJob:
    return InvalidJob([(f"{prefix}.{f}", m) for f, m in exc.violations])


def _require_id(value: str, field: str = "id") -> None:
    if not value:
        raise InvalidJob([(field, "required")])


class PlacementServicer(pb_grpc.PlacementServiceServicer):
    def __init__(self, scheduler: Scheduler, stopping: threading.Event) -> None:
        self.scheduler = scheduler
        self.stopping = stopping
        self._estimates: tuple[tuple[int, int], float, Estimates] | None = None

    @handled
    def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.ServicerContext) -> pb.SubmitJobResponse:
        principal = current()
        spec, spec_pb = caller_spec(request.spec, request.HasField("spec"), principal)
        try:
            outcome = self.scheduler.submit(spec, request.request_id, owner=principal.name)
        except InvalidJob as e:
            raise _prefixed(e, "spec") from e
        reasons = None
        if request.view == pb.JOB_VIEW_FULL:
            if outcome.decision is not None:
                reasons = site_reasons(self.scheduler.index, outcome.decision, self.scheduler.policy)
            else:
                reasons = self._reasons(outcome.record)
        # A new job's spec is the request's: echo that message rather than convert it back.
        response = pb.SubmitJobResponse(created=outcome.created)
        convert.job_to_pb(outcome.record, reasons, spec_pb if outcome.created else None, out=response.job)
        return response

    @handled
    def ExplainPlacement(
        self, request: pb.ExplainPlacementRequest, context: grpc.ServicerContext
    ) -> pb.ExplainPlacementResponse:
        spec, _ = caller_spec(request.spec, request.HasField("spec"), current())
        try:
            decision, reasons = self.scheduler.explain(spec)
        except InvalidJob as e:
            raise _prefixed(e, "spec") from e
        response = pb.ExplainPlacementResponse(
            placeable=decision.placement is not None,
            reasons=[convert.reason_to_pb(r) for r in reasons],
            uncovered_endpoints=decision.uncovered_endpoints,
        )
        if decision.placement is not None:
            response.placement.CopyFrom(convert.placement_to_pb(decision.placement))
        else:
            info = wait_info(self.scheduler.index, decision, self.scheduler.policy)
            response.waiting.CopyFrom(convert.wait_to_pb(info))
            start = estimate_starts(self.scheduler, spec).start_of(CANDIDATE_ID)
            if start is not None:
                response.estimated_start_time.CopyFrom(convert.timestamp(start))
        return response

    @handled
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.GetJobResponse:
        _require_id(request.id)
        record = self._visible(request.id, current())
        reasons = self._reasons(record) if request.view == pb.JOB_VIEW_FULL else None
        start = self._estimates_now().start_of(record.id) if record.state is JobState.PENDING else None
        response = pb.GetJobResponse()
        convert.job_to_pb(record, reasons, estimated_start=start, out=response.job)
        return response

    def _estimates_now(self) -> Estimates:
        store = self.scheduler.store
        key = (store.ledger_version(), store.last_sequence())
        now = self.scheduler.now()
        cached = self._estimates
        if cached is None or cached[0] != key or now - cached[1] > ESTIMATE_REUSE_S:
            cached = self._estimates = (key, now, estimate_starts(self.scheduler))
        return cached[2]

    def _visible(self, job_id: str, principal: Principal) -> JobRecord:
        """The job, if this caller may read it; another tenant's job is NOT_FOUND, as a missing one is."""
        record = self.scheduler.get(job_id)
        if not principal.may_read(record.spec.tenant):
            raise NotFound("job", job_id)
        return record

    def _manageable(self, job_id: str) -> str:
        principal = current()
        record = self._visible(job_id, principal)
        if not principal.may_manage(record):
            raise PermissionDenied(
                "NOT_JOB_OWNER", f"{principal.name} may cancel or complete only the jobs it submitted; "
                f"job {job_id} was submitted by another principal of tenant {record.spec.tenant}",
                {"job_id": job_id, "principal": principal.name},
            )
        return job_id

    def _reasons(self, record: JobRecord) -> list[Reason] | None:
        # As of now: a waiting job as if submitted now; a running job with its own GPUs counted
        # free (Scheduler.reasons_now). A finished job holds nothing and has none.
        if record.state in (JobState.PENDING, JobState.REJECTED, JobState.RUNNING):
            return self.scheduler.reasons_now(record)
        return None

    @handled
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        if request.page_size < 0:
            raise InvalidJob([("page_size", "must be >= 0")])
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_page_token(request.page_token)
        states = set()
        for i, state in enumerate(request.states):
            if state not in convert.STATE_FROM_PB:
                raise InvalidJob([(f"states[{i}]", f"unknown job state {state}")])
            states.add(convert.STATE_FROM_PB[state])
        tenants = current().tenants(Permission.READ_JOBS)
        records = self.scheduler.list_jobs(frozenset(states), after, size + 1, tenants)
        more = len(records) > size
        records = records[:size]
        token = encode_page_token(records[-1].id) if more and records else ""
        response = pb.ListJobsResponse(next_page_token=token)
        add_job = response.jobs.add
        for r in records:
            convert.job_to_pb(r, out=add_job())
        return response

    @handled
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:
        _require_id(request.id)
        response = pb.CancelJobResponse()
        convert.job_to_pb(self.scheduler.cancel(self._manageable(request.id)), out=response.job)
        return response

    @handled
    def CompleteJob(self, request: pb.CompleteJobRequest, context: grpc.ServicerContext) -> pb.CompleteJobResponse:
        _require_id(request.id)
        response = pb.CompleteJobResponse()
        convert.job_to_pb(self.scheduler.complete(self._manageable(request.id)), out=response.job)
        return response

    @handled
    def WatchJobs(self, request: pb.WatchJobsRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchJobsResponse]:
        if request.after_sequence < 0:
            raise InvalidJob([("after_sequence", "must be >= 0")])
        principal = current()
        if request.job_id:
            self._visible(request.job_id, principal)  # NOT_FOUND before the stream starts
        # The store keeps a window of events (the oldest are trimmed). A resume must not skip
        # events silently: after_sequence + 1 older than the oldest retained is OUT_OF_RANGE, and
        # so is an after_sequence past the newest event, which no watcher of this event history
        # can have seen (its history was reset: an in-memory server restarted); waiting would
        # skip the events up to it just as silently.
        store = self.scheduler.store
        refusal = None
        if request.from_start:
            sequence = store.first_sequence() - 1  # every retained event
        elif request.after_sequence:
            sequence = request.after_sequence
            first, last = store.first_sequence(), store.last_sequence()
            if sequence + 1 < first:
                refusal = _trimmed(sequence, first)
            elif sequence > last:
                refusal = errors.out_of_range(
                    "SEQUENCE_AHEAD", "after_sequence",
                    f"after_sequence {sequence} is past the newest event, {last}: it comes from another event "
                    "history (a restarted in-memory server?); re-read the jobs with ListJobs and watch again",
                    {"after_sequence": str(sequence), "last_sequence": str(last)},
                )
        else:
            sequence = store.last_sequence()
        return self._stream(request.job_id, principal.tenants(Permission.READ_JOBS), sequence, context, refusal)

    def _stream(
        self, job_id: str, tenants: frozenset[str] | None, sequence: int, context: grpc.ServicerContext,
        refusal: grpc.Status | None = None,
    ) -> Iterator[pb.WatchJobsResponse]:
        # Errors here are raised inside the stream, after @handled returned: mapped here.
        if refusal is not None:
            context.abort_with_status(refusal)
        # One reader per store hands events to every stream, and the streams take turns to
        # send (service/watch.py), so open streams cost unary calls little.
        sub = watch.feed_for(self.scheduler.store).subscribe(sequence, job_id, tenants)
        try:
            while context.is_active() and not self.stopping.is_set():
                if not sub.wait_turn(WATCH_POLL_S):
                    continue
                try:
                    messages = sub.take()
                except watch.EventsTrimmed as e:
                    # This watcher fell behind the store's window: its next events are gone.
                    context.abort_with_status(_trimmed(e.after, e.first))
                except StoreError as e:
                    log.warning("watch_store_unavailable", error=str(e))
                    context.abort_with_status(errors.unavailable(
                        f"the scheduler's ledger is unavailable right now; resume with after_sequence={sub.sequence}"))
                yield from messages
                sub.end_turn()
        finally:
            sub.close()

    @handled
    def OptimizePending(
        self, request: pb.OptimizePendingRequest, context: grpc.ServicerContext
    ) -> pb.OptimizePendingResponse:
        limit_s = request.time_limit_s or DEFAULT_OPTIMIZE_S
        if not 0 < limit_s <= MAX_OPTIMIZE_S:
            raise InvalidJob([("time_limit_s", f"must be in (0, {MAX_OPTIMIZE_S:g}] seconds")])
        if context.time_remaining() is not None:
            # Leave the solver a margin to build, commit and reply inside the client's deadline.
            limit_s = max(min(limit_s, context.time_remaining() * 0.6), 0.05)
        outcome = self.scheduler.optimize_pending(dry_run=request.dry_run, time_limit_s=limit_s)
        committed = {r.id for r in outcome.committed}
        result = outcome.result
        return pb.OptimizePendingResponse(
            dry_run=outcome.dry_run,
            pending_before=outcome.pending_before,
            placements=[
                pb.PlannedPlacement(job_id=job_id, placement=convert.placement_to_pb(p), committed=job_id in committed)
                for job_id, p in sorted(result.placements.items())
            ],
            unplaced_job_ids=sorted(result.unplaced),
            solver_status=result.status,
            method=result.method,
            objective=result.objective,
            best_bound=result.best_bound,
            gap=result.gap,
            solve_time_s=result.solve_time_s,
            greedy_objective=result.greedy_objective,
            weighted_gpus=result.weighted_gpus,
            policy_version=outcome.policy_version,
            tiers=[
                pb.TierOutcome(
                    priority=t.priority, jobs=t.jobs, placed=t.placed, value=t.value, greedy_value=t.greedy_value,
                    solver_status=t.status, method=t.method, objective=t.objective, best_bound=t.best_bound,
                    gap=t.gap, solve_time_s=t.solve_time_s,
                )
                for t in result.tiers
            ],
        )


def _trimmed(after: int, first: int) -> grpc.Status:
    return errors.out_of_range(
        "EVENTS_TRIMMED", "after_sequence",
        f"events after sequence {after} are no longer retained: the oldest is {first}; re-read the jobs "
        f"with ListJobs, then watch again (from_start, or after_sequence >= {first - 1})",
        {"after_sequence": str(after), "first_sequence": str(first)},
    )


_TOKEN_PREFIX = "after:"


def encode_page_token(last_id: str) -> str:
    """Opaque to clients; holds the last id of the page (ids sort by submission time)."""
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + last_id).encode()).decode()


def decode_page_token(token: str) -> str:
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise InvalidJob([("page_token", "not a token this service issued")])
    return text.removeprefix(_TOKEN_PREFIX)
