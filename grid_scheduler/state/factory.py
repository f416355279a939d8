"""Choosing a store from a URL: ``memory`` (embedded, the default) or ``redis://host:port/db``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from grid_scheduler.state.memory import MemoryStore
from grid_scheduler.state.store import Limits, Store

if TYPE_CHECKING:
    from grid_scheduler.state.lease import Lease

SCHEMES = ("redis://", "rediss://", "unix://")


def open_store(url: str, limits: Limits, grid_name: str) -> Store:
    """The store ``url`` names; Redis keys are namespaced by ``grid_name`` (``gs:{grid_name}:...``)."""
    if url in ("", "memory", "memory://"):
        return MemoryStore(limits)
    if url.startswith(SCHEMES):
        # Imported here so the embedded default never pays for (or needs) the Redis client.
        from grid_scheduler.state.redis_store import RedisStore

        return RedisStore(limits, url, grid_name)
    raise ValueError(f"unknown store {url!r}: use 'memory' or redis://host:port/db")



@contextmanager
def batch_commit_store(store: Store, lease: Lease | None) -> Iterator[Store | None]:
    """The store a batch cycle commits through, or None when another replica runs the cycle.

    The embedded store has one process: it always may. On Redis only the holder of the
    batch lease may, through a view fenced by its token, so a replica that lost the lease
    (paused past the TTL) cannot commit a stale plan.
    """
    if lease is None:
        yield store
        return
    token = lease.acquire()
    if token is None:
        yield None
        return
    try:
        from grid_scheduler.state.redis_store import RedisStore

        assert isinstance(store, RedisStore)
        yield store.fenced(lease, token)
    finally:
        lease.release(token)


def batch_lease(store: Store, ttl_s: float) -> Lease | None:
    """A lease for the batch cycle when replicas may share ``store``; None for the embedded one."""
    from grid_scheduler.state.redis_store import RedisStore

    if not isinstance(store, RedisStore):
        return None
    from grid_scheduler.state.lease import Lease

    return Lease(store.url, "batch-cycle", ttl_s, grid_name=store.grid_name)
