"""The reservations ledger's contract: jobs, what they hold, drains and events.

A store is the one place where capacity is committed. Decisions are made on a
snapshot; the store re-checks the limits when it commits, so two deciders that
raced cannot both win the last GPUs (they get ``CapacityConflict`` and decide again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from grid_scheduler.model import (
    Assignment,
    AuditRecord,
    EventType,
    Grid,
    JobEvent,
    JobRecord,
    JobState,
    PolicyVersion,
)
from grid_scheduler.state.agents import AgentStore

if TYPE_CHECKING:
    from grid_scheduler.engine.quota import QuotaRules


def to_watts(power_kw: float) -> int:
    """The ledger counts whole watts: integer sums never drift, so release undoes reserve exactly."""
    return round(power_kw * 1000.0)


class StoreError(Exception):
    """Base for the ledger's refusals."""


class CapacityConflict(StoreError):
    """A reservation no longer fits: another decision took the capacity first."""


class QuotaConflict(CapacityConflict):
    """A reservation would break a tenant's quota (engine/quota.py) as the ledger stands now:
    another decision, maybe on another replica, used the quota first. Retried like any conflict."""


class PolicyMoved(CapacityConflict):
    """The decision was made under a policy version that is no longer the active one (another
    replica applied a policy since): decide again under the new one. Without this, a replica one
    decision behind could commit under old quota limits and overshoot the new ones."""


class StaleRecord(StoreError):
    """The job changed since it was read; re-read and decide again.

    ``current``: the job as the store holds it now, when the refusal could bring it along (a
    commit of one update: the caller decides again on it without another read)."""

    def __init__(self, message: str, current: JobRecord | None = None) -> None:
        super().__init__(message)
        self.current = current


