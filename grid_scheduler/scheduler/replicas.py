"""An inference deployment that lost replicas on failed nodes re-places only those (issue 11).

Re-queuing the whole deployment would restart its healthy replicas and leave its users unserved
until the queue pass places it again. Instead the kept assignments stay exactly as they are
(same pools, same nodes) and only the lost ones are decided again, on the ledger as it is with
the lost GPUs released, and committed in one version-checked net-change commit (release the
job's reservation, reserve the kept set plus the new one). The job stays RUNNING on the same
attempt. When no placement keeps every demand endpoint within its SLO the caller re-queues.

What is lost is whole assignments (a site lost, or a failure the site's agent reported for the
job) or the replicas on failed nodes. An assignment holds all of a deployment's replicas in one
pool; its replicas are its GPUs taken in node order, GPUs-per-replica at a time (``replica_nodes``).
The engine puts each replica on one node when they fit so (engine/topology.py
``assign_replica_nodes``), and then a failed node costs exactly the replicas on it; where a replica
straddles nodes, every replica touching a failed node is counted lost (conservative), and the
GPUs it held on healthy nodes are given up with it. The rest of the assignment stays: same pool,
its other nodes' shares unchanged, fewer GPUs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from grid_scheduler.engine import GridIndex
from grid_scheduler.engine.feasibility import latency_coverage
from grid_scheduler.engine.index import Usage
from grid_scheduler.engine.online import build_placement
from grid_scheduler.engine.scoring import pool_costs
from grid_scheduler.engine.topology import NodeView
from grid_scheduler.model import Assignment, Demand, EventType, JobRecord, JobSpec, JobState, Placement
from grid_scheduler.scheduler import observer
from grid_scheduler.state import CapacityConflict, StaleRecord, Transition, UnknownJob, Update

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler

# A commit can lose a race with another change to the job; the caller re-queues after these.
MAX_TRIES = 3

Lost = Callable[[Assignment], bool]
# Pool id -> indices of its failed nodes.
FailedNodes = Mapping[str, Set[int]]


class Outcome(StrEnum):
    REPLACED = "replaced"  # the lost replicas run elsewhere now, the rest where they were
    UNCHANGED = "unchanged"  # the job no longer runs or holds nothing lost (another replica saw to it)
    REQUEUE = "requeue"  # nothing kept, no placement within the SLO, or the ledger refused: re-queue it


def replace_replicas(
    s: Scheduler, record: JobRecord, lost: Lost, why: str, attempt: int | None = None, *,
    failed_nodes: FailedNodes | None = None, avoid_site: str | None = None,
) -> Outcome:
    """Re-place the assignments of running inference job ``record`` that ``lost`` picks, and the
    replicas on ``failed_nodes``, keeping the rest byte-identical, in one version-checked commit.
    With ``attempt``, only while the job's run is still that one. ``avoid_site``: a site no new
    replica may go to, whatever the ledger says of it (a lost site, which the what-if simulator
    takes out of its grid only after this transition)."""
    with s.lock:
        for _ in range(MAX_TRIES):
            current = s.store.get_job(record.id)
            if current is None or current.placement is None or current.state is not JobState.RUNNING \
                    or (attempt is not None and current.attempts != attempt):
                return Outcome.UNCHANGED
            kept, gone = split(s.index, current.spec.gpus.count, current.placement.assignments, lost, failed_nodes)
            if not gone:
                return Outcome.UNCHANGED
            if not kept or current.spec.inference is None:
                return Outcome.REQUEUE
            placement = _placement(s, current.spec, kept, gone, avoid_site)
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


def replica_nodes(a: Assignment, replica_gpus: int) -> list[tuple[tuple[int, int], ...]]:
    """The replicas of assignment ``a``, each as its (node, GPUs) pairs: the assignment's GPUs in
    node order, ``replica_gpus`` at a time. One node per replica when the engine could place them
    so; a replica spans two or more nodes only where the free GPUs were scattered."""
    out: list[tuple[tuple[int, int], ...]] = []
    current: list[tuple[int, int]] = []
    need = replica_gpus
    for node, gpus in a.nodes:
        while gpus:
            take = min(gpus, need)
            current.append((node, take))
            gpus -= take
            need -= take
            if need == 0:
                out.append(tuple(current))
                current, need = [], replica_gpus
    if current:  # GPUs not a whole replica (never from the engine): they go with the last one
        out.append(tuple(current))
    return out


def _summed(index: GridIndex, a: Assignment, parts: list[tuple[int, int]]) -> Assignment:
    """``a`` holding just ``parts`` (node, GPUs), with the power the engine reckons for that many GPUs."""
    nodes: dict[int, int] = {}
    for node, gpus in parts:
        nodes[node] = nodes.get(node, 0) + gpus
    gpus = sum(nodes.values())
    power_kw = gpus * float(index.pool_kw_per_gpu[index.pool_index[a.pool_id]])
    return a.model_copy(update={"gpus": gpus, "power_kw": power_kw, "nodes": tuple(sorted(nodes.items()))})


def split(
    index: GridIndex, replica_gpus: int, assignments: Sequence[Assignment], lost: Lost,
    failed_nodes: FailedNodes | None = None,
) -> tuple[list[Assignment], list[Assignment]]:
    """What stays (in the placement's order, an assignment that lost replicas keeping its place,
    its untouched nodes' shares as they were) and what goes (whole assignments, or the replicas
    on failed nodes as parts of their assignment)."""
    kept: list[Assignment] = []
    gone: list[Assignment] = []
    for a in assignments:
        failed = failed_nodes.get(a.pool_id, ()) if failed_nodes else ()
        if lost(a):
            gone.append(a)
        elif not any(i in failed for i, _ in a.nodes):
            kept.append(a)
        elif a.gpus % replica_gpus:
            gone.append(a)  # not whole replicas (never from the engine): no layout to keep
        else:
            layout = replica_nodes(a, replica_gpus)
            hit = [any(i in failed for i, _ in r) for r in layout]
            if not all(hit):
                kept.append(_summed(index, a, [p for r, h in zip(layout, hit, strict=True) if not h for p in r]))
            gone.append(_summed(index, a, [p for r, h in zip(layout, hit, strict=True) if h for p in r]))
    return kept, gone


def _placement(
    s: Scheduler, spec: JobSpec, kept: list[Assignment], gone: list[Assignment], avoid_site: str | None = None,
) -> Placement | None:
    """The kept assignments plus new ones for the lost replicas, every endpoint within the SLO."""
    assert spec.inference is not None
    index = s.index
    replicas = sum(a.gpus for a in gone) // spec.gpus.count
    usage = released(s.usage(), index, spec.tenant, gone, avoid_site)
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


def released(
    usage: Usage, index: GridIndex, tenant: str, gone: Sequence[Assignment], avoid_site: str | None = None,
) -> Usage:
    """``usage`` without the GPUs and power of ``gone`` (the job's own lost reservations): what the
    net-change commit will see. A failed node stays out of service, so nothing lands there again;
    nor on ``avoid_site``, whose pools are taken as drained."""
    drained = usage.pool_drained
    if avoid_site is not None and avoid_site in index.site_index:
        drained = drained | (index.pool_site == index.site_index[avoid_site])
    pool_used = usage.pool_used_gpus.copy()
    site_kw = usage.site_used_kw.copy()
    tenants = dict(usage.tenant_pool_gpus)
    row = tenants[tenant].copy() if tenant in tenants else None
    # Only the pools the job lost GPUs in change: their node arrays are copied and their part of
    # the node view recomputed (NodeView.updated), not every pool's (72,754 nodes on nscale).
    touched = sorted({index.pool_index[a.pool_id] for a in gone})
    view = usage.nodes(index) if usage.node_used_gpus else None
    node_used = list(usage.node_used_gpus)
    for p in touched:
        if node_used:
            node_used[p] = node_used[p].copy()
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
    nodes = tuple(node_used)
    cache: list[tuple[object, NodeView]] = []
    if view is not None:
        cache.append((nodes, view.updated(nodes, usage.node_out, touched)))
    return replace(usage, pool_used_gpus=np.maximum(pool_used, 0), site_used_kw=site_kw, pool_drained=drained,
                   tenant_pool_gpus=tenants, node_used_gpus=nodes, node_view_cache=cache)
