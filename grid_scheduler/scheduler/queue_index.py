"""What the queue pass remembers between passes: waiting jobs grouped by what decides them.

Jobs whose specs differ only in their name and training duration get the same engine decision
on the same usage (``decide`` reads neither): they form one *class*, kept in queue order. A class
remembers the usage its last failed decision saw, restricted to the pools it could ever use and
their sites (the only usage ``decide`` reads for it), with the holds of higher tiers overlaid.
While that usage is unchanged, any member would fail again, so a pass skips the whole class
without deciding. The usage compared is the ledger's own (``Scheduler.usage``), so commits by
other replicas are seen. A new policy version or grid index forgets everything.

The index also keeps the holds of every waiting job (``Holds`` counts per tier), added and
removed as jobs come and go, instead of rebuilding them job by job in every pass.
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from grid_scheduler.engine.index import FloatArray, IntArray, Usage
from grid_scheduler.engine.online import could_ever_place as engine_could_ever_place
from grid_scheduler.engine.priority import Holds, Shadow, queue_key, shadow
from grid_scheduler.model import JobRecord, JobSpec, JobState, TopologyMode
from grid_scheduler.state import MemoryStore

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler

QueueKey = tuple[int, float, str]
# The engine compares power in whole watts (gangs) or with 1e-6 kW to spare (replicas); a slot
# that lacks more than a watt fails both.
POWER_SLACK_KW = 0.001


def class_key(spec: JobSpec) -> str:
    """Everything of a spec that the engine's decision, holds and preemption read."""
    return spec.model_dump_json(exclude={"name": True, "training": {"duration_hours"}})


@dataclass
class JobClass:
    spec: JobSpec  # a representative member: every member decides as this one does
    shadow: Shadow
    pools: IntArray  # pools any member could ever use
    sites: IntArray  # their sites
    # Gang training: a failed decision stays failed while free GPUs and power only shrink.
    monotone: bool
    # False when a decision is not a pure function of usage (CP-SAT replicas under a time limit).
    memo_ok: bool
    # For a one-pool unit (a gang, or one replica): GPUs per slot, and per pool of ``pools`` the
    # healthy GPUs, the site and a slot's facility power; need_gpus 0 for a split job (no such test).
    need_gpus: int = 0
    pool_healthy: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pool_sites: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pool_envelope_kw: FloatArray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    pool_need_kw: FloatArray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    members: list[QueueKey] = field(default_factory=list)  # in queue order
    failed_on: bytes | None = None  # the restricted usage of the last failed decision

    def signature(self, usage: Usage) -> bytes:
        """Everything a member's decision reads that can change while it waits. A decision that
        comes to read more (a tenant's quota use: the class key holds the tenant) must add it
        here, or a release of it would not wake the class."""
        out = (usage.pool_used_gpus[self.pools].tobytes() + usage.site_used_kw[self.sites].tobytes()
               + usage.pool_drained[self.pools].tobytes())
        if usage.node_used_gpus and self.spec.topology.mode is not TopologyMode.NONE:
            # Whole domains and slices depend on where the used GPUs sit, not only how many there
            # are: a release in one rack and a take in another leave the pool counts as they were.
            # (An unconstrained job's fit follows the pool counts, out-of-service nodes included.)
            out += b"".join(usage.node_used_gpus[p].tobytes() + usage.node_out[p].tobytes() for p in self.pools)
        return out

    def fails_on(self, usage: Usage) -> bool:
        """Proven: a member decided on ``usage`` (overlaid for its tier) gets no placement."""
        return self.memo_ok and self.failed_on is not None and self.failed_on == self.signature(usage)

    def no_slot(self, usage: Usage) -> bool:
        """Proven without deciding: no pool it could use has room for one slot (its GPUs, and its
        power at the site, with a watt to spare), so neither a gang nor any replica can start."""
        if self.need_gpus == 0:
            return False
        room = ((self.pool_healthy - usage.pool_used_gpus[self.pools] >= self.need_gpus)
                & ~usage.pool_drained[self.pools] & (self.pool_healthy > 0))
        if not room.any():
            return True
        headroom_kw = self.pool_envelope_kw - usage.site_used_kw[self.pool_sites]
        return not bool((room & (headroom_kw + POWER_SLACK_KW >= self.pool_need_kw)).any())

    def after(self, key: QueueKey) -> QueueKey | None:
        i = bisect.bisect_right(self.members, key)
        return self.members[i] if i < len(self.members) else None


@dataclass
class QueueIndex:
    policy_version: int
    index_id: int
    holds: Holds
    classes: dict[str, JobClass] = field(default_factory=dict)
    of_job: dict[str, tuple[JobClass, QueueKey]] = field(default_factory=dict)
    force_full: bool = False  # every pass the full one (tests compare the two)
    # Running jobs that are preemptible: id -> priority (only they can ever be evicted).
    preemptible: dict[str, int] = field(default_factory=dict)
    ever_fits: dict[str, bool] = field(default_factory=dict)  # class key -> could_ever_place
    running_seq: int = -1  # position in the store's change log the running index is up to
    pending_seq: int = -1  # and the waiting jobs

    def tiers(self) -> list[int]:
        return sorted({c.spec.priority for c in self.classes.values() if c.members}, reverse=True)

    def add(self, s: Scheduler, record: JobRecord) -> None:
        key = class_key(record.spec)
        cls = self.classes.get(key)
        if cls is None:
            cls = self.classes[key] = _new_class(s, record.spec)
        qk = queue_key(record)
        if not cls.members or cls.members[-1] < qk:
            cls.members.append(qk)  # the common case: submissions arrive in order
        else:
            bisect.insort(cls.members, qk)
        self.of_job[record.id] = (cls, qk)
        self.holds.hold_for(cls.spec, s.policy, cls.shadow)

    def remove(self, s: Scheduler, job_id: str) -> None:
        cls, qk = self.of_job.pop(job_id)
        i = bisect.bisect_left(cls.members, qk)
        assert i < len(cls.members) and cls.members[i] == qk
        del cls.members[i]
        self.holds.unhold_for(cls.spec, s.policy, cls.shadow)


