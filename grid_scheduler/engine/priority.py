"""The one definition of priority. Online placement, queue retries, the batch optimiser,
preemption and what-if all call this module; none of them orders work on its own.

The rules, in one place:

1. **Tiers are strict.** A job's tier is its ``priority`` (higher first). A waiting job never
   waits for capacity that a job of a lower tier took after it began waiting:
   - a lower-tier job that is *preemptible* may start anywhere (backfill): the waiting job can
     evict it the moment that makes room, so it delays nothing;
   - a lower-tier job that is *not* preemptible may not take GPUs in any pool the waiting job
     could ever use, nor the facility power the waiting job needs at that pool's site
     (``Holds``). It may start where the waiting job could never run.
   - a waiting job that asks for *whole domains* (an NVL72 rack gang) holds racks, not pools:
     in each pool it could use, the domains closest to draining (fewest GPUs reserved; as many
     as it needs, after the tiers above it and the bigger gangs of its tier took theirs). A
     lower-tier job may not take GPUs there; the pool's other domains stay open, since the gang
     can only start on domains that drain whole. Measured: with whole pools held, free GPUs in
     racks other than the draining one sat idle while rack gangs waited (benchmarks/README,
     "Rack-level holds").
2. **Queue order** within a tier is submission order (``queue_key``); a preempted job keeps
   its place (its original submission time), as Slurm and Kueue requeue.
3. **Preemption** (``can_preempt``): only a preemptible job of a strictly lower tier may be
   evicted, and only in the same commit that places the preemptor.
4. **What a placement is worth** (``job_value``): within a tier the batch optimiser maximises
   GPU-hours (GPUs x expected duration, what a grid sells), then minimises the policy's cost.
   Across tiers it is lexicographic: no amount of lower-tier work outweighs one GPU-hour of a
   higher tier (``engine/batch.py`` solves tier by tier, highest first).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from grid_scheduler.engine.feasibility import compute_checks
from grid_scheduler.engine.index import BoolArray, FloatArray, GridIndex, IntArray, Usage
from grid_scheduler.model import JobKind, JobSpec, Policy, TopologyMode
from grid_scheduler.model.job import TrainingSpec

__all__ = [
    "DEFAULT_INFERENCE_HOURS",
    "HOUR_UNITS",
    "Holds",
    "Queued",
    "Shadow",
    "can_preempt",
    "duration_hours",
    "expected_end",
    "job_value",
    "keep_key",
    "queue_key",
    "shadow",
    "tiers_descending",
]

# An inference deployment has no end; for its value it counts this many hours (a day).
DEFAULT_INFERENCE_HOURS = 24.0
# Durations are valued in quarter hours: integers for CP-SAT, fine enough to tell jobs apart.
HOUR_UNITS = 4


class Queued(Protocol):
    """What queue order reads of a job record."""

    @property
    def id(self) -> str: ...

    @property
    def spec(self) -> JobSpec: ...

    @property
    def created_at(self) -> float: ...


def queue_key(record: Queued) -> tuple[int, float, str]:
    """Higher tier first, then submission order, then id (so the order is total)."""
    return (-record.spec.priority, record.created_at, record.id)


class Started(Queued, Protocol):
    @property
    def updated_at(self) -> float: ...


def keep_key(record: Started) -> tuple[int, float, str]:
    """Which running jobs keep their capacity when the grid loses some (what-if's timed changes):
    higher tier first, then the longest running (a running record last changed when it started)."""
    return (-record.spec.priority, record.updated_at, record.id)


def can_preempt(preemptor: JobSpec, victim: JobSpec) -> bool:
    return victim.preemptible and victim.priority < preemptor.priority


def expected_end(started_at: float, spec: JobSpec) -> float:
    """When a run that started at ``started_at`` is expected to end (Unix s): its duration, or a
    deployment's default, after its start. Start-time estimates and queue value read the same hours."""
    return started_at + duration_hours(spec) * 3600.0


def duration_hours(spec: JobSpec) -> float:
    """Expected run time: a training job's estimate (its section's default when absent); a deployment counts a day."""
    if spec.kind is JobKind.INFERENCE:
        return DEFAULT_INFERENCE_HOURS
    return (spec.training or TrainingSpec()).duration_hours


def job_value(spec: JobSpec) -> int:
    """GPU-hours in quarter hours (at least one quarter): what placing this job is worth in its tier."""
    return spec.total_gpus * max(1, math.ceil(duration_hours(spec) * HOUR_UNITS - 1e-9))


def tiers_descending(priorities: Iterable[int]) -> list[int]:
    return sorted(set(priorities), reverse=True)


# Held power is summed in whole microwatts: integer sums do not depend on the order jobs are added
# or removed in, so a queue pass that keeps the holds between passes (adding and removing jobs
# as they come and go) holds exactly what a pass rebuilding them in queue order holds.
UW_PER_KW = 1_000_000_000


@dataclass
class _RackHold:
    """Waiting whole-domain gangs of one tier alike for holds: the same pools, the same GPUs."""

    pools: BoolArray  # the pools they could ever use
    gpus: int  # GPUs each asks for (whole domains)
    jobs: int  # how many wait


@dataclass
class _TierHold:
    pool_jobs: IntArray  # waiting jobs of this tier that hold each whole pool (held while > 0)
    site_uw: IntArray  # facility power held per site (µW): what the tier's waiting jobs need there
    # Whole-domain gangs of this tier: they hold domains, not pools (rule 1), keyed by (pools, GPUs).
    racks: dict[tuple[bytes, int], _RackHold] = field(default_factory=dict)

    def copy(self) -> _TierHold:
        return _TierHold(self.pool_jobs.copy(), self.site_uw.copy(),
                         {k: _RackHold(r.pools, r.gpus, r.jobs) for k, r in self.racks.items()})

    def holds_nothing(self) -> bool:
        return not self.pool_jobs.any() and not self.racks


def _to_uw(site_kw: FloatArray) -> IntArray:
    return np.asarray(np.round(np.asarray(site_kw) * UW_PER_KW), dtype=np.int64)


@dataclass
class Holds:
    """Capacity held for waiting jobs against lower-tier jobs that are not preemptible (rule 1).

    Built in queue order as jobs are found unable to start (``hold_for``); ``overlay`` gives the
    usage a candidate must fit in. What is recorded for a waiting job does not depend on current
    usage (the pools it could ever use, its power need at their sites, and for a whole-domain
    gang its size), so holds stay correct while usage moves and are only rebuilt when the queue
    changes. Which domains a gang holds is read off the usage at each ``overlay``: the ones
    closest to draining then.
    """

    index: GridIndex
    _tiers: dict[int, _TierHold] = field(default_factory=dict)
    # Per priority: (pools held whole, pools with domain holds, site power held) above it.
    _cache: dict[int, tuple[BoolArray, BoolArray, FloatArray]] = field(default_factory=dict)

    def hold_for(self, spec: JobSpec, policy: Policy, shadow_of: Shadow | None = None, jobs: int = 1) -> None:
        """Hold, for the waiting ``spec``, every pool it could ever use and its power there (a
        whole-domain gang: domains in those pools, rule 1).

        ``shadow_of`` is ``shadow(index, spec, policy)`` when the caller has it cached. ``jobs``:
        how many waiting jobs of this spec the call stands for (the power in ``shadow_of`` is
        then theirs together); whole-domain gangs hold domains for each."""
        if spec.priority == 0:
            return  # no tier is lower: nothing to hold against
        self._add(spec, policy, shadow_of, jobs)

    def unhold_for(self, spec: JobSpec, policy: Policy, shadow_of: Shadow | None = None) -> None:
        """Undo one ``hold_for`` of the same spec (the job started or left the queue)."""
        if spec.priority == 0:
            return
        self._add(spec, policy, shadow_of, -1)

    def _add(self, spec: JobSpec, policy: Policy, shadow_of: Shadow | None, sign: int) -> None:
        """``sign``: jobs added (> 0) or removed (< 0)."""
        pools, site_kw = shadow_of if shadow_of is not None else shadow(self.index, spec, policy)
        tier = self._tiers.get(spec.priority)
        if tier is None:
            tier = self._tiers[spec.priority] = _TierHold(np.zeros(len(pools), dtype=np.int64),
                                                          np.zeros(len(site_kw), dtype=np.int64))
        if spec.topology.mode is TopologyMode.WHOLE_DOMAINS:
            key = (np.asarray(pools, dtype=np.bool_).tobytes(), spec.total_gpus)
            rack = tier.racks.get(key)
            if rack is None:
                rack = tier.racks[key] = _RackHold(np.asarray(pools, dtype=np.bool_), spec.total_gpus, 0)
            rack.jobs += sign
            if rack.jobs <= 0:
                del tier.racks[key]
        else:
            tier.pool_jobs += sign * pools.astype(np.int64)
        tier.site_uw += (1 if sign > 0 else -1) * _to_uw(site_kw)
        if sign < 0 and tier.holds_nothing():
            del self._tiers[spec.priority]  # no job of this tier waits: it holds nothing
        self._cache.clear()

    @property
    def empty(self) -> bool:
        """Whether nothing is held (no job waits)."""
        return not self._tiers

    def copy(self) -> Holds:
        return Holds(self.index, {p: t.copy() for p, t in self._tiers.items()})

    def _above(self, priority: int) -> tuple[BoolArray, BoolArray, FloatArray] | None:
        cached = self._cache.get(priority)
        if cached is None:
            tiers = [t for p, t in self._tiers.items() if p > priority]
            if not tiers:
                return None
            pools = np.add.reduce([t.pool_jobs for t in tiers]) > 0
            racked = np.zeros(len(pools), dtype=np.bool_)
            for t in tiers:
                for r in t.racks.values():
                    racked |= r.pools
            site_kw = np.add.reduce([t.site_uw for t in tiers]) / UW_PER_KW
            cached = self._cache[priority] = (np.asarray(pools, dtype=np.bool_), racked & ~pools,
                                              np.asarray(site_kw, dtype=np.float64))
        return cached

    def _gangs_above(self, priority: int) -> Iterator[_RackHold]:
        """Whole-domain gangs of the tiers above ``priority``, in the order they pick domains:
        higher tier first, then bigger gangs (they have fewer choices), then a fixed order."""
        for p in tiers_descending(p for p in self._tiers if p > priority):
            racks = self._tiers[p].racks
            for key in sorted(racks, key=lambda k: (-k[1], k[0])):
                yield racks[key]

    def held_domains(self, usage: Usage, spec: JobSpec) -> dict[int, IntArray]:
        """Domains held against ``spec`` per pool (pools held whole are not listed): for each
        waiting whole-domain gang above it, in the pool where it costs least, the domains with
        the fewest GPUs reserved that no gang before it took. Empty without node detail (then
        the gang's pools are held whole, as ``overlay`` does)."""
        if spec.preemptible or not self._tiers:
            return {}
        held = self._above(spec.priority)
        nodes = usage.nodes(self.index)
        if held is None or nodes is None or not held[1].any():
            return {}
        whole = held[0]
        taken: dict[int, BoolArray] = {}
        for gang in self._gangs_above(spec.priority):
            for _ in range(gang.jobs):
                best: tuple[int, int, IntArray] | None = None
                for p in np.flatnonzero(gang.pools & ~whole).tolist():
                    size = int(nodes.pool_domain_gpus[p])
                    if gang.gpus % size:
                        continue
                    used = size - nodes.domain_free(p)
                    free_of_holds = ~taken.get(p, np.zeros(len(used), dtype=np.bool_))
                    k = gang.gpus // size
                    open_domains = np.flatnonzero(free_of_holds)
                    if len(open_domains) < k:
                        continue
                    pick = open_domains[np.argsort(used[open_domains], kind="stable")[:k]]
                    cost = int(used[pick].sum())
                    if best is None or (cost, p) < best[:2]:
                        best = (cost, p, pick)
                if best is None:
                    break  # no pool has domains left for gangs like this one
                _, p, pick = best
                mask = taken.setdefault(p, np.zeros(len(nodes.domain_free(p)), dtype=np.bool_))
                mask[pick] = True
        return {p: np.flatnonzero(m) for p, m in taken.items()}

    def overlay(self, usage: Usage, spec: JobSpec) -> Usage:
        """The usage ``spec`` must fit in: ``usage`` plus what higher tiers hold against it."""
        if spec.preemptible or not self._tiers:
            return usage
        held = self._above(spec.priority)
        if held is None:
            return usage
        pools, racked, site_kw = held
        domains = self.held_domains(usage, spec)
        if usage.nodes(self.index) is None:
            pools = pools | racked  # no node detail: no domains to hold, so the pools
        # A pool held whole has no free GPUs at pool level, which the engine takes over what its
        # nodes show; held domains are full at node level too, so no node assignment lands there.
        pool_used = np.where(pools, np.maximum(self.index.pool_healthy_gpus, usage.pool_used_gpus),
                             usage.pool_used_gpus)
        if not domains:
            return replace(usage, pool_used_gpus=pool_used, site_used_kw=usage.site_used_kw + site_kw)
        base = usage.nodes(self.index)
        assert base is not None
        node_used = list(usage.node_used_gpus)
        for p, ds in domains.items():
            shape = self.index.pool_shapes[p]
            used = np.array(node_used[p], copy=True)
            for d in ds.tolist():
                used[d * shape.nodes_per_domain : (d + 1) * shape.nodes_per_domain] = shape.gpus_per_node
            node_used[p] = used
            pool_used[p] += int(base.domain_free(p)[ds].sum())
        node_used_gpus = tuple(node_used)
        view = base.updated(node_used_gpus, usage.node_out, list(domains))
        return replace(usage, pool_used_gpus=pool_used, site_used_kw=usage.site_used_kw + site_kw,
                       node_used_gpus=node_used_gpus, node_view_cache=[(node_used_gpus, view)])

    def same_for(self, other: Holds, spec: JobSpec) -> bool:
        """Whether both hold the same capacity against ``spec`` (a policy diff uses it to tell that
        a rule change for one tenant leaves another tenant's decisions alone)."""
        if spec.preemptible:
            return True  # nothing is held against a preemptible job
        mine, theirs = self._above(spec.priority), other._above(spec.priority)
        if mine is None or theirs is None:
            return mine is theirs
        if not all(np.array_equal(a, b) for a, b in zip(mine, theirs, strict=True)):
            return False
        def gangs(h: Holds) -> list[tuple[bytes, int, int]]:
            return [(g.pools.tobytes(), g.gpus, g.jobs) for g in h._gangs_above(spec.priority)]
        return gangs(self) == gangs(other)

    def held_pools(self, spec: JobSpec) -> BoolArray | None:
        """Pools where GPUs are held against ``spec``, whole or some domains (None: none are). A
        preemptor may not evict jobs there either: the waiting higher-tier job could use what they
        free."""
        if spec.preemptible:
            return None
        held = self._above(spec.priority)
        return held[0] | held[1] if held is not None else None


Shadow = tuple[BoolArray, FloatArray]


def shadow(index: GridIndex, spec: JobSpec, policy: Policy) -> Shadow:
    """Pools ``spec`` could ever use (every rule that no change of load can change), and the
    facility power it needs at each site: the most one slot of it draws in a pool there."""
    checks = compute_checks(index, Usage.empty(index), spec, policy, capacity_gpus=index.pool_total_gpus)
    pools = checks.pool_static_ok
    need = np.where(pools, checks.pool_need_kw, 0.0)
    site_kw = np.zeros(len(index.site_ids), dtype=np.float64)
    np.maximum.at(site_kw, index.pool_site, need)
    return np.asarray(pools, dtype=np.bool_), site_kw
