"""A job as the scheduler keeps it: spec, state, placement or the reasons it waits."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from grid_scheduler.model.job import JobSpec
from grid_scheduler.model.placement import Placement


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    # No site of the grid could ever take it, even empty and undrained.
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.CANCELLED, JobState.REJECTED)


class WaitInfo(BaseModel):
    """Why a job is not running: counts of sites per reason, and the most telling sentences."""

    model_config = ConfigDict(frozen=True)

    site_counts: dict[str, int] = Field(default_factory=dict)
    summary: list[str] = Field(default_factory=list)


class JobRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    request_id: str = ""
    # The principal that submitted it (service/auth): a submitter may cancel only its own jobs.
    owner: str = ""
    spec: JobSpec
    state: JobState
    placement: Placement | None = None
    waiting: WaitInfo | None = None
    created_at: float
    updated_at: float
    # When the job last entered the queue (submitted, or preempted back into it); None if never
    # queued. Queue order reads created_at (a preempted job keeps its place); this says since
    # when a waiting job has been waiting.
    queued_at: float | None = None
    # When its current run started (None unless running, or finished after running); its expected
    # end is this plus its duration (engine.priority.expected_end).
    started_at: float | None = None
    # Bumped on every transition; lets a store refuse a stale write.
    version: int = 0
    # The policy version (store history, 1, 2, ...) under which its latest placement or wait was
    # decided; 0 when no stored policy was active (an embedded scheduler with a built-in policy).
    policy_version: int = 0
    # Runs that ended in a failure at a site (a FAILED report, a lost node or site) and were
    # re-queued; a restart resumes from the job's last checkpoint.
    attempts: int = 0
    # Why the scheduler ended it, when it did (e.g. a time limit); "" otherwise.
    end_reason: str = ""


class EventType(StrEnum):
    SUBMITTED = "submitted"
    PLACED = "placed"
    PENDING = "pending"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    REJECTED = "rejected"
    PREEMPTED = "preempted"


class JobEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    sequence: int
    job_id: str
    type: EventType
    state: JobState
    time: float
    message: str = ""
    # The job's tenant, so a watcher is shown only the tenants it may read.
    tenant: str = ""
    # The policy version that made the decision this event reports (JobRecord.policy_version).
    policy_version: int = 0


class AuditRecord(BaseModel):
    """One mutating call: who made it, for which tenant, on what, and how it ended.

    Kept in the store beside the job events (every replica and ``grid-scheduler audit`` see it)
    and written to the structured log."""

    model_config = ConfigDict(frozen=True)

    sequence: int = 0  # given by the store
    time: float
    principal: str
    tenant: str = ""  # "" when the call is not about one tenant (a drain, a batch cycle)
    method: str  # the gRPC method, e.g. /grid_scheduler.v1.PlacementService/CancelJob
    object: str = ""  # the job, pool or scenario it acted on
    outcome: str  # the gRPC status code name: OK, PERMISSION_DENIED, ...
    detail: str = ""
