"""Choosing a store from a URL: ``memory`` (embedded, the default) or ``redis://host:port/db``."""

from __future__ import annotations

from grid_scheduler.state.memory import MemoryStore
from grid_scheduler.state.store import Limits, Store

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
