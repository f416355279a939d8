"""What the scheduler refuses, in terms the service maps to gRPC status codes."""

from __future__ import annotations


class SchedulerError(Exception):
    pass


class InvalidJob(SchedulerError):
    """The request itself is wrong; each violation is (field path, problem)."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in violations))
        self.violations = violations


class NotFound(SchedulerError):
    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class WrongState(SchedulerError):
    """The job is in a state that does not allow this (cancel a finished job)."""


class AlreadyExists(SchedulerError):
    """A request id this tenant already used, for a different job: the existing job is named."""

    def __init__(self, request_id: str, job_id: str) -> None:
        super().__init__(
            f"request_id {request_id!r} was already used by job {job_id} with a different spec; "
            "use a new request_id for a new job"
        )
        self.request_id = request_id
        self.job_id = job_id


class StalePolicyVersion(SchedulerError):
    """A policy apply expected an active version that is no longer active (ABORTED: re-read, retry)."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"expected_version {expected} is stale: the active policy is version {current}")
        self.expected = expected
        self.current = current
