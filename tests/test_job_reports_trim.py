"""The agents' job reports are trimmed: a report of a run that ended is forgotten once it is older
than the retention period (scheduler/fleet.py ``forget_ended_reports``), on both stores; a report
replaced meanwhile stays; a duplicate arriving after the trim changes nothing; and the server's
archive pass does it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from grid_scheduler._proto.v1 import agent_pb2 as apb
from grid_scheduler.client import Client
from grid_scheduler.model import Grid, JobState
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.service import server as server_module
from grid_scheduler.service.server import start_server
from grid_scheduler.state import Store
from grid_scheduler.state.agents import JobPhase, JobReport
from tests.test_site_agent import SITE, register, report, training


class Clock:
    def __init__(self, t_s: float) -> None:
        self.t_s = t_s

    def __call__(self) -> float:
        return self.t_s


def scheduler_at(small_grid: Grid, store: Store, clock: Clock) -> Scheduler:
    s = Scheduler(small_grid, store=store, clock=clock)
    s.store.register_agent(SITE, "a1", {}, s.now())
    return s


def test_only_reports_of_runs_that_ended_before_the_cutoff_are_forgotten(small_grid: Grid, store: Store) -> None:
    clock = Clock(1_000.0)
    s = scheduler_at(small_grid, store, clock)
    done, running, failed_late = (s.submit(training(8, name=n)).record for n in ("done", "running", "late"))
    fleet.apply_report(s, SITE, "a1", JobReport(done.id, JobPhase.SUCCEEDED, 1, at_s=clock()))
    fleet.apply_report(s, SITE, "a1", JobReport(running.id, JobPhase.RUNNING, 1, at_s=clock()))
    clock.t_s = 2_000.0
    fleet.apply_report(s, SITE, "a1", JobReport(failed_late.id, JobPhase.FAILED, 1, at_s=clock()))

    assert fleet.forget_ended_reports(s, before_s=1_500.0) == 1
    assert {r.job_id for r in s.store.job_reports(SITE)} == {running.id, failed_late.id}
    assert fleet.forget_ended_reports(s, before_s=1_500.0) == 0  # idempotent
    # The active report stays however old it is: the desired state still needs it.
    assert fleet.forget_ended_reports(s, before_s=10_000.0) == 1
    assert [r.job_id for r in s.store.job_reports(SITE)] == [running.id]


def test_a_report_replaced_after_the_trim_read_it_is_kept(small_grid: Grid, store: Store) -> None:
    clock = Clock(1_000.0)
    s = scheduler_at(small_grid, store, clock)
    job = s.submit(training(8)).record
    fleet.apply_report(s, SITE, "a1", JobReport(job.id, JobPhase.FAILED, 1, at_s=clock()))
    read = s.store.job_reports(SITE)
    newer = JobReport(job.id, JobPhase.RUNNING, 2, at_s=clock())
    s.store.report_job(SITE, "a1", newer)  # arrives between the trim's read and its forget
    assert s.store.forget_job_reports(SITE, read) == 0
    assert s.store.job_reports(SITE) == [newer]


def test_a_duplicate_after_the_trim_changes_nothing(small_grid: Grid, store: Store) -> None:
    clock = Clock(1_000.0)
    s = scheduler_at(small_grid, store, clock)
    job = s.submit(training(8)).record
    fleet.apply_report(s, SITE, "a1", JobReport(job.id, JobPhase.RUNNING, 1, at_s=clock()))
    fleet.apply_report(s, SITE, "a1", JobReport(job.id, JobPhase.SUCCEEDED, 2, at_s=clock()))
    ended = s.get(job.id)
    assert ended.state is JobState.COMPLETED
    used_before = s.store.snapshot().pool_used_gpus.copy()
    clock.t_s = 5_000.0
    assert fleet.forget_ended_reports(s, before_s=4_000.0) == 1

    # The agent retries its last report, then an overtaken one arrives.
    fleet.apply_report(s, SITE, "a1", JobReport(job.id, JobPhase.SUCCEEDED, 2, at_s=clock()))
    fleet.apply_report(s, SITE, "a1", JobReport(job.id, JobPhase.FAILED, 1, at_s=clock()))
    after = s.get(job.id)
    assert (after.state, after.attempts, after.version) == (ended.state, ended.attempts, ended.version)
    assert np.array_equal(s.store.snapshot().pool_used_gpus, used_before)
    assert fleet.desired_state(s, SITE).stop == ()  # nothing active reported, so nothing to stop


def test_the_servers_archive_pass_forgets_ended_reports(small_grid: Grid, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "ARCHIVE_INTERVAL_S", 0.05)
    clock = Clock(time.time())
    s = Scheduler(small_grid, clock=clock)
    running = start_server(s, "127.0.0.1:0", max_workers=8, batch_interval_s=None, retention_s=3_600.0)
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=10) as client:
            register(client)
            job = client.submit(training(8)).job
            assert report(client, job.id, apb.JOB_PHASE_SUCCEEDED, 1).applied
            assert [r.job_id for r in s.store.job_reports(SITE)] == [job.id]
            clock.t_s += 2 * 3_600.0
            deadline = time.monotonic() + 20.0
            while s.store.job_reports(SITE) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert s.store.job_reports(SITE) == []
    finally:
        running.stop(grace_s=0.5)
