"""Starting a what-if run from a live server's state (``whatif run SCENARIO --from ADDRESS``).

The live state (``scheduler.live.LiveState``, fetched over gRPC by the CLI; nothing here
speaks gRPC) replaces the scenario's grid and policy, and is put into the simulation's
ledger at simulated time zero, before any event:

- running jobs are committed with their placement unchanged; each completes after its
  remaining time (its expected end on the server minus the snapshot's read time);
- operator drains are set after them (a drain keeps what runs in the pool, as carry-over does);
- waiting jobs are queued in the server's queue order, keeping their priority and submission
  time.

Live times are Unix seconds; simulated time zero is the snapshot's read time, so every live
time is shifted by it (a job submitted an hour before the snapshot arrived at -3600 s), and
queue order between live jobs and the scenario's own arrivals is the order of submission.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from grid_scheduler.engine import wait_info
from grid_scheduler.engine.priority import duration_hours
from grid_scheduler.model import EventType, JobRecord, WaitInfo
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.live import LiveState, remaining_s
from grid_scheduler.state import Transition
from grid_scheduler.whatif.scenario import LoadedScenario, load_scenario

__all__ = ["LIVE_SOURCE", "LiveStart", "SeededJob", "ignored_fields", "load_from_live", "seed_ledger",
           "start_from_live"]

LIVE_SOURCE = "live"  # the JobLog source of jobs that came from the snapshot


@dataclass(frozen=True)
class LiveStart:
    """A snapshot and where it came from (the report names both)."""

    address: str
    state: LiveState
    anonymised_jobs: int = 0

    def meta(self) -> dict[str, object]:
        s = self.state
        return {"address": self.address, "ledger_version": s.ledger_version, "event_sequence": s.event_sequence,
                "read_at": s.read_at, "policy_version": s.policy.version, "running_jobs": len(s.running),
                "pending_jobs": len(s.pending), "drained_pools": list(s.drained_pool_ids),
                "anonymised_jobs": self.anonymised_jobs}


@dataclass(frozen=True)
class SeededJob:
    record: JobRecord  # as committed in the simulation's ledger (times shifted to simulated time)
    arrival_s: float  # simulated submission time (<= 0)
    remaining_s: float  # running jobs: simulated time left to run; waiting ones: their whole duration
    waiting: WaitInfo | None = None  # waiting jobs: why, at time zero


def ignored_fields(loaded: LoadedScenario) -> list[str]:
    """The scenario fields a live start replaces (the CLI warns about each)."""
    s = loaded.scenario
    out = []
    if s.grid is not None:
        out.append(f"grid {s.grid!r}")
    if s.policy is not None:
        out.append("policy")
    if s.policy_file is not None:
        out.append(f"policy_file {s.policy_file!r}")
    return out


def start_from_live(loaded: LoadedScenario, live: LiveStart) -> LoadedScenario:
    """``loaded`` (validated against the live grid: ``load_scenario(..., live_grid=...)``) set to
    start from ``live``: the live policy replaces the scenario's."""
    if loaded.grid is not live.state.grid:
        raise ValueError("load the scenario with live_grid=the snapshot's grid first")
    return replace(loaded, policy=live.state.policy.policy, live=live)


def load_from_live(path: Path | str, live: LiveStart) -> LoadedScenario:
    """The scenario file at ``path``, checked against the live grid (its own ``grid`` is not read)
    and set to start from ``live``."""
    return start_from_live(load_scenario(path, live_grid=live.state.grid), live)


def _shifted(record: JobRecord, t0: float) -> JobRecord:
    def at(t: float | None) -> float | None:
        return None if t is None else t - t0

    return record.model_copy(update={
        "created_at": record.created_at - t0, "updated_at": record.updated_at - t0,
        "queued_at": at(record.queued_at), "started_at": at(record.started_at),
    })


def seed_ledger(scheduler: Scheduler, state: LiveState) -> tuple[list[SeededJob], list[SeededJob]]:
    """Commit ``state`` into ``scheduler``'s (empty) ledger at simulated time zero; returns the
    running and the waiting jobs as seeded. The ledger's own commit re-checks every pool and
    site, so a snapshot that does not fit its own grid fails here (CapacityConflict)."""
    store = scheduler.store
    t0 = state.read_at
    running: list[SeededJob] = []
    for record in state.running:
        assert record.placement is not None
        seeded = _shifted(record, t0)
        store.create_job(Transition(seeded, EventType.PLACED, "live snapshot", reserve=record.placement.assignments))
        running.append(SeededJob(seeded, seeded.created_at, remaining_s(record, t0)))
    for pool_id in state.drained_pool_ids:
        if pool_id in scheduler.index.pool_index:
            store.set_drained(pool_id, True)
    pending: list[SeededJob] = []
    for record in state.pending:
        seeded = _shifted(record, t0)
        store.create_job(Transition(seeded, EventType.PENDING, "live snapshot"))
        pending.append(SeededJob(seeded, seeded.created_at, duration_hours(record.spec) * 3600.0))
    # Why each waits, as the simulation's scheduler sees it at time zero with the whole queue in
    # (the snapshot carries no reasons: an anonymised job's could name its datasets).
    for i, job in enumerate(pending):
        decision, _ = scheduler.explain(job.record.spec)
        info = wait_info(scheduler.index, decision, scheduler.policy)
        pending[i] = replace(job, waiting=WaitInfo(site_counts=info.site_counts,
                                                   summary=["waiting in the live queue", *info.summary]))
    return running, pending
