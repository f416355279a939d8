"""What the scheduler reports as it works: decisions, commits, submissions, batch cycles.

The scheduler calls an ``Observer`` at each of these points and never depends on who listens
(service/metrics.py turns them into Prometheus metrics). Every commit to the ledger goes through
``commit`` or ``apply`` here, so its latency, a lost race and the evictions it carried are
reported once, whichever path made it (submit, queue pass, batch cycle, finish).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from grid_scheduler.engine.quota import QuotaRules
from grid_scheduler.model import JobRecord
from grid_scheduler.state import CapacityConflict, Committed, StaleRecord, Store, Transition, UnknownJob, Update

if TYPE_CHECKING:
    from grid_scheduler.scheduler.batch_commit import OptimizeOutcome

__all__ = ["CONFLICTS", "Follow", "NullObserver", "Observer", "apply", "commit", "commit_delta"]

# Told of each commit a scheduler made (Scheduler.follow): its ledger view follows it.
Follow = Callable[[Committed, Sequence[Transition]], None]

# The refusals that mean "another decision got there first": the caller decides again or waits.
CONFLICTS = (CapacityConflict, StaleRecord, UnknownJob)


class Observer(Protocol):
    def decided(self, seconds: float) -> None:
        """One engine decision (a snapshot in, a placement or reasons out) took ``seconds``."""

    def committed(self, seconds: float, transitions: Sequence[Transition], conflict: str | None) -> None:
        """One commit of ``transitions`` took ``seconds``; ``conflict`` names the refusal (its class), if refused."""

    def submitted(self, record: JobRecord, created: bool) -> None:
        """A submission answered: the job as committed (``created`` False: a retried request id)."""

    def optimized(self, outcome: OptimizeOutcome) -> None:
        """A batch cycle (or OptimizePending call) solved the queue."""


class NullObserver:
    """Listens to nothing: the default, and what the what-if simulator keeps."""

    def decided(self, seconds: float) -> None:
        pass

    def committed(self, seconds: float, transitions: Sequence[Transition], conflict: str | None) -> None:
        pass

    def submitted(self, record: JobRecord, created: bool) -> None:
        pass

    def optimized(self, outcome: OptimizeOutcome) -> None:
        pass


def commit(
    observer: Observer, store: Store, updates: Sequence[Update], create: Transition | None = None,
    quota: QuotaRules | None = None, policy_version: int | None = None, follow: Follow | None = None,
    expect_ledger: int | None = None, expect_slack: int = 0, accept_moved: bool = False,
) -> tuple[JobRecord | None, bool]:
    """``store.commit``, reported to ``observer``, and to ``follow`` (the committing scheduler's
    ledger view) with what it changed. ``expect_ledger``, ``expect_slack``, ``accept_moved``: see
    ``Store.commit_delta``."""
    done = commit_delta(observer, store, updates, create, quota, policy_version, follow, expect_ledger, expect_slack,
                        accept_moved)
    return done.record, done.created


def commit_delta(
    observer: Observer, store: Store, updates: Sequence[Update], create: Transition | None = None,
    quota: QuotaRules | None = None, policy_version: int | None = None, follow: Follow | None = None,
    expect_ledger: int | None = None, expect_slack: int = 0, accept_moved: bool = False,
) -> Committed:
    """``commit``, returning all the store told of it (``Committed``: e.g. how many jobs wait now)."""
    moves = [u.transition for u in updates] + ([create] if create is not None else [])
    start = time.perf_counter()
    try:
        done = store.commit_delta(updates, create, quota, policy_version, expect_ledger, expect_slack, accept_moved)
    except CONFLICTS as e:
        observer.committed(time.perf_counter() - start, moves, type(e).__name__)
        raise
    observer.committed(time.perf_counter() - start, moves, None)
    if follow is not None:
        follow(done, moves)
    return done


def apply(
    observer: Observer, store: Store, job_id: str, expected_version: int, transition: Transition,
    quota: QuotaRules | None = None, policy_version: int | None = None, follow: Follow | None = None,
) -> JobRecord:
    """``store.apply`` (as ``commit`` of one update), reported to ``observer`` and ``follow``."""
    commit(observer, store, (Update(job_id, expected_version, transition),), None, quota, policy_version, follow)
    return transition.record