def preemptible_running(s: Scheduler, below: int) -> list[JobRecord]:
    """Running jobs that a job of priority ``below`` may evict (``can_preempt``), in id order as
    ``Store.running_jobs`` lists them: with the in-memory store, from an index kept in step with
    the ledger's running set, so a submission or pass does not read every running job."""
    store = s.store
    if not isinstance(store, MemoryStore):
        return [r for r in store.running_jobs() if r.spec.preemptible and r.spec.priority < below]
    qi = _index_of(s)
    qi.running_seq, changed = store.changed_since(qi.running_seq)
    if changed is None:  # first use, or the log moved on too far: read the running set whole
        qi.preemptible.clear()
        changed = list(store.running_ids())
    for job_id in set(changed):
        record = store.get_job(job_id)
        if record is not None and record.state is JobState.RUNNING and record.spec.preemptible:
            qi.preemptible[job_id] = record.spec.priority
        else:
            qi.preemptible.pop(job_id, None)
    out = []
    for job_id in sorted(j for j, p in qi.preemptible.items() if p < below):
        record = store.get_job(job_id)
        if record is not None and record.state is JobState.RUNNING:
            out.append(record)
    return out


def could_ever_place(s: Scheduler, spec: JobSpec) -> bool:
    """Whether an empty grid could take ``spec`` (``engine.could_ever_place``), once per class and policy."""
    qi = _index_of(s)
    key = class_key(spec)
    fits = qi.ever_fits.get(key)
    if fits is None:
        fits = qi.ever_fits[key] = engine_could_ever_place(s.index, spec, s.policy).placement is not None
    return fits


def _new_class(s: Scheduler, spec: JobSpec) -> JobClass:
    pools_mask, site_kw = shadow(s.index, spec, s.policy)
    pools = np.flatnonzero(pools_mask)
    sites = np.unique(s.index.pool_site[pools])
    memo_ok = spec.inference is None or s.policy.inference_placement != "optimal"
    # One replica is placed iff some pool with room for it covers every demand endpoint (the greedy
    # takes the pool serving the most demand): monotone, like a gang. More replicas are not.
    monotone = spec.gang if spec.inference is None else spec.inference.replicas == 1
    index = s.index
    pool_sites = index.pool_site[pools]
    need_gpus = spec.gpus.count if spec.inference is not None or spec.gang else 0
    return JobClass(spec, (pools_mask, site_kw), pools, sites, monotone=monotone, memo_ok=memo_ok,
                    need_gpus=need_gpus, pool_healthy=index.pool_healthy_gpus[pools], pool_sites=pool_sites,
                    pool_envelope_kw=index.site_envelope_kw[pool_sites],
                    pool_need_kw=index.pool_kw_per_gpu[pools] * spec.gpus.count)


_INDEXES: weakref.WeakKeyDictionary[Scheduler, QueueIndex] = weakref.WeakKeyDictionary()


def force_full_pass(s: Scheduler) -> None:
    """Make every queue pass of ``s`` the full one (the reference the incremental pass must equal)."""
    synced(s, None).force_full = True


def _index_of(s: Scheduler) -> QueueIndex:
    qi = _INDEXES.get(s)
    if qi is None or qi.policy_version != s.policy_version or qi.index_id != id(s.index):
        force = qi.force_full if qi is not None else False
        qi = _INDEXES[s] = QueueIndex(s.policy_version, id(s.index), Holds(s.index), force_full=force)
    return qi


def synced(s: Scheduler, records: list[JobRecord] | None) -> QueueIndex:
    """The index of ``s``, brought up to the ledger's waiting jobs (``records``: all of them, when
    the caller has read them already; else read here, by id when the store can list ids)."""
    qi = _index_of(s)
    if records is None and isinstance(s.store, MemoryStore):
        qi.pending_seq, changed = s.store.changed_since(qi.pending_seq)
        if changed is None:  # first use, or the log moved on too far: compare the waiting set whole
            ids = s.store.pending_ids()
            changed = [*(qi.of_job.keys() - ids), *(ids - qi.of_job.keys())]
        for job_id in sorted(set(changed)):
            record = s.store.get_job(job_id)
            waiting = record is not None and record.state is JobState.PENDING
            if job_id in qi.of_job and not waiting:
                qi.remove(s, job_id)
            elif record is not None and waiting and job_id not in qi.of_job:
                qi.add(s, record)
        return qi
    if records is None:
        records = s.store.pending_jobs()
    by_id = {r.id: r for r in records}
    for gone in [j for j in qi.of_job if j not in by_id]:
        qi.remove(s, gone)
    for job_id, record in by_id.items():
        if job_id not in qi.of_job:
            qi.add(s, record)
    return qi
