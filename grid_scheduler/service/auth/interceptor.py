"""The trust boundary for every call: authenticate, authorise from the method table, rate-limit, audit.

Handlers run with the caller's ``Principal`` bound (``principal.current()``) and use it only
to scope what they read and act on; whether the call may happen at all was decided here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import structlog

from grid_scheduler.service import errors
from grid_scheduler.service.auth.audit import Auditor
from grid_scheduler.service.auth.identity import Authenticator, Unauthenticated
from grid_scheduler.service.auth.principal import ANONYMOUS, Principal, bind, unbind
from grid_scheduler.service.auth.ratelimit import RateLimiter
from grid_scheduler.service.auth.table import RULES, Rule, is_open
from grid_scheduler.service.handler_cache import HandlerCache

log = structlog.get_logger("grid_scheduler.auth")

Metadata = Sequence[tuple[str, str | bytes]]


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """``authenticator`` None is the open mode (no ``--auth-config``): every caller is an anonymous
    platform admin, as a single-team server on loopback is. Calls are still audited."""

    def __init__(
        self, authenticator: Authenticator | None, limiter: RateLimiter | None, auditor: Auditor | None
    ) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.auditor = auditor
        self._handlers = HandlerCache()

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        method: str = details.method
        if handler is None or is_open(method):
            return handler
        # What is wrapped depends on the method only (the caller's metadata is read from the
        # call's context when it runs), so it is built once per method (handler_cache.py).
        return self._handlers.wrapped(method, handler, lambda inner: self._wrap(method, inner))

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rule = RULES.get(method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, rule, handler.unary_unary),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, rule, handler.unary_stream),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer,
            )
        # No method of ours streams its requests: one that appears is denied until the table knows it.
        def deny(requests: Any, context: grpc.ServicerContext) -> Any:
            context.abort_with_status(_not_in_table(method))

        make = grpc.stream_stream_rpc_method_handler if handler.stream_stream else grpc.stream_unary_rpc_method_handler
        return make(deny, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)

    def _unary(
        self, method: str, rule: Rule | None, inner: Callable[[Any, grpc.ServicerContext], Any]
    ) -> Callable[[Any, grpc.ServicerContext], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            principal = self._admit(method, rule, request, context)
            token = bind(principal)
            response = None
            failed = True
            try:
                response = inner(request, context)
                failed = False
                return response
            finally:
                unbind(token)
                if rule is not None and rule.audit is not None:
                    self._audit(principal, method, rule, request, response, _outcome(context, failed))

        return call

    def _stream(
        self, method: str, rule: Rule | None, inner: Callable[[Any, grpc.ServicerContext], Iterator[Any]],
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # A generator: grpc runs its body on the stream's thread when it starts sending, so
            # the principal is bound there, around the handler's own generator.
            principal = self._admit(method, rule, request, context)
            token = bind(principal)
            try:
                yield from inner(request, context)
            finally:
                unbind(token)

        return call

    def _admit(self, method: str, rule: Rule | None, request: Any, context: grpc.ServicerContext) -> Principal:
        """The caller's principal, or the call is aborted (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED)."""
        if rule is None:
            log.warning("auth_method_not_in_table", method=method)
            context.abort_with_status(_not_in_table(method))
        assert rule is not None
        principal = ANONYMOUS
        if self.authenticator is not None:
            try:
                metadata: Metadata = tuple(context.invocation_metadata() or ())
                principal = self.authenticator.authenticate(metadata, context.auth_context())
            except Unauthenticated as e:
                log.info("auth_unauthenticated", method=method, peer=context.peer(), why=str(e))
                context.abort_with_status(errors.unauthenticated(str(e)))
        if not principal.allows(rule.permission):
            message = f"{principal.name} may not call {method.rsplit('/', 1)[-1]} (needs {rule.permission.value})"
            if rule.audit is not None:
                self._audit(principal, method, rule, request, None, "PERMISSION_DENIED", message)
            context.abort_with_status(errors.permission_denied(
                "ROLE_REQUIRED", message, {"permission": rule.permission.value, "principal": principal.name}))
        if self.limiter is not None:
            wait_s = self.limiter.take(principal.name)
            if wait_s > 0:
                context.abort_with_status(errors.rate_limited(principal.name, wait_s))
        return principal

    def _audit(
        self, principal: Principal, method: str, rule: Rule, request: Any, response: Any, outcome: str,
        detail: str = "",
    ) -> None:
        if self.auditor is None or rule.audit is None:
            return
        try:
            tenant, obj = rule.audit(request, response)
        except Exception:  # a refused, odd request must not break its own audit
            tenant, obj = "", ""
        self.auditor.record(principal.name, tenant, method, obj, outcome, detail)


def _outcome(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return str(code.name) if isinstance(code, grpc.StatusCode) else str(code)


def _not_in_table(method: str) -> grpc.Status:
    return errors.permission_denied(
        "METHOD_NOT_IN_TABLE", f"{method[:200]} has no entry in the authorisation table", {"method": method[:200]})
