"""The scheduler: engine decisions committed to a store, and waiting work retried.

Decisions come from engine/ (pure); capacity is committed by state/ (which re-checks limits).
In between, this class owns the life of a job: submit, wait, place, cancel, complete. The
rules it applies live in one module each and every path calls them:

- priority order, holds and what preemption may evict: ``engine/priority.py``;
- the queue pass (retries, holds, preemption for waiting jobs): ``scheduler/queue.py``;
- preemption as one commit: ``scheduler/preempt.py``;
- the batch optimiser's plan and its commit: ``scheduler/batch_commit.py``;
- the records and events of each transition: ``scheduler/transitions.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import structlog

from grid_scheduler.engine import Decision, GridIndex, Usage, site_reasons
from grid_scheduler.engine.inference_opt import decide_with_policy
from grid_scheduler.engine.policy_diff import PolicyDiff
from grid_scheduler.engine.preemption import release
from grid_scheduler.engine.priority import Holds, Shadow, shadow
from grid_scheduler.engine.quota import QuotaRow, QuotaRules, policy_rules, quota_table
from grid_scheduler.model import (
    EventType,
    Grid,
    JobRecord,
    JobSpec,
    JobState,
    Policy,
    PolicyVersion,
    Reason,
    policy_sha256,
)
from grid_scheduler.model.job import violations_against_grid
from grid_scheduler.scheduler import batch_commit, fleet, observer, policy_diff, queue, queue_index, transitions
from grid_scheduler.scheduler.batch_commit import BatchPlan, OptimizeOutcome
from grid_scheduler.scheduler.claims import Claims, Read
from grid_scheduler.scheduler.errors import AlreadyExists, InvalidJob, NotFound, StalePolicyVersion, WrongState
from grid_scheduler.scheduler.ledger_view import MAX_AHEAD, LedgerView
from grid_scheduler.scheduler.observer import NullObserver, Observer
from grid_scheduler.scheduler.preempt import plan_preemption
from grid_scheduler.state import (
    CapacityConflict,
    Committed,
    LedgerMoved,
    LedgerSnapshot,
    Limits,
    MemoryStore,
    StalePolicy,
    StaleRecord,
    Store,
    Transition,
    UnknownJob,
    Update,
    Versions,
)

__all__ = ["BatchPlan", "Decider", "OptimizeOutcome", "Outcome", "Scheduler", "new_job_id"]

# Where one job goes, given free capacity: the engine's cost-based choice by default. A what-if
# run can swap in a baseline rule (engine/baselines.py) to compare placement choices alone:
# everything around the decision (holds, queue order, preemption, the ledger's re-check) stays.
Decider = Callable[[GridIndex, Usage, JobSpec, Policy], Decision]

log = structlog.get_logger("grid_scheduler.scheduler")
# A scheduler replaying a hypothetical future logs nothing (nothing of ours logs at CRITICAL; what
# would is returned, not written).
_QUIET = structlog.wrap_logger(structlog.ReturnLogger(),
                               wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))

# A commit that loses a race re-decides on a fresh snapshot; after this many losses the
# job waits for the next retry instead of spinning.
COMMIT_ATTEMPTS = 3
# A decision whose in-process claim overlaps one registered while it decided decides again on the
# view with that claim (no I/O); after this many, it goes on unclaimed and the store's re-check decides.
CLAIM_ATTEMPTS = 8
# An unread decision trusts the view plus this process's claims. Claims its view does not count
# pile up only while the view is stuck behind a change it cannot follow (another writer's, hidden
# by the commits' slack): past this many, submissions read first (the probe brings the snapshot).
UNREAD_MAX_UNCOUNTED = 16
# Finished jobs are forgotten this long after they finished (serve --retention-days), this many per store call.
DEFAULT_RETENTION_S = 7 * 24 * 3600.0
ARCHIVE_BATCH = 10_000
# Jobs read per store call when listing one tenant's jobs out of every tenant's.
LIST_SCAN_BATCH = 1_000

# Random per process, so replicas sharing a store never mint the same id; the counter makes
# ids unique within a process even within one clock tick.
_ID_TAIL = secrets.token_hex(3)
_ID_COUNTER = itertools.count()


def new_job_id() -> str:
    """Time-ordered, so listing by id lists by submission."""
    return f"job-{time.time_ns():x}-{_ID_TAIL}{next(_ID_COUNTER) % 4096:03x}"


@dataclass(frozen=True)
class _Tried:
    """What a lock-free attempt at placing read and decided (``Scheduler._place_now``)."""

    ledger: int
    policy_version: int
    usage: Usage  # the ledger view at ``ledger``
    held: Usage  # with in-flight claims and the holds against the job overlaid: what it was decided on
    decision: Decision
    unchecked: bool = False  # the view was not re-read before deciding: commit with expect_ledger


def _same_usage(a: Usage, b: Usage) -> bool:
    return a is b or (np.array_equal(a.pool_used_gpus, b.pool_used_gpus)
                      and np.array_equal(a.site_used_kw, b.site_used_kw))


@dataclass(frozen=True)
class Outcome:
    record: JobRecord
    created: bool
    decision: Decision | None = None


class Scheduler:
    def __init__(
        self,
        grid: Grid,
        policy: Policy | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
        index: GridIndex | None = None,
        quiet: bool = False,
        job_ids: Callable[[], str] = new_job_id,
        decider: Decider = decide_with_policy,
    ) -> None:
        """``index``: the grid's, when the caller has it built already. ``quiet``: log nothing
        (a scheduler replaying a hypothetical future, whose decisions are not events).
        ``job_ids`` mints the id of each new job: the server's default sorts by submission
        time (ListJobs pages by it); a simulation passes one derived from its seed, so a replay
        names its jobs the same way every time. ``decider`` chooses each placement (see ``Decider``);
        any other than the default must keep the engine's hard constraints (``compute_checks``)."""
        self.grid = grid
        # The policy decisions use. With a store that holds a policy history, its active version
        # replaces this one before the next decision (see usage()); until then, or with none
        # stored, the policy given here decides, as version 0.
        self.policy = policy or Policy()
        self.policy_version = 0
        self._default_policy = self.policy
        self.index = index if index is not None else GridIndex.build(grid)
        self.log = _QUIET if quiet else log
        self.limits = Limits.from_grid(grid)
        self.store: Store = store if store is not None else MemoryStore(self.limits)
        self._clock = clock
        self.job_ids = job_ids
        self.decider = decider
        # Site liveness (serve --heartbeat-timeout, --site-grace; scheduler/fleet.py): a site whose agent
        # registered and then stayed silent this long takes no new work, and after the grace period
        # too its running jobs are re-queued. None: sites are never judged by their heartbeats.
        self.heartbeat_timeout_s: float | None = None
        self.site_grace_s: float = 0.0
        # Told of every decision, commit, submission and batch cycle (serve --metrics-address listens).
        self.observer: Observer = NullObserver()
        # What must be serial in this process: the queue pass, preemption, waiting jobs and their
        # holds, policy changes. A submission that fits takes it only to read (``_place_now``);
        # its commit is checked by the store like any other replica's.
        self.lock = threading.RLock()
        # One decision at a time in this process, while other calls wait on the store: deciding is
        # pure CPU, and concurrent deciders only hand the GIL back and forth (numpy gives it up and
        # takes it back in every call) at a cost in CPU per call that grew with the clients. Taken
        # before ``lock`` when both are (``_place_now``), never after.
        self._deciding = threading.Lock()
        # The ledger as of its last read, brought forward by this replica's own commits.
        self.ledger = LedgerView(self.limits)
        # What this process's deciders chose and are committing (scheduler/claims.py): every decision
        # is made with them taken, so deciders running at once do not choose the same nodes.
        self.claims = Claims(self.index)
        # Whether a queue pass is waiting for the lock and has not started (``_retry_queue``).
        self._pass_gate = threading.Lock()
        self._pass_queued = False
        # Submissions decided under the lock so far, started and done (``_nothing_waits`` tells from
        # them whether one ran meanwhile or runs now, without trying the lock).
        self._serial_started = 0
        self._serial_done = 0
        self._shapes: dict[str, str] = {}  # job id -> shape key, for the queue pass
        self._shadows: dict[str, Shadow] = {}  # job id -> what it holds while it waits
        # What waiting jobs hold, as of the last queue pass plus this process's own submissions
        # since; None until first needed. Another replica's new waiting jobs are seen at the
        # next pass (the server runs one every few seconds).
        self._holds: Holds | None = None

    def now(self) -> float:
        return self._clock()

    # --- reading the ledger --------------------------------------------------------
    def usage(self) -> Usage:
        """Free capacity now. Also where a policy applied on any replica takes effect: the active
        policy version comes back with the ledger version in the same read, and the policy
        itself is loaded only when that version moved."""
        return self._read(self.store.versions(), None)

    def _read(self, versions: Versions, snap: LedgerSnapshot | None) -> Usage:
        """Usage as of ``versions``: ``snap`` when the caller read it with them (a submission's probe),
        the cached usage while the ledger has not moved, else a fresh snapshot."""
        if versions.policy != self.policy_version:
            self._adopt_policy(versions.policy)
        usage = self.ledger.at(versions.ledger)
        if usage is not None:
            return usage
        # Threads of this process commit concurrently: the view may have followed a commit made
        # after ``versions`` (or ``snap``) was read. It is then newer than the read, not wrong, and
        # going back to ``snap`` would only lose what it followed. (Far ahead means the ledger went
        # back: a Redis that lost writes; read it again.)
        latest = self.ledger.latest()
        if latest is not None and 0 < latest[0] - versions.ledger <= MAX_AHEAD:
            return latest[1]
        if snap is None or snap.version != versions.ledger:
            snap = self.store.snapshot()
        return self.ledger.reset(snap)

    def _covers(self, ledger: int) -> bool:
        """Whether the view is at ledger version ``ledger`` or follows it (``_read`` then reads nothing)."""
        return 0 <= self.ledger.version - ledger <= MAX_AHEAD and self.ledger.version >= 0

    def follow(self, done: Committed, moves: Sequence[Transition]) -> None:
        """A commit this replica made: the ledger view follows it without reading (scheduler/ledger_view.py)."""
        self.ledger.follow(done, moves)

    def _follow_claim(self, claim: int) -> observer.Follow:
        """``follow`` for the commit of ``claim``: the claim ends where the view starts counting it."""
        def follow(done: Committed, moves: Sequence[Transition]) -> None:
            # Marked before the view moves: a decider reading the older view still counts the claim.
            if claim and done.ledger_before >= 0:
                self.claims.committed(claim, done.ledger_after)
            self.ledger.follow(done, moves)
        return follow

    def _pinned(self) -> tuple[int, Usage]:
        """The ledger view now, with its version (claims are counted by version)."""
        self.usage()
        latest = self.ledger.latest()
        assert latest is not None  # usage() leaves the view at a snapshot
        return latest

    @property
    def quota(self) -> QuotaRules | None:
        """The active policy's quotas, compiled; every commit passes them so the ledger re-checks
        them against live usage (None: the policy sets none)."""
        return policy_rules(self.index, self.policy)

    def quota_usage(self, tenant: str = "") -> tuple[int, list[QuotaRow]]:
        """Usage against quota per tenant and resource group now, and the policy version that set them."""
        usage = self.usage()
        return self.policy_version, quota_table(self.index, self.policy.quotas, usage.tenant_pool_gpus, tenant)

    def may_reclaim(self, tenant: str) -> bool:
        """Whether ``tenant`` has quotas, so a job of it at any priority may reclaim borrowed capacity."""
        quota = self.quota
        return quota is not None and quota.limited(tenant)

    def decide(self, spec: JobSpec, usage: Usage | None = None) -> Decision:
        """The engine's decision on ``usage`` (now, by default); inference replicas by CP-SAT when the
        policy asks for it."""
        usage = self.usage() if usage is None else usage
        start = time.perf_counter()
        try:
            return self.decider(self.index, usage, spec, self.policy)
        finally:
            self.observer.decided(time.perf_counter() - start)

    # --- policy --------------------------------------------------------------------
    def _adopt_policy(self, version: int) -> None:
        with self.lock:
            if version == self.policy_version:
                return  # another thread adopted it while this one waited for the lock
            entry = self.store.get_policy(version) if version > 0 else None
            self.policy = entry.policy if entry is not None else self._default_policy
            self.policy_version = version
            # What waiting jobs hold, and where, depends on the policy (residency, scores).
            self._shadows.clear()
            self._holds = None
            log.info("policy_adopted", policy_version=version, sha256=entry.sha256 if entry else "")

    def apply_policy(
        self, policy: Policy, reason: str, applied_by: str, expected_version: int | None = None, rollback_of: int = 0
    ) -> PolicyVersion:
        """Make ``policy`` the active version, if the active one is still ``expected_version``
        (None: whatever is active now). Every replica decides under it from its next decision.
        Then one queue pass: a policy that opens sites places waiting work at once.
        Raises StalePolicyVersion when another apply came first; nothing changes then."""
        with self.lock:
            self.usage()
            expected = self.policy_version if expected_version is None else expected_version
            entry = PolicyVersion.new(policy, applied_by, self.now(), reason, rollback_of)
            try:
                stored = self.store.apply_policy(expected, entry)
            except StalePolicy as stale:
                raise StalePolicyVersion(stale.expected, stale.current) from stale
            self._adopt_policy(stored.version)
            log.info("policy_applied", policy_version=stored.version, applied_by=applied_by, reason=reason,
                     rollback_of=rollback_of or None)
            self.place_pending()
            return stored

    def diff_policy(
        self, candidate: Policy, last_finished: int = 0, exhaustive: bool = False
    ) -> tuple[PolicyDiff, int]:
        """What ``candidate`` would change on live state, against the active policy (whose version
        is returned with the diff): a dry run that reserves and writes nothing. ``exhaustive``
        re-decides every job, skipping no shortcut (for tests)."""
        return policy_diff.diff_live(self, candidate, last_finished, exhaustive)

    def seed_policy(self, reason: str, applied_by: str = "serve") -> PolicyVersion:
        """Store this scheduler's start-up policy as version 1 when the store holds none; otherwise
        the stored history wins (another replica, or an earlier run, seeded or changed it).
        Returns the active version either way."""
        with contextlib.suppress(StalePolicyVersion):
            self.apply_policy(self._default_policy, reason, applied_by, expected_version=0)
        active = self.policy_entry()
        if active.sha256 != policy_sha256(self._default_policy):
            log.warning("policy_file_ignored", active_version=active.version, active_sha256=active.sha256,
                        why="the store already holds a policy history; use `grid-scheduler policy apply`")
        return active

    def rollback_policy(
        self, version: int, reason: str, applied_by: str, expected_version: int | None = None
    ) -> PolicyVersion:
        """Apply version ``version``'s content as a new version that records the rollback."""
        old = self.store.get_policy(version) if version > 0 else None
        if old is None:
            raise NotFound("policy version", str(version))
        return self.apply_policy(old.policy, reason, applied_by, expected_version, rollback_of=version)

    def policy_entry(self, version: int = 0) -> PolicyVersion:
        """A stored version (0: the active one); an embedded scheduler with none stored answers
        its own policy as version 0."""
        entry = self.store.get_policy(version)
        if entry is not None:
            return entry
        if version == 0:
            self.usage()
            return PolicyVersion(version=0, policy=self.policy, sha256=policy_sha256(self.policy),
                                 applied_by="", applied_at=0.0, reason="built-in (no policy stored)")
        raise NotFound("policy version", str(version))

    def holds(self) -> Holds:
        with self.lock:
            if self._holds is None:
                holds = Holds(self.index)
                pending = self.store.pending_jobs()
                for record in pending:
                    holds.hold_for(record.spec, self.policy, self.shadow(record))
                self._holds = holds
            return self._holds

    def remember_holds(self, holds: Holds, pending: Sequence[JobRecord]) -> None:
        self._holds = holds
        if len(self._shapes) + len(self._shadows) > 4 * len(pending) + 2048:
            live = {r.id for r in pending}
            self._shapes = {k: v for k, v in self._shapes.items() if k in live}
            self._shadows = {k: v for k, v in self._shadows.items() if k in live}

    def shadow(self, record: JobRecord) -> Shadow:
        cached = self._shadows.get(record.id)
        if cached is None:
            cached = self._shadows[record.id] = shadow(self.index, record.spec, self.policy)
        return cached

    def shape(self, record: JobRecord) -> str | None:
        """A gang training job's spec but for its name, cached per job (serialising is not free)."""
        if record.spec.inference is not None or not record.spec.gang:
            return None
        shape = self._shapes.get(record.id)
        if shape is None:
            shape = self._shapes[record.id] = record.spec.model_dump_json(exclude={"name"})
        return shape

    def validate(self, spec: JobSpec) -> None:
        problems = violations_against_grid(spec, self.grid)
        if problems:
            raise InvalidJob(problems)

    # --- job life --------------------------------------------------------------
    def explain(self, spec: JobSpec) -> tuple[Decision, list[Reason]]:
        """The decision a submission would get now (holds included), and the reasons for every other site."""
        self.validate(spec)
        decision = self.decide(spec, self.holds().overlay(self.usage(), spec))
        return decision, fleet.health_reasons(self, site_reasons(self.index, decision, self.policy))

    def _one_at_a_time(self) -> contextlib.AbstractContextManager[object]:
        """What a submission or a job's end holds for its whole call: on the in-process store, the
        scheduler lock; on a shared store, nothing. In process there is no round trip to overlap, so
        concurrent calls only contend for the GIL (numpy gives it up and takes it back in every
        call: 8 threads hand it over thousands of times a second) and decide again on each other's
        claims. Measured, 8 threads against 1: 2.4-2.7x the CPU per call lock-free, 1.3x one at a
        time (benchmarks/README.md, "Concurrent clients")."""
        return self.lock if isinstance(self.store, MemoryStore) else contextlib.nullcontext()

    def submit(self, spec: JobSpec, request_id: str = "", owner: str = "") -> Outcome:
        """Place ``spec`` now or queue it with reasons (``_submit``)."""
        with self._one_at_a_time():
            return self._submit(spec, request_id, owner)

    def _submit(self, spec: JobSpec, request_id: str = "", owner: str = "") -> Outcome:
        """Place ``spec`` now (preempting lower tiers if that makes room), or queue it with reasons.

        Idempotent on (tenant, ``request_id``): a retry returns the job the first call made,
        even if the grid changed since; the same id with a different spec is AlreadyExists.
        The twin check is repeated inside the commit, so two racing twins create one job and
        evict nothing for the loser. ``owner`` is the principal that submits (kept on the record).

        On a shared store, a job that fits now is decided and committed outside the scheduler lock
        (``_place_now``; on the in-process store ``submit`` holds it: ``_one_at_a_time``): the store
        re-checks capacity, quotas and the policy version at commit, as it does for another
        replica's decisions, so concurrent submissions proceed together. Each decision is
        made with the nodes this process's other deciders chose and are committing taken
        (scheduler/claims.py), so they do not collide. Everything else (waiting, rejection,
        preemption, which read and change the queue's holds) is decided again under the lock,
        one at a time.
        """
        if self._decides_unread():
            # No read before deciding: the view is decided on as it is (with this process's claims).
            # If anything else moved the ledger since (another replica, a drain, a failed node), the
            # commit is not refused for that alone (``accept_moved``): the store re-checks every pool,
            # site, node, drain and quota against live usage, as for any decision, and brings the
            # ledger back as the commit left it, so the view catches up in the same round trip. A
            # decision on a view some commits old may be a worse choice than one on the newest, never
            # an invalid one; only a real conflict costs deciding again. The commit also finds the
            # twin of a retried request. One round trip per placed submission on Redis.
            twin = self._validate(spec, request_id)
            if twin is not None:
                return twin
            job_id = self.job_ids()
            placed, tried = self._place_now(job_id, spec, request_id, owner, None, None, unchecked=True)
        else:
            # One read before deciding (two round trips with the commit): the twin of a retried
            # request, the versions, and the snapshot only if the ledger moved.
            probe = self.store.probe(spec.tenant, request_id, self.ledger.version)
            if probe.existing is not None:
                return self._twin(probe.existing, spec)
            self.validate(spec)
            job_id = self.job_ids()
            placed, tried = self._place_now(job_id, spec, request_id, owner, probe.versions, probe.snapshot)
        if placed is not None:
            return placed
        with self.lock:
            # The lock-free attempt's usage and decision, if nothing moved since (the view follows
            # this process's commits; another replica's are the commit's to catch, as for any decision).
            if tried is not None and tried.policy_version == self.policy_version \
                    and self.ledger.at(tried.ledger) is tried.usage:
                return self._submit_serial(job_id, spec, request_id, owner, (tried.ledger, tried.usage), tried,
                                           unchecked=tried.unchecked)
            return self._submit_serial(job_id, spec, request_id, owner)

    def _decides_unread(self) -> bool:
        """Whether a submission decides on the view without reading first: when the read costs a round
        trip (not on the in-process store, whose refusals would cost more than its probe) and there
        is a view."""
        return not isinstance(self.store, MemoryStore) and self.ledger.version >= 0 \
            and self.claims.uncounted(self.ledger.version) <= UNREAD_MAX_UNCOUNTED

    def _slack(self, version: int, claim: int) -> int:
        """How far past ``version`` an unread decision's commit accepts the ledger: one step per other
        claim of this process that the view at ``version`` does not count (the decision took each
        as taken; its commit may land first)."""
        return self.claims.uncounted(version, besides=claim)

    def _validate(self, spec: JobSpec, request_id: str) -> Outcome | None:
        """``validate``; but a retried request returns its twin even if the grid changed since (as the probe does)."""
        try:
            self.validate(spec)
        except InvalidJob:
            existing = self.store.job_by_request(spec.tenant, request_id) if request_id else None
            if existing is None:
                raise
            return self._twin(existing, spec)
        return None

    def _place_now(
        self, job_id: str, spec: JobSpec, request_id: str, owner: str, versions: Versions | None,
        snap: LedgerSnapshot | None, unchecked: bool = False,
    ) -> tuple[Outcome | None, _Tried | None]:
        """Decide and commit a job that fits now, holding the lock only to read the view, the policy
        and the holds. No outcome when it does not fit as things stand (or kept losing races); then
        what its last decision read and decided. ``unchecked``: decide on the view without reading
        the versions; the commit expects the view's version."""
        attempts = claim_attempts = 0
        while attempts < COMMIT_ATTEMPTS:
            if versions is None:
                versions = Versions(self.ledger.version, self.policy_version) if unchecked else self.store.versions()
            if snap is None and not self._covers(versions.ledger):
                snap = self.store.snapshot()  # read outside the lock; it may be newer than ``versions``
                versions = Versions(snap.version, versions.policy)
            # One decider at a time from its read of the claims to its own claim: each then decides with
            # every earlier decider's claim taken, and none is refused by a claim registered while it
            # decided (with 8 clients on Redis, a decision in six was made again for that).
            with self._deciding:
                with self.lock:  # what other threads change: the view, the policy, the holds
                    self._read(versions, snap)
                    latest = self.ledger.latest()
                    assert latest is not None
                    read = self.claims.read(latest[1], latest[0])
                    policy, policy_version, quota = self.policy, self.policy_version, self.quota
                    held = self.holds().overlay(read.claimed, spec)
                start = time.perf_counter()
                try:
                    decision = self.decider(self.index, held, spec, policy)
                finally:
                    self.observer.decided(time.perf_counter() - start)
                if decision.placement is None:
                    return None, _Tried(read.version, policy_version, read.usage, held, decision, unchecked)
                create = transitions.new_placed(job_id, spec, request_id, decision.placement, self.now(), owner,
                                                policy_version=policy_version)
                claim = self.claims.register(read, spec.tenant, create.reserve)
            if claim is None:  # another decider of this process claimed the same nodes meanwhile
                claim_attempts += 1
                if claim_attempts >= CLAIM_ATTEMPTS:
                    return None, None
                snap = None  # the view is at ``versions`` or past it: nothing to read from the store
                continue
            try:
                record, created = observer.commit(self.observer, self.store, (), create, quota, policy_version,
                                                  follow=self._follow_claim(claim),
                                                  expect_ledger=read.version if unchecked else None,
                                                  expect_slack=self._slack(read.version, claim) if unchecked else 0,
                                                  accept_moved=unchecked)
            except LedgerMoved as moved:  # decide again on what the refusal brought: no read
                versions, snap, unchecked = moved.versions, moved.snapshot, False
                attempts += 1
                continue
            except observer.CONFLICTS:
                # Another replica's decision got there first (or a policy was applied): read again.
                versions, snap, unchecked = None, None, False
                attempts += 1
                continue
            finally:
                self.claims.end(claim)
            assert record is not None
            if not created:
                return self._twin(record, spec), None
            self.log_decision(record, decision)
            self.observer.submitted(record, True)
            return Outcome(record, True, decision), None
        return None, None

    def _submit_serial(
        self, job_id: str, spec: JobSpec, request_id: str, owner: str, usage: tuple[int, Usage] | None = None,
        tried: _Tried | None = None, unchecked: bool = False,
    ) -> Outcome:
        """Submission under the lock: placement with preemption, or the queue with reasons (on
        ``usage``, the view at a version, first, when the caller read it and nothing moved since;
        ``tried``: the decision the caller made on it, kept if what it decided on is still the same;
        ``unchecked``: ``usage`` was not re-read, the first commit expects its version)."""
        self._serial_started += 1  # under the lock, as is the count of those done
        try:
            return self._submit_serial_once(job_id, spec, request_id, owner, usage, tried, unchecked)
        finally:
            self._serial_done += 1

    def _submit_serial_once(
        self, job_id: str, spec: JobSpec, request_id: str, owner: str, usage: tuple[int, Usage] | None,
        tried: _Tried | None, unchecked: bool,
    ) -> Outcome:
        decision = None
        for _ in range(COMMIT_ATTEMPTS):
            decision, create, updates, claim = self._first_commit(job_id, spec, request_id, owner, usage, tried)
            tried = None
            try:
                record, created = observer.commit(
                    self.observer, self.store, updates, create, self.quota, self.policy_version,
                    follow=self._follow_claim(claim),
                    expect_ledger=usage[0] if unchecked and usage is not None else None,
                    expect_slack=self._slack(usage[0], claim) if unchecked and usage is not None else 0)
            except LedgerMoved as moved:  # decide again on what the refusal brought: no read
                self._read(moved.versions, moved.snapshot)
                usage, unchecked = self.ledger.latest(), False
                continue
            except (CapacityConflict, StaleRecord, UnknownJob):
                usage = None
                continue  # the ledger or a victim moved: decide again on a fresh snapshot
            finally:
                self.claims.end(claim)
            assert record is not None
            if not created:
                return self._twin(record, spec)
            self._after_create(record, decision, updates)
            self.observer.submitted(record, True)
            if updates:
                # The victims may have freed more than this job took: offer the rest to the
                # queue now, as any other release does (not at the next completion).
                self.place_pending()
            return Outcome(record, True, decision)
        assert decision is not None
        create = transitions.new_waiting(
            self.index, self.policy, job_id, spec, request_id, decision, JobState.PENDING,
            "lost the race for capacity", self.now(), owner=owner, policy_version=self.policy_version,
        )
        record, created = observer.commit(self.observer, self.store, (), create, self.quota, follow=self.follow)
        assert record is not None
        if not created:
            return self._twin(record, spec)
        self._after_create(record, decision, ())
        self.observer.submitted(record, True)
        return Outcome(record, True, decision)

    def _first_commit(
        self, job_id: str, spec: JobSpec, request_id: str, owner: str, usage: tuple[int, Usage] | None = None,
        tried: _Tried | None = None,
    ) -> tuple[Decision, Transition, list[Update], int]:
        """The commit to try, and the claim on what it reserves (0: none). Lock-free deciders keep
        claiming while this one decides under the lock: one that overlaps its choice sends it
        back to decide again, with that claim taken."""
        version, view = self._pinned() if usage is None else usage
        holds = self.holds()
        for _ in range(CLAIM_ATTEMPTS):
            read = self.claims.read(view, version)
            decision, create, updates = self._decide_serial(job_id, spec, request_id, owner, read, holds, tried)
            tried = None
            claim = self.claims.register(read, spec.tenant, create.reserve)
            if claim is not None:
                return decision, create, updates, claim
        return decision, create, updates, 0  # unclaimed: the store's re-check decides

    def _decide_serial(
        self, job_id: str, spec: JobSpec, request_id: str, owner: str, read: Read, holds: Holds,
        tried: _Tried | None,
    ) -> tuple[Decision, Transition, list[Update]]:
        usage = read.claimed
        held = holds.overlay(usage, spec)
        # A decision is a function of what it read: the same usage and holds decide the same again.
        same = tried is not None and tried.usage is read.usage and _same_usage(tried.held, held)
        decision = tried.decision if tried is not None and same else self.decide(spec, held)
        now = self.now()
        if decision.placement is not None:
            return decision, transitions.new_placed(
                job_id, spec, request_id, decision.placement, now, owner, policy_version=self.policy_version), []
        # Evicting anyone for a job no empty grid could take would be pure loss.
        if not self._could_ever_place(spec):
            return decision, transitions.new_waiting(
                self.index, self.policy, job_id, spec, request_id, decision, JobState.REJECTED,
                "no site of the grid can ever take it", now, owner=owner, policy_version=self.policy_version,
            ), []
        # Victims: preemptible lower-tier jobs (the queue index lists just those), or, for a tenant
        # with quotas, any running job (reclaim may evict a borrower of any tier).
        if self.may_reclaim(spec.tenant):
            running = self.store.running_jobs()
        else:
            running = queue_index.preemptible_running(self, spec.priority) if spec.priority > 0 else []
        plan = plan_preemption(self.index, self.policy, usage, holds, spec, running, now, self.decide)
        if plan is not None:
            assert plan.decision.placement is not None
            updates = [Update(v.id, v.version, transitions.evicted(v, job_id, now, policy_version=self.policy_version))
                       for v in plan.victims]
            placed = transitions.new_placed(job_id, spec, request_id, plan.decision.placement, now, owner,
                                            policy_version=self.policy_version)
            return plan.decision, placed, updates
        is_held = held is not usage and self.decide(spec, usage).placement is not None
        return decision, transitions.new_waiting(
            self.index, self.policy, job_id, spec, request_id, decision, JobState.PENDING,
            "waiting for capacity", now, held=is_held, owner=owner, policy_version=self.policy_version,
        ), []

    def _twin(self, existing: JobRecord, spec: JobSpec) -> Outcome:
        if existing.spec != spec:
            raise AlreadyExists(existing.request_id, existing.id)
        self.observer.submitted(existing, False)
        return Outcome(existing, created=False)

    def _after_create(self, record: JobRecord, decision: Decision, updates: Sequence[Update]) -> None:
        # A new waiting job, and every victim sent back to the queue, holds from now on.
        for waiting in [record, *(u.transition.record for u in updates)]:
            if waiting.state is JobState.PENDING:
                self.holds().hold_for(waiting.spec, self.policy, self.shadow(waiting))
        self.log_decision(record, decision, [u.job_id for u in updates])

    def _could_ever_place(self, spec: JobSpec) -> bool:
        return queue_index.could_ever_place(self, spec)

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get_job(job_id)
        if record is None:
            raise NotFound("job", job_id)
        return record

    def list_jobs(
        self, states: frozenset[JobState], after_id: str, limit: int, tenants: frozenset[str] | None = None
    ) -> list[JobRecord]:
        """Jobs in id order after ``after_id``, of ``tenants`` only (None: every tenant), at most ``limit``."""
        if tenants is None:
            return self.store.list_jobs(states, after_id, limit)
        out: list[JobRecord] = []
        # The store pages by id for every tenant; read it in larger pages and keep this scope's jobs.
        batch = max(limit, LIST_SCAN_BATCH)
        while len(out) < limit:
            page = self.store.list_jobs(states, after_id, batch)
            out.extend(r for r in page if r.spec.tenant in tenants)
            if len(page) < batch:
                break
            after_id = page[-1].id
        return out[:limit]

    def reasons_now(self, record: JobRecord) -> list[Reason]:
        """Why no other site takes the job at this moment.

        A waiting job: as if submitted now (holds included). A running job: its own GPUs and
        power counted as free, and its placement as the choice, so every other site's reason
        (or score) is as of now."""
        usage = self.usage()
        if record.state is JobState.RUNNING and record.placement is not None:
            mine = release(self.index, usage, [record.placement], [record.spec.tenant])
            decision = self.decide(record.spec, self.holds().overlay(mine, record.spec))
            decision = replace(decision, placement=record.placement, uncovered_endpoints=())
        else:
            decision = self.decide(record.spec, self.holds().overlay(usage, record.spec))
        return fleet.health_reasons(self, site_reasons(self.index, decision, self.policy))

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel; a job already cancelled is returned as it is (a retried cancel is no error)."""
        with self._one_at_a_time():
            return self._finish(job_id, JobState.CANCELLED, EventType.CANCELLED, "cancelled by request")

    def complete(self, job_id: str) -> JobRecord:
        with self._one_at_a_time():
            return self._finish(job_id, JobState.COMPLETED, EventType.COMPLETED, "completed")

    def _finish(self, job_id: str, state: JobState, event: EventType, message: str) -> JobRecord:
        # Outside the lock: the commit is refused (StaleRecord) if the job moved since it was read.
        # Read from what this replica last committed or read (no round trip for a job it placed): the
        # commit expects that version, and its refusal brings the job as it is now.
        record = self.store.known_job(job_id)
        fresh = False
        while True:
            if record is None:
                raise NotFound("job", job_id)
            if record.state.is_final and not fresh:
                record, fresh = self.get(job_id), True  # maybe archived since: answer as the store does now
                continue
            if record.state is state and state is JobState.CANCELLED:
                return record
            if record.state.is_final:
                raise WrongState(f"job {job_id} is already {record.state.value}")
            if state is JobState.COMPLETED and record.state is not JobState.RUNNING:
                raise WrongState(f"job {job_id} is {record.state.value}; only a running job can complete")
            # Counted as a move of this process, so that unread decisions' commits accept it (``_slack``).
            release = self.claims.release() if record.state is JobState.RUNNING else 0
            # Before the commit: whether a submission decided under the lock since may have added a waiting
            # job that the commit's count of waiting jobs missed (``_nothing_waits``).
            serial_done = self._serial_done
            ended = transitions.finished(record, state, event, message, self.now())
            try:
                done = observer.commit_delta(self.observer, self.store, (Update(job_id, record.version, ended),),
                                             follow=self._follow_claim(release))
            except StaleRecord as stale:
                record, fresh = (stale.current, True) if stale.current is not None else (self.get(job_id), True)
                continue
            except UnknownJob:
                raise NotFound("job", job_id) from None
            finally:
                self.claims.end(release)
            break
        self.log.info("job_finished", job_id=job_id, state=state.value)
        # Freed GPUs, or a waiting job that held capacity against lower tiers: retry the queue.
        if record.state is JobState.RUNNING or record.spec.priority > 0:
            self._retry_queue(done.waiting, serial_done)
        return ended.record

    def _retry_queue(self, waiting: int = -1, serial_done: int = -1) -> None:
        """A queue pass after this thread's change, unless a pass that has not started yet is
        already waiting for the lock: that one reads the ledger after the change and offers it
        to the queue, so a second would only wait its turn to find nothing new. (Many cancels
        at once then cost one pass, not one each, all queued on the lock.) ``waiting``: the jobs
        the change's own commit found waiting (-1: not counted), ``serial_done`` as read before it."""
        if self._nothing_waits(waiting, serial_done):
            return
        with self._pass_gate:
            if self._pass_queued:
                return
            self._pass_queued = True
        with self.lock:
            with self._pass_gate:
                self._pass_queued = False
            self.place_pending()

    def _nothing_waits(self, waiting: int = -1, serial_done: int = -1) -> bool:
        """Whether no job waits, so a queue pass would place nothing: read outside the lock (on Redis
        the pass's own reads are two round trips under it), or counted by the commit that released
        (``waiting``, then no read at all). A submission this process decides under the lock meanwhile
        may be committing a job that waits, decided before this thread's release: then, or while one
        is being decided, the pass runs as before. In process the commit's count is taken under the
        store's lock while this call holds the scheduler lock (``_one_at_a_time``): none waiting
        means a pass would only sync its index and place nothing (~40 µs of every cancel).

        Told by the serial submissions' counts, not by trying the lock: under concurrent calls the
        lock is mostly held for a moment by lock-free deciders reading the view, and a failed try ran
        a full pass (two round trips under the lock, every other call waiting on it): with 8 clients
        on Redis, a pass for one call in four and 13-17 ms of lock waits per call (benchmarks/README.md,
        "Concurrent clients")."""
        if isinstance(self.store, MemoryStore) and waiting < 0:
            return False  # nothing counted: its pass reads what changed since the last, in process
        if waiting > 0:
            return False
        if waiting < 0:
            serial_done = self._serial_done
            if self.store.pending_jobs():
                return False
        if not self._no_serial_since(serial_done):
            return False
        holds = self._holds
        if holds is None or holds.empty:
            return True
        # Held for jobs that no longer wait (a pass would drop them too): cleared under the lock, which
        # a serial decision holds while it reads them.
        if not self.lock.acquire(blocking=False):
            return False
        try:
            if not self._no_serial_since(serial_done):
                return False
            self._holds = None
            return True
        finally:
            self.lock.release()

    def _no_serial_since(self, serial_done: int) -> bool:
        """No submission decided under the lock finished since ``serial_done`` was read, none is deciding now."""
        done = self._serial_done
        return done == serial_done and self._serial_started == done

    def set_drained(self, pool_id: str, drained: bool) -> bool:
        if pool_id not in self.index.pool_index:
            raise NotFound("pool", pool_id)
        with self.lock:
            changed = self.store.set_drained(pool_id, drained)
            self.log.info("pool_drain", pool_id=pool_id, drained=drained, changed=changed)
            if changed and not drained:
                self.place_pending()  # reads the ledger it moved, as every pass does
            elif changed:
                # The view follows only the commits it made: left at the version before the drain,
                # it would ignore every later commit of this process too, and its decisions would
                # stay valid (the commit re-checks) but be made on capacity long gone or freed.
                self.usage()
            return changed

    def place_pending(self) -> list[JobRecord]:
        """Try every waiting job in queue order, with preemption and holds; returns those placed."""
        return queue.place_pending(self)

    def archive_finished(self, retention_s: float = DEFAULT_RETENTION_S) -> int:
        """Forget jobs finished more than ``retention_s`` ago; returns how many."""
        total = 0
        cutoff = self.now() - retention_s
        while True:
            n = self.store.archive_finished(cutoff, ARCHIVE_BATCH)
            total += n
            if n < ARCHIVE_BATCH:
                return total

    # --- batch ---------------------------------------------------------------------
    def optimize_pending(
        self, dry_run: bool = False, time_limit_s: float = 5.0, workers: int = 2, commit_to: Store | None = None
    ) -> OptimizeOutcome:
        """Solve every pending job together (CP-SAT, tier by tier) against free capacity, and commit the plan.

        ``commit_to`` is a view of the store to commit through (a lease-fenced one on Redis).
        """
        outcome = batch_commit.optimize_pending(self, dry_run, time_limit_s, workers, commit_to)
        self.observer.optimized(outcome)
        return outcome

    def plan_pending(self, time_limit_s: float = 5.0, workers: int = 2, dry_run: bool = True) -> BatchPlan:
        return batch_commit.plan_pending(self, time_limit_s, workers, dry_run)

    def commit_plan(self, plan: BatchPlan, commit_to: Store | None = None) -> list[JobRecord]:
        return batch_commit.commit_plan(self, plan, commit_to)

    def log_decision(self, record: JobRecord, decision: Decision, victims: Sequence[str] = ()) -> None:
        log = self.log
        if not log.is_enabled_for(logging.INFO):
            return  # the fields below cost more than the decision's commit; skip them when unseen
        if record.placement is not None:
            log.info(
                "job_placed", job_id=record.id, tenant=record.spec.tenant, gpus=record.placement.gpus,
                sites=record.placement.site_ids, cost=round(record.placement.score.total, 4),
                preempted=list(victims) or None,
            )
        else:
            log.info("job_waiting", job_id=record.id, state=record.state.value,
                     reasons=record.waiting.site_counts if record.waiting else {})
