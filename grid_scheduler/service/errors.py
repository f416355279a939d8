"""The error model: google.rpc.Status with BadRequest / PreconditionFailure / ErrorInfo details.

Every status is bounded here, in one place, whatever the request held: a status travels in
gRPC trailers (``grpc-message`` and ``grpc-status-details-bin``), and trailers past gRPC's
metadata limit (16 KiB by default) reach the client as RESOURCE_EXHAUSTED or INTERNAL instead
of the code the server meant. So an error never echoes more than a slice of its input:

- the message is at most ``MAX_MESSAGE_BYTES`` (UTF-8), a field path ``MAX_FIELD_BYTES``,
  a description or subject ``MAX_DESCRIPTION_BYTES``, a metadata value ``MAX_METADATA_BYTES``;
- at most ``MAX_VIOLATIONS`` field violations, then one ``...`` violation saying how many more;
- and, as a last guard, the serialized ``google.rpc.Status`` is kept under ``MAX_STATUS_BYTES``
  by dropping trailing violations.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "grid-scheduler.v1"

# The longest id (job, pool, site, scenario operation, request_id) or page token the service
# reads; a longer one is INVALID_ARGUMENT naming its field (service/malformed.py checks them
# before any handler runs). Ids the service issues are far shorter.
MAX_ID_CHARS = 256
MAX_MESSAGE_BYTES = 1024
MAX_FIELD_BYTES = 96
MAX_DESCRIPTION_BYTES = 160  # of each of many violations; a lone one may use up to MAX_MESSAGE_BYTES
MAX_METADATA_BYTES = 160
MAX_VIOLATIONS = 20
MAX_STATUS_BYTES = 6 * 1024


def clip(text: str, limit: int) -> str:
    """``text`` if its UTF-8 form fits in ``limit`` bytes, else a prefix that does, marked as cut."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    marker = f"...(+{len(data) - limit} bytes)"
    head = data[: max(limit - len(marker), 0)].decode("utf-8", "ignore")
    return head + marker


def check_id(field: str, value: str) -> tuple[str, str] | None:
    """The (field, problem) of an id or token longer than ``MAX_ID_CHARS``, else None."""
    if len(value) > MAX_ID_CHARS:
        return field, f"longer than {MAX_ID_CHARS} characters ({len(value)})"
    return None


def _status(code: int, message: str, *details: Message) -> grpc.Status:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    status = status_pb2.Status(code=code, message=clip(message, MAX_MESSAGE_BYTES), details=packed)
    return rpc_status.to_status(status)


def _description_bytes(count: int) -> int:
    # A few violations may each say more; many share the status's room.
    return min(MAX_MESSAGE_BYTES, max(MAX_DESCRIPTION_BYTES, 3072 // max(count, 1)))


def _violations(violations: list[tuple[str, str]]) -> list[error_details_pb2.BadRequest.FieldViolation]:
    limit = _description_bytes(min(len(violations), MAX_VIOLATIONS))
    kept = [
        error_details_pb2.BadRequest.FieldViolation(field=clip(f, MAX_FIELD_BYTES), description=clip(d, limit))
        for f, d in violations[:MAX_VIOLATIONS]
    ]
    if len(violations) > MAX_VIOLATIONS:
        more = len(violations) - MAX_VIOLATIONS
        kept.append(error_details_pb2.BadRequest.FieldViolation(field="...", description=f"... and {more} more"))
    return kept


def _metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    return {clip(k, MAX_FIELD_BYTES): clip(v, MAX_METADATA_BYTES) for k, v in (metadata or {}).items()}


def _bad_request(violations: list[tuple[str, str]], budget: int) -> error_details_pb2.BadRequest:
    """BadRequest for ``violations`` whose serialized size is at most ``budget`` bytes."""
    bad = error_details_pb2.BadRequest(field_violations=_violations(violations))
    shown = min(len(violations), MAX_VIOLATIONS)
    while bad.ByteSize() > budget and shown > 1:
        shown -= 1
        bad = error_details_pb2.BadRequest(field_violations=_violations(violations[:shown]))
        bad.field_violations.append(error_details_pb2.BadRequest.FieldViolation(
            field="...", description=f"... and {len(violations) - shown} more"))
    return bad


def summary(violations: list[tuple[str, str]]) -> str:
    """One line for a status message: the first violations, then how many more."""
    parts: list[str] = []
    size = 0
    limit = _description_bytes(len(violations))
    for f, d in violations:
        part = f"{clip(f, MAX_FIELD_BYTES)}: {clip(d, limit)}"
        if size + len(part.encode()) > MAX_MESSAGE_BYTES - 64 and parts:
            break
        parts.append(part)
        size += len(part.encode()) + 2
    text = "; ".join(parts)
    if len(parts) < len(violations):
        text += f"; ... and {len(violations) - len(parts)} more"
    return text


def invalid_argument(violations: list[tuple[str, str]], reason: str = "INVALID_REQUEST") -> grpc.Status:
    bad = _bad_request(violations, MAX_STATUS_BYTES - MAX_MESSAGE_BYTES - 256)
    message = "invalid request: " + summary(violations)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)
    return _status(code_pb2.INVALID_ARGUMENT, message, bad, info)


def not_found(kind: str, ident: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=f"{kind.upper()}_NOT_FOUND", domain=DOMAIN,
                                       metadata=_metadata({"id": ident}))
    return _status(code_pb2.NOT_FOUND, f"{kind} {clip(ident, MAX_METADATA_BYTES)!r} not found", info)


def already_exists(kind: str, ident: str, message: str) -> grpc.Status:
    """A request id already used for another spec: ``metadata.id`` names the existing resource."""
    info = error_details_pb2.ErrorInfo(reason=f"{kind.upper()}_ALREADY_EXISTS", domain=DOMAIN,
                                       metadata=_metadata({"id": ident}))
    return _status(code_pb2.ALREADY_EXISTS, message, info)


def failed_precondition(subject: str, message: str) -> grpc.Status:
    failure = error_details_pb2.PreconditionFailure(
        violations=[error_details_pb2.PreconditionFailure.Violation(
            type="STATE", subject=clip(subject, MAX_DESCRIPTION_BYTES), description=clip(message, MAX_MESSAGE_BYTES))]
    )
    return _status(code_pb2.FAILED_PRECONDITION, message, failure)


def unavailable(message: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason="STORE_UNAVAILABLE", domain=DOMAIN)
    return _status(code_pb2.UNAVAILABLE, message, info)


def resource_exhausted(reason: str, subject: str, message: str, metadata: dict[str, str] | None = None) -> grpc.Status:
    """A server-side limit was reached; the same call may succeed later (another client let go)."""
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(
            subject=clip(subject, MAX_DESCRIPTION_BYTES), description=clip(message, MAX_MESSAGE_BYTES))]
    )
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=_metadata(metadata))
    return _status(code_pb2.RESOURCE_EXHAUSTED, message, quota, info)


def out_of_range(reason: str, field: str, message: str, metadata: dict[str, str] | None = None) -> grpc.Status:
    """A position the client named (``field``) is outside what the server holds; retrying it cannot help."""
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(
            field=clip(field, MAX_FIELD_BYTES), description=clip(message, MAX_MESSAGE_BYTES))]
    )
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=_metadata(metadata))
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
