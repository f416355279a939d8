"""Interceptors' wrapped method handlers, built once per method instead of once per call.

grpcio's sync server runs every interceptor's ``intercept_service`` for every call, on its one
polling thread, before the call reaches a worker: each of ours used to build a new
``RpcMethodHandler`` and its closures there, per call, although what it builds depends only on
the method (and on the handler below it). ``HandlerCache`` keeps the wrapped handler per method,
reused while the handler below is the same object; if a layer below ever answered a call with
a new handler, that call is wrapped afresh (correct, only not cached).

Bounded: only methods that have a handler are kept (an unknown method has none), and those are
the server's registered methods.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

__all__ = ["HandlerCache"]


class HandlerCache:
    def __init__(self) -> None:
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrapped(
        self, method: str, inner: grpc.RpcMethodHandler, wrap: Callable[[grpc.RpcMethodHandler], grpc.RpcMethodHandler]
    ) -> grpc.RpcMethodHandler:
        """``wrap(inner)``, from the cache when ``inner`` is the handler it was built on."""
        hit = self._by_method.get(method)
        if hit is not None and hit[0] is inner:
            return hit[1]
        handler = wrap(inner)
        # One writer in practice (grpcio's polling thread); a dict store is atomic in any case.
        self._by_method[method] = (inner, handler)
        return handler
