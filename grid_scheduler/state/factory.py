"""Choosing a store from a URL: ``memory`` (embedded, the default) or ``redis[s]://[user:password@]host:port/db``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from grid_scheduler.model import Grid
from grid_scheduler.state.memory import MemoryStore
from grid_scheduler.state.store import Limits, Store
from grid_scheduler.state.store_url import redact

if TYPE_CHECKING:
    from grid_scheduler.state.lease import Lease

SCHEMES = ("redis://", "rediss://", "unix://")


class GridMismatch(ValueError):
    """A replica loaded another grid than the one the shared ledger was started with."""


def grid_fingerprint(grid: Grid) -> str:
    """SHA-256 of the grid's content (as validated, so formatting and comments do not count)."""
    return hashlib.sha256(grid.model_dump_json().encode()).hexdigest()


def open_store(url: str, limits: Limits, grid_name: str, grid_sha256: str = "", replace_grid: bool = False) -> Store:
    """The store ``url`` names; Redis keys are namespaced by ``grid_name`` (``gs:{grid_name}:...``).

    On Redis, the first replica records ``grid_sha256``; a replica whose grid differs is refused
    (GridMismatch), unless ``replace_grid``, which records the new grid (rolling a new grid file)."""
    if url in ("", "memory", "memory://"):
        return MemoryStore(limits)
    if url.startswith(SCHEMES):
        # Imported here so the embedded default never pays for (or needs) the Redis client.
        from grid_scheduler.state.redis_store import RedisStore

        store = RedisStore(limits, url, grid_name)
        if grid_sha256:
            recorded = store.claim_grid(grid_sha256)
            if recorded != grid_sha256 and replace_grid:
                store.replace_grid(grid_sha256)
            elif recorded != grid_sha256:
                store.close()
                raise GridMismatch(
                    f"the ledger for grid {grid_name!r} at {store.safe_url} was started with grid {recorded[:12]}, "
                    f"but this replica loaded grid {grid_sha256[:12]}: start every replica with the same grid "
                    "file, or roll a new one with --replace-grid (README, 'Changing the grid')"
                )
        return store
    raise ValueError(f"unknown store {redact(url)!r}: use 'memory', redis://[user:password@]host:port/db "
                     "or rediss://... (TLS)")



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
    return store.lease("batch-cycle", ttl_s)
