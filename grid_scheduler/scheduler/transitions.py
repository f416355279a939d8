"""The records and transitions of a job's life, built in one place for every path."""

from __future__ import annotations

from grid_scheduler.engine import Decision, GridIndex, wait_info
from grid_scheduler.model import EventType, JobRecord, JobSpec, JobState, Placement, Policy, WaitInfo
from grid_scheduler.state import Transition

HELD = "capacity it could use is held for waiting jobs of higher priority"


def placed_message(record: JobRecord) -> str:
    assert record.placement is not None
    where = ", ".join(f"{a.gpus} {a.gpu_type} in {a.pool_id}" for a in record.placement.assignments)
    return f"placed: {where}"


def new_placed(
    job_id: str, spec: JobSpec, request_id: str, placement: Placement, now: float, owner: str = "",
    *, policy_version: int,
) -> Transition:
    record = JobRecord(
        id=job_id, request_id=request_id, owner=owner, spec=spec, state=JobState.RUNNING,
        placement=placement, created_at=now, updated_at=now, started_at=now, policy_version=policy_version,
    )
    return Transition(record, EventType.PLACED, placed_message(record), reserve=placement.assignments)


def new_waiting(
    index: GridIndex, policy: Policy, job_id: str, spec: JobSpec, request_id: str, decision: Decision,
    state: JobState, why: str, now: float, held: bool = False, owner: str = "", *, policy_version: int,
) -> Transition:
    info = waiting_info(index, policy, decision, held)
    record = JobRecord(
        id=job_id, request_id=request_id, owner=owner, spec=spec, state=state, waiting=info,
        created_at=now, updated_at=now, queued_at=now if state is JobState.PENDING else None,
        policy_version=policy_version,
    )
    event = EventType.REJECTED if state is JobState.REJECTED else EventType.PENDING
    return Transition(record, event, why + (": " + info.summary[0] if info.summary else ""))


def waiting_info(index: GridIndex, policy: Policy, decision: Decision, held: bool) -> WaitInfo:
    info = wait_info(index, decision, policy)
    if held:
        return WaitInfo(site_counts=info.site_counts, summary=[HELD, *info.summary])
    return info


def to_running(record: JobRecord, placement: Placement, now: float, *, policy_version: int) -> Transition:
    running = record.model_copy(update={
        "state": JobState.RUNNING, "placement": placement, "waiting": None,
        "updated_at": now, "started_at": now, "version": record.version + 1, "policy_version": policy_version,
    })
    return Transition(running, EventType.PLACED, placed_message(running), reserve=placement.assignments)


def evicted(victim: JobRecord, preemptor_id: str, now: float, *, policy_version: int) -> Transition:
    """Back to the queue, keeping its place (created_at), because ``preemptor_id`` takes its GPUs
    (a decision made under ``policy_version``)."""
    why = f"preempted by {preemptor_id}"
    queued = victim.model_copy(update={
        "state": JobState.PENDING, "placement": None, "waiting": WaitInfo(summary=[why]),
        "updated_at": now, "queued_at": now, "started_at": None, "version": victim.version + 1,
        "policy_version": policy_version,
    })
    return Transition(queued, EventType.PREEMPTED, why, release=True)


def finished(record: JobRecord, state: JobState, event: EventType, message: str, now: float) -> Transition:
    done = record.model_copy(update={"state": state, "updated_at": now, "version": record.version + 1})
    return Transition(done, event, message, release=True)


def failed_requeued(record: JobRecord, why: str, now: float, *, policy_version: int) -> Transition:
    """A run that failed at its site, back to the queue: its place (created_at, priority) kept and
    one more attempt counted, so its restart resumes from its last checkpoint."""
    attempts = record.attempts + 1
    message = f"{why}; re-queued (attempt {attempts + 1})"
    queued = record.model_copy(update={
        "state": JobState.PENDING, "placement": None, "waiting": WaitInfo(summary=[message]),
        "updated_at": now, "queued_at": now, "started_at": None, "version": record.version + 1,
        "policy_version": policy_version, "attempts": attempts,
    })
    return Transition(queued, EventType.PENDING, message, release=True)


def stopped_by_scheduler(record: JobRecord, why: str, now: float) -> Transition:
    """A running job the scheduler ends itself (a time limit): cancelled, with ``why`` kept on the record."""
    done = record.model_copy(update={"state": JobState.CANCELLED, "updated_at": now, "version": record.version + 1,
                                     "end_reason": why})
    return Transition(done, EventType.CANCELLED, f"stopped: {why}", release=True)
