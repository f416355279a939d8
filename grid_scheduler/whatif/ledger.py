"""Moving a scheduler's jobs to a new grid: a fresh ledger, and every reservation re-committed.

When the grid changes (a site fails, an envelope is cut, GPUs arrive) the scheduler is
rebuilt for the new grid (its index, limits and an empty in-memory ledger) and the jobs
are carried over *through the ledger's own commit*, which re-checks every pool and site:

- running jobs, highest priority first and then longest-running first, are re-committed
  with their placement unchanged; one that no longer fits (its pool is gone or unhealthy,
  its site's envelope too small) is **displaced**: it goes back to the queue, pending,
  keeping its place (its creation time), with the reasons it waits now;
- pending jobs are carried as they are; operator drains stay drained, and are set only after
  the running jobs are re-committed, so a drain never displaces what runs in the pool.

The same move onto an unchanged grid drops finished jobs from the ledger, which keeps a
long replay's ledger (and the scheduler's pending scan) the size of the live work.
Nothing here decides where a job goes: the scheduler's next ``place_pending`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from grid_scheduler.engine import wait_info
from grid_scheduler.engine.priority import keep_key
from grid_scheduler.model import EventType, Grid, JobRecord, JobState, Policy, WaitInfo
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.core import Decider
from grid_scheduler.state import CapacityConflict, Limits, MemoryStore, Transition

ALL = 1 << 62


def new_scheduler(
    grid: Grid,
    policy: Policy,
    clock: Callable[[], float],
    job_ids: Callable[[], str] | None = None,
    decider: Decider | None = None,
) -> Scheduler:
    """The production scheduler on an in-memory ledger, the given clock and (if given) job ids
    and placement decider (a baseline rule instead of the engine's choice)."""
    store = MemoryStore(Limits.from_grid(grid))
    kwargs: dict[str, Any] = {}
    if job_ids is not None:
        kwargs["job_ids"] = job_ids
    if decider is not None:
        kwargs["decider"] = decider
    return Scheduler(grid, policy, store=store, clock=clock, **kwargs)


@dataclass(frozen=True)
class Carried:
    scheduler: Scheduler
    displaced: list[JobRecord]  # were running; now pending on the new grid


def carry_over(old: Scheduler, grid: Grid, clock: Callable[[], float], why: str = "") -> Carried:
    new = new_scheduler(grid, old.policy, clock, old.job_ids, old.decider)
    limits, store = new.limits, new.store
    drained = old.store.snapshot().pool_drained

    running = old.store.list_jobs(frozenset({JobState.RUNNING}), "", ALL)
    running.sort(key=keep_key)
    displaced: list[JobRecord] = []
    for record in running:
        assert record.placement is not None
        assignments = record.placement.assignments
        if all(a.pool_id in limits.pool_index and a.site_id in limits.site_index for a in assignments):
            try:
                store.create_job(Transition(record, EventType.PLACED, "carried over", reserve=assignments))
                continue
            except CapacityConflict:
                pass
        displaced.append(record)
    # Drains only after the running jobs are back: the ledger refuses commits into a drained
    # pool, and a drain keeps what runs there (it stops only new work).
    for pool_id, is_drained in zip(old.limits.pool_ids, drained, strict=True):
        if is_drained and pool_id in limits.pool_index:
            store.set_drained(pool_id, True)
    for record in old.store.pending_jobs():
        store.create_job(Transition(record, EventType.PENDING, "carried over"))

    requeued = []
    now = clock()
    for record in displaced:
        decision, _ = new.explain(record.spec)
        info = wait_info(new.index, decision, new.policy)
        waiting = WaitInfo(site_counts=info.site_counts, summary=[f"re-queued: {why or 'grid changed'}", *info.summary])
        pending = record.model_copy(update={
            "state": JobState.PENDING, "placement": None, "waiting": waiting, "updated_at": now,
            "version": record.version + 1,
        })
        store.create_job(Transition(pending, EventType.PENDING, f"re-queued: {why or 'grid changed'}"))
        requeued.append(pending)
    return Carried(new, requeued)
