"""The one definition of fair share between tenants. The queue pass (online retries), the batch
optimiser, start-time estimates and what-if all order a tier's work through this module, so no
two paths disagree about who goes first.

The rules, in one place (policy section ``fair_share``; off by default, and then nothing here
changes anything: ``fair_order`` is exactly ``queue_key`` order):

1. **Share** (dominant-resource fairness, as Kueue's fair sharing and DRF): a tenant's share is
   the larger of its fraction of the fleet's healthy GPUs and of the fleet's facility power
   envelope, over its running jobs. GPUs and power are the two things an AI grid runs out of;
   a tenant of low-power edge GPUs and one of GB300 racks are compared on what they deplete.
2. **Entitlement** = the tenant's weight / the sum of the weights of the tenants that have work
   (running or waiting): idle tenants do not dilute the others (Kueue and Slurm alike). A tenant
   *below* its entitlement is owed capacity; ``share / weight`` orders tenants the same way as
   ``share / entitlement`` (entitlement is proportional to weight), so order uses the former.
3. **Queue order**: priority tiers stay strictly first (``engine/priority.py``). Within a tier
   tenants take turns by progressive filling: the next job is the head (in ``queue_key`` order)
   of the tenant with the lowest weighted share, counting the jobs ordered ahead of it in this
   pass as if they ran. So a tenant far below its share goes first, and once it has caught up
   the tenants interleave instead of one backlog draining before the other. A tenant's own jobs
   keep their submission order. Shares are read from the ledger once per pass: the order is a
   pure function of (pending jobs, running jobs, grid, policy).
4. **Batch objective**: the optimiser keeps its order of goals (tiers, then GPU-hours), and
   between GPU-hours and placement cost it serves tenants by progressive filling too: each GPU a
   tenant gets costs its weighted share at that point (``convex_steps``), so among answers of
   equal GPU-hours the one that leaves tenants' weighted shares most even wins.
5. **Borrowed** is what a tenant runs above its entitlement, in GPUs (until quotas exist; where a
   nominal quota exists it can define entitlement instead).

A waiting job's power is not known before it is placed; it is charged at the fleet's mean
facility kW per GPU (healthy GPUs) for ordering. Running jobs count what they really draw.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from grid_scheduler.engine.index import GridIndex
from grid_scheduler.engine.priority import Queued, duration_hours, queue_key
from grid_scheduler.model import Placement, Policy

__all__ = [
    "FleetCapacity",
    "Holding",
    "TenantShare",
    "TenantUse",
    "charge",
    "convex_steps",
    "fair_order",
    "fair_shares",
    "share_per_gpu",
    "tenant_usage",
    "weighted_shares",
]


class Holding(Queued, Protocol):
    """What share accounting reads of a running job record."""

    @property
    def placement(self) -> Placement | None: ...


@dataclass(frozen=True)
class FleetCapacity:
    """What shares are fractions of: the fleet's healthy GPUs and facility power envelope."""

    gpus: int
    power_kw: float

    @classmethod
    def of(cls, index: GridIndex) -> FleetCapacity:
        return cls(max(int(index.pool_healthy_gpus.sum()), 1), max(float(index.site_envelope_kw.sum()), 1e-9))

    @classmethod
    def mean_kw_per_gpu(cls, index: GridIndex) -> float:
        healthy = index.pool_healthy_gpus
        total = int(healthy.sum())
        return float(np.dot(healthy, index.pool_kw_per_gpu) / total) if total else 0.0


@dataclass(frozen=True)
class TenantUse:
    gpus: int = 0
    power_kw: float = 0.0

    def plus(self, gpus: int, power_kw: float) -> TenantUse:
        return TenantUse(self.gpus + gpus, self.power_kw + power_kw)

    def dominant_share(self, capacity: FleetCapacity) -> float:
        return max(self.gpus / capacity.gpus, self.power_kw / capacity.power_kw)


@dataclass(frozen=True)
class TenantShare:
    """One tenant's standing (what ``GetFairShare`` and ``grid-scheduler fairshare`` show)."""

    tenant: str
    weight: float
    gpus: int  # GPUs its running jobs hold
    power_kw: float  # facility power its running jobs draw
    share: float  # dominant share of the fleet, 0..1
    entitlement: float  # weight / sum of the weights of tenants with work, 0..1
    borrowed_gpus: int  # GPUs held above entitlement x fleet GPUs
    running_jobs: int
    waiting_jobs: int
    waiting_gpu_hours: float  # GPUs x expected hours of its waiting jobs

    @property
    def weighted_share(self) -> float:
        return self.share / self.weight


def tenant_usage(running: Iterable[Holding]) -> dict[str, TenantUse]:
    """GPUs and facility power each tenant's running jobs hold."""
    use: dict[str, TenantUse] = defaultdict(TenantUse)
    for record in running:
        if record.placement is not None:
            use[record.spec.tenant] = use[record.spec.tenant].plus(record.placement.gpus, record.placement.power_kw)
    return dict(use)


def weighted_shares(index: GridIndex, policy: Policy, running: Iterable[Holding]) -> dict[str, float]:
    """share / weight per tenant that has running work (a tenant missing has 0)."""
    capacity = FleetCapacity.of(index)
    fs = policy.fair_share
    return {t: u.dominant_share(capacity) / fs.weight(t) for t, u in tenant_usage(running).items()}


