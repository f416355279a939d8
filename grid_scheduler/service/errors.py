"""The error model: google.rpc.Status with BadRequest / PreconditionFailure / ErrorInfo details."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "grid-scheduler.v1"


def _status(code: int, message: str, *details: Message) -> grpc.Status:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=packed))


def invalid_argument(violations: list[tuple[str, str]]) -> grpc.Status:
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations]
    )
    message = "invalid request: " + "; ".join(f"{f}: {d}" for f, d in violations)
    info = error_details_pb2.ErrorInfo(reason="INVALID_REQUEST", domain=DOMAIN)
    return _status(code_pb2.INVALID_ARGUMENT, message, bad, info)


def not_found(kind: str, ident: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=f"{kind.upper()}_NOT_FOUND", domain=DOMAIN, metadata={"id": ident})
    return _status(code_pb2.NOT_FOUND, f"{kind} {ident!r} not found", info)


def already_exists(kind: str, ident: str, message: str) -> grpc.Status:
    """A request id already used for another spec: ``metadata.id`` names the existing resource."""
    info = error_details_pb2.ErrorInfo(reason=f"{kind.upper()}_ALREADY_EXISTS", domain=DOMAIN, metadata={"id": ident})
    return _status(code_pb2.ALREADY_EXISTS, message, info)


def failed_precondition(subject: str, message: str) -> grpc.Status:
    failure = error_details_pb2.PreconditionFailure(
        violations=[error_details_pb2.PreconditionFailure.Violation(type="STATE", subject=subject, description=message)]
    )
    return _status(code_pb2.FAILED_PRECONDITION, message, failure)


def unavailable(message: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason="STORE_UNAVAILABLE", domain=DOMAIN)
    return _status(code_pb2.UNAVAILABLE, message, info)


def resource_exhausted(reason: str, subject: str, message: str, metadata: dict[str, str] | None = None) -> grpc.Status:
    """A server-side limit was reached; the same call may succeed later (another client let go)."""
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=subject, description=message)]
    )
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    return _status(code_pb2.RESOURCE_EXHAUSTED, message, quota, info)


def out_of_range(reason: str, field: str, message: str, metadata: dict[str, str] | None = None) -> grpc.Status:
    """A position the client named (``field``) is outside what the server holds; retrying it cannot help."""
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=message)]
    )
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    return _status(code_pb2.OUT_OF_RANGE, message, bad, info)


def unauthenticated(message: str) -> grpc.Status:
    """Missing, unknown, expired or malformed credentials: the caller must authenticate (again)."""
    info = error_details_pb2.ErrorInfo(reason="UNAUTHENTICATED", domain=DOMAIN)
    return _status(code_pb2.UNAUTHENTICATED, message, info)


def permission_denied(reason: str, message: str, metadata: dict[str, str] | None = None) -> grpc.Status:
    """A known caller may not do this; ``metadata`` carries the limit and the value asked for, where one applies."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    return _status(code_pb2.PERMISSION_DENIED, message, info)


def rate_limited(principal: str, retry_after_s: float) -> grpc.Status:
    """Over the principal's rate: RESOURCE_EXHAUSTED with google.rpc.RetryInfo saying when to come back."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(int(retry_after_s * 1e9), 1_000_000))
    retry = error_details_pb2.RetryInfo(retry_delay=delay)
    message = f"{principal} is over its request rate; retry in {retry_after_s:.3f} s"
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=f"principal:{principal}", description=message)]
    )
    info = error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain=DOMAIN, metadata={"principal": principal})
    return _status(code_pb2.RESOURCE_EXHAUSTED, message, retry, quota, info)


def aborted(reason: str, message: str, metadata: dict[str, str] | None = None) -> grpc.Status:
    """A compare-and-set lost to a concurrent change: re-read, then decide whether to retry."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    return _status(code_pb2.ABORTED, message, info)
