"""The embedded ledger: everything in process memory, guarded by one lock."""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right, insort
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from grid_scheduler.engine.index import IntArray
from grid_scheduler.engine.priority import queue_key
from grid_scheduler.engine.quota import QuotaRules
from grid_scheduler.engine.topology import PoolArrays
from grid_scheduler.model import Assignment, AuditRecord, JobEvent, JobRecord, JobState, PolicyVersion
from grid_scheduler.state.agents import MemoryAgents
from grid_scheduler.state.ledger_delta import add_node_gpus
from grid_scheduler.state.store import (
    CapacityConflict,
    Committed,
    LedgerMoved,
    LedgerSnapshot,
    Limits,
    PolicyMoved,
    Probe,
    QuotaConflict,
    StalePolicy,
    StaleRecord,
    Transition,
    UnknownJob,
    Update,
    Versions,
    request_key,
    to_watts,
)

# The newest events kept for watchers to resume from (Redis keeps its own window); a watcher that
# falls further behind is told so (OUT_OF_RANGE). Bounded so a long-running server stays flat.
MAX_EVENTS = 20_000


_Array = TypeVar("_Array", bound=npt.NDArray[Any])

# Nodes past which a commit's node check is one NumPy pass per pool (below: a loop over the nodes).
_VECTOR_NODES = 32

# Store calls kept in the change log at least (``changed_since``).
CHANGE_LOG = 100_000


def _frozen(array: _Array) -> _Array:
    """``array``, read-only: snapshots share it, so a reader that wrote to it would change the ledger."""
    array.flags.writeable = False
    return array


