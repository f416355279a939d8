"""A lease with a fencing token: one replica at a time runs the batch cycle.

Keys (``{tag}`` is the grid name when given, so the lease shares the grid's cluster slot and a
ledger script may check it; otherwise the lease name):

    gs:{tag}:lease:<name>         string  "<token>:<owner>", expires after ttl_s unless renewed
    gs:{tag}:lease:<name>:fence   int     last token handed out; INCR on every new acquisition

A lease alone does not make a batch cycle safe: a replica can pause (GC, swap, a stopped VM)
past the TTL, another replica takes the lease, and the first one wakes up believing it still
holds it. The fencing token closes that gap: every acquisition gets a larger token, and a
commit is accepted only while the lease holds *that* token. ``RedisStore.fenced(lease, token)``
does the check inside the commit's own Lua script (atomic); ``check(token)`` is the cheap
pre-flight for skipping a cycle early, not a substitute (it can be stale by the time you commit).

Usage by the batch cycle::

    lease = Lease(url, "batch", ttl_s=10, grid_name=grid.name)
    token = lease.acquire()
    if token is not None:
        keeper = LeaseKeeper(lease, token)        # renews every ttl/3; keeper.lost is set if it fails
        store = redis_store.fenced(lease, token)  # commits raise LeaseLost once the lease moved on
        ...
        keeper.stop(); lease.release(token)
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import cast

import structlog

from grid_scheduler.state.redis_conn import guarded, redact, redis_client
from grid_scheduler.state.store import StoreError, StoreUnavailable

log = structlog.get_logger("grid_scheduler.lease")


class LeaseLost(StoreError):
    """The commit was fenced: the lease it was made under is no longer held with its token."""


# KEYS: lease key, fence counter. ARGV: owner, ttl ms. Returns the token, or nil if someone else holds it.
_ACQUIRE = r"""
local holder = redis.call('GET', KEYS[1])
if holder then
  local token, owner = string.match(holder, '^(%d+):(.*)$')
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
return token
"""

# KEYS: lease key. ARGV: "<token>:<owner>", ttl ms.
_RENEW = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lease key. ARGV: "<token>:<owner>".
_RELEASE = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    def __init__(self, redis_url: str, name: str, ttl_s: float, grid_name: str | None = None,
                 owner: str | None = None) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        tag = grid_name or name
        if "{" in tag or "}" in tag:
            raise ValueError(f"{tag!r} cannot be a Redis hash tag")
        self.name = name
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.owner = owner or secrets.token_hex(8)
        self.key = f"gs:{{{tag}}}:lease:{name}"
        self.fence_key = self.key + ":fence"
        self.safe_url = redact(redis_url)
        self._r = redis_client(redis_url)
        self._acquire = self._r.register_script(_ACQUIRE)
        self._renew = self._r.register_script(_RENEW)
        self._release = self._r.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"Lease({self.safe_url!r}, {self.key!r})"

    def _value(self, token: int) -> str:
        return f"{token}:{self.owner}"

    @guarded
    def acquire(self) -> int | None:
        """The fencing token if this owner now holds the lease (new, or already ours), else None."""
        token = self._acquire(keys=[self.key, self.fence_key], args=[self.owner, self.ttl_ms])
        return int(token) if token is not None else None

    @guarded
    def renew(self, token: int) -> bool:
        """Extend the lease by a full TTL; False means it was lost (expired, or someone else holds it)."""
        return bool(self._renew(keys=[self.key], args=[self._value(token), self.ttl_ms]))

    @guarded
    def release(self, token: int) -> bool:
        """Give the lease up now so another replica need not wait for the TTL; False if it was not ours."""
        return bool(self._release(keys=[self.key], args=[self._value(token)]))

    @guarded
    def check(self, token: int) -> bool:
        """Whether the lease is held with ``token`` right now (pre-flight only; see the module doc)."""
        holder = cast(str | None, self._r.get(self.key))
        return holder is not None and holder.partition(":")[0] == str(token)

    @guarded
    def holder(self) -> tuple[int, str] | None:
        """(token, owner) of the current holder, if any."""
        value = cast(str | None, self._r.get(self.key))
        if value is None:
            return None
        token, _, owner = value.partition(":")
        return int(token), owner

    def close(self) -> None:
        self._r.connection_pool.disconnect()


class LeaseKeeper:
    """Renews a held lease every ttl/3 on a daemon thread; sets ``lost`` when it can no longer be sure.

    Lost means: a renewal was refused (someone else holds it, or it expired), or Redis has been
    unreachable for a whole TTL since the last successful renewal (it has expired by then).
    """

    def __init__(self, lease: Lease, token: int) -> None:
        self.lease = lease
        self.token = token
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._interval_s = lease.ttl_ms / 3000.0
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self._interval_s):
            try:
                if not self.lease.renew(self.token):
                    log.warning("lease_lost", lease=self.lease.key, token=self.token)
                    self.lost.set()
                    return
                last_ok = time.monotonic()
            except StoreUnavailable as e:
                if time.monotonic() - last_ok >= self.lease.ttl_ms / 1000.0:
                    log.warning("lease_lost", lease=self.lease.key, token=self.token, error=str(e))
                    self.lost.set()
                    return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
