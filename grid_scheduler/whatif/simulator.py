"""The discrete-event loop: the production Scheduler on a simulated clock.

Events, in time order (and at one instant: completions, then grid changes, then drains,
then arrivals, then batch cycles, then samples):

- an **arrival** is ``Scheduler.submit``; a **completion** is ``Scheduler.complete`` (which
  retries the queue, as the server does); a **drain** is ``Scheduler.set_drained``;
- a **batch cycle** (if the scenario has one) is ``Scheduler.optimize_pending``;
- a **grid change** builds the scheduler for the new grid and carries the jobs over
  (``ledger.carry_over``): displaced jobs are re-queued and counted against that change, then
  the queue is retried. Changes that share an instant are applied one at a time, in scenario
  order (``Timeline.steps``), and the queue is retried after the last of them.

Whatever the scheduler does is read back from its ledger's event stream (placed,
pending, rejected, completed) — the same stream ``WatchJobs`` serves — so the simulator
sees the decisions, it never makes one. The scheduler is the class the server runs, with
an in-memory ledger and a clock that returns simulated time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from grid_scheduler.model import EventType, JobRecord, JobState, Placement
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.scheduler.core import Decider
from grid_scheduler.state import to_watts
from grid_scheduler.whatif.changes import DAY_S, DrainStep, Moment, SiteFailure, describe
from grid_scheduler.whatif.fragmentation import fragmented_gpus
from grid_scheduler.whatif.ledger import carry_over, new_scheduler
from grid_scheduler.whatif.live import LIVE_SOURCE, LiveStart, seed_ledger
from grid_scheduler.whatif.metrics import ChangeLog, JobLog, Recorder, Run, residency_violations, summarize
from grid_scheduler.whatif.scenario import LoadedScenario
from grid_scheduler.whatif.workload import Arrival, WorkloadStats, build_arrivals

# Event kinds; the number orders events that fall at the same instant.
COMPLETE, GRID, DRAIN, ARRIVE, BATCH, SAMPLE = range(6)
# Drop finished jobs from the ledger once there are this many, and as many as live ones: the
# in-memory ledger scans every job it holds for each retry of the queue.
COMPACT_MIN_FINISHED = 1_000


class InvariantViolation(AssertionError):
    """The ledger disagrees with the jobs that run, or holds more than the grid has."""


@dataclass(frozen=True)
class Progress:
    sim_s: float
    horizon_s: float
    arrived: int
    arrivals: int


@dataclass
class RunResult:
    scenario: str
    summary: dict[str, Any]
    recorder: Recorder
    jobs: list[JobLog]
    changes: list[ChangeLog]
    horizon_s: float
    perf: dict[str, float] = field(default_factory=dict)  # wall-clock figures: not part of the summary


def quiet_logs(cache: bool = False) -> None:
    """The scheduler logs every decision at info; a replay makes millions. Keep warnings only,
    unless the process has already configured logging (then it is the process's choice).

    ``cache=True`` (cheaper per log call, but fixes the level for good) is for processes that
    exist to simulate: the CLI, benchmarks, worker processes.
    """
    if not structlog.is_configured():
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(),
            cache_logger_on_first_use=cache,
        )


class SeededJobIds:
    """``job-s<seed>-<n>``, n counting submissions from 0: in a replay only arrivals submit, one
    each and in order, so n is the arrival's place in the workload. Shared by every scheduler a
    run builds (grid changes rebuild it), so ids stay unique after the run too."""

    def __init__(self, seed: int, arrivals: int) -> None:
        self.seed = seed
        self.width = len(str(max(arrivals - 1, 0)))  # zero-padded: ids sort in arrival order
        self.count = itertools.count()

    def __call__(self) -> str:
        return f"job-s{self.seed}-{next(self.count):0{self.width}d}"


class Simulator:
    def __init__(
        self,
        loaded: LoadedScenario,
        *,
        check_invariants: bool = False,
        progress: Callable[[Progress], None] | None = None,
        on_event: Callable[[Simulator], None] | None = None,
        decider: Decider | None = None,
    ) -> None:
        """``decider``: the placement choice of every decision (scheduler/core.py ``Decider``;
        e.g. a baseline rule from engine/baselines.py); the engine's own by default."""
        quiet_logs()
        self.loaded = loaded
        scenario = loaded.scenario
        self.horizon_s = scenario.horizon_s
        self.check_invariants = check_invariants
        self.progress = progress
        self.on_event = on_event
        self.now = 0.0
        self.arrivals: list[Arrival]
        self.workload_stats: WorkloadStats
        self.arrivals, self.workload_stats = build_arrivals(
            scenario.workload, loaded.grid, scenario.seed, self.horizon_s, loaded.base_dir
        )
        self.timeline = loaded.timeline
        self._grid_key = self.timeline.in_force(0.0)
        # Job ids from the seed and the arrival's place in the workload, not the wall clock:
        # two runs with the same seed write the same files, row by row.
        job_ids = SeededJobIds(scenario.seed, len(self.arrivals))
        # A live start's jobs go into the ledger on the grid they run on (the live grid); changes
        # already in force at time zero then displace them as any timed change would.
        start_grid = self.timeline.grid_at(0.0) if loaded.live is None else self.timeline.base
        self.scheduler = new_scheduler(start_grid, loaded.policy, self.clock, job_ids, decider)
        self.recorder = Recorder(scenario.sample_every_hours * 3600.0)
        self.jobs: dict[str, JobLog] = {}
        self.running: dict[str, Placement] = {}
        self.change_logs: list[ChangeLog] = []
        self._displaced_by: dict[str, ChangeLog] = {}
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._next_arrival = 0
        self._cursor = 0
        self._finished_in_ledger = 0
        self.events = 0
        self.pending = 0  # jobs waiting in the queue now
        self.peak_pending = 0  # the most that waited at once (after any event)
        # Batch cycles run, the waiting jobs they saw (summed over cycles), the jobs they placed.
        self.batch_cycles = self.batch_pending_seen = self.batch_committed = 0
        for moment, key in self.timeline.steps():
            self._push(moment.time_s, GRID, (moment, key))
        for step in self.timeline.drain_steps():
            self._push(step.time_s, DRAIN, step)
        self._push(0.0, SAMPLE, None)
        self.batch = scenario.batch
        if self.batch is not None:
            self._push(self.batch.every_minutes * 60.0, BATCH, None)
        if loaded.live is not None:
            self._seed_live(loaded.live)
        self.recorder.begin_epoch(self.scheduler)

    def clock(self) -> float:
        return self.now

    def _seed_live(self, live: LiveStart) -> None:
        """The live ledger at time zero, before any event: running jobs complete after their
        remaining time, waiting jobs wait in the server's queue order (``whatif/live.py``)."""
        running, pending = seed_ledger(self.scheduler, live.state)
        for job in running:
            record = job.record
            assert record.placement is not None and record.started_at is not None
            placement = record.placement
            duration = job.remaining_s - record.started_at  # run so far (started_at <= 0) plus what is left
            log = JobLog(job_id=record.id, source=LIVE_SOURCE, spec=record.spec, arrival_s=job.arrival_s,
                         duration_s=duration, remaining_s=job.remaining_s, state="running", token=1)
            log.runs.append(Run(record.started_at, None,
                                {e.endpoint_id: e.latency_ms for e in placement.endpoint_latencies},
                                tuple(placement.site_ids), tuple(placement.assignments)))
            self.jobs[record.id] = log
            self.running[record.id] = placement
            self._push(job.remaining_s, COMPLETE, (record.id, log.token))
        for job in pending:
            self.jobs[job.record.id] = JobLog(
                job_id=job.record.id, source=LIVE_SOURCE, spec=job.record.spec, arrival_s=job.arrival_s,
                duration_s=job.remaining_s, remaining_s=job.remaining_s, waiting=job.waiting)
            self.pending += 1
        # The seeding's own events are the state, not decisions to read back.
        self._cursor = self.scheduler.store.last_sequence()
        self.peak_pending = self.pending
        if any(self._grid_key):
            self._regrid_at_start()

    def _regrid_at_start(self) -> None:
        """Changes in force from time zero (``at_days: 0``) meet the live jobs: what no longer fits
        is displaced by them, as by any timed change."""
        first = next(i for i, k in enumerate(self._grid_key) if k)  # blamed for all of them: they share an instant
        change = ChangeLog(0.0, first, "changes in force at time zero, applied to the live jobs")
        self.change_logs.append(change)
        for i, in_force in enumerate(self._grid_key):
            if in_force:
                self._fail_site(i, change)
        carried = carry_over(self.scheduler, self.timeline.grid_at(0.0), self.clock, change.what)
        self._requeue_displaced(carried.displaced, change)
        self.scheduler = carried.scheduler
        self._cursor = carried.scheduler.store.last_sequence()
        # Placed now, read back with the first event (at time zero, too).
        self.scheduler.place_pending()

    # --- the loop ----------------------------------------------------------------------
    def run(self) -> RunResult:
        wall = time.perf_counter()
        while True:
            event = self._pop()
            if event is None:
                break
            t, kind, payload = event
            self.recorder.advance(t, self.scheduler.usage())
            self.now = t
            self._handle(kind, payload)
            self._read_ledger()
            self.events += 1
            if self.pending > self.peak_pending:
                self.peak_pending = self.pending
            if self.check_invariants:
                self.check_ledger()
            if self.on_event is not None:
                self.on_event(self)
        self.now = self.horizon_s
        self.recorder.finish(self.horizon_s, self.scheduler.usage())
        if self.progress is not None:
            self.progress(Progress(self.horizon_s, self.horizon_s, self._next_arrival, len(self.arrivals)))
        wall = time.perf_counter() - wall
        jobs = list(self.jobs.values())
        stats = self.workload_stats
        workload = {
            "arrivals": len(self.arrivals),
            "by_source": dict(sorted(stats.by_source.items())),
            "trace_rows_read": stats.trace_rows,
            "trace_rows_dropped": dict(sorted(stats.dropped.items())),
            "scaled_extra_arrivals": stats.scaled_extra,
            "scaled_away_arrivals": stats.scaled_away,
        }
        summary = summarize(self.recorder, jobs, self.change_logs, self.horizon_s, workload)
        perf = {"wall_s": wall, "events": float(self.events), "jobs": float(len(jobs)),
                "jobs_per_s": len(jobs) / wall if wall > 0 else 0.0}
        return RunResult(self.loaded.name, summary, self.recorder, jobs, self.change_logs, self.horizon_s, perf)

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, kind, self._seq, payload))

    def _pop(self) -> tuple[float, int, Any] | None:
        arrival = self.arrivals[self._next_arrival] if self._next_arrival < len(self.arrivals) else None
        if self._heap and (arrival is None or (self._heap[0][0], self._heap[0][1]) <= (arrival.time_s, ARRIVE)):
            if self._heap[0][0] > self.horizon_s:
                return None
            t, kind, _, payload = heapq.heappop(self._heap)
            return t, kind, payload
        if arrival is None or arrival.time_s > self.horizon_s:
            return None
        self._next_arrival += 1
        return arrival.time_s, ARRIVE, arrival

    def _handle(self, kind: int, payload: Any) -> None:
        if kind == ARRIVE:
            self._arrive(payload)
        elif kind == COMPLETE:
            job_id, token = payload
            log = self.jobs[job_id]
            if log.token == token and log.state == "running":
                self.scheduler.complete(job_id)
        elif kind == GRID:
            self._regrid(*payload)
        elif kind == DRAIN:
            self._drain(payload)
        elif kind == SAMPLE:
            self._sample()
        elif kind == BATCH:
            assert self.batch is not None
            outcome = self.scheduler.optimize_pending(time_limit_s=self.batch.time_limit_s, workers=1)
            self.batch_cycles += 1
            self.batch_pending_seen += outcome.pending_before
            self.batch_committed += len(outcome.committed)
            self._push(self.now + self.batch.every_minutes * 60.0, BATCH, None)

    # --- events ------------------------------------------------------------------------
    def _arrive(self, arrival: Arrival) -> None:
        outcome = self.scheduler.submit(arrival.spec)
        record = outcome.record
        self.jobs[record.id] = JobLog(
            job_id=record.id, source=arrival.source, spec=arrival.spec, arrival_s=arrival.time_s,
            duration_s=arrival.duration_s, remaining_s=arrival.duration_s, waiting=record.waiting,
        )
        self.pending += 1

    def _regrid(self, moment: Moment, key: tuple[int, ...]) -> None:
        """One timed change: the running jobs are re-committed against the grid just after it,
        so what no longer fits was displaced by this change and no other."""
        change = ChangeLog(moment.time_s, moment.change, moment.what)
        self.change_logs.append(change)
        if key != self._grid_key:
            failing = bool(key[moment.change]) and not self._grid_key[moment.change]
            self._grid_key = key
            self._read_ledger()
            if failing:
                self._fail_site(moment.change, change)
            carried = carry_over(self.scheduler, self.timeline.grid_for(key, moment.change), self.clock, moment.what)
            self._requeue_displaced(carried.displaced, change)
            self._adopt(carried.scheduler)
        # Retry the queue once every change of this instant is in: a job placed between two of
        # them could be displaced by the second, and blamed on it, for capacity it never had.
        if not (self._heap and self._heap[0][:2] == (moment.time_s, GRID)):
            self.scheduler.place_pending()

    def _fail_site(self, index: int, change: ChangeLog) -> None:
        """A site failure as the live server handles a lost site (``fleet.requeue_site``): an inference
        deployment with replicas elsewhere re-places only those at the site and runs on; the other
        jobs there fail and are re-queued with one more attempt, priority and submit time kept; the
        queue pass after the change re-places them (inference at once). Other changes displace by
        re-commit."""
        failure = self.timeline.changes[index]
        if not isinstance(failure, SiteFailure):
            return
        why = fleet.site_lost_why(failure.site, describe(failure))
        loss = fleet.requeue_site(self.scheduler, failure.site, why)
        store = self.scheduler.store
        for record in (store.get_job(j) for j in loss.replaced):
            if record is not None and record.placement is not None:
                self._replicas_moved(record, record.placement, change)
        self._requeue_displaced([r for r in (store.get_job(j) for j in loss.requeued) if r is not None], change)

    def _replicas_moved(self, record: JobRecord, placement: Placement, change: ChangeLog) -> None:
        """A deployment that runs on with some replicas re-placed: its run splits at the change, so
        energy and GPU-hours follow the replicas; its completion stays due as it was."""
        log = self.jobs[record.id]
        run = log.runs[-1]
        run.end_s, run.ended, run.displaced_by = self.now, "replicas moved", change
        log.runs.append(Run(self.now, None, {e.endpoint_id: e.latency_ms for e in placement.endpoint_latencies},
                            tuple(placement.site_ids), tuple(placement.assignments)))
        self.running[record.id] = placement

    def _requeue_displaced(self, displaced: list[JobRecord], change: ChangeLog) -> None:
        for record in displaced:
            log = self.jobs[record.id]
            self._stop_run(log, "displaced", change)
            log.state = "pending"
            self.pending += 1
            log.requeues += 1
            log.waiting = record.waiting
            log.token += 1  # its completion is void
            change.displaced_jobs += 1
            change.displaced_gpus += record.spec.total_gpus
            self._displaced_by[record.id] = change

    def _drain(self, step: DrainStep) -> None:
        self.change_logs.append(ChangeLog(step.time_s, step.change,
                                          f"{'drain' if step.drained else 'undrain'} {', '.join(step.pools)}"))
        for pool in step.pools:
            if pool in self.scheduler.index.pool_index:
                self.scheduler.set_drained(pool, step.drained)

    def _sample(self) -> None:
        s = self.scheduler
        usage = s.usage()
        fragmented = (fragmented_gpus(s.index, usage, s.policy, (r.spec for r in s.store.pending_jobs()))
                      if self.pending else 0)
        self.recorder.sample(self.now, usage, self.pending, len(self.running), self._pool_used_w(), fragmented)
        if self.progress is not None:
            self.progress(Progress(self.now, self.horizon_s, self._next_arrival, len(self.arrivals)))
        nxt = self.now + self.recorder.sample_every_s
        if nxt <= self.horizon_s:
            self._push(nxt, SAMPLE, None)

    def _pool_used_w(self) -> npt.NDArray[np.int64]:
        """The running jobs' power per pool, in whole watts as the ledger counts it per site."""
        s = self.scheduler
        watts = np.zeros(len(s.limits.pool_ids), dtype=np.int64)
        for placement in self.running.values():
            for a in placement.assignments:
                watts[s.limits.pool_index[a.pool_id]] += to_watts(a.power_kw)
        return watts

    def _adopt(self, scheduler: Scheduler) -> None:
        """Take over a rebuilt scheduler: read its ledger's events from now on."""
        self.scheduler = scheduler
        self._cursor = scheduler.store.last_sequence()
        self._finished_in_ledger = 0
        self.recorder.begin_epoch(scheduler)

    # --- what the scheduler did ----------------------------------------------------------
    def _read_ledger(self) -> None:
        store = self.scheduler.store
        if store.last_sequence() == self._cursor:
            return
        events = store.events_after(self._cursor, 0.0)
        if not events:
            return
        self._cursor = events[-1].sequence
        for event in events:
            if event.type is EventType.PLACED:
                record = store.get_job(event.job_id)
                assert record is not None
                if record.state is JobState.RUNNING:
                    self._placed(record)
            elif event.type is EventType.COMPLETED:
                self._completed(event.job_id)
            elif event.type is EventType.PREEMPTED:
                self._preempted(event.job_id, store.get_job(event.job_id), event.message)
            elif event.type is EventType.REJECTED:
                self.jobs[event.job_id].state = "rejected"
                self.pending -= 1
                self._finished_in_ledger += 1
        if self._finished_in_ledger >= max(COMPACT_MIN_FINISHED, len(self.running) + self.pending):
            self._compact()

    def _placed(self, record: JobRecord) -> None:
        log = self.jobs[record.id]
        placement = record.placement
        assert placement is not None
        if log.state == "running":  # already known (an event read twice would be a bug)
            raise InvariantViolation(f"job {record.id} placed while running")
        grid = self.scheduler.grid
        self.recorder.placements += 1
        self.recorder.residency_violations += residency_violations(grid, self.scheduler.policy, record.spec, placement)
        log.state = "running"
        self.pending -= 1
        log.token += 1
        log.runs.append(Run(self.now, None, {e.endpoint_id: e.latency_ms for e in placement.endpoint_latencies},
                            tuple(placement.site_ids), tuple(placement.assignments)))
        if self.loaded.scenario.requeue == "restart":
            log.remaining_s = log.duration_s
        self.running[record.id] = placement
        self._push(self.now + log.remaining_s, COMPLETE, (record.id, log.token))
        displaced_by = self._displaced_by.pop(record.id, None)
        if displaced_by is not None:
            displaced_by.replaced_jobs += 1

    def _preempted(self, job_id: str, record: JobRecord | None, message: str) -> None:
        """The scheduler evicted a running job for a higher-priority one: it waits again."""
        log = self.jobs[job_id]
        if log.state != "running":
            return
        self._stop_run(log, "preempted")
        log.runs[-1].preempted_by = message.removeprefix("preempted by ")
        log.state = "pending"
        self.pending += 1
        log.preemptions += 1
        log.token += 1
        if record is not None:
            log.waiting = record.waiting

    def _completed(self, job_id: str) -> None:
        log = self.jobs[job_id]
        self._stop_run(log, "completed")
        log.state = "completed"
        self._finished_in_ledger += 1

    def _stop_run(self, log: JobLog, ended: str, change: ChangeLog | None = None) -> None:
        run = log.runs[-1]
        run.end_s = self.now
        run.ended = ended
        run.displaced_by = change
        log.remaining_s = max(log.remaining_s - (self.now - run.start_s), 0.0)
        self.running.pop(log.job_id, None)

    def _compact(self) -> None:
        carried = carry_over(self.scheduler, self.scheduler.grid, self.clock)
        if carried.displaced:
            raise InvariantViolation(f"{len(carried.displaced)} jobs did not fit back on an unchanged grid")
        self._adopt(carried.scheduler)

    # --- conservation ------------------------------------------------------------------
    def check_ledger(self) -> None:
        """GPUs and power in use equal the sum over running jobs; never above capacity or envelope."""
        s = self.scheduler
        snap = s.store.snapshot()
        gpus = np.zeros(len(s.limits.pool_ids), dtype=np.int64)
        watts = np.zeros(len(s.limits.site_ids), dtype=np.int64)
        for placement in self.running.values():
            for a in placement.assignments:
                gpus[s.limits.pool_index[a.pool_id]] += a.gpus
                watts[s.limits.site_index[a.site_id]] += to_watts(a.power_kw)
        if not np.array_equal(gpus, snap.pool_used_gpus):
            bad = [s.limits.pool_ids[i] for i in np.flatnonzero(gpus != snap.pool_used_gpus)]
            raise InvariantViolation(f"t={self.now / DAY_S:.3f} d: ledger GPUs differ from running jobs in {bad}")
        if not np.array_equal(watts, snap.site_used_w):
            bad = [s.limits.site_ids[i] for i in np.flatnonzero(watts != snap.site_used_w)]
            raise InvariantViolation(f"t={self.now / DAY_S:.3f} d: ledger power differs from running jobs at {bad}")
        over = np.flatnonzero(snap.pool_used_gpus > s.limits.pool_gpus)
        if over.size:
            raise InvariantViolation(f"pools above capacity: {[s.limits.pool_ids[i] for i in over]}")
        over = np.flatnonzero(snap.site_used_w > s.limits.site_power_w)
        if over.size:
            raise InvariantViolation(f"sites above envelope: {[s.limits.site_ids[i] for i in over]}")
        running = {r.id for r in s.store.list_jobs(frozenset({JobState.RUNNING}), "", 1 << 62)}
        if running != set(self.running):
            raise InvariantViolation("the ledger's running jobs differ from the simulator's")


def simulate(
    loaded: LoadedScenario,
    *,
    check_invariants: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    return Simulator(loaded, check_invariants=check_invariants, progress=progress).run()
