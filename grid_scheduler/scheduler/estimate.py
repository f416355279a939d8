"""When will each waiting job start? The live queue replayed on a copy of the ledger.

Like Slurm's ``sbatch --test-only``: every running job is assumed to end at its expected end
(``engine.priority.expected_end``: its duration, or a deployment's default, after its start),
nothing else arrives, and at each end the queue pass runs as it would on the server. The replay
is a second ``Scheduler`` on an in-memory copy of the ledger with a simulated clock, so the
estimate applies exactly the rules the live scheduler applies (tiers, holds, backfill,
preemption): when nothing else changes, each job starts at its estimate.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from grid_scheduler.engine.priority import expected_end
from grid_scheduler.model import EventType, JobRecord, JobSpec, JobState
from grid_scheduler.scheduler import transitions
from grid_scheduler.scheduler.core import Scheduler
from grid_scheduler.state import MemoryStore, Transition

# Expected ends further out than this are not replayed: a job that would start later has no estimate.
DEFAULT_HORIZON_S = 30 * 24 * 3600.0
# A candidate job (ExplainPlacement) is replayed under this id.
CANDIDATE_ID = "candidate"


@dataclass(frozen=True)
class Estimates:
    """Expected start (Unix s) per job that is waiting now; a job missing from ``starts`` does not
    start within the horizon (or needs capacity that no running job's end frees)."""

    now: float
    horizon_s: float
    starts: dict[str, float]

    def start_of(self, job_id: str) -> float | None:
        return self.starts.get(job_id)


def estimate_starts(
    live: Scheduler, candidate: JobSpec | None = None, horizon_s: float = DEFAULT_HORIZON_S
) -> Estimates:
    """Replay the queue (and ``candidate``, submitted now, under ``CANDIDATE_ID``) forward from now."""
    now = live.now()
    clock = [now]
    sim = Scheduler(live.grid, live.policy, MemoryStore(live.limits), clock=lambda: clock[0], index=live.index,
                    quiet=True)
    snap = live.store.snapshot()
    running = live.store.running_jobs()
    pending = live.store.pending_jobs()
    for record in running:
        assert record.placement is not None
        sim.store.create_job(Transition(record, EventType.PLACED, reserve=record.placement.assignments))
    for record in pending:
        sim.store.create_job(Transition(record, EventType.PENDING))
    for pool_id, drained in zip(live.limits.pool_ids, snap.pool_drained, strict=True):
        if drained:
            sim.store.set_drained(pool_id, True)
    # Out-of-service nodes after the running jobs (a draining node keeps its job, but takes no new one).
    for pool_id, out in zip(live.limits.pool_ids, snap.node_out, strict=False):
        if out.any():
            sim.store.set_nodes_out(pool_id, [int(i) for i in out.nonzero()[0]])
    waiting = {r.id for r in pending}
    if candidate is not None:
        waiting.add(_submit_candidate(sim, candidate, now))
    ends = _Ends(now)
    for record in running:
        ends.push(record)
    starts: dict[str, float] = {}
    seen = sim.store.last_sequence()
    sim.place_pending()  # what the next pass would place now (held work, a pass not yet run)
    while True:
        seen = _collect_starts(sim, seen, waiting, starts, ends)
        if not waiting or not ends.heap or ends.heap[0][0] > now + horizon_s:
            break
        end_s, job_id, run_start = heapq.heappop(ends.heap)
        ending = sim.store.get_job(job_id)
        if ending is None or ending.state is not JobState.RUNNING or ending.started_at != run_start:
            continue  # that run was preempted in the replay: its end never comes
        clock[0] = max(clock[0], end_s)
        sim.complete(job_id)  # frees its capacity and runs the queue pass
    return Estimates(now, horizon_s, starts)


def _submit_candidate(sim: Scheduler, spec: JobSpec, now: float) -> str:
    # As a submission now: placed at once if it can be, else it waits at the back of its tier.
    decision = sim.decide(spec, sim.holds().overlay(sim.usage(), spec))
    if decision.placement is not None:
        create = transitions.new_placed(CANDIDATE_ID, spec, "", decision.placement, now,
                                        policy_version=sim.policy_version)
    else:
        create = transitions.new_waiting(sim.index, sim.policy, CANDIDATE_ID, spec, "", decision, JobState.PENDING,
                                         "waiting", now, policy_version=sim.policy_version)
    sim.store.commit((), create)
    return CANDIDATE_ID


class _Ends:
    """Expected ends of the runs in the replay, earliest first; each run once."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.heap: list[tuple[float, str, float]] = []  # (expected end, job id, the start of the run it ends)
        self._runs: set[tuple[str, float]] = set()

    def push(self, record: JobRecord) -> None:
        started = record.started_at if record.started_at is not None else self.now
        if (record.id, started) not in self._runs:
            self._runs.add((record.id, started))
            heapq.heappush(self.heap, (expected_end(started, record.spec), record.id, started))


def _collect_starts(sim: Scheduler, seen: int, waiting: set[str], starts: dict[str, float], ends: _Ends) -> int:
    """Record every run that started in the replay since event ``seen``; returns the last event read."""
    for event in sim.store.events_after(seen, 0):
        seen = event.sequence
        if event.type is not EventType.PLACED:
            continue
        record = sim.store.get_job(event.job_id)
        if record is None or record.state is not JobState.RUNNING:
            continue
        ends.push(record)
        if event.job_id in waiting:
            waiting.discard(event.job_id)
            starts[event.job_id] = event.time
    return seen
