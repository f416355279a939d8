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
