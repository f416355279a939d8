"""The scheduler: engine decisions committed to a store, and pending work retried.

Decisions come from engine/ (pure); capacity is committed by state/ (which re-checks
limits). In between, this class owns the life of a job: submit, wait, place, cancel,
complete, and the retries that capacity freed by cancel, completion or undrain allows.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from grid_scheduler.engine import Decision, GridIndex, Usage, could_ever_place, decide, site_reasons, wait_info
from grid_scheduler.engine.batch import BatchResult, solve_batch
from grid_scheduler.engine.inference_opt import solve_inference
from grid_scheduler.engine.preemption import choose_victims
from grid_scheduler.model import EventType, Grid, JobRecord, JobSpec, JobState, Placement, Policy, Reason, WaitInfo
from grid_scheduler.model.job import violations_against_grid
from grid_scheduler.scheduler.errors import InvalidJob, NotFound, WrongState
from grid_scheduler.state import CapacityConflict, Limits, MemoryStore, StaleRecord, Store, Transition

log = structlog.get_logger("grid_scheduler.scheduler")

# A commit that loses a race re-decides on a fresh snapshot; after this many losses the
# job waits for the next retry instead of spinning.
COMMIT_ATTEMPTS = 3


# Random per process, so replicas sharing a store never mint the same id; the counter makes
# ids unique within a process even within one clock tick.
_ID_TAIL = secrets.token_hex(3)
_ID_COUNTER = itertools.count()


def new_job_id() -> str:
    """Time-ordered, so listing by id lists by submission."""
    return f"job-{time.time_ns():x}-{_ID_TAIL}{next(_ID_COUNTER) % 4096:03x}"


@dataclass(frozen=True)
class Outcome:
    record: JobRecord
    created: bool
    decision: Decision | None = None


@dataclass(frozen=True)
class BatchPlan:
    """What the solver proposes for the queue as it was when the plan was made."""

    pending: list[JobRecord]
    result: BatchResult


@dataclass(frozen=True)
class OptimizeOutcome:
    """One batch cycle: what the solver proposed, and what was committed."""

    result: BatchResult
    pending_before: int
    committed: list[JobRecord]
    dry_run: bool


class Scheduler:
    def __init__(
        self,
        grid: Grid,
        policy: Policy | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.grid = grid
        self.policy = policy or Policy()
        self.index = GridIndex.build(grid)
        self.limits = Limits.from_grid(grid)
        self.store: Store = store if store is not None else MemoryStore(self.limits)
        self._clock = clock
        # Decisions in this process are serial: a decision and its commit see one snapshot.
        self._lock = threading.RLock()
        self._usage: tuple[int, Usage] | None = None
        self._shapes: dict[str, str] = {}  # job id -> shape key, for place_pending

    # --- reading the ledger --------------------------------------------------------
    def usage(self) -> Usage:
        version = self.store.ledger_version()
        if self._usage is None or self._usage[0] != version:
            snap = self.store.snapshot()
            self._usage = (snap.version, Usage(snap.pool_used_gpus, snap.site_used_kw, snap.pool_drained))
        return self._usage[1]

    def _decide(self, spec: JobSpec) -> Decision:
        """The engine's decision now; inference replicas by CP-SAT when the policy asks for it."""
        decision = decide(self.index, self.usage(), spec, self.policy)
        if spec.inference is None or self.policy.inference_placement != "optimal":
            return decision
        result = solve_inference(
            self.index, self.usage(), spec, self.policy, time_limit_s=self.policy.inference_time_limit_s
        )
        if result.placement is None:
            return decision  # the greedy's reasons explain the wait
        return replace(decision, placement=result.placement, uncovered_endpoints=())

    def validate(self, spec: JobSpec) -> None:
        problems = violations_against_grid(spec, self.grid)
        if problems:
            raise InvalidJob(problems)

    # --- job life --------------------------------------------------------------
    def explain(self, spec: JobSpec) -> tuple[Decision, list[Reason]]:
        """The decision a submission would get now, and the reasons for every other site."""
        self.validate(spec)
        decision = self._decide(spec)
        return decision, site_reasons(self.index, decision, self.policy)

    def submit(self, spec: JobSpec, request_id: str = "") -> Outcome:
        self.validate(spec)
        if request_id:
            existing = self.store.job_by_request(request_id)
            if existing is not None:
                return Outcome(existing, created=False)
        with self._lock:
            job_id = new_job_id()
            for _ in range(COMMIT_ATTEMPTS):
                decision = self._decide(spec)
                placeable_ever = decision.placement is not None or self._could_ever_place(spec)
                # Evicting anyone for a job no empty grid could take would be pure loss.
                if decision.placement is None and placeable_ever and self._preempt_for(job_id, spec):
                    decision = self._decide(spec)
                transition = self._first_transition(job_id, spec, request_id, decision, placeable_ever)
                try:
                    record, created = self.store.create_job(transition)
                except CapacityConflict:
                    continue
                if created:
                    self._log_decision(record, decision)
                return Outcome(record, created, decision if created else None)
            transition = self._waiting(
                job_id, spec, request_id, decision, JobState.PENDING, "lost the race for capacity"
            )
            record, created = self.store.create_job(transition)
            return Outcome(record, created, decision)

    def _could_ever_place(self, spec: JobSpec) -> bool:
        return could_ever_place(self.index, spec, self.policy).placement is not None

    def _first_transition(
        self, job_id: str, spec: JobSpec, request_id: str, decision: Decision, placeable_ever: bool
    ) -> Transition:
        now = self._clock()
        if decision.placement is not None:
            record = JobRecord(
                id=job_id, request_id=request_id, spec=spec, state=JobState.RUNNING,
                placement=decision.placement, created_at=now, updated_at=now,
            )
            return Transition(record, EventType.PLACED, _placed_message(record), reserve=decision.placement.assignments)
        if not placeable_ever:
            return self._waiting(
                job_id, spec, request_id, decision, JobState.REJECTED, "no site of the grid can ever take it"
            )
        return self._waiting(job_id, spec, request_id, decision, JobState.PENDING, "waiting for capacity")

    def _waiting(
        self, job_id: str, spec: JobSpec, request_id: str, decision: Decision, state: JobState, why: str
    ) -> Transition:
        now = self._clock()
        info = wait_info(self.index, decision, self.policy)
        record = JobRecord(
            id=job_id, request_id=request_id, spec=spec, state=state,
            waiting=info, created_at=now, updated_at=now,
        )
        event = EventType.REJECTED if state is JobState.REJECTED else EventType.PENDING
        return Transition(record, event, why + (": " + info.summary[0] if info.summary else ""))

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get_job(job_id)
        if record is None:
            raise NotFound("job", job_id)
        return record

    def reasons_now(self, record: JobRecord) -> list[Reason]:
        """For a job that waits: why no site can take it at this moment."""
        decision = self._decide(record.spec)
        return site_reasons(self.index, decision, self.policy)

    def cancel(self, job_id: str) -> JobRecord:
        return self._finish(job_id, JobState.CANCELLED, EventType.CANCELLED, "cancelled by request")

    def complete(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record.state is not JobState.RUNNING:
            raise WrongState(f"job {job_id} is {record.state.value}; only a running job can complete")
        return self._finish(job_id, JobState.COMPLETED, EventType.COMPLETED, "completed")

    def _finish(self, job_id: str, state: JobState, event: EventType, message: str) -> JobRecord:
        with self._lock:
            while True:
                record = self.get(job_id)
                if record.state.is_final:
                    raise WrongState(f"job {job_id} is already {record.state.value}")
                done = record.model_copy(
                    update={"state": state, "updated_at": self._clock(), "version": record.version + 1}
                )
                try:
                    done = self.store.apply(job_id, record.version, Transition(done, event, message, release=True))
                except StaleRecord:
                    continue
                break
            log.info("job_finished", job_id=job_id, state=state.value)
            if record.state is JobState.RUNNING:
                self.place_pending()
            return done

    def set_drained(self, pool_id: str, drained: bool) -> bool:
        if pool_id not in self.index.pool_index:
            raise NotFound("pool", pool_id)
        with self._lock:
            changed = self.store.set_drained(pool_id, drained)
            log.info("pool_drain", pool_id=pool_id, drained=drained, changed=changed)
            if changed and not drained:
                self.place_pending()
            return changed

    def place_pending(self) -> list[JobRecord]:
        """Try every pending job, highest priority first; returns those placed.

        Within one pass capacity only shrinks, so once a gang job of some shape fails, every
        later one of the same shape (the same spec but for its name) would fail too: a long
        queue of identical jobs costs one decision, not one per job. Only gang jobs are
        skipped so: the greedy fill of a split job or of replicas is not monotone in free
        capacity (less of it can steer the fill onto a path that works).
        """
        placed: list[JobRecord] = []
        failed_shapes: set[str] = set()
        with self._lock:
            pending = self.store.pending_jobs()
            for record in pending:
                shape = self._shape(record)
                if shape is not None and shape in failed_shapes:
                    continue
                decision = self._decide(record.spec)
                if decision.placement is None:
                    if shape is not None:
                        failed_shapes.add(shape)
                    continue
                running = self._commit_placement(record, decision.placement)
                if running is not None:
                    placed.append(running)
                    self._log_decision(running, decision)
            if len(self._shapes) > 2 * len(pending) + 1024:
                live = {r.id for r in pending}
                self._shapes = {k: v for k, v in self._shapes.items() if k in live}
        return placed

    def _shape(self, record: JobRecord) -> str | None:
        """A gang training job's spec but for its name, cached per job (serialising is not free)."""
        if record.spec.inference is not None or not record.spec.gang:
            return None
        shape = self._shapes.get(record.id)
        if shape is None:
            shape = self._shapes[record.id] = record.spec.model_dump_json(exclude={"name"})
        return shape

    def _commit_placement(
        self, record: JobRecord, placement: Placement, store: Store | None = None
    ) -> JobRecord | None:
        """Pending -> running with this placement; None if the capacity or the job moved meanwhile."""
        running = record.model_copy(
            update={
                "state": JobState.RUNNING,
                "placement": placement,
                "waiting": None,
                "updated_at": self._clock(),
                "version": record.version + 1,
            }
        )
        transition = Transition(running, EventType.PLACED, _placed_message(running), reserve=placement.assignments)
        try:
            return (store or self.store).apply(record.id, record.version, transition)
        except (CapacityConflict, StaleRecord):
            return None

    # --- preemption --------------------------------------------------------------
    def _preempt_for(self, job_id: str, spec: JobSpec) -> bool:
        """Evict the cheapest lower-priority preemptible jobs that make room for ``spec``.

        Evicts nothing unless the victims together make the job fit (choose_victims checks
        that with the engine). Victims go back to the queue with the reason.
        """
        if spec.priority == 0:
            return False
        candidates = [
            (r.id, r.spec, r.placement, r.updated_at)
            for r in self.store.list_jobs(frozenset({JobState.RUNNING}), "", 1_000_000)
            if r.placement is not None and r.spec.preemptible and r.spec.priority < spec.priority
        ]
        if not candidates:
            return False
        victims = choose_victims(self.index, self.usage(), spec, candidates, self.policy, self._clock())
        if not victims:
            return False
        why = f"preempted by {job_id}"
        for victim_id in victims:
            victim = self.get(victim_id)
            queued = victim.model_copy(
                update={
                    "state": JobState.PENDING,
                    "placement": None,
                    "waiting": WaitInfo(summary=[why]),
                    "updated_at": self._clock(),
                    "version": victim.version + 1,
                }
            )
            self.store.apply(victim_id, victim.version, Transition(queued, EventType.PREEMPTED, why, release=True))
            log.info("job_preempted", job_id=victim_id, by=job_id)
        return True

    # --- batch ---------------------------------------------------------------------
    def optimize_pending(
        self, dry_run: bool = False, time_limit_s: float = 5.0, workers: int = 2, commit_to: Store | None = None
    ) -> OptimizeOutcome:
        """Solve every pending job together (CP-SAT) against free capacity, and commit the plan.

        ``commit_to`` is a view of the store to commit through (a lease-fenced one on Redis).
        """
        plan = self.plan_pending(time_limit_s, workers, dry_run)
        committed = [] if dry_run else self.commit_plan(plan, commit_to)
        return OptimizeOutcome(plan.result, len(plan.pending), committed, dry_run)

    def plan_pending(self, time_limit_s: float = 5.0, workers: int = 2, dry_run: bool = True) -> BatchPlan:
        """A plan for the queue as it is now. Only the snapshot takes the lock: online
        submissions go on while the solver thinks (seconds), and the commit re-checks."""
        with self._lock:
            pending = self.store.pending_jobs()
            usage = self.usage()
        result = solve_batch(
            self.index, usage, [(r.id, r.spec) for r in pending], self.policy,
            time_limit_s=time_limit_s, workers=workers,
        )
        log.info(
            "batch_solved", pending=len(pending), placed=len(result.placements), status=result.status,
            method=result.method, objective=result.objective, best_bound=result.best_bound,
            gap=round(result.gap, 6), solve_time_s=round(result.solve_time_s, 3), dry_run=dry_run,
        )
        return BatchPlan(pending, result)

    def commit_plan(self, plan: BatchPlan, commit_to: Store | None = None) -> list[JobRecord]:
        """Commit a plan job by job, highest priority first. A job that moved since the plan
        (placed, cancelled) or no longer fits (capacity taken meanwhile) stays as it is."""
        committed: list[JobRecord] = []
        with self._lock:
            for record in plan.pending:
                placement = plan.result.placements.get(record.id)
                if placement is not None:
                    running = self._commit_placement(record, placement, commit_to)
                    if running is not None:
                        committed.append(running)
        return committed

    def _log_decision(self, record: JobRecord, decision: Decision) -> None:
        if not log.is_enabled_for(logging.INFO):
            return  # the fields below cost more than the decision's commit; skip them when unseen
        if record.placement is not None:
            log.info(
                "job_placed", job_id=record.id, tenant=record.spec.tenant, gpus=record.placement.gpus,
                sites=record.placement.site_ids, cost=round(record.placement.score.total, 4),
            )
        else:
            log.info("job_waiting", job_id=record.id, state=record.state.value,
                     reasons=record.waiting.site_counts if record.waiting else {})


def _placed_message(record: JobRecord) -> str:
    assert record.placement is not None
    where = ", ".join(f"{a.gpus} {a.gpu_type} in {a.pool_id}" for a in record.placement.assignments)
    return f"placed: {where}"