class MemoryStore(MemoryAgents):
    def __init__(self, limits: Limits) -> None:
        MemoryAgents.__init__(self)  # site agents (state/agents.py)
        self._limits = limits
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        self._job_ids: list[str] = []  # sorted, for paging
        self._by_request: dict[str, str] = {}
        # Indexes, so a queue retry or preemption reads the queue or the running jobs, never every job.
        self._by_state: dict[JobState, set[str]] = {JobState.PENDING: set(), JobState.RUNNING: set()}
        # Ids of the records stored, in order (the last CHANGE_LOG to 2 x CHANGE_LOG of them): the
        # queue pass's index follows the waiting and running sets through it (``changed_since``).
        self._stored_ids: list[str] = []
        self._changed_base = 0  # how many entries were dropped from the front
        self._finished: deque[tuple[float, str]] = deque()  # (finished at, id), for archive_finished
        self._reservations: dict[str, list[Assignment]] = {}
        # The per-pool and per-site arrays and the tenants' rows are copy-on-write too: read-only
        # once committed, replaced by a commit that moves them (``_writable``). A snapshot hands
        # them out as they are, so the snapshot a commit returns, which the committing replica's
        # view adopts (scheduler/ledger_view.py), costs no copy; and a refused commit puts the
        # arrays it found back.
        self._pool_used = _frozen(np.zeros(len(limits.pool_ids), dtype=np.int64))
        # Whole watts, so that release gives back exactly what reserve took.
        self._site_w = _frozen(np.zeros(len(limits.site_ids), dtype=np.int64))
        self._drained = _frozen(np.zeros(len(limits.pool_ids), dtype=np.bool_))
        self._tenant_used: dict[str, IntArray] = {}  # GPUs per pool per tenant: quota usage
        self._unpublished: list[IntArray] = []  # the rows this commit copied, until it publishes them
        self._down = _frozen(np.zeros(len(limits.pool_ids), dtype=np.int64))  # GPUs on failed or drained nodes
        # Per pool (grid order), one entry per node: GPUs reserved there, and out of service.
        # Copy-on-write: the arrays are read-only, and a change replaces the arrays of the pools it
        # touches (PoolArrays shares the rest), so a snapshot hands them out as they are, with no
        # copy of 2,000 arrays, and what a reader holds never changes under it.
        self._node_used = PoolArrays(())
        self._node_out = PoolArrays(())
        if limits.tracks_nodes:
            assert limits.pool_nodes is not None
            used, outs = [], []
            for pool, n in enumerate(limits.pool_nodes):
                used.append(_frozen(np.zeros(int(n), dtype=np.int32)))
                out = np.zeros(int(n), dtype=np.bool_)
                out[list(limits.grid_out_nodes(pool))] = True
                outs.append(_frozen(out))
            self._node_used, self._node_out = PoolArrays(used), PoolArrays(outs)
        self._version = 0
        self._events: list[JobEvent] = []
        self._audit: list[AuditRecord] = []
        self._audit_sequence = 0
        self._first_sequence = 1
        self._sequence = 0
        self._policies: list[PolicyVersion] = []  # version n at index n - 1; the last is active

    # --- commits ---------------------------------------------------------------
    def create_job(self, transition: Transition) -> tuple[JobRecord, bool]:
        record, created = self.commit((), transition)
        assert record is not None
        return record, created

    def apply(
        self, job_id: str, expected_version: int, transition: Transition, quota: QuotaRules | None = None,
        policy_version: int | None = None,
    ) -> JobRecord:
        self.commit((Update(job_id, expected_version, transition),), quota=quota, policy_version=policy_version)
        return transition.record

    def commit(
        self, updates: Sequence[Update], create: Transition | None = None, quota: QuotaRules | None = None,
        policy_version: int | None = None,
    ) -> tuple[JobRecord | None, bool]:
        done = self.commit_delta(updates, create, quota, policy_version)
        return done.record, done.created

    def commit_delta(
        self, updates: Sequence[Update], create: Transition | None = None, quota: QuotaRules | None = None,
        policy_version: int | None = None, expect_ledger: int | None = None, expect_slack: int = 0,
        accept_moved: bool = False,
    ) -> Committed:
        for t in [u.transition for u in updates] + ([create] if create is not None else []):
            for a in t.reserve:
                self._limits.check_nodes(a)
        with self._lock:
            version_before = self._version
            if policy_version is not None and policy_version != len(self._policies):
                raise PolicyMoved(f"decided under policy v{policy_version}; v{len(self._policies)} is active")
            if create is not None:
                new = create.record
                key = request_key(new.spec.tenant, new.request_id) if new.request_id else ""
                existing = self._by_request.get(key) if key else None
                if existing is not None:
                    return Committed(self._jobs[existing], False, -1, -1)
                if new.id in self._jobs:
                    raise StaleRecord(f"job {new.id} exists")
            moved = expect_ledger is not None and not expect_ledger <= self._version <= expect_ledger + expect_slack
            if moved and not accept_moved:
                raise LedgerMoved(Versions(self._version, len(self._policies)), self._snapshot_locked())
            for u in updates:
                current = self._jobs.get(u.job_id)
                if current is None:
                    raise UnknownJob(u.job_id)
                if current.version != u.expected_version:
                    raise StaleRecord(f"job {u.job_id} is at version {current.version}, not {u.expected_version}",
                                      current)
            # Net change: everything released first, then everything reserved, all or nothing.
            released = {u.job_id: (u.transition.record.spec.tenant, self._reservations.get(u.job_id, []))
                        for u in updates if u.transition.release}
            reserve = [(u.transition.record.spec.tenant, a) for u in updates for a in u.transition.reserve]
            if create is not None:
                reserve.extend((create.record.spec.tenant, a) for a in create.reserve)
            # What the commit found: rows are replaced, never written, so this is the quota usage
            # before, and what a refusal puts back (all or nothing, with no undoing step by step).
            found = self._pool_used, self._site_w, self._node_used, self._tenant_used
            self._tenant_used = dict(found[3])
            try:
                for tenant, assignments in released.values():
                    if assignments:
                        self._add(tenant, assignments, -1)
                self._reserve(reserve, quota, found[3])
            except CapacityConflict:
                self._pool_used, self._site_w, self._node_used, self._tenant_used = found
                self._unpublished.clear()
                if moved:  # as on Redis: the caller decides again on the ledger as it is, no read
                    raise LedgerMoved(Versions(self._version, len(self._policies)), self._snapshot_locked()) from None
                raise
            self._publish()
            for u in updates:
                if u.transition.release:
                    self._reservations.pop(u.job_id, None)
                self._store(u.transition)
            gave_back = tuple((tenant, a) for tenant, assignments in released.values() for a in assignments)
            if gave_back or reserve:
                self._version += 1  # once per commit that moved capacity; a refused one moves nothing
            if create is not None:
                insort(self._job_ids, create.record.id)
                if key:
                    self._by_request[key] = create.record.id
                self._store(create)
            # The ledger as this commit left it, whenever it moved: shared arrays, no copy, so the
            # committing replica's view takes it as it is rather than re-deriving it from the moves.
            snap = self._snapshot_locked() if moved or self._version != version_before else None
            return Committed(create.record if create is not None else None, True, version_before, self._version,
                             gave_back, len(self._by_state[JobState.PENDING]), snap if moved else None, snap)

    def _store(self, transition: Transition) -> None:
        record = transition.record
        if transition.reserve:
            self._reservations[record.id] = list(transition.reserve)
        self._jobs[record.id] = record
        self._stored_ids.append(record.id)
        if len(self._stored_ids) > 2 * CHANGE_LOG:
            del self._stored_ids[:CHANGE_LOG]
            self._changed_base += CHANGE_LOG
        for state, ids in self._by_state.items():
            if state is record.state:
                ids.add(record.id)
            else:
                ids.discard(record.id)
        if record.state.is_final:
            self._finished.append((record.updated_at, record.id))
        self._emit(record, transition)

    def archive_finished(self, finished_before_s: float, limit: int = 10_000) -> int:
        archived = 0
        with self._lock:
            while self._finished and archived < limit and self._finished[0][0] < finished_before_s:
                _, job_id = self._finished.popleft()
                record = self._jobs.get(job_id)
                if record is None or not record.state.is_final:
                    continue
                del self._jobs[job_id]
                i = bisect_left(self._job_ids, job_id)
                if i < len(self._job_ids) and self._job_ids[i] == job_id:
                    del self._job_ids[i]
                if record.request_id:
                    self._by_request.pop(request_key(record.spec.tenant, record.request_id), None)
                self._reservations.pop(job_id, None)
                archived += 1
        return archived

    def _reserve(
        self, reserve: Sequence[tuple[str, Assignment]], quota: QuotaRules | None, before: dict[str, IntArray]
    ) -> None:
        """Check every pool, site and quota first, then take: all of it or nothing."""
        if not reserve:
            return
        gpus: dict[int, int] = defaultdict(int)
        watts: dict[int, int] = defaultdict(int)
        for _, a in reserve:
            gpus[self._limits.pool_index[a.pool_id]] += a.gpus
            watts[self._limits.site_index[a.site_id]] += to_watts(a.power_kw)
        for pool, n in gpus.items():
            pool_id = self._limits.pool_ids[pool]
            if self._drained[pool]:
                raise CapacityConflict(f"pool {pool_id} is drained")
            if self._pool_used[pool] + n > self._limits.pool_gpus[pool] - self._down[pool]:
                raise CapacityConflict(f"pool {pool_id}: {n} GPUs do not fit")
        for site, w in watts.items():
            if self._site_w[site] + w > self._limits.site_power_w[site]:
                raise CapacityConflict(f"site {self._limits.site_ids[site]}: {w / 1000:.1f} kW do not fit")
        self._check_nodes_fit(reserve)
        tenants = {t for t, _ in reserve}
        for tenant in tenants:
            self._add(tenant, [a for t, a in reserve if t == tenant], +1)
        if quota is not None:
            why = quota.violation(before, self._tenant_used, tenants)
            if why:
                raise QuotaConflict(why)  # the caller puts back the arrays it found

    def _check_nodes_fit(self, reserve: Sequence[tuple[str, Assignment]]) -> None:
        """No node out of service takes GPUs, and none holds more than it has (after the releases)."""
        if not self._node_used:
            return
        taken: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for _, a in reserve:
            taken[self._limits.pool_index[a.pool_id]].extend(a.nodes)
        assert self._limits.pool_gpus_per_node is not None
        for pool, pairs in taken.items():
            if len(pairs) < _VECTOR_NODES:
                self._check_few_nodes(pool, pairs)
                continue
            # One pass over the pool's node arrays, not a NumPy scalar read per node (a 4,096-GPU
            # gang names 512-1,024 nodes). The same node may come from two assignments.
            index, gpus = np.array(pairs, dtype=np.int64).T
            n = np.bincount(index, weights=gpus, minlength=len(self._node_used[pool]))
            out, used = self._node_out[pool], self._node_used[pool]
            bad = np.flatnonzero((n > 0) & (out | (used + n > int(self._limits.pool_gpus_per_node[pool]))))
            if len(bad):
                self._refuse_node(pool, int(bad[0]), int(n[bad[0]]))

    def _check_few_nodes(self, pool: int, pairs: Sequence[tuple[int, int]]) -> None:
        assert self._limits.pool_gpus_per_node is not None
        taken: dict[int, int] = defaultdict(int)
        for node, gpus in pairs:
            taken[node] += gpus
        out, used, per_node = self._node_out[pool], self._node_used[pool], int(self._limits.pool_gpus_per_node[pool])
        for node in sorted(taken):
            if out[node] or int(used[node]) + taken[node] > per_node:
                self._refuse_node(pool, node, taken[node])

    def _refuse_node(self, pool: int, node: int, gpus: int) -> None:
        pool_id = self._limits.pool_ids[pool]
        if self._node_out[pool][node]:
            raise CapacityConflict(f"pool {pool_id}: node {node} is out of service")
        raise CapacityConflict(f"pool {pool_id}: node {node} cannot take {gpus} more GPUs")

    def _add(self, tenant: str, assignments: Sequence[Assignment], sign: int) -> None:
        """Move the usage by ``assignments``, on this commit's own copies (``_publish`` freezes them)."""
        if self._pool_used.flags.writeable is False:
            self._pool_used, self._site_w = self._pool_used.copy(), self._site_w.copy()
        row = self._tenant_used.get(tenant)
        if row is None:
            row = self._tenant_used[tenant] = np.zeros(len(self._limits.pool_ids), dtype=np.int64)
            self._unpublished.append(row)
        elif row.flags.writeable is False:
            row = self._tenant_used[tenant] = row.copy()
            self._unpublished.append(row)
        moved: dict[int, npt.NDArray[np.int32]] = {}
        for a in assignments:
            pool = self._limits.pool_index[a.pool_id]
            self._pool_used[pool] += sign * a.gpus
            row[pool] += sign * a.gpus
            self._site_w[self._limits.site_index[a.site_id]] += sign * to_watts(a.power_kw)
            if self._node_used and a.nodes:
                if pool not in moved:  # copy-on-write: readers may hold the array being replaced
                    moved[pool] = self._node_used[pool].copy()
                add_node_gpus(moved[pool], a.nodes, sign)
        if moved:  # one replacement for every pool this call moved (one chunk copy per chunk)
            self._node_used = self._node_used.replaced({p: _frozen(nodes) for p, nodes in moved.items()})
        if sign < 0 and not row.any():  # a tenant holding nothing drops out, as snapshots leave it out
            del self._tenant_used[tenant]

    def _publish(self) -> None:
        """What this commit wrote becomes read-only: snapshots share it from now on."""
        _frozen(self._pool_used)
        _frozen(self._site_w)
        for row in self._unpublished:
            _frozen(row)
        self._unpublished.clear()

    def _emit(self, record: JobRecord, transition: Transition) -> None:
        self._sequence += 1
        self._events.append(
            JobEvent(
                sequence=self._sequence,
                job_id=record.id,
                type=transition.event,
                state=record.state,
                time=record.updated_at,
                message=transition.message,
                tenant=record.spec.tenant,
                policy_version=record.policy_version,
            )
        )
        if len(self._events) > MAX_EVENTS:
            drop = len(self._events) - MAX_EVENTS
            del self._events[:drop]
            self._first_sequence += drop
        self._changed.notify_all()

    # --- reads -----------------------------------------------------------------
    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def known_job(self, job_id: str) -> JobRecord | None:
        return self.get_job(job_id)  # in process: what it holds is current, and costs nothing

    def job_by_request(self, tenant: str, request_id: str) -> JobRecord | None:
        with self._lock:
            job_id = self._by_request.get(request_key(tenant, request_id))
            return self._jobs[job_id] if job_id is not None else None

    def list_jobs(self, states: frozenset[JobState], after_id: str, limit: int) -> list[JobRecord]:
        with self._lock:
            out = []
            for job_id in self._job_ids[bisect_right(self._job_ids, after_id) :]:
                record = self._jobs[job_id]
                if not states or record.state in states:
                    out.append(record)
                    if len(out) >= limit:
                        break
            return out

    def pending_jobs(self) -> list[JobRecord]:
        with self._lock:
            pending = [self._jobs[job_id] for job_id in self._by_state[JobState.PENDING]]
        return sorted(pending, key=queue_key)

    def changed_since(self, seq: int) -> tuple[int, list[str] | None]:
        """(position now, ids of the records stored since position ``seq``, oldest first; None
        when the log no longer reaches back that far)."""
        with self._lock:
            now = self._changed_base + len(self._stored_ids)
            if seq < self._changed_base:
                return now, None
            return now, self._stored_ids[seq - self._changed_base:]

    def pending_ids(self) -> frozenset[str]:
        """Ids of the waiting jobs, unordered: what the queue pass compares with its own index."""
        with self._lock:
            return frozenset(self._by_state[JobState.PENDING])

    def running_ids(self) -> frozenset[str]:
        """Ids of the running jobs, unordered (the queue pass indexes the preemptible ones)."""
        with self._lock:
            return frozenset(self._by_state[JobState.RUNNING])

    def running_jobs(self) -> list[JobRecord]:
        with self._lock:
            # Sorting the ids themselves is several times faster than sorting records by a key.
            return [self._jobs[job_id] for job_id in sorted(self._by_state[JobState.RUNNING])]

    def reservation(self, job_id: str) -> list[Assignment]:
        with self._lock:
            return list(self._reservations.get(job_id, []))

    def snapshot(self) -> LedgerSnapshot:
        with self._lock:
            return self._snapshot_locked()

    def _snapshot_locked(self) -> LedgerSnapshot:
        # Every array shared, not copied: all are read-only and replaced by the change that moves them.
        return LedgerSnapshot(self._version, self._pool_used, self._site_w, self._drained,
                              dict(self._tenant_used),
                              self._down, self._node_used, self._node_out)

    def ledger_version(self) -> int:
        return self._version

    def versions(self) -> Versions:
        return Versions(self._version, len(self._policies))

    def probe(self, tenant: str, request_id: str, known_ledger: int) -> Probe:
        with self._lock:  # not re-entrant: read the fields, not through the locking methods
            job_id = self._by_request.get(request_key(tenant, request_id)) if request_id else None
            existing = self._jobs.get(job_id) if job_id is not None else None
            versions = Versions(self._version, len(self._policies))
            fresh = existing is None and versions.ledger != known_ledger
            return Probe(existing, versions, self._snapshot_locked() if fresh else None)

    def set_drained(self, pool_id: str, drained: bool) -> bool:
        pool = self._limits.pool_index[pool_id]
        with self._lock:
            if bool(self._drained[pool]) == drained:
                return False
            changed = self._drained.copy()
            changed[pool] = drained
            self._drained = _frozen(changed)
            self._version += 1
            return True

    def set_pool_down(self, pool_id: str, down_gpus: int) -> bool:
        pool = self._limits.pool_index[pool_id]
        with self._lock:
            if int(self._down[pool]) == down_gpus:
                return False
            changed = self._down.copy()
            changed[pool] = down_gpus
            self._down = _frozen(changed)
            self._version += 1
            return True

    def set_nodes_out(self, pool_id: str, node_indices: Sequence[int]) -> bool:
        pool = self._limits.pool_index[pool_id]
        if not self._node_out:
            return False
        out = np.zeros(len(self._node_out[pool]), dtype=np.bool_)
        indices = sorted(set(node_indices))
        if indices and not 0 <= indices[0] <= indices[-1] < len(out):
            raise ValueError(f"{pool_id} has nodes 0..{len(out) - 1}, not {indices[0]}..{indices[-1]}")
        out[indices] = True
        out[list(self._limits.grid_out_nodes(pool))] = True
        with self._lock:
            if np.array_equal(out, self._node_out[pool]):
                return False
            self._node_out = self._node_out.replaced({pool: _frozen(out)})
            self._version += 1
            return True

    # --- policy history --------------------------------------------------------------
    def apply_policy(self, expected_version: int, entry: PolicyVersion) -> PolicyVersion:
        with self._lock:
            if len(self._policies) != expected_version:
                raise StalePolicy(expected_version, len(self._policies))
            stored = entry.model_copy(update={"version": expected_version + 1})
            self._policies.append(stored)
            return stored

    def get_policy(self, version: int = 0) -> PolicyVersion | None:
        with self._lock:
            n = version or len(self._policies)
            return self._policies[n - 1] if 1 <= n <= len(self._policies) else None

    def policy_history(self, before_version: int, limit: int) -> list[PolicyVersion]:
        with self._lock:
            top = len(self._policies) if before_version <= 0 else min(before_version - 1, len(self._policies))
            return [self._policies[n - 1] for n in range(top, max(top - max(limit, 0), 0), -1)]

    # --- events ----------------------------------------------------------------
    def events_after(self, sequence: int, timeout_s: float) -> list[JobEvent]:
        with self._changed:
            if self._sequence <= sequence and timeout_s > 0:
                self._changed.wait(timeout_s)
            start = max(sequence + 1 - self._first_sequence, 0)
            return self._events[start:]

    def last_sequence(self) -> int:
        return self._sequence

    def first_sequence(self) -> int:
        with self._lock:
            return self._first_sequence  # the next event's sequence while there are none

    # --- audit -------------------------------------------------------------------
    def append_audit(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        with self._lock:
            stored = []
            for record in records:
                self._audit_sequence += 1
                stored.append(record.model_copy(update={"sequence": self._audit_sequence}))
            self._audit.extend(stored)
            if len(self._audit) > MAX_EVENTS:
                del self._audit[: len(self._audit) - MAX_EVENTS]
            return stored

    def audit_after(self, sequence: int, limit: int) -> list[AuditRecord]:
        with self._lock:
            if not self._audit:
                return []
            start = max(0, sequence + 1 - self._audit[0].sequence)
            return self._audit[start : start + max(limit, 0)]

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        with self._changed:
            self._changed.notify_all()
