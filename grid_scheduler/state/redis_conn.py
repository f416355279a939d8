"""Redis connections for the ledger and the lease: retry-free, short timeouts, failures as StoreUnavailable.

Messages name the store URL only as ``redact(url)`` (state/store_url.py), never the URL.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from grid_scheduler.state.store import StoreAccessDenied, StoreUnavailable
from grid_scheduler.state.store_url import check_url, redact

__all__ = ["ACL_COMMANDS", "CONNECT_TIMEOUT_S", "SOCKET_TIMEOUT_S", "guarded", "redact", "redis_client"]

SOCKET_TIMEOUT_S = 1.0  # a script over a whole grid takes milliseconds; a second means Redis is in trouble
CONNECT_TIMEOUT_S = 0.5

# Redis replies that mean "not now" rather than "your command is wrong".
# An ACL refusal inside a Lua script comes back as a plain error (Redis 7.0) rather than NOPERM.
# Redis 7.0 says the first, Valkey (and newer Redis) the second.
_SCRIPT_DENIED = ("The user executing the script can't", "ACL failure in script")
_UNAVAILABLE_REPLIES = ("LOADING", "MISCONF", "READONLY", "MASTERDOWN", "NOREPLICAS", "BUSY", "TRYAGAIN", "CLUSTERDOWN")


# Every command the store and the lease send, and every command their Lua scripts call: an ACL
# user limited to these (and to keys ``~gs:*``) can run a replica. README, "Running with Redis";
# tests/test_redis_security.py checks every ``redis.call`` in state/ is listed, and runs under it.
ACL_COMMANDS = (
    "ping", "evalsha", "script|load", "multi", "exec",                       # the client itself
    "get", "mget", "set", "hget", "hgetall", "xread", "xrange",               # direct reads and writes
    "hmget", "hset", "hdel", "hincrby", "incr", "incrby", "pexpire", "del", "exists",  # inside the scripts
    "zadd", "zrem", "zrange", "zrangebylex", "zrangebyscore", "xadd",
    "hsetnx", "sadd", "srem", "smembers",  # site agents and node drains (state/agents_redis.py)
    "bitfield", "getrange", "setrange",  # per-node usage and out-of-service nodes (state/redis_store.py)
)


def redis_client(url: str, socket_timeout_s: float = SOCKET_TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, decode: bool = True) -> redis.Redis:
    """A retry-free client with short timeouts: a down Redis fails the call now, not after backoff.

    A pooled connection that Redis closed (restart) is noticed when it is taken from the pool
    and reconnected there, so no retry is needed to recover once Redis is back. A URL that
    ``check_url`` refuses raises ValueError naming the redacted URL.
    """
    check_url(url)
    try:
        pool = redis.ConnectionPool.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=decode,
        )
    except ValueError as e:  # redis-py's own messages name a parameter, never its value: still, no chain
        raise ValueError(f"{redact(url)}: {e}") from None
    return redis.Redis(connection_pool=pool)


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
        except redis.AuthenticationError as e:  # before ConnectionError, its base class
            raise StoreAccessDenied(f"redis at {self.safe_url} refused the user and password: {e}") from e
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            raise StoreUnavailable(f"redis at {self.safe_url} is unavailable: {e}") from e
        except redis.ResponseError as e:  # NoPermissionError included
            if isinstance(e, redis.exceptions.NoPermissionError) or str(e).startswith("NOPERM") \
                    or any(marker in str(e) for marker in _SCRIPT_DENIED):
                raise StoreAccessDenied(
                    f"redis at {self.safe_url} denied a command to this user (its ACL needs the commands in "
                    f"README 'Running with Redis'): {e}") from e
            if str(e).startswith(_UNAVAILABLE_REPLIES):
                raise StoreUnavailable(f"redis at {self.safe_url} refuses commands now: {e}") from e
            raise

    functools.update_wrapper(wrapper, method)
    return wrapper
