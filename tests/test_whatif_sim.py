"""The simulator: determinism, conservation at every event, grid changes, workloads, metrics."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from grid_scheduler.model import JobState
from grid_scheduler.whatif.changes import DAY_S
from grid_scheduler.whatif.metrics import HOUR_S
from grid_scheduler.whatif.simulator import Simulator, simulate
from grid_scheduler.whatif.workload import build_arrivals
from tests.whatif_scenarios import EVENTFUL_CHANGES, TRACE, load, small


def test_same_scenario_and_seed_give_identical_metrics() -> None:
    scenario = load(small(changes=EVENTFUL_CHANGES))
    a, b = simulate(scenario), simulate(scenario)
    assert json.dumps(a.summary, sort_keys=True) == json.dumps(b.summary, sort_keys=True)
    assert a.recorder.samples == b.recorder.samples
    assert [(j.source, j.arrival_s, j.state, [(r.start_s, r.end_s, r.sites) for r in j.runs]) for j in a.jobs] == [
        (j.source, j.arrival_s, j.state, [(r.start_s, r.end_s, r.sites) for r in j.runs]) for j in b.jobs
    ]
    other = simulate(load(small(changes=EVENTFUL_CHANGES, seed=6)))
    assert other.summary != a.summary


def _independent_check(sim: Simulator) -> None:
    """From the ledger's own running jobs (not the simulator's bookkeeping) and the grid's limits."""
    s = sim.scheduler
    snap = s.store.snapshot()
    gpus = np.zeros(len(s.limits.pool_ids), dtype=np.int64)
    watts = np.zeros(len(s.limits.site_ids), dtype=np.int64)
    for record in s.store.list_jobs(frozenset({JobState.RUNNING}), "", 1 << 40):
        assert record.placement is not None
        for a in record.placement.assignments:
            gpus[s.limits.pool_index[a.pool_id]] += a.gpus
            watts[s.limits.site_index[a.site_id]] += round(a.power_kw * 1000)
    assert np.array_equal(gpus, snap.pool_used_gpus)
    assert np.array_equal(watts, snap.site_used_w)
    healthy = np.array([p.healthy_gpus for site in s.grid.sites for p in site.pools])
    envelope_w = np.array([round(site.power_envelope_mw * 1e6) for site in s.grid.sites])
    assert (snap.pool_used_gpus <= healthy).all()
    assert (snap.site_used_w <= envelope_w).all()


def test_conservation_at_every_event_through_failures_cuts_drains_and_deliveries() -> None:
    events = Counter[str]()

    def check(sim: Simulator) -> None:
        _independent_check(sim)
        events["checked"] += 1

    sim = Simulator(load(small(changes=EVENTFUL_CHANGES)), check_invariants=True, on_event=check)
    result = sim.run()
    assert events["checked"] == sim.events > 500
    assert result.summary["residency"]["violations"] == 0
    assert result.summary["residency"]["placements_checked"] >= result.summary["jobs"]["placed"]
    # the changes did bite: jobs were displaced, and power was held under the cut envelope
    assert result.summary["disruption"]["displaced_jobs"] > 0
    assert result.summary["power"]["sines"]["min_envelope_mw"] == pytest.approx(0.15)


