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
    # Bumped on every transition; lets a store refuse a stale write.
    version: int = 0


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
