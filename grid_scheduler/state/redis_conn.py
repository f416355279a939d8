"""Redis connections for the ledger and the lease: retry-free, short timeouts, failures as StoreUnavailable."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from grid_scheduler.state.store import StoreUnavailable

SOCKET_TIMEOUT_S = 1.0  # a script over a whole grid takes milliseconds; a second means Redis is in trouble
CONNECT_TIMEOUT_S = 0.5

# Redis replies that mean "not now" rather than "your command is wrong".
_UNAVAILABLE_REPLIES = ("LOADING", "MISCONF", "READONLY", "MASTERDOWN", "NOREPLICAS", "BUSY", "TRYAGAIN", "CLUSTERDOWN")


def redis_client(url: str, socket_timeout_s: float = SOCKET_TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> redis.Redis:
    """A retry-free client with short timeouts: a down Redis fails the call now, not after backoff.

    A pooled connection that Redis closed (restart) is noticed when it is taken from the pool
    and reconnected there, so no retry is needed to recover once Redis is back.
    """
    pool = redis.ConnectionPool.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    return redis.Redis(connection_pool=pool)


def redact(url: str) -> str:
    """The URL without a password, for messages and logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


class _HasUrl(Protocol):
    safe_url: str


S = TypeVar("S", bound=_HasUrl)
P = ParamSpec("P")
R = TypeVar("R")


def guarded(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Turn every way Redis can be unreachable into StoreUnavailable, naming the URL."""

    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise StoreUnavailable(f"redis at {self.safe_url} is unavailable: {e}") from e
        except redis.ResponseError as e:
            if str(e).startswith(_UNAVAILABLE_REPLIES):
                raise StoreUnavailable(f"redis at {self.safe_url} refuses commands now: {e}") from e
            raise

    functools.update_wrapper(wrapper, method)
    return wrapper