def test_a_site_failure_moves_its_jobs_and_the_report_shows_it(tmp_path: object) -> None:
    # Glomfjord is the only home of big GB300 gangs here: fill it, then fail it for a day.
    data = small(changes=[{"kind": "site_failure", "at_days": 1, "duration_days": 1, "site": "glomfjord"}])
    result = simulate(load(data))
    failure, recovery = result.changes
    assert failure.what == "site glomfjord fails for 1 days"
    assert failure.displaced_jobs > 0 and failure.displaced_gpus > 0
    assert recovery.displaced_jobs == 0
    assert result.summary["disruption"]["displaced_jobs"] == failure.displaced_jobs
    moved = [j for j in result.jobs if j.requeues]
    assert len(moved) == failure.displaced_jobs
    t0, t1 = DAY_S, 2 * DAY_S
    for job in result.jobs:
        for run in job.runs:
            if "glomfjord" in run.sites:  # nothing runs there while it is down
                end = run.end_s if run.end_s is not None else result.horizon_s
                assert end <= t0 or run.start_s >= t1
    for job in moved:  # each was running at glomfjord when it failed; it was stopped then
        assert any(r.end_s == t0 and "glomfjord" in r.sites for r in job.runs)
        later = [r for r in job.runs if r.start_s >= t0]
        assert len(later) <= 1
        if later:  # placed again: elsewhere during the failure, or anywhere after it
            assert "glomfjord" not in later[0].sites or later[0].start_s >= t1
    assert failure.replaced_jobs == sum(1 for j in moved if len(j.runs) > 1)
    # the displaced jobs resume: their runs add up to their duration
    for job in moved:
        if job.state == "completed":
            ran = sum((r.end_s or 0) - r.start_s for r in job.runs)
            assert ran == pytest.approx(job.duration_s)

    from grid_scheduler.whatif.report import write_run_report

    out = tmp_path / "report"  # type: ignore[operator]
    write_run_report(result, load(data), out)
    changes_csv = (out / "changes.csv").read_text().splitlines()
    assert changes_csv[1].startswith(f"1.0,0,site glomfjord fails for 1 days,{failure.displaced_jobs},")
    html = (out / "report.html").read_text()
    assert "site glomfjord fails for 1 days" in html and "displaced" in html


def test_power_cut_displaces_lowest_priority_first_and_caps_draw() -> None:
    data = small(changes=[{"kind": "power_cut", "at_days": 1, "duration_days": 1, "site": "glomfjord",
                           "envelope_mw": 0.3}])
    sim = Simulator(load(data), check_invariants=True)
    result = sim.run()
    cut = result.changes[0]
    assert cut.displaced_jobs > 0
    power = [s.value for s in result.recorder.samples
             if s.metric == "power_mw" and s.key == "glomfjord" and DAY_S <= s.time_s < 2 * DAY_S]
    assert max(power) <= 0.3 + 1e-9


def test_a_drain_keeps_running_jobs_and_places_nothing_new() -> None:
    data = small(changes=[{"kind": "drain", "at_days": 1, "duration_days": 2, "pools": ["glomfjord-gb300"]}])
    result = simulate(load(data))
    started = [r for j in result.jobs for r in j.runs if "glomfjord" in r.sites]
    assert started
    assert not [r for r in started if DAY_S < r.start_s < 3 * DAY_S]
    assert any(r.start_s < DAY_S and (r.end_s is None or r.end_s > DAY_S) for r in started)  # kept running
    assert result.summary["disruption"]["displaced_jobs"] == 0


def test_a_drain_survives_an_unrelated_failure_and_recovery_and_displacements_name_their_change() -> None:
    drained = ["sines-h100", "london-h200", "london-b200", "frankfurt-h100", "manchester-h100"]
    data = small(changes=[
        {"kind": "drain", "at_days": 0.8, "duration_days": 2, "pools": drained},
        {"kind": "site_failure", "at_days": 1, "duration_days": 0.25, "site": "glomfjord"},
    ])
    result = Simulator(load(data), check_invariants=True).run()
    drain, failure, recovery, _undrain = sorted(result.changes, key=lambda c: c.time_s)
    assert failure.what.startswith("site glomfjord fails") and recovery.what.endswith("recovers")
    runs = [r for j in result.jobs for r in j.runs]
    in_drained = [r for r in runs if {a.pool_id for a in r.assignments} & set(drained)]
    # jobs were running in the drained pools through the failure and through the recovery
    for t in (DAY_S, 1.25 * DAY_S):
        assert any(r.start_s < 0.8 * DAY_S and (r.end_s is None or r.end_s > t) for r in in_drained)
    assert not [r for r in in_drained if r.ended == "displaced"]
    displaced = [r for r in runs if r.ended == "displaced"]
    assert displaced and all(r.displaced_by is failure and r.end_s == DAY_S and r.sites == ("glomfjord",)
                             for r in displaced)
    assert failure.displaced_jobs == len(displaced) and recovery.displaced_jobs == 0 == drain.displaced_jobs