def fair_shares(
    index: GridIndex, policy: Policy, running: Iterable[Holding], pending: Iterable[Queued]
) -> list[TenantShare]:
    """Every tenant with work (running or waiting), by tenant name."""
    capacity = FleetCapacity.of(index)
    running = list(running)
    use = tenant_usage(running)
    run_count: dict[str, int] = defaultdict(int)
    for record in running:
        run_count[record.spec.tenant] += 1
    wait_count: dict[str, int] = defaultdict(int)
    wait_gpu_hours: dict[str, float] = defaultdict(float)
    for job in pending:
        wait_count[job.spec.tenant] += 1
        wait_gpu_hours[job.spec.tenant] += job.spec.total_gpus * duration_hours(job.spec)
    tenants = sorted(set(run_count) | set(wait_count))
    fs = policy.fair_share
    total_weight = sum(fs.weight(t) for t in tenants)
    out = []
    for tenant in tenants:
        u = use.get(tenant, TenantUse())
        entitlement = fs.weight(tenant) / total_weight
        out.append(TenantShare(
            tenant=tenant, weight=fs.weight(tenant), gpus=u.gpus, power_kw=u.power_kw,
            share=u.dominant_share(capacity), entitlement=entitlement,
            borrowed_gpus=max(0, u.gpus - int(entitlement * capacity.gpus)),
            running_jobs=run_count.get(tenant, 0), waiting_jobs=wait_count.get(tenant, 0),
            waiting_gpu_hours=wait_gpu_hours.get(tenant, 0.0),
        ))
    return out


Q = TypeVar("Q", bound=Queued)


def fair_order(pending: Sequence[Q], running: Iterable[Holding], index: GridIndex, policy: Policy) -> list[Q]:
    """The order a pass tries waiting jobs in (rule 3); ``queue_key`` order when fair share is off."""
    ordered = sorted(pending, key=queue_key)
    if not policy.fair_share.enabled or not ordered:
        return ordered
    capacity = FleetCapacity.of(index)
    kw_per_gpu = FleetCapacity.mean_kw_per_gpu(index)
    fs = policy.fair_share
    charged = weighted_shares(index, policy, running)
    out: list[Q] = []
    start = 0
    while start < len(ordered):
        tier = ordered[start].spec.priority
        end = start
        while end < len(ordered) and ordered[end].spec.priority == tier:
            end += 1
        out.extend(_interleave(ordered[start:end], charged, capacity, kw_per_gpu, fs.weight))
        start = end
    return out


def _interleave(
    tier_jobs: Sequence[Q], charged: dict[str, float], capacity: FleetCapacity, kw_per_gpu: float,
    weight_of: Callable[[str], float],
) -> list[Q]:
    """One tier by progressive filling; ``charged`` (tenant -> weighted share) grows as jobs are
    ordered, so a later tier starts from what this one would take."""
    queues: dict[str, list[Q]] = defaultdict(list)
    for record in tier_jobs:  # already in queue_key order
        queues[record.spec.tenant].append(record)
    heads = {t: 0 for t in queues}
    heap = [(charged.get(t, 0.0), queue_key(q[0]), t) for t, q in queues.items()]
    heapq.heapify(heap)
    out: list[Q] = []
    while heap:
        share, _, tenant = heapq.heappop(heap)
        record = queues[tenant][heads[tenant]]
        out.append(record)
        gpus = record.spec.total_gpus
        share += TenantUse(gpus, gpus * kw_per_gpu).dominant_share(capacity) / weight_of(tenant)
        charged[tenant] = share
        heads[tenant] += 1
        if heads[tenant] < len(queues[tenant]):
            heapq.heappush(heap, (share, queue_key(queues[tenant][heads[tenant]]), tenant))
    return out


def charge(
    weighted: dict[str, float], index: GridIndex, policy: Policy, tenant: str, gpus: int, power_kw: float
) -> None:
    """Add work a pass has just given ``tenant`` to its weighted share (the batch between tiers)."""
    share = TenantUse(gpus, power_kw).dominant_share(FleetCapacity.of(index))
    weighted[tenant] = weighted.get(tenant, 0.0) + share / policy.fair_share.weight(tenant)


def share_per_gpu(index: GridIndex) -> float:
    """The dominant share one more GPU adds (at the fleet's mean kW per GPU), as ``fair_order``
    charges a waiting job; the batch charges its placements the same."""
    return TenantUse(1, FleetCapacity.mean_kw_per_gpu(index)).dominant_share(FleetCapacity.of(index))


def convex_steps(start: float, weight: float, per_gpu: float, max_gpus: int, steps: int) -> list[tuple[int, float]]:
    """Rule 4, the batch objective: a tenant's GPUs placed in a cycle, cut into ``steps`` slices
    of 0..``max_gpus``, each with the weighted share at its middle (``start`` + its GPUs so far,
    over weight). Charged per GPU in increasing order, the cost is convex in a tenant's GPUs, so
    minimising it is progressive filling: a GPU goes to the tenant lowest in weighted share."""
    size = max(1, -(-max_gpus // max(1, steps)))
    out = []
    done = 0
    while done < max_gpus:
        n = min(size, max_gpus - done)
        out.append((n, start + (done + n / 2.0) * per_gpu / weight))
        done += n
    return out
