"""The life of a job: engine decisions committed to a store, pending work retried."""

from grid_scheduler.scheduler.core import OptimizeOutcome, Outcome, Scheduler
from grid_scheduler.scheduler.errors import AlreadyExists, InvalidJob, NotFound, SchedulerError, WrongState

__all__ = [
    "AlreadyExists", "InvalidJob", "NotFound", "OptimizeOutcome", "Outcome", "Scheduler", "SchedulerError",
    "WrongState",
]