def test_gpu_deliveries_grow_a_pool_over_time() -> None:
    data = small(changes=[EVENTFUL_CHANGES[3]])
    scenario = load(data)
    timeline = scenario.timeline
    sizes = [timeline.grid_at(t * DAY_S).pool_by_id.get("sines-vr", (None, None))[1] for t in (0, 0.25, 1.3, 2.3)]
    assert sizes[0] is None
    assert [p.total_gpus for p in sizes[1:] if p is not None] == [64, 128, 192]
    result = simulate(scenario)
    assert result.recorder.gpu_s["sines-vr"] > 0  # the delivered GPUs were used
    # available GPU-hours: 64 GPUs from 6 h, 128 from 30 h, 192 from 54 h to the end (96 h)
    assert result.recorder.cap_s["sines-vr"] / HOUR_S == pytest.approx(64 * 24 + 128 * 24 + 192 * 42)


def test_trace_rules_map_rows_and_count_what_they_drop() -> None:
    data = small(workload={"trace": {
        "path": str(TRACE), "origin_days": 119, "max_jobs": 300, "rules": [
            {"name": "ls", "match": {"qos": ["LS"]}, "kind": "inference", "tenants": {"acme": 1},
             "gpu_scale": 2, "replicas": 2, "endpoints": {"london": 1, "frankfurt": 1}, "latency_slo_ms": 20},
            {"name": "multi", "match": {"min_gpus": 2}, "kind": "training", "tenants": {"labs": 1}, "gpu_scale": 8},
        ]}})
    scenario = load(data)
    arrivals, stats = build_arrivals(scenario.scenario.workload, scenario.grid, 5, scenario.scenario.horizon_s,
                                     scenario.base_dir)
    assert len(arrivals) == 300
    assert stats.dropped["no rule matches"] > 0  # single-GPU batch tasks: no rule takes them
    assert stats.dropped["ended before the trace origin"] > 0
    ls = [a for a in arrivals if a.source == "ls"]
    assert ls and all(a.spec.kind.value == "inference" and a.spec.gpus.count == 2 for a in ls)
    assert all(a.spec.inference is not None and a.spec.inference.replicas == 2 for a in ls)
    multi = [a for a in arrivals if a.source == "multi"]
    assert all(a.spec.gpus.count >= 16 for a in multi)
    assert all(a.duration_s >= 60 for a in arrivals)
    assert arrivals[0].time_s == 0.0  # tasks alive at the origin start at t=0
    result = simulate(scenario)
    assert result.summary["workload"]["by_source"]["ls"] == len(ls)


def test_scaling_multiplies_matching_arrivals_and_can_rebind_residency() -> None:
    base = load(small())
    scaled = load(small(workload={**small()["workload"], "scale": [
        {"kind": "inference", "endpoints": ["london", "manchester"], "factor": 3, "residency": {"allowed": ["UK"]}}]}))
    a, _ = build_arrivals(base.scenario.workload, base.grid, 5, base.scenario.horizon_s, base.base_dir)
    b, stats = build_arrivals(scaled.scenario.workload, scaled.grid, 5, scaled.scenario.horizon_s, scaled.base_dir)

    def uk(arrivals: list) -> list:  # type: ignore[type-arg]
        return [x for x in arrivals if x.spec.inference and x.spec.inference.demand[0].endpoint in ("london",
                                                                                                    "manchester")]

    assert len(uk(b)) == 3 * len(uk(a)) and stats.scaled_extra == 2 * len(uk(a))
    assert all(x.spec.residency.allowed == ["UK"] for x in uk(b))
    assert len(b) - len(uk(b)) == len(a) - len(uk(a))
    result = simulate(scaled)
    uk_sites = {"london-hub", "manchester-edge"}
    for job in result.jobs:
        if job.spec.residency.allowed == ["UK"]:
            assert all(set(r.sites) <= uk_sites for r in job.runs)


