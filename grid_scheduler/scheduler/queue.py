"""The queue pass: every waiting job tried in queue order, with preemption and holds.

One pass, called after anything frees capacity (a completion, a cancel, an undrain), by the
server's periodic retry, and after each batch commit. Jobs are tried in ``queue_key`` order
(the one priority rule); a job that cannot start even by preempting lower tiers *holds* the
capacity it could use against the non-preemptible jobs of lower tiers after it (``Holds``),
so a priority-9 job waiting for 128 GPUs is not starved by priority-0 jobs taking each GPU
that frees up. Preemptible lower-tier jobs still backfill: the waiting job evicts them as
soon as that makes room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_scheduler.engine.priority import Holds
from grid_scheduler.model import JobRecord
from grid_scheduler.scheduler import observer, transitions
from grid_scheduler.scheduler.preempt import plan_preemption
from grid_scheduler.state import CapacityConflict, StaleRecord, UnknownJob, Update

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler


def place_pending(s: Scheduler) -> list[JobRecord]:
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
        pending = s.store.pending_jobs()
        preemptors = any(r.spec.priority > 0 or s.may_reclaim(r.spec.tenant) for r in pending)
        running = s.store.running_jobs() if preemptors else []
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
        observer.commit(s.observer, s.store, updates, quota=s.quota)
    except (CapacityConflict, StaleRecord, UnknownJob):
        return None
    s.log_decision(start.record, decision, [v.id for v in victims])
    return start.record, victims
