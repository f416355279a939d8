"""Preemption for a job that cannot start: which running jobs to evict, as one commit.

The engine (``engine/preemption.py``) chooses the cheapest victims; this module gathers the
candidates by the one priority rule (``can_preempt``), keeps out victims whose GPUs a waiting
higher-tier job holds, and hands back the evictions and the placement together. The caller
commits them with ``Store.commit`` as ONE step: a victim is never evicted for a preemptor
that is not placed in the same commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grid_scheduler.engine import Decision, GridIndex, Usage
from grid_scheduler.engine.preemption import choose_victims, release
from grid_scheduler.engine.priority import Holds, can_preempt
from grid_scheduler.engine.quota import policy_rules
from grid_scheduler.model import JobRecord, JobSpec, Placement, Policy


@dataclass(frozen=True)
class Preemption:
    decision: Decision  # with a placement, on the usage after the evictions
    victims: list[JobRecord]


def _pools(index: GridIndex, record: JobRecord) -> list[int]:
    assert record.placement is not None
    return [index.pool_index[a.pool_id] for a in record.placement.assignments]


def plan_preemption(
    index: GridIndex,
    policy: Policy,
    usage: Usage,
    holds: Holds,
    spec: JobSpec,
    running: Sequence[JobRecord],
    now_s: float,
    decide: Callable[[JobSpec, Usage], Decision],
) -> Preemption | None:
    """Victims that make room for ``spec`` and the decision they allow, or None."""
    rules = policy_rules(index, policy)
    reclaim = rules is not None and rules.limited(spec.tenant)
    if spec.priority == 0 and not reclaim:
        return None
    held = holds.held_pools(spec)
    candidates: list[tuple[str, JobSpec, Placement, float]] = []
    records: dict[str, JobRecord] = {}
    reclaimable: set[str] = set()
    for r in running:
        # The queue pass plans for every waiting job over every running one: what rules out most
        # pairs (not preemptible, not below) is read first, the pools only when a rule needs them.
        if r.placement is None or not r.spec.preemptible:
            continue
        if not can_preempt(spec, r.spec):
            if not (reclaim and rules is not None and r.spec.preemptible and rules.may_reclaim(
                    usage.tenant_pool_gpus, spec.tenant, spec.total_gpus, r.spec.tenant, _pools(index, r))):
                continue
            reclaimable.add(r.id)
        elif rules is not None and rules.protects(usage.tenant_pool_gpus, spec.tenant, spec.total_gpus,
                                                  r.spec.tenant, _pools(index, r)):
            continue  # a borrower does not evict a peer within its nominal quota
        if held is not None and any(held[index.pool_index[a.pool_id]] for a in r.placement.assignments):
            continue
        candidates.append((r.id, r.spec, r.placement, r.updated_at))
        records[r.id] = r
    if not candidates:
        return None
    base = holds.overlay(usage, spec)
    victims = choose_victims(index, base, spec, candidates, policy, now_s, reclaimable=frozenset(reclaimable))
    if not victims:
        return None
    chosen = [records[v] for v in victims]
    freed = release(index, base, [r.placement for r in chosen if r.placement is not None],
                    [r.spec.tenant for r in chosen if r.placement is not None])
    decision = decide(spec, freed)
    if decision.placement is None:
        return None
    return Preemption(decision, chosen)
