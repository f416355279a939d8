"""Requests the server cannot read: bytes that do not parse, ids too long to be ours.

grpcio answers a request whose bytes its deserializer rejects with
``INTERNAL: Exception deserializing request!``, which tells the client the server is
broken when the client is. ``MalformedRequestInterceptor`` wraps every method's
``request_deserializer`` (unary and streaming requests, every service: placement,
topology, scenario, health, reflection) so that a failure yields a ``Malformed``
sentinel instead of an exception, and wraps the method's behaviour so that a sentinel is
answered with ``INVALID_ARGUMENT`` (``BadRequest`` naming field ``request``,
``ErrorInfo`` reason ``MALFORMED_REQUEST``) before any handler or other interceptor sees it.

It also refuses, before any handler runs, a request whose top-level id fields (``ID_FIELDS``:
job, pool, site and scenario ids, ``request_id``, ``page_token``) are longer than
``errors.MAX_ID_CHARS``: ``INVALID_ARGUMENT`` naming the field. Nothing the server issues is
that long, so such a request can only miss, and its id would otherwise be echoed back.

It must be the outermost interceptor (first in ``grpc.server(interceptors=...)``): the
handler it returns is the one grpcio runs, so its deserializer is the one grpcio calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from grid_scheduler.service import errors
from grid_scheduler.service.handler_cache import HandlerCache

__all__ = [
    "ID_FIELDS",
    "MAX_RECEIVE_MESSAGE_BYTES",
    "Malformed",
    "MalformedRequestInterceptor",
    "malformed_status",
]

log = structlog.get_logger("grid_scheduler.service")

# The largest request message the server reads (grpc.max_receive_message_length); a larger
# one is refused by grpcio with RESOURCE_EXHAUSTED before it is parsed. grpcio's default is
# the same 4 MiB: this makes it explicit and one place to change it.
MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024

# Top-level string fields of any request that hold an id or a token, bounded by errors.MAX_ID_CHARS.
ID_FIELDS = ("id", "job_id", "pool_id", "request_id", "page_token")


class Malformed:
    """What a wrapped deserializer returns for bytes that do not parse (never None: grpcio reads None as failure)."""

    __slots__ = ("error", "size")

    def __init__(self, error: str, size: int) -> None:
        self.error = error
        self.size = size


def malformed_status(method: str, request: Malformed) -> grpc.Status:
    """INVALID_ARGUMENT for a request of ``method`` whose ``request.size`` bytes did not parse."""
    description = f"{request.size} bytes that do not parse as this method's request message ({request.error})"
    return errors.invalid_argument([("request", description)], reason="MALFORMED_REQUEST")


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            message = deserializer(data)
        except Exception as e:  # protobuf's DecodeError, or anything a custom deserializer raises
            return Malformed(type(e).__name__ + (f": {e}" if str(e) else ""), len(data))
        if message is None:
            return Malformed("no message", len(data))
        return message

    return deserialize


# Per request type, which of ID_FIELDS it has as string fields: looked up once per type, not per call.
_ID_FIELDS_OF: dict[type[Message], tuple[str, ...]] = {}


def _id_fields(message_type: type[Message]) -> tuple[str, ...]:
    names = _ID_FIELDS_OF.get(message_type)
    if names is None:
        fields = message_type.DESCRIPTOR.fields_by_name
        names = _ID_FIELDS_OF[message_type] = tuple(
            name for name in ID_FIELDS if name in fields and fields[name].type == FieldDescriptor.TYPE_STRING)
    return names


def _id_violations(request: Any) -> list[tuple[str, str]]:
    if not isinstance(request, Message):
        return []
    problems = []
    for name in _id_fields(type(request)):
        value = getattr(request, name)
        if not isinstance(value, str):  # a repeated field
            continue
        problem = errors.check_id(name, value)
        if problem is not None:
            problems.append(problem)
    return problems


def _copy_flags(inner: Any, outer: Any) -> Any:
    # grpcio reads these attributes off the behaviour (health's Watch is non-blocking).
    for name in ("experimental_non_blocking", "experimental_thread_pool"):
        if hasattr(inner, name):
            setattr(outer, name, getattr(inner, name))
    return outer


class MalformedRequestInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Unparseable requests and overlong ids are INVALID_ARGUMENT, for every method of every service."""

    def __init__(self) -> None:
        self._handlers = HandlerCache()

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method: str = details.method
        return self._handlers.wrapped(method, handler, lambda inner: _guarded(method, inner))


def _guarded(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    deserializer = _safe(handler.request_deserializer)
    serializer = handler.response_serializer

    def refuse(request: Any, context: grpc.ServicerContext) -> None:
        if isinstance(request, Malformed):
            log.debug("malformed_request", method=method, size=request.size, error=request.error[:200])
            context.abort_with_status(malformed_status(method, request))
        problems = _id_violations(request)
        if problems:
            context.abort_with_status(errors.invalid_argument(problems))

    def requests(iterator: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        for request in iterator:
            refuse(request, context)
            yield request

    if not handler.request_streaming:
        inner = handler.unary_stream if handler.response_streaming else handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext, *rest: Any) -> Any:
            refuse(request, context)
            return inner(request, context, *rest)

        make = (grpc.unary_stream_rpc_method_handler if handler.response_streaming
                else grpc.unary_unary_rpc_method_handler)
        return make(_copy_flags(inner, unary), request_deserializer=deserializer, response_serializer=serializer)

    inner = handler.stream_stream if handler.response_streaming else handler.stream_unary

    def streaming(iterator: Iterator[Any], context: grpc.ServicerContext, *rest: Any) -> Any:
        return inner(requests(iterator, context), context, *rest)

    make = (grpc.stream_stream_rpc_method_handler if handler.response_streaming
            else grpc.stream_unary_rpc_method_handler)
    return make(_copy_flags(inner, streaming), request_deserializer=deserializer, response_serializer=serializer)