def test_diurnal_inference_arrivals_peak_in_the_local_afternoon() -> None:
    data = small(horizon_days=20, workload={"generated": [
        {"name": "serve", "kind": "inference", "tenants": {"acme": 1}, "arrivals_per_day": 400,
         "endpoints": {"london": 1}, "gpus": {"min": 1, "max": 1}, "duration_hours": {"min": 1, "max": 1},
         "latency_slo_ms": 20, "diurnal_amplitude": 0.8, "peak_hour_local": 14}]})
    scenario = load(data)
    arrivals, _ = build_arrivals(scenario.scenario.workload, scenario.grid, 1, scenario.scenario.horizon_s,
                                 scenario.base_dir)
    by_hour = Counter(int(a.time_s / HOUR_S) % 24 for a in arrivals)
    assert by_hour[14] > 3 * by_hour[2]
    assert 0.85 * 8000 < len(arrivals) < 1.15 * 8000  # the mean rate is kept


def test_preemption_by_the_scheduler_is_followed() -> None:
    # Preemptible low-priority training fills GB300; high-priority gangs then evict it.
    data = small(workload={"generated": [
        {"name": "filler", "kind": "training", "tenants": {"labs": 1}, "arrivals_per_day": 200, "max_jobs": 60,
         "gpus": {"min": 64, "max": 64}, "duration_hours": {"min": 48, "max": 48}, "gpu_types": ["GB300"],
         "priority": 10, "preemptible": True},
        {"name": "urgent", "kind": "training", "tenants": {"acme": 1}, "arrivals_per_day": 4, "start_days": 0.5,
         "gpus": {"min": 256, "max": 256}, "duration_hours": {"min": 2, "max": 2}, "gpu_types": ["GB300"],
         "priority": 500}]})
    sim = Simulator(load(data), check_invariants=True)
    result = sim.run()
    assert result.summary["disruption"]["preemptions"] > 0
    evicted = [j for j in result.jobs if j.preemptions]
    assert all(j.source == "filler" for j in evicted)
    assert all(len(j.runs) >= 1 and j.runs[0].end_s is not None for j in evicted)


def test_an_added_site_takes_work_from_when_it_opens() -> None:
    site = {"id": "evora", "tier": "ai_factory", "location": {"lat": 38.57, "lon": -7.91, "country": "PT"},
            "power_envelope_mw": 2.0, "pue": 1.1, "carbon_g_per_kwh": 20, "energy_price_per_mwh": 40,
            "pools": [{"id": "evora-gb300", "gpu_type": "GB300", "nodes": 128, "gpus_per_node": 4,
                       "interconnect_domain_gpus": 72, "workload": "training"}]}
    data = small(changes=[{"kind": "add_site", "at_days": 1, "site": site,
                           "links": [{"a": "evora", "b": "sines", "latency_ms": 2, "bandwidth_gbps": 400}]}])
    sim = Simulator(load(data), check_invariants=True)
    result = sim.run()
    runs = [r for j in result.jobs for r in j.runs if "evora" in r.sites]
    assert runs and min(r.start_s for r in runs) >= DAY_S
    assert result.summary["utilisation"]["by_site"]["evora"]["gpu_hours_available"] == pytest.approx(512 * 72)


def test_a_batch_cycle_runs_the_schedulers_optimiser(monkeypatch: pytest.MonkeyPatch) -> None:
    from grid_scheduler.scheduler import Scheduler

    cycles: list[int] = []
    optimize = Scheduler.optimize_pending

    def counted(self: Scheduler, *args: object, **kwargs: object) -> object:
        outcome = optimize(self, *args, **kwargs)  # type: ignore[arg-type]
        cycles.append(len(outcome.committed))
        return outcome

    monkeypatch.setattr(Scheduler, "optimize_pending", counted)
    data = small(horizon_days=1.5, batch={"every_minutes": 120, "time_limit_s": 5})
    result = Simulator(load(data), check_invariants=True).run()
    assert len(cycles) == 18  # every 2 simulated hours over 36 hours
    assert result.summary["jobs"]["placed"] > 0
    assert result.summary["residency"]["violations"] == 0
