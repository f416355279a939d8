"""The vocabulary: pydantic types for grids, jobs, placements and policies. No I/O."""

from grid_scheduler.model.grid import (
    Dataset,
    Endpoint,
    GpuType,
    Grid,
    Link,
    Location,
    Pool,
    ResidencyRule,
    Site,
    Tier,
    Workload,
)
from grid_scheduler.model.job import Demand, GpuRequest, InferenceSpec, JobKind, JobSpec, TrainingSpec
from grid_scheduler.model.placement import Assignment, Placement, Reason, ReasonCode, ScoreTerms
from grid_scheduler.model.policy import FairShare, Policy, PolicyVersion, Weights, policy_sha256
from grid_scheduler.model.record import AuditRecord, EventType, JobEvent, JobRecord, JobState, WaitInfo

__all__ = [
    "Assignment",
    "AuditRecord",
    "Dataset",
    "Demand",
    "Endpoint",
    "EventType",
    "FairShare",
    "GpuRequest",
    "GpuType",
    "Grid",
    "InferenceSpec",
    "JobEvent",
    "JobKind",
    "JobRecord",
    "JobSpec",
    "JobState",
    "Link",
    "Location",
    "Placement",
    "Policy",
    "PolicyVersion",
    "Pool",
    "Reason",
    "ReasonCode",
    "ResidencyRule",
    "ScoreTerms",
    "Site",
    "Tier",
    "TrainingSpec",
    "WaitInfo",
    "Weights",
    "Workload",
    "policy_sha256",
]
