"""The dry run of a candidate policy on live state: reads the ledger, hands it to the engine's
pure diff (``engine/policy_diff.py``), and changes nothing."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from grid_scheduler.engine.policy_diff import LiveJob, PolicyDiff, diff_policies
from grid_scheduler.model import JobRecord, JobState, Policy

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler

# Finished jobs read per store call when looking for the last N submissions.
FINISHED_PAGE = 1_000
FINISHED = frozenset({JobState.COMPLETED, JobState.CANCELLED})


def diff_live(s: Scheduler, candidate: Policy, last_finished: int = 0) -> tuple[PolicyDiff, int]:
    """Every pending and running job (and the ``last_finished`` most recent completed or cancelled
    submissions) re-decided under the active policy and under ``candidate``. Returns the diff and
    the active policy version it was compared with. Reserves nothing, writes nothing."""
    with s.lock:
        usage = s.usage()  # first: adopts the active policy, so "before" is what decides today
        current, version = s.policy, s.policy_version
        pending = s.store.pending_jobs()
        running = s.store.running_jobs()
    jobs = [_live(r) for r in running] + [_live(r) for r in pending]
    jobs += [_live(r) for r in _last_finished(s, last_finished)]
    return diff_policies(s.index, usage, jobs, [r.spec for r in pending], current, candidate), version


def _live(record: JobRecord) -> LiveJob:
    placement = record.placement if record.state is JobState.RUNNING else None
    return LiveJob(record.id, record.spec, record.state.value, placement)


def _last_finished(s: Scheduler, n: int) -> list[JobRecord]:
    """The ``n`` newest completed or cancelled jobs still retained (ids are time-ordered)."""
    if n <= 0:
        return []
    newest: deque[JobRecord] = deque(maxlen=n)
    after = ""
    while True:
        page = s.store.list_jobs(FINISHED, after, FINISHED_PAGE)
        newest.extend(page)
        if len(page) < FINISHED_PAGE:
            return list(newest)
        after = page[-1].id
