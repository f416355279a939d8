"""An inference deployment that lost replicas on failed nodes re-places only those (issue 11).

Re-queuing the whole deployment would restart its healthy replicas and leave its users unserved
until the queue pass places it again. Instead the kept assignments stay exactly as they are
(same pools, same nodes) and only the lost ones are decided again, on the ledger as it is with
the lost GPUs released, and committed in one version-checked net-change commit (release the
job's reservation, reserve the kept set plus the new one). The job stays RUNNING on the same
attempt. When no placement keeps every demand endpoint within its SLO the caller re-queues.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from grid_scheduler.engine import GridIndex
from grid_scheduler.engine.feasibility import latency_coverage
from grid_scheduler.engine.index import Usage
from grid_scheduler.engine.online import build_placement
from grid_scheduler.engine.scoring import pool_costs
from grid_scheduler.model import Assignment, Demand, EventType, JobRecord, JobSpec, JobState, Placement
from grid_scheduler.scheduler import observer
from grid_scheduler.state import CapacityConflict, StaleRecord, Transition, UnknownJob, Update

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler

# A commit can lose a race with another change to the job; the caller re-queues after these.
MAX_TRIES = 3

Lost = Callable[[Assignment], bool]


class Outcome(StrEnum):
    REPLACED = "replaced"  # the lost replicas run elsewhere now, the rest where they were
    UNCHANGED = "unchanged"  # the job no longer runs or holds nothing lost (another replica saw to it)
    REQUEUE = "requeue"  # nothing kept, no placement within the SLO, or the ledger refused: re-queue it


def replace_replicas(s: Scheduler, record: JobRecord, lost: Lost, why: str, attempt: int | None = None) -> Outcome:
    """Re-place the assignments of running inference job ``record`` that ``lost`` picks, keeping
    the others byte-identical, in one version-checked commit. With ``attempt``, only while the
    job's run is still that one."""
    with s.lock:
        for _ in range(MAX_TRIES):
            current = s.store.get_job(record.id)
            if current is None or current.placement is None or current.state is not JobState.RUNNING \
                    or (attempt is not None and current.attempts != attempt):
                return Outcome.UNCHANGED
            gone = [a for a in current.placement.assignments if lost(a)]
            kept = [a for a in current.placement.assignments if not lost(a)]
            if not gone:
                return Outcome.UNCHANGED
            if not kept or current.spec.inference is None:
                return Outcome.REQUEUE
            placement = _placement(s, current.spec, kept, gone)
            if placement is None:
                return Outcome.REQUEUE
            moved = ", ".join(f"{a.gpus} {a.gpu_type} in {a.pool_id}" for a in placement.assignments[len(kept):])
            message = f"replica re-placed after {why}: {moved}"
            new = current.model_copy(update={
                "placement": placement, "updated_at": s.now(), "version": current.version + 1,
                "policy_version": s.policy_version,
            })
            try:
                observer.commit(s.observer, s.store, [Update(current.id, current.version, Transition(
                    new, EventType.PLACED, message, reserve=placement.assignments, release=True))],
                    quota=s.quota, policy_version=s.policy_version, follow=s.follow)
            except StaleRecord:
                continue  # changed meanwhile: judged again on the new version
            except UnknownJob:
                return Outcome.UNCHANGED
            except CapacityConflict:  # e.g. a kept share on a node drained since: the whole job moves
                return Outcome.REQUEUE
            s.log.warning("replicas_replaced", job_id=current.id, why=why, kept=len(kept), moved=moved)
            return Outcome.REPLACED
    return Outcome.REQUEUE


def _placement(s: Scheduler, spec: JobSpec, kept: list[Assignment], gone: list[Assignment]) -> Placement | None:
    """The kept assignments plus new ones for the lost replicas, every endpoint within the SLO."""
    assert spec.inference is not None
    index = s.index
    replicas = sum(a.gpus for a in gone) // spec.gpus.count
    usage = released(s.usage(), index, spec.tenant, gone)
    cover = latency_coverage(index, spec)
    kept_sites = [index.site_index[a.site_id] for a in kept]
    demand = spec.inference.demand
    uncovered = [d for e, d in enumerate(demand) if not cover[e, kept_sites].any()]
    for wanted in _demand_tries(uncovered, demand):
        sub = spec.model_copy(update={"inference": spec.inference.model_copy(
            update={"replicas": replicas, "demand": wanted})})
        decision = s.decide(sub, usage)
        if decision.placement is None:
            continue
        # The whole set as the engine would report it (score, endpoint latencies, carbon, cost);
        # its assignments are the kept ones, untouched, then the new ones with their nodes.
        new = decision.placement.assignments
        pools_gpus = [(index.pool_index[a.pool_id], a.gpus) for a in [*kept, *new]]
        whole = build_placement(index, spec, s.policy, pool_costs(index, decision.checks, spec, s.policy), pools_gpus)
        merged = whole.model_copy(update={"assignments": [*kept, *new]})
        if all(e.latency_ms <= spec.inference.latency_slo_ms for e in merged.endpoint_latencies):
            return merged
    return None


def _demand_tries(uncovered: list[Demand], demand: Sequence[Demand]) -> list[list[Demand]]:
    """The endpoints the new replicas must serve: those the kept ones leave out of the SLO. When
    the kept ones serve every endpoint, the new replicas still go where they serve demand: all of
    it if they can, else the heaviest endpoint (the greedy needs some demand to aim at)."""
    if uncovered:
        return [uncovered]
    heaviest = max(demand, key=lambda d: d.weight)
    return [list(demand), [heaviest]]


def released(usage: Usage, index: GridIndex, tenant: str, gone: Sequence[Assignment]) -> Usage:
    """``usage`` without the GPUs and power of ``gone`` (the job's own lost reservations): what the
    net-change commit will see. A failed node stays out of service, so nothing lands there again."""
    pool_used = usage.pool_used_gpus.copy()
    site_kw = usage.site_used_kw.copy()
    tenants = dict(usage.tenant_pool_gpus)
    row = tenants[tenant].copy() if tenant in tenants else None
    node_used = [n.copy() for n in usage.node_used_gpus]
    for a in gone:
        p = index.pool_index[a.pool_id]
        pool_used[p] -= a.gpus
        site_kw[index.site_index[a.site_id]] -= a.power_kw
        if row is not None:
            row[p] -= a.gpus
        if node_used:
            for i, g in a.nodes:
                node_used[p][i] -= g
    if row is not None:
        tenants[tenant] = row
    return replace(usage, pool_used_gpus=np.maximum(pool_used, 0), site_used_kw=site_kw, tenant_pool_gpus=tenants,
                   node_used_gpus=tuple(node_used), node_view_cache=[])
