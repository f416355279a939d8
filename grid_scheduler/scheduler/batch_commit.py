"""The batch cycle: a CP-SAT plan for the whole queue, committed under the same rules as
every other path (queue order, holds), then a queue pass for what the plan left (preemption
for waiting jobs included)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import structlog

from grid_scheduler.engine.batch import BatchResult, solve_batch
from grid_scheduler.engine.fairshare import fair_order, weighted_shares
from grid_scheduler.engine.online import with_nodes
from grid_scheduler.engine.priority import Holds
from grid_scheduler.model import JobRecord, Placement
from grid_scheduler.scheduler import observer, transitions
from grid_scheduler.state import CapacityConflict, StaleRecord, Store, UnknownJob

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler

log = structlog.get_logger("grid_scheduler.scheduler")


@dataclass(frozen=True)
class BatchPlan:
    """What the solver proposes for the queue as it was when the plan was made."""

    pending: list[JobRecord]
    result: BatchResult
    policy_version: int = 0  # the policy the solver planned under


@dataclass(frozen=True)
class OptimizeOutcome:
    """One batch cycle: what the solver proposed, and what was committed."""

    result: BatchResult
    pending_before: int
    committed: list[JobRecord]
    dry_run: bool
    policy_version: int = 0  # the policy the solver planned under


def optimize_pending(
    s: Scheduler, dry_run: bool, time_limit_s: float, workers: int, commit_to: Store | None
) -> OptimizeOutcome:
    plan = plan_pending(s, time_limit_s, workers, dry_run)
    committed = [] if dry_run else commit_plan(s, plan, commit_to)
    return OptimizeOutcome(plan.result, len(plan.pending), committed, dry_run, plan.policy_version)


def plan_pending(s: Scheduler, time_limit_s: float, workers: int, dry_run: bool) -> BatchPlan:
    """A plan for the queue as it is now. Only the snapshot takes the lock: online submissions
    go on while the solver thinks (seconds), and the commit re-checks."""
    with s.lock:
        usage = s.usage()  # first: adopts a newly applied policy
        pending = s.store.pending_jobs()
        policy, policy_version = s.policy, s.policy_version
        shares = None
        if policy.fair_share.enabled:  # the commit goes in this order, as a queue pass would
            running = s.store.running_jobs()
            pending = fair_order(pending, running, s.index, policy)
            shares = weighted_shares(s.index, policy, running)
    # Every waiting job goes to the solver, whole-domain and slice jobs too: the solver plans them
    # only where the racks their commit needs are free (engine/batch_racks.py), and one it leaves
    # waiting holds its racks against lower tiers in the plan, as in the queue (``Holds``).
    plannable = [(r.id, r.spec) for r in pending]
    # partition=False: the partitioned solve forks worker processes, and a gRPC server's process
    # (threads, open channels) must not fork; the single solve handles the sizes a live queue holds.
    result = solve_batch(
        s.index, usage, plannable, policy, time_limit_s=time_limit_s, workers=workers, weighted_shares=shares,
        partition=False,
    )
    s.log.info(
        "batch_solved", pending=len(pending), placed=len(result.placements), status=result.status,
        method=result.method, objective=result.objective, best_bound=result.best_bound,
        gap=round(result.gap, 6), solve_time_s=round(result.solve_time_s, 3), dry_run=dry_run,
        tiers=[(t.priority, t.placed, t.jobs, round(t.gap, 6)) for t in result.tiers], policy_version=policy_version,
    )
    return BatchPlan(pending, result, policy_version)


def commit_plan(s: Scheduler, plan: BatchPlan, commit_to: Store | None = None) -> list[JobRecord]:
    """Commit a plan job by job in queue order. A job that moved since the plan (placed,
    cancelled), no longer fits (capacity taken meanwhile), or would take capacity that a job
    before it in the queue still holds, stays as it is. Then one queue pass (with preemption)."""
    committed: list[JobRecord] = []
    with s.lock:
        s.usage()  # adopts a policy applied since the plan was made
        if s.policy_version != plan.policy_version:
            # A policy applied while the solver thought: the plan is the old policy's answer.
            log.info("batch_plan_dropped", planned_under=plan.policy_version, active=s.policy_version)
            s.place_pending()
            return committed
        holds = Holds(s.index)
        for record in plan.pending:
            placement = plan.result.placements.get(record.id)
            if placement is not None and _respects(s, holds, record, placement):
                running = _commit(s, holds, record, placement, commit_to)
                if running is not None:
                    committed.append(running)
                    continue
            holds.hold_for(record.spec, s.policy, s.shadow(record))
    # Unfenced, like any retry pass: its commits are safe whoever holds the batch lease.
    s.place_pending()
    return committed


def _respects(s: Scheduler, holds: Holds, record: JobRecord, placement: Placement) -> bool:
    """Whether ``placement`` keeps clear of what jobs before ``record`` in the queue hold: pools
    held whole, and power (held domains are checked when ``_commit`` takes nodes)."""
    held = holds.held_pools(record.spec)
    if held is None:
        return True
    usage = holds.overlay(s.usage(), record.spec)
    full = usage.pool_used_gpus >= s.index.pool_healthy_gpus
    if any(full[s.index.pool_index[a.pool_id]] for a in placement.assignments):
        return False
    need = np.zeros(len(s.index.site_ids))
    for a in placement.assignments:
        need[s.index.site_index[a.site_id]] += a.power_kw
    return bool(np.all(usage.site_used_kw + need <= s.index.site_envelope_kw + 1e-6))


def _commit(s: Scheduler, holds: Holds, record: JobRecord, placement: Placement,
            store: Store | None) -> JobRecord | None:
    # Nodes from the usage the holds leave this job: a held domain is full there.
    nodes = holds.overlay(s.usage(), record.spec).nodes(s.index)
    if nodes is not None:  # the ledger keeps node detail: the plan's GPUs take nodes now
        on_nodes = with_nodes(s.index, nodes, record.spec, placement)
        if on_nodes is None:
            return None  # the pool's nodes no longer hold it: the job stays as it is
        placement = on_nodes
    transition = transitions.to_running(record, placement, s.now(), policy_version=s.policy_version)
    try:
        return observer.apply(s.observer, store or s.store, record.id, record.version, transition, s.quota,
                             s.policy_version, follow=s.follow)
    except (CapacityConflict, StaleRecord, UnknownJob):
        return None
