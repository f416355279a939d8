"""The dry run of a candidate policy on live state: reads the ledger, hands it to the engine's
pure diff (``engine/policy_diff.py``), and changes nothing."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from grid_scheduler.engine.policy_diff import (
    LiveJob,
    PolicyDiff,
    diff_policies,
    holds_under,
    queue_shifts,
    same_holds,
)
from grid_scheduler.engine.priority import Shadow
from grid_scheduler.model import JobRecord, JobState, Policy

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler

# Finished jobs read per store call when looking for the last N submissions.
FINISHED_PAGE = 1_000
FINISHED = frozenset({JobState.COMPLETED, JobState.CANCELLED})


def diff_live(
    s: Scheduler, candidate: Policy, last_finished: int = 0, exhaustive: bool = False
) -> tuple[PolicyDiff, int]:
    """Every pending and running job (and the ``last_finished`` most recent completed or cancelled
    submissions) re-decided under the active policy and under ``candidate``. Returns the diff and
    the active policy version it was compared with. Reserves nothing, writes nothing."""
    with s.lock:
        usage = s.usage()  # first: adopts the active policy, so "before" is what decides today
        current, version = s.policy, s.policy_version
        pending = s.store.pending_jobs()
        running = s.store.running_jobs()
        # What the queue holds under the active policy: built as the scheduler builds it, from the
        # shadows it caches per waiting job; under the candidate, the same unless tenant rules change.
        queue = [r.spec for r in pending]
        current_holds = holds_under(s.index, queue, current, lambda i: s.shadow(pending[i]))
        if same_holds(current, candidate):
            candidate_holds = current_holds
        else:
            candidate_holds = holds_under(s.index, queue, candidate, _reuse(s, pending, current, candidate))
    jobs = [_live(r) for r in running] + [_live(r) for r in pending]
    jobs += [_live(r) for r in _last_finished(s, last_finished)]
    diff = diff_policies(s.index, usage, jobs, current, candidate, current_holds, candidate_holds,
                         exhaustive=exhaustive)
    diff.queue_shifts = queue_shifts(s.index, pending, running, current, candidate)
    return diff, version


def _reuse(
    s: Scheduler, pending: list[JobRecord], current: Policy, candidate: Policy
) -> Callable[[int], Shadow | None]:
    """The cached shadow of a waiting job whose tenant's rule the candidate keeps (None: compute it)."""
    def shadow_of(i: int) -> Shadow | None:
        tenant = pending[i].spec.tenant
        if current.tenant_residency.get(tenant) == candidate.tenant_residency.get(tenant):
            return s.shadow(pending[i])
        return None
    return shadow_of


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
