"""Turning scheduler refusals into gRPC statuses, in one place for every servicer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import structlog

from grid_scheduler.scheduler import AlreadyExists, InvalidJob, NotFound, WrongState
from grid_scheduler.service import errors
from grid_scheduler.service.auth.principal import PermissionDenied
from grid_scheduler.state import StoreUnavailable

log = structlog.get_logger("grid_scheduler.service")
F = TypeVar("F", bound=Callable[..., Any])
STORE_UNAVAILABLE = ("the scheduler's ledger is unavailable right now; nothing was changed: retry (a submission "
                     "with the same request_id returns the job if it was committed)")


def status_of(exc: Exception) -> grpc.Status | None:
    if isinstance(exc, InvalidJob):
        return errors.invalid_argument(exc.violations)
    if isinstance(exc, NotFound):
        return errors.not_found(exc.kind, exc.ident)
    if isinstance(exc, AlreadyExists):
        return errors.already_exists("job", exc.job_id, str(exc))
    if isinstance(exc, WrongState):
        return errors.failed_precondition("job", str(exc))
    if isinstance(exc, PermissionDenied):
        return errors.permission_denied(exc.reason, str(exc), exc.metadata)
    if isinstance(exc, StoreUnavailable):
        # The detail (the store's redacted address, its user, the driver's words) is for the
        # operator's log; a client across the trust boundary learns only that it may retry.
        log.warning("store_unavailable", error=str(exc))
        return errors.unavailable(STORE_UNAVAILABLE)
    return None


def handled(method: F) -> F:
    """Map known refusals to their status codes; an unknown exception is a bug and is logged as one."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            status = status_of(exc)
            if status is None:
                log.exception("unhandled_error", method=method.__name__)
                raise
            context.abort_with_status(status)

    return wrapper  # type: ignore[return-value]
