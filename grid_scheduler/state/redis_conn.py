"""Redis connections for the ledger and the lease: retry-free, short timeouts, failures as StoreUnavailable.

Messages name the store URL only as ``redact(url)`` (state/store_url.py), never the URL.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from grid_scheduler.state.store import StoreAccessDenied, StoreUnavailable
from grid_scheduler.state.store_url import check_url, redact

__all__ = ["ACL_COMMANDS", "CONNECT_TIMEOUT_S", "SOCKET_TIMEOUT_S", "ScriptLane", "guarded", "redact", "redis_client"]

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
    "zadd", "zrem", "zrange", "zrangebylex", "zrangebyscore", "zcard", "xadd",
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


class ScriptLane:
    """The ledger scripts' own way to Redis: connections of ``client``'s pool, but no per-call
    retry wrapper, observability hooks or pool bookkeeping. redis-py 8 spends ~100 µs of Python per
    command on those on this project's dev machine, as much as the loopback round trip itself,
    and every submission and every job end is one script call (benchmarks/README.md, "Store
    throughput"). Replies are read as the client reads them (decoded or not); errors are
    redis-py's own, so ``guarded`` maps them as for any other command.

    Connections are kept in a list (``pop``/``append`` are atomic): one per thread calling at once.
    A connection that failed is dropped; one that Redis closed while idle (a restart) is noticed
    before it is used, as the pool does, so a restart costs no call an error."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._free: list[Any] = []
        self._pid = os.getpid()

    def execute_command(self, *args: Any) -> Any:
        if self._pid != os.getpid():  # a forked child must not share its parent's sockets
            self._free, self._pid = [], os.getpid()
        try:
            conn = self._free.pop()
        except IndexError:
            conn = self._pool.make_connection()
        try:
            # Readable while idle: Redis closed it (the read of its end raises) or a reply was left
            # unread. Start afresh, as the pool does for its own connections.
            stale = conn._sock is not None and conn.can_read()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            conn.disconnect()
        try:
            conn.send_packed_command([_resp(args)], check_health=False)
            reply = conn.read_response()
        except redis.ResponseError:
            self._free.append(conn)  # an error reply was read whole: the connection is fine
            raise
        except BaseException:
            conn.disconnect()  # half a command sent or half a reply read: never reuse it
            raise
        self._free.append(conn)
        return reply

    def close(self) -> None:
        free, self._free = self._free, []
        for conn in free:
            conn.disconnect()


def _resp(args: tuple[Any, ...]) -> bytes:
    """One command in the Redis protocol (RESP): what redis-py's packer sends, in one bytes join."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            b = arg
        elif isinstance(arg, str):
            b = arg.encode()
        else:  # numbers, as redis-py encodes them (a float's repr round-trips)
            b = (repr(arg) if isinstance(arg, float) else str(arg)).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


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