class UnknownJob(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The backing service cannot be reached; nothing was written."""


class StoreAccessDenied(StoreUnavailable):
    """The backing service refused this client's credentials or a command (ACL); nothing was written.

    A configuration error rather than an outage, but handled alike: callers get UNAVAILABLE and
    the service recovers by itself once the credentials or the ACL are fixed."""


class StalePolicy(StoreError):
    """The active policy is no longer the version the caller expected; nothing was written."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"the active policy is version {current}, not {expected}")
        self.expected = expected
        self.current = current


@dataclass(frozen=True)
class Versions:
    """The ledger version and the active policy version, read together in one round trip so the
    scheduler notices a policy applied on another replica before its next decision for free."""

    ledger: int
    policy: int


class LedgerMoved(CapacityConflict):
    """A commit that expected the ledger at a version (the view its decision was made on, not
    re-read before it) found it moved: the decision may have missed another replica's change.
    Nothing was written. It carries what the caller needs to decide again without another read:
    the versions now and the snapshot at them (Scheduler.submit: one round trip per submission
    while the view is current, two when it was not)."""

    def __init__(self, versions: Versions, snapshot: LedgerSnapshot) -> None:
        super().__init__(f"the ledger is at version {versions.ledger}")
        self.versions = versions
        self.snapshot = snapshot


@dataclass(frozen=True)
class Probe:
    """What a submission reads before it decides, in ONE round trip (``Store.probe``): the job a
    retried request already made, else the versions and, only when the ledger moved past the
    version the caller holds, a fresh snapshot."""

    existing: JobRecord | None
    versions: Versions
    snapshot: LedgerSnapshot | None  # None: unchanged since ``known_ledger`` (or ``existing`` found)


@dataclass(frozen=True)
class Limits:
    """What the ledger may hand out: GPUs per pool and facility power per site.

    Pools and sites are kept in grid order, the same order as the engine's arrays, so a
    snapshot can be handed to the engine without a lookup per pool.
    """

    pool_ids: tuple[str, ...]
    pool_gpus: npt.NDArray[np.int64]  # healthy GPUs: nodes the grid file marks drained excluded
    site_ids: tuple[str, ...]
    site_power_w: npt.NDArray[np.int64]
    # Nodes per pool (model.grid.Pool numbers them 0..nodes-1): how many, GPUs on each, and how many
    # of the last ones the grid file drains. None: the store tracks no nodes (counts at pool level).
    pool_nodes: npt.NDArray[np.int64] | None = None
    pool_gpus_per_node: npt.NDArray[np.int64] | None = None
    pool_grid_drained_nodes: npt.NDArray[np.int64] | None = None

    @classmethod
    def from_grid(cls, grid: Grid) -> Limits:
        pools = [p for s in grid.sites for p in s.pools]
        return cls(
            pool_ids=tuple(p.id for p in pools),
            pool_gpus=np.array([p.healthy_gpus for p in pools], dtype=np.int64),
            site_ids=tuple(s.id for s in grid.sites),
            site_power_w=np.array([to_watts(s.power_envelope_mw * 1000.0) for s in grid.sites], dtype=np.int64),
            pool_nodes=np.array([p.nodes for p in pools], dtype=np.int64),
            pool_gpus_per_node=np.array([p.gpus_per_node for p in pools], dtype=np.int64),
            pool_grid_drained_nodes=np.array([p.drained_nodes for p in pools], dtype=np.int64),
        )

    @property
    def tracks_nodes(self) -> bool:
        return self.pool_nodes is not None and self.pool_gpus_per_node is not None

    def grid_out_nodes(self, pool: int) -> range:
        """The nodes of pool ``pool`` (grid order) the grid file drains: its last ones, always out."""
        assert self.pool_nodes is not None and self.pool_grid_drained_nodes is not None
        n = int(self.pool_nodes[pool])
        return range(n - int(self.pool_grid_drained_nodes[pool]), n)

    def check_nodes(self, a: Assignment) -> None:
        """ValueError unless ``a.nodes`` is empty or names distinct nodes of its pool, sorted, each
        holding 1 to gpus_per_node GPUs, summing to ``a.gpus``: a malformed assignment never reaches a counter."""
        if not a.nodes or not self.tracks_nodes:
            return
        assert self.pool_nodes is not None and self.pool_gpus_per_node is not None
        pool = self.pool_index[a.pool_id]
        n, per_node = int(self.pool_nodes[pool]), int(self.pool_gpus_per_node[pool])
        # Two lists and builtins over them, not a generator per test: a factory gang names ~1,000
        # nodes, and once sorted and distinct only the first and last can fall outside the pool.
        indices = [i for i, _ in a.nodes]
        gpus = [g for _, g in a.nodes]
        if indices != sorted(set(indices)) or indices[0] < 0 or indices[-1] >= n:
            raise ValueError(f"{a.pool_id}: nodes {indices} are not distinct sorted nodes of 0..{n - 1}")
        if min(gpus) <= 0 or max(gpus) > per_node or sum(gpus) != a.gpus:
            raise ValueError(f"{a.pool_id}: node GPUs {list(a.nodes)} must be 1..{per_node} each and sum to {a.gpus}")

    @cached_property
    def pool_index(self) -> dict[str, int]:
        return {pid: i for i, pid in enumerate(self.pool_ids)}

    @cached_property
    def site_index(self) -> dict[str, int]:
        return {sid: i for i, sid in enumerate(self.site_ids)}


@dataclass(frozen=True)
class LedgerSnapshot:
    """Usage in grid order; arrays the caller may keep but never change in place (Redis's are its
    own; the memory store's are shared with it, read-only, and replaced by the change that moves
    them: copy-on-write, see below)."""

    version: int
    pool_used_gpus: npt.NDArray[np.int64]
    site_used_w: npt.NDArray[np.int64]
    pool_drained: npt.NDArray[np.bool_]
    # GPUs per pool held by each tenant: quota usage, committed with the reservations.
    tenant_pool_gpus: Mapping[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    # GPUs out of service on failed or drained nodes (node health, state/agents.py); None: none.
    pool_down_gpus: npt.NDArray[np.int64] | None = None
    # Per pool (grid order), one entry per node: GPUs reserved on it (Assignment.nodes), and
    # whether it takes no new work (failed, draining, drained by an operator or by the grid file).
    # Empty: the store does not track nodes. Shared, not copied: a commit replaces the arrays of the
    # pools it touches (copy-on-write, engine.topology.PoolArrays), so these are the caller's to keep
    # but never to change in place (the memory store's are read-only).
    node_used_gpus: Sequence[npt.NDArray[np.int32]] = ()
    node_out: Sequence[npt.NDArray[np.bool_]] = ()

    @property
    def site_used_kw(self) -> npt.NDArray[np.float64]:
        return self.site_used_w / 1000.0


@dataclass(frozen=True)
class Transition:
    """One atomic change to a job: its new record, and what it reserves or releases."""

    record: JobRecord
    event: EventType
    message: str = ""
    reserve: Sequence[Assignment] = ()
    release: bool = False


@dataclass(frozen=True)
class Committed:
    """What one commit did (``Store.commit_delta``): its result as ``commit`` returns it, the ledger
    version the commit found and the one it left, and what it gave back. A caller whose snapshot is
    at ``ledger_before`` can bring it to ``ledger_after`` by itself (state/ledger_delta.py): the
    reservations are in the transitions it sent, the releases here. Versions are -1 when the
    commit applied nothing (a known request id): there is nothing to follow."""

    record: JobRecord | None
    created: bool
    ledger_before: int
    ledger_after: int
    released: tuple[tuple[str, Assignment], ...] = ()  # (tenant, assignment) given back
    # Jobs waiting (PENDING) right after the commit, counted in the same step (-1: not counted), so
    # that a release whose queue has nothing to place skips the queue pass without another read.
    waiting: int = -1
    # The ledger as the commit left it, when the commit accepted a ledger that had moved past the
    # caller's view (``accept_moved``): the view catches up from it, with no further read.
    snapshot: LedgerSnapshot | None = None
    # The ledger as the commit left it, from a store that has it at hand for nothing (the in-process
    # store: its arrays are copy-on-write, the snapshot shares them), whenever the commit moved it.
    # The committing replica's view takes it as it is instead of applying the moves (ledger_view).
    after: LedgerSnapshot | None = None


@dataclass(frozen=True)
class Update:
    """A transition of an existing job, refused unless the job is still at ``expected_version``."""

    job_id: str
    expected_version: int
    transition: Transition


def request_key(tenant: str, request_id: str) -> str:
    """Request ids are scoped per tenant: two tenants may both send ``retry-1``.

    Tenant ids never contain ``/`` (model.grid.Id), so the key is unambiguous."""
    return f"{tenant}/{request_id}"


class Store(AgentStore, Protocol):
    # Site agents, heartbeats, node health and job reports: state/agents.py.
    def commit(
        self, updates: Sequence[Update], create: Transition | None = None, quota: QuotaRules | None = None,
        policy_version: int | None = None,
    ) -> tuple[JobRecord | None, bool]:
        """Apply every update and create ``create`` (if given) as ONE atomic step: all or nothing.

        This is how preemption happens: the victims' evictions and the preemptor's placement are
        one commit, so no job is ever evicted for a preemptor that is not placed. Capacity is
        judged on the net change (everything released first, then everything reserved).
        ``create`` is idempotent on its tenant-scoped request id: when that id is known, nothing
        is applied and the existing job is returned with False. Otherwise returns the created
        record (or None without ``create``) and True. Raises StaleRecord or UnknownJob naming
        the job whose version moved, CapacityConflict when the reservations do not fit,
        QuotaConflict when ``quota`` (the deciding replica's compiled policy quotas) refuses a
        tenant's growth against live usage, PolicyMoved when ``policy_version`` (the version the
        decision was made under) is no longer the active policy, leaving nothing behind in every case.
        """
        ...

    def commit_delta(
        self, updates: Sequence[Update], create: Transition | None = None, quota: QuotaRules | None = None,
        policy_version: int | None = None, expect_ledger: int | None = None, expect_slack: int = 0,
        accept_moved: bool = False,
    ) -> Committed:
        """``commit``, also telling the ledger versions around it and what it released (one step:
        on Redis the same script), so the committing replica follows its own change without a
        snapshot. With ``expect_ledger``: refused with LedgerMoved (after the request-id and policy
        checks) unless the ledger is at that version, or at most ``expect_slack`` past it (the
        caller's own commits in flight, which its decision took into account). With
        ``accept_moved`` too, a ledger moved past that window refuses nothing by itself: the commit
        is re-checked like any other (every pool, site, node, drain and quota against live usage)
        and ``Committed.snapshot`` brings the ledger as the commit left it; a re-check that refuses
        it raises LedgerMoved, with the snapshot, rather than the bare conflict."""
        ...

    def create_job(self, transition: Transition) -> tuple[JobRecord, bool]:
        """Store a new job (and reserve, if it carries a placement) atomically.

        Idempotent on ``request_id``: a second call returns the first job and False.
        Raises CapacityConflict, leaving nothing behind, if the reservation no longer fits.
        """
        ...

    def apply(
        self, job_id: str, expected_version: int, transition: Transition, quota: QuotaRules | None = None,
        policy_version: int | None = None,
    ) -> JobRecord:
        """Move a job to ``transition.record`` if it is still at ``expected_version`` (and, with
        ``policy_version``, the active policy is still that version: else PolicyMoved)."""
        ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def job_by_request(self, tenant: str, request_id: str) -> JobRecord | None: ...

    def known_job(self, job_id: str) -> JobRecord | None:
        """The job as this replica last committed or read it, else as the store holds it: possibly
        behind the store (another replica moved it since). For a caller that commits against the
        record's version anyway, which refuses a stale one (StaleRecord with the current record):
        ending a job this replica placed then costs no read."""
        ...

    def probe(self, tenant: str, request_id: str, known_ledger: int) -> Probe:
        """The request-id lookup (skipped for ''), the versions and, when the ledger version is not
        ``known_ledger``, the snapshot: one consistent read, one round trip on Redis."""
        ...

    def archive_finished(self, finished_before_s: float, limit: int = 10_000) -> int:
        """Forget up to ``limit`` finished jobs (completed, cancelled, rejected) last changed before
        ``finished_before_s``, with their request ids; returns how many. Keeps memory flat."""
        ...

    def running_jobs(self) -> list[JobRecord]:
        """Running jobs (an index: preemption reads these, never the whole history)."""
        ...

    def list_jobs(self, states: frozenset[JobState], after_id: str, limit: int) -> list[JobRecord]:
        """Jobs in id order after ``after_id``; an empty ``states`` means every state."""
        ...

    def pending_jobs(self) -> list[JobRecord]:
        """Pending jobs, highest priority first, then oldest first."""
        ...

    def reservation(self, job_id: str) -> list[Assignment]: ...

    def snapshot(self) -> LedgerSnapshot: ...

    def ledger_version(self) -> int:
        """Changes whenever usage or drains change; cheap to read."""
        ...

    def versions(self) -> Versions:
        """The ledger version and the active policy version (0: none stored), in one cheap read."""
        ...

    def set_drained(self, pool_id: str, drained: bool) -> bool:
        """Returns whether anything changed."""
        ...

    def set_pool_down(self, pool_id: str, down_gpus: int) -> bool:
        """GPUs of the pool on failed or drained nodes: commits may reserve at most its healthy GPUs
        less these. Returns whether anything changed (the ledger version moves if so)."""
        ...

    def set_nodes_out(self, pool_id: str, node_indices: Sequence[int]) -> bool:
        """The pool's whole set of out-of-service nodes (failed, draining, drained), by index: a
        commit that puts GPUs on one is refused; what runs there stays until released. The grid
        file's drained nodes are out whatever the set says. Returns whether the set changed (the
        ledger version moves if so). ValueError for an index outside the pool."""
        ...

    # --- policy history ----------------------------------------------------------
    def apply_policy(self, expected_version: int, entry: PolicyVersion) -> PolicyVersion:
        """Append ``entry`` as the next version and make it active, if the active version is still
        ``expected_version`` (0: none yet); atomic compare-and-set. Returns the entry with its number.
        Raises StalePolicy, writing nothing, when another apply came first."""
        ...

    def get_policy(self, version: int = 0) -> PolicyVersion | None:
        """One version of the history; 0 means the active one. None when there is no such version."""
        ...

    def policy_history(self, before_version: int, limit: int) -> list[PolicyVersion]:
        """Versions newest first, older than ``before_version`` (0: from the newest), at most ``limit``."""
        ...

    def events_after(self, sequence: int, timeout_s: float) -> list[JobEvent]:
        """Events after ``sequence``, waiting up to ``timeout_s`` for one if there are none."""
        ...

    def last_sequence(self) -> int:
        """The newest event's sequence (0 before the first). Sequences start at 1 and only grow."""
        ...

    def first_sequence(self) -> int:
        """The oldest event still retained; ``last_sequence() + 1`` when none is.

        Stores keep a bounded window of events (the oldest are trimmed), so a watcher that
        asks for events after ``n`` with ``n + 1 < first_sequence()`` has missed some for good.
        """
        ...

    def append_audit(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        """Record mutating calls, in order, in one step; returns them with their sequences (1, 2, ...).

        Audit records sit beside the job events and are trimmed to the same window; the
        structured log is the long-term trail."""
        ...

    def audit_after(self, sequence: int, limit: int) -> list[AuditRecord]:
        """Audit records after ``sequence``, oldest first, at most ``limit``."""
        ...

    def healthy(self) -> bool: ...

    def close(self) -> None: ...
