"""The queue pass: every waiting job tried in queue order, with preemption and holds.

One pass, called after anything frees capacity (a completion, a cancel, an undrain), by the
server's periodic retry, and after each batch commit. Jobs are tried in ``queue_key`` order
(the one priority rule), within a tier by fair share when the policy turns it on
(``engine/fairshare.py``, the one fair-share rule); a job that cannot start even by
preempting lower tiers *holds* the capacity it could use against the non-preemptible jobs
of lower tiers after it (``Holds``), so a priority-9 job waiting for 128 GPUs is not starved
by priority-0 jobs taking each GPU that frees up. Preemptible lower-tier jobs still
backfill: the waiting job evicts them as soon as that makes room.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from grid_scheduler.engine import Decision, Usage
from grid_scheduler.engine.fairshare import fair_order
from grid_scheduler.engine.priority import Holds
from grid_scheduler.model import JobRecord, JobState
from grid_scheduler.scheduler import observer, queue_index, transitions
from grid_scheduler.scheduler.preempt import plan_preemption
from grid_scheduler.scheduler.queue_index import JobClass, QueueIndex, QueueKey
from grid_scheduler.state import CapacityConflict, MemoryStore, StaleRecord, UnknownJob, Update

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler


def place_pending(s: Scheduler, full: bool = False) -> list[JobRecord]:
    """Try the waiting jobs in queue order; returns those placed.

    The incremental pass (the default) decides only what could start: its result is the full
    pass's (``full=True``), job for job, in the same order. It runs when no preemption can happen
    in this pass (no running preemptible job below the top waiting tier) and the policy has
    neither fair share nor quotas; otherwise the full pass runs.
    """
    with s.lock:
        s.usage()  # adopt a newly applied policy before the holds below are built under it
        records = None if isinstance(s.store, MemoryStore) else s.store.pending_jobs()
        qi = queue_index.synced(s, records)
        if full or qi.force_full or _needs_full_pass(s) or _preemption_possible(s, qi):
            return full_pass(s, records)
        placed: list[JobRecord] = []
        if not _incremental_pass(s, qi, placed):  # the policy changed under the pass: go on under the new one
            return placed + full_pass(s, None)
        s._holds = qi.holds.copy()
        return placed


def _needs_full_pass(s: Scheduler) -> bool:
    """Fair share orders each tier by per-tenant usage read at the start of each pass, and a quota
    frees for a tenant (or its whole cohort) when a job of it ends anywhere: the incremental pass
    merges classes in ``queue_key`` order and wakes them on capacity alone, so with either on the
    full pass runs."""
    return s.policy.fair_share.enabled or bool(s.policy.quotas.cohorts)


def _preemption_possible(s: Scheduler, qi: QueueIndex) -> bool:
    tiers = qi.tiers()
    if not tiers or tiers[0] == 0:
        return False
    # Jobs placed within the pass are of the tier being tried or higher: none of them can be a victim.
    return bool(queue_index.preemptible_running(s, tiers[0]))


def _incremental_pass(s: Scheduler, qi: QueueIndex, placed: list[JobRecord]) -> bool:
    """Tier by tier, the members of classes that could start, merged in queue order.

    Within a tier the holds overlaid on it (higher tiers only) do not change, and without
    preemption usage only shrinks, at each placement. So a class whose last failure saw the
    usage it would see now is skipped whole; after a placement a failed gang class stays failed
    (fewer GPUs and watts cannot make a gang fit), while a split or replica class, whose greedy
    fill is not monotone, is tried again from the next member once its own usage has changed.
    """
    return all(_tier_pass(s, qi, tier, placed) for tier in qi.tiers())


def _tier_pass(s: Scheduler, qi: QueueIndex, tier: int, placed: list[JobRecord]) -> bool:
    """One tier of ``_incremental_pass``; False when the policy changed under it."""
    classes = [c for c in qi.classes.values() if c.spec.priority == tier and c.members]
    usage = s.usage()
    overlays: dict[bool, Usage] = {}

    def over(c: JobClass) -> Usage:
        held = overlays.get(c.spec.preemptible)
        if held is None:
            held = overlays[c.spec.preemptible] = qi.holds.overlay(usage, c.spec)
        return held

    heap: list[tuple[QueueKey, int, JobClass]] = []
    active: set[int] = set()

    def push(c: JobClass, key: QueueKey | None) -> None:
        if key is not None and id(c) not in active:
            active.add(id(c))
            heapq.heappush(heap, (key, id(c), c))

    for c in classes:
        if not c.fails_on(over(c)):
            push(c, c.members[0])
    while heap:
        key, _, c = heapq.heappop(heap)
        active.discard(id(c))
        now_usage = s.usage()  # the same object unless the ledger moved (another replica's commit)
        if now_usage is not usage:
            if s.policy_version != qi.policy_version:
                return False
            usage = now_usage
            overlays.clear()
        held = over(c)
        if c.fails_on(held):
            continue  # every member up to the next change of usage fails as the last one did
        if c.no_slot(held):
            c.failed_on = c.signature(held) if c.memo_ok else None
            continue  # and so every member up to the next change of usage
        record = s.store.get_job(key[2])
        if record is None or record.state is not JobState.PENDING:
            push(c, c.after(key))  # another replica moved it since the index was read
            continue
        decision = s.decide(record.spec, held)
        if decision.placement is None:
            if c.memo_ok:
                c.failed_on = c.signature(held)
            else:
                push(c, c.after(key))
            continue
        started = _commit(s, record, decision)
        if started is None:
            push(c, c.after(key))  # lost a race to another replica: as the full pass, go on
            continue
        placed.append(started)
        qi.remove(s, record.id)
        usage = s.usage()
        if s.policy_version != qi.policy_version:
            return False
        overlays.clear()
        push(c, c.after(key))
        for d in classes:
            if id(d) not in active and not d.monotone and d.members and not d.fails_on(over(d)):
                push(d, d.after(key))
    return True


def _commit(s: Scheduler, record: JobRecord, decision: Decision) -> JobRecord | None:
    """Start ``record`` as ``decision`` places it (as ``try_start`` does when nothing is evicted)."""
    assert decision.placement is not None
    start = transitions.to_running(record, decision.placement, s.now(), policy_version=s.policy_version)
    try:
        observer.commit(s.observer, s.store, [Update(record.id, record.version, start)], quota=s.quota,
                        policy_version=s.policy_version, follow=s.follow)
    except (CapacityConflict, StaleRecord, UnknownJob):
        return None
    s.log_decision(start.record, decision, [])
    return start.record


def full_pass(s: Scheduler, pending: list[JobRecord] | None = None) -> list[JobRecord]:
    """Try every pending job in queue order; returns those placed.

    Within one pass capacity only shrinks and holds only grow, so once a gang job of some shape
    fails, every later one of the same shape would fail too: a long queue of identical jobs
    costs one decision, not one per job (it still holds its capacity). Only gang jobs are
    skipped so: the greedy fill of a split job or of replicas is not monotone in free capacity.
    """
    placed: list[JobRecord] = []
    failed_shapes: set[str] = set()
    with s.lock:
        s.usage()  # adopt a newly applied policy before the holds below are built under it
        if pending is None:
            pending = s.store.pending_jobs()
        # A waiting job of a tenant with quotas may reclaim from borrowers of any tier.
        preemptors = any(r.spec.priority > 0 or s.may_reclaim(r.spec.tenant) for r in pending)
        fair = s.policy.fair_share.enabled
        running = s.store.running_jobs() if preemptors or fair else []
        if fair:  # within each tier, tenants below their share first (engine/fairshare.py)
            pending = fair_order(pending, running, s.index, s.policy)
        holds = Holds(s.index)
        for record in pending:
            shape = s.shape(record)
            if shape is not None and shape in failed_shapes:
                holds.hold_for(record.spec, s.policy, s.shadow(record))
                continue
            started = try_start(s, record, holds, running)
            if started is None:
                if shape is not None:
                    failed_shapes.add(shape)
                holds.hold_for(record.spec, s.policy, s.shadow(record))
                continue
            record_now, victims = started
            placed.append(record_now)
            gone = {v.id for v in victims}
            running = [r for r in running if r.id not in gone]
            running.append(record_now)
            for victim in victims:  # back in the queue, behind this job: it holds from now on
                holds.hold_for(victim.spec, s.policy, s.shadow(victim))
        s.remember_holds(holds, pending)
    return placed


def try_start(
    s: Scheduler, record: JobRecord, holds: Holds, running: list[JobRecord]
) -> tuple[JobRecord, list[JobRecord]] | None:
    """Start one pending job now, evicting lower tiers if that makes room, as one commit.

    Returns the running record and its victims, or None if it cannot start (or lost a race)."""
    usage = s.usage()
    decision = s.decide(record.spec, holds.overlay(usage, record.spec))
    victims: list[JobRecord] = []
    if decision.placement is None:
        plan = plan_preemption(s.index, s.policy, usage, holds, record.spec, running, s.now(), s.decide)
        if plan is None:
            return None
        decision, victims = plan.decision, plan.victims
    assert decision.placement is not None
    now = s.now()
    updates = [Update(v.id, v.version, transitions.evicted(v, record.id, now, policy_version=s.policy_version))
               for v in victims]
    start = transitions.to_running(record, decision.placement, now, policy_version=s.policy_version)
    updates.append(Update(record.id, record.version, start))
    try:
        observer.commit(s.observer, s.store, updates, quota=s.quota, policy_version=s.policy_version, follow=s.follow)
    except (CapacityConflict, StaleRecord, UnknownJob):
        return None
    s.log_decision(start.record, decision, [v.id for v in victims])
    return start.record, victims
