"""`grid-scheduler whatif plan`: the chosen plan meets its targets in the replay, costs less than
greedy's, reports the model-vs-replay gap; impossible targets say which and why; bad files name
the field and line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from grid_scheduler.cli import main
from grid_scheduler.whatif.planning.aggregate import aggregate
from grid_scheduler.whatif.planning.model import PlanModel
from grid_scheduler.whatif.planning.planner import PlanRun, run_plan
from grid_scheduler.whatif.planning.report import write_plan_report
from grid_scheduler.whatif.planning.spec import PlanError, load_plan
from tests.conftest import GRIDS, ROOT

PLANS = ROOT / "examples" / "plans"
UK_PLAN = PLANS / "uk-sovereign-growth.yaml"


@pytest.fixture(scope="module")
def uk_run() -> PlanRun:
    return run_plan(load_plan(UK_PLAN))


def test_chosen_plan_meets_targets_in_the_replay_and_costs_less_than_greedy(uk_run: PlanRun) -> None:
    assert not uk_run.infeasible
    assert not uk_run.do_nothing.met  # otherwise the cheapest plan is trivially "nothing"
    chosen, greedy = uk_run.chosen, uk_run.greedy
    assert chosen is not None and greedy is not None
    assert chosen.met, [(m.value, m.met) for m in chosen.measured]
    assert greedy.met, [(m.value, m.met) for m in greedy.measured]
    assert 0 < chosen.cost_musd < greedy.cost_musd
    # The model never starts a candidate before its lead time.
    for candidate, at_days in chosen.expansions:
        assert at_days >= candidate.lead_time_days


def test_report_shows_plan_table_and_model_vs_replay_gap(uk_run: PlanRun, tmp_path: Path) -> None:
    write_plan_report(uk_run, tmp_path)
    with (tmp_path / "plan.csv").open() as f:
        rows = list(csv.DictReader(f))
    chosen = uk_run.chosen
    assert chosen is not None
    assert [r["candidate"] for r in rows] == [c.id for c, _ in chosen.expansions]
    assert {"what", "site", "in_service_day", "cost_musd"} <= set(rows[0])
    assert sum(float(r["cost_musd"]) for r in rows) == pytest.approx(chosen.cost_musd)
    data = json.loads((tmp_path / "plan.json").read_text())
    final = next(r for r in data["rounds"] if r.get("replay_met_targets"))
    assert final["status"] in ("OPTIMAL", "FEASIBLE") and final["bound_musd"] <= final["cost_musd"]
    gaps = final["model_vs_replay"]
    assert len(gaps) == len(uk_run.loaded.plan.targets)
    for g in gaps:
        assert g["gap"] == pytest.approx(g["replayed"] - g["predicted"], abs=1e-5)
    assert data["chosen"]["cost_musd"] < data["greedy"]["cost_musd"]
    assert data["do_nothing"]["targets_met"] is False
    md = (tmp_path / "comparison.md").read_text()
    assert "gap (replay - model)" in md and "do-nothing" in md and "greedy" in md and "chosen" in md
    assert "<table>" in (tmp_path / "comparison.html").read_text()
    assert (tmp_path / "replay" / "report.html").exists()


def test_the_model_is_deterministic() -> None:
    loaded = load_plan(UK_PLAN)
    agg = aggregate(loaded)
    a = PlanModel(agg, loaded.plan.targets, 0.85).solve(10)
    b = PlanModel(aggregate(loaded), loaded.plan.targets, 0.85).solve(10)
    assert a.status == "OPTIMAL" and a.choices == b.choices and a.cost_musd == b.cost_musd


def _scenario(path: Path, streams: list[dict[str, Any]], horizon_days: float = 14) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "plan-test", "grid": str(GRIDS / "nscale.yaml"), "seed": 3, "horizon_days": horizon_days,
        "sample_every_hours": 12, "workload": {"generated": streams},
    }, sort_keys=False))
    return path


def _plan(path: Path, scenario: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump({"name": "p", "scenario": str(scenario), "period_days": 7, **fields},
                                   sort_keys=False))
    return path


def test_no_eu_site_within_the_slo_of_oslo_is_named(tmp_path: Path) -> None:
    # Oslo's nearest sites are Norwegian (EEA, not EU); the nearest EU hub is ~7 ms away.
    scenario = _scenario(tmp_path / "s.yaml", [{
        "name": "oslo-eu-inference", "kind": "inference", "tenants": {"t": 1}, "arrivals_per_day": 4,
        "endpoints": {"oslo": 1}, "gpus": {"min": 8, "max": 8}, "duration_hours": {"min": 12, "max": 24},
        "latency_slo_ms": 3, "residency": {"allowed": ["EU"]}, "priority": 200}])
    candidate = {"id": "oslo-b200", "cost_musd": 10, "change": {"kind": "add_pool", "site": "oslo-edge", "pool": {
        "id": "oslo-b200-b", "gpu_type": "B200", "nodes": 16, "gpus_per_node": 8, "workload": "inference"}}}
    plan = _plan(tmp_path / "p.yaml", scenario, candidates=[candidate],
                 targets=[{"kind": "slo_attainment", "endpoints": ["oslo"], "min": 0.9}])
    run = run_plan(load_plan(plan))
    assert [i["target"] for i in run.infeasible] == [0]
    why = str(run.infeasible[0]["why"])
    assert "no site that satisfies EU is within the 3 ms SLO of oslo" in why and "oslo-edge" in why
    assert not run.rounds and run.greedy is None
    out = tmp_path / "out"
    assert main(["whatif", "plan", str(plan), "--out", str(out), "--quiet"]) == 1
    assert "no site, existing or candidate" in (out / "comparison.md").read_text()


def test_a_power_runway_too_short_is_named(tmp_path: Path) -> None:
    # US-only VR200 frontier training: only the candidate Monarch VR200 hall could take it, and at
    # ~2.2 kW per GPU the demand needs far more than Monarch's 1 GW (+1 GW upgrade) can feed.
    scenario = _scenario(tmp_path / "s.yaml", [{
        "name": "us-vr200-training", "kind": "training", "tenants": {"t": 1}, "arrivals_per_day": 40,
        "gpus": {"min": 16384, "max": 16384}, "duration_hours": {"min": 48, "max": 96},
        "gpu_types": ["VR200"], "residency": {"allowed": ["US"]}, "priority": 100}], horizon_days=7)
    candidates = [
        {"id": "monarch-vr200", "cost_musd": 5000, "change": {"kind": "add_pool", "site": "monarch", "pool": {
            "id": "monarch-vr200-a", "gpu_type": "VR200", "nodes": 400000, "gpus_per_node": 4,
            "interconnect_domain_gpus": 72, "workload": "training"}}},
        {"id": "monarch-gensets", "cost_musd": 800, "change": {"kind": "power_upgrade", "site": "monarch",
                                                               "add_mw": 1000}},
    ]
    plan = _plan(tmp_path / "p.yaml", scenario, candidates=candidates,
                 targets=[{"kind": "queue_delay_p95", "sources": ["us-vr200-training"], "max_hours": 24}])
    run = run_plan(load_plan(plan))
    assert [i["target"] for i in run.infeasible] == [0]
    why = str(run.infeasible[0]["why"])
    assert "power runway too short" in why and "monarch" in why
    # Deterministic: the same plan and seed write the same files (wall times aside).
    write_plan_report(run, tmp_path / "a")
    write_plan_report(run_plan(load_plan(plan)), tmp_path / "b")
    for name in ("plan.json", "plan.csv", "comparison.md", "replay/jobs.csv", "replay/summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"targets": [{"kind": "slo_attainment", "min": 2}]}, "targets[0].min", "less than or equal to 1"),
    ({"candidates": [{"id": "x", "cost_musd": 1, "change": {"kind": "power_upgrade", "site": "nowhere",
                                                           "add_mw": 5}}]},
     "candidates[0].change.site", "no site 'nowhere'"),
    ({"candidates": [{"id": "x", "cost_musd": 1, "change": {"kind": "power_upgrade", "site": "monarch"}}]},
     "candidates[0].change.add_mw", "Field required"),
    ({"period_dayz": 7}, "period_dayz", "Extra inputs"),
    ({"candidates": [{"id": "x", "cost_musd": 1, "requires": ["y"], "change": {
        "kind": "power_upgrade", "site": "monarch", "add_mw": 5}}]}, "candidates[0].requires[0]", "no candidate 'y'"),
])
def test_a_malformed_plan_names_the_field_and_line(tmp_path: Path, change: dict[str, Any], field: str,
                                                   message: str) -> None:
    data: dict[str, Any] = {"name": "bad", "scenario": str(PLANS.parent / "scenarios" / "uk-sovereign.yaml"),
                            "period_days": 7, "targets": [{"kind": "slo_attainment", "min": 0.9}], **change}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(PlanError) as e:
        load_plan(path)
    problem = next(p for p in e.value.problems if p.field == field)
    assert message in problem.message and problem.line > 1
    assert f"line {problem.line}: {field}:" in str(e.value)


def test_every_example_plan_loads() -> None:
    plans = sorted(PLANS.glob("*.yaml"))
    assert len(plans) >= 3
    for path in plans:
        assert load_plan(path).plan.targets


def test_a_new_edge_site_and_its_pool_are_chosen_when_only_they_are_within_the_slo(tmp_path: Path) -> None:
    # Dublin's 1 ms SLO: only the Dublin edge (320 GPUs) is close enough; the demand needs more.
    scenario = _scenario(tmp_path / "s.yaml", [{
        "name": "dublin-inference", "kind": "inference", "tenants": {"t": 1}, "arrivals_per_day": 60,
        "endpoints": {"dublin": 1}, "gpus": {"min": 8, "max": 8}, "replicas": {"min": 1, "max": 2},
        "duration_hours": {"min": 12, "max": 24}, "latency_slo_ms": 1, "residency": {"allowed": ["EU"]},
        "priority": 200}], horizon_days=7)
    site = {"id": "dublin-edge-2", "tier": "edge", "location": {"lat": 53.33, "lon": -6.3, "country": "IE"},
            "power_envelope_mw": 1.5, "pue": 1.3}
    pool = {"id": "dublin2-b200-a", "gpu_type": "B200", "nodes": 96, "gpus_per_node": 8, "workload": "inference"}
    candidates = [
        {"id": "dublin-edge-2", "cost_musd": 15, "change": {
            "kind": "add_site", "site": site, "links": [{"a": "dublin", "b": "dublin-edge-2", "latency_ms": 0.5}]}},
        {"id": "dublin2-b200", "cost_musd": 25, "requires": ["dublin-edge-2"],
         "change": {"kind": "add_pool", "site": "dublin-edge-2", "pool": pool}},
        {"id": "frankfurt-h200", "cost_musd": 5, "change": {"kind": "add_pool", "site": "frankfurt-hub", "pool": {
            "id": "frankfurt-h200-b", "gpu_type": "H200", "nodes": 256, "gpus_per_node": 8, "workload": "inference"}}},
    ]
    plan = _plan(tmp_path / "p.yaml", scenario, candidates=candidates, period_days=3.5,
                 targets=[{"kind": "slo_attainment", "endpoints": ["dublin"], "min": 0.9}])
    run = run_plan(load_plan(plan))
    assert not run.infeasible and not run.do_nothing.met
    chosen = run.chosen
    assert chosen is not None and chosen.met
    # The cheap Frankfurt pool is too far; the new site's pool needs the site (``requires``).
    assert [c.id for c, _ in chosen.expansions] == ["dublin-edge-2", "dublin2-b200"]
    assert chosen.expansions[0][1] <= chosen.expansions[1][1]
