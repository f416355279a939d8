"""The live state a what-if run starts from: one consistent read of the scheduler's ledger.

A simulation seeded from live state must see a ledger that existed: no job counted both
running and waiting, no GPUs held by a job the read missed. The read is consistent because:

- it runs under the scheduler's lock, so no decision of this process commits in between;
- around the reads (running jobs, queue, usage, drains, policy) it reads the ledger version,
  the active policy version and the last event sequence, and starts again if any of them
  moved. Every job transition writes an event (both stores: the Redis store's Lua commit
  bumps ``event_seq`` in the same script), every change of usage or drains bumps the ledger
  version, and every policy change the policy version; so equal tokens before and after mean
  no other replica committed anything in between either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from grid_scheduler.engine.priority import expected_end
from grid_scheduler.model import Grid, JobRecord, PolicyVersion
from grid_scheduler.scheduler.core import Scheduler

__all__ = ["LiveState", "SnapshotMoved", "read_live", "remaining_s"]

# Re-reads before giving up when other replicas keep committing during the read.
READ_ATTEMPTS = 8


class SnapshotMoved(Exception):
    """The ledger kept changing during every attempt: no consistent read was possible."""


@dataclass(frozen=True)
class LiveState:
    """What runs and waits now, on which grid and under which policy.

    ``running`` is in id order, ``pending`` in queue order; ``read_at`` is Unix seconds."""

    ledger_version: int
    event_sequence: int
    read_at: float
    grid: Grid
    policy: PolicyVersion
    running: tuple[JobRecord, ...]
    pending: tuple[JobRecord, ...]
    drained_pool_ids: tuple[str, ...]


def remaining_s(record: JobRecord, at: float) -> float:
    """A running job's expected run time left at ``at``: 0 once it overran its estimate."""
    assert record.started_at is not None
    return max(expected_end(record.started_at, record.spec) - at, 0.0)


def _tokens(scheduler: Scheduler) -> tuple[int, int, int]:
    versions = scheduler.store.versions()
    return versions.ledger, versions.policy, scheduler.store.last_sequence()


def read_live(scheduler: Scheduler, clock: Callable[[], float] = time.time) -> LiveState:
    """One consistent read of the live state (see the module's docstring for why it is one).

    Raises SnapshotMoved when other replicas changed the ledger during each of
    ``READ_ATTEMPTS`` reads."""
    store = scheduler.store
    with scheduler.lock:
        for _ in range(READ_ATTEMPTS):
            before = _tokens(scheduler)
            read_at = clock()
            running = store.running_jobs()
            pending = store.pending_jobs()
            snap = store.snapshot()
            policy = scheduler.policy_entry(before[1])  # 0: none stored, the built-in one
            if _tokens(scheduler) != before or snap.version != before[0]:
                continue
            drained = tuple(pid for pid, d in zip(scheduler.limits.pool_ids, snap.pool_drained, strict=True) if d)
            return LiveState(before[0], before[2], read_at, scheduler.grid, policy,
                             tuple(running), tuple(pending), drained)
    raise SnapshotMoved(f"the ledger changed during each of {READ_ATTEMPTS} reads")
