"""The engine's decisions on the small grid, case by case (see the table in small.yaml)."""

from __future__ import annotations

import pytest

from grid_scheduler.engine import Usage, decide, site_reasons, wait_info
from grid_scheduler.engine.index import GridIndex
from grid_scheduler.model import Grid, JobSpec, Policy, ReasonCode, Weights
from grid_scheduler.scheduler import Scheduler


def training(count: int, types: list[str] | None = None, allowed: list[str] | None = None, **extra: object) -> JobSpec:
    return JobSpec.model_validate(
        {"name": "t", "tenant": "acme", "kind": "training", "gpus": {"count": count, "types": types or []},
         "residency": {"allowed": allowed or []}, **extra}
    )


def inference(endpoints: list[str], slo_ms: float, replicas: int = 1, count: int = 8, **extra: object) -> JobSpec:
    return JobSpec.model_validate(
        {"name": "i", "tenant": "acme", "kind": "inference", "gpus": {"count": count},
         "inference": {"replicas": replicas, "demand": [{"endpoint": e} for e in endpoints],
                       "latency_slo_ms": slo_ms}, **extra}
    )


@pytest.fixture(scope="module")
def index(small_grid: Grid) -> GridIndex:
    return GridIndex.build(small_grid)


def reasons_by_site(index: GridIndex, spec: JobSpec, usage: Usage | None = None) -> dict[str, list[tuple[str, str]]]:
    decision = decide(index, usage or Usage.empty(index), spec, Policy())
    out: dict[str, list[tuple[str, str]]] = {}
    for r in site_reasons(index, decision, Policy()):
        out.setdefault(r.site_id, []).append((r.code.value, r.message))
    return out


def test_eu_only_never_lands_in_norway(index: GridIndex) -> None:
    decision = decide(index, Usage.empty(index), training(64, ["GB300"], ["EU"]), Policy())
    assert decision.placement is not None
    assert decision.placement.site_ids == ["sines"]
    why = reasons_by_site(index, training(64, ["GB300"], ["EU"]))
    assert why["glomfjord"] == [("residency", "site in NO (EEA, NO); job requires EU")]


def test_eea_admits_norway(index: GridIndex) -> None:
    # Cheaper and cleaner than Sines, and EEA: Glomfjord wins.
    decision = decide(index, Usage.empty(index), training(64, ["GB300"], ["EEA"]), Policy())
    assert decision.placement is not None and decision.placement.site_ids == ["glomfjord"]


def test_power_binds_before_gpus(small_grid: Grid) -> None:
    scheduler = Scheduler(small_grid)
    first = scheduler.submit(training(128, ["GB300"], ["EU"])).record
    assert first.placement is not None and first.placement.assignments[0].pool_id == "sines-gb300"
    # 256 H100 need 256 x 0.7 x 1.25 = 224 kW; Sines has 350 - 224 = 126 kW left.
    spec = training(256, ["H100"], ["EU"])
    decision, reasons = scheduler.explain(spec)
    assert decision.placement is None
    power = [r for r in reasons if r.code is ReasonCode.POWER and r.site_id == "sines"]
    assert len(power) == 1
    assert power[0].available == pytest.approx(0.126)
    assert power[0].required == pytest.approx(0.224)
    assert power[0].unit == "MW"
    assert "0.13 MW headroom < 0.22 MW needed" in power[0].message


def test_capacity_reason_has_the_numbers(index: GridIndex) -> None:
    why = reasons_by_site(index, training(600, ["GB300"], ["EEA"]))
    assert ("capacity", "480 free GB300 < 600 in pool glomfjord-gb300") in why["glomfjord"]


def test_gpu_type_and_workload_reasons(index: GridIndex) -> None:
    why = reasons_by_site(index, training(100, ["B200"], ["UK"]))
    # london-h200 is inference-only and of the wrong type: the type is reported first.
    assert why["london-hub"] == [
        ("gpu_type", "pool london-h200 has H200; job needs B200"),
        ("capacity", "64 free B200 < 100 in pool london-b200"),
    ]
    why = reasons_by_site(index, training(8, ["H100"], ["UK"]))
    assert why["manchester-edge"] == [("workload", "pool manchester-h100 is reserved for inference")]


def test_drained_pool_is_a_health_reason(index: GridIndex) -> None:
    usage = Usage.empty(index)
    drained = usage.pool_drained.copy()
    drained[index.pool_index["london-b200"]] = True
    spec = training(8, ["B200"], ["UK"])
    decision = decide(index, Usage(usage.pool_used_gpus, usage.site_used_kw, drained), spec, Policy())
    assert decision.placement is None
    why = reasons_by_site(index, spec, Usage(usage.pool_used_gpus, usage.site_used_kw, drained))
    assert ("health", "pool london-b200 is drained") in why["london-hub"]


def test_non_gang_job_spans_pools_of_one_site(index: GridIndex) -> None:
    # 160 GPUs of any type in the UK: no single UK pool holds 160, London holds 128 + 64.
    spec = training(160, [], ["UK"], gang=False)
    decision = decide(index, Usage.empty(index), spec, Policy())
    assert decision.placement is None or decision.placement.site_ids == ["london-hub"]
    # london-h200 is inference-only, so only london-b200 (64) is eligible for training: it waits.
    assert decision.placement is None
    # 260 > the 256 of sines-h100: it takes both Sines pools, within the 350 kW envelope.
    spec = training(260, ["H100", "GB300"], ["EU"], gang=False)
    decision = decide(index, Usage.empty(index), spec, Policy())
    assert decision.placement is not None
    assert {a.pool_id for a in decision.placement.assignments} == {"sines-gb300", "sines-h100"}
    assert decision.placement.gpus == 260
    assert decision.placement.power_kw <= 350


def test_inference_covers_every_endpoint_within_slo(index: GridIndex) -> None:
    spec = inference(["london", "lisbon"], slo_ms=5, replicas=2)
    decision = decide(index, Usage.empty(index), spec, Policy())
    assert decision.placement is not None
    served = {e.endpoint_id: (e.site_id, e.latency_ms) for e in decision.placement.endpoint_latencies}
    assert served["london"][0] == "london-hub" and served["london"][1] <= 5
    assert served["lisbon"][0] == "sines" and served["lisbon"][1] <= 5


def test_inference_with_too_few_replicas_says_which_endpoint(index: GridIndex) -> None:
    spec = inference(["london", "lisbon"], slo_ms=5, replicas=1)
    decision = decide(index, Usage.empty(index), spec, Policy())
    assert decision.placement is None
    assert len(decision.uncovered_endpoints) == 1
    info = wait_info(index, decision, Policy())
    assert info.summary[0].startswith("no replica can serve")


def test_latency_reason_names_the_endpoint(index: GridIndex) -> None:
    why = reasons_by_site(index, inference(["london"], slo_ms=2))
    assert why["sines"] == [("latency", "11.0 ms to london > SLO 2 ms (nearest demand endpoint)")]


def test_dataset_residency_binds_and_gravity_pulls(index: GridIndex) -> None:
    # eu-corpus lives at Sines (EU only): even an unrestricted job must run in the EU.
    spec = training(64, ["GB300"], [], training={"datasets": ["eu-corpus"]})
    why = reasons_by_site(index, spec)
    assert any("dataset eu-corpus requires EU" in m for _, m in why["glomfjord"])
    decision = decide(index, Usage.empty(index), spec, Policy())
    assert decision.placement is not None and decision.placement.site_ids == ["sines"]


def test_weights_change_the_choice(index: GridIndex) -> None:
    # B200 at London (UK) vs GB300 at Glomfjord (NO) vs Sines: carbon-only picks Glomfjord.
    spec = training(32, ["B200", "GB300"])
    green = Policy(weights=Weights(latency=0, carbon=1, energy_price=0, packing=0, data_movement=0))
    decision = decide(index, Usage.empty(index), spec, green)
    assert decision.placement is not None and decision.placement.site_ids == ["glomfjord"]
    pricey = Policy(weights=Weights(latency=0, carbon=0, energy_price=0, packing=1, data_movement=0))
    decision = decide(index, Usage.empty(index), spec, pricey)
    assert decision.placement is not None and decision.placement.site_ids == ["london-hub"]
    assert decision.placement.score.carbon == 0


def test_score_terms_add_up(index: GridIndex) -> None:
    decision = decide(index, Usage.empty(index), training(64, ["GB300"]), Policy())
    assert decision.placement is not None
    s = decision.placement.score
    assert s.total == pytest.approx(s.latency + s.carbon + s.energy_price + s.packing + s.data_movement)


def test_queue_is_placed_in_priority_order_when_capacity_frees(small_grid: Grid) -> None:
    scheduler = Scheduler(small_grid)
    blocker = scheduler.submit(training(128, ["GB300"], ["EU"])).record
    low = [scheduler.submit(training(64, ["GB300"], ["EU"], priority=1)).record for _ in range(3)]
    high = scheduler.submit(training(64, ["GB300"], ["EU"], priority=9)).record
    assert all(r.state.value == "pending" for r in [*low, high])
    scheduler.cancel(blocker.id)
    jobs = scheduler.store.list_jobs(frozenset(), "", 100)
    running = [r.id for r in jobs if r.state.value == "running"]
    # 128 GPUs freed: the high-priority job first, then the oldest low one.
    assert running == sorted([high.id, low[0].id])


def test_split_job_reasons_are_per_site(index: GridIndex) -> None:
    # 500 GPUs of H100/GB300 in the EU: Sines holds 384, so it cannot take it at all.
    why = reasons_by_site(index, training(500, ["H100", "GB300"], ["EU"], gang=False))
    assert why["sines"] == [("capacity", "384 free eligible GPUs across the site's pools < 500")]
    # A feasible site not chosen is a 'score' reason with finite numbers.
    decision = decide(index, Usage.empty(index), training(100, ["H100", "GB300"], ["EEA"], gang=False), Policy())
    assert decision.placement is not None
    score = [r for r in site_reasons(index, decision, Policy()) if r.code is ReasonCode.SCORE]
    assert score and all(0 < r.available < float("inf") for r in score)


def test_optimal_inference_policy_is_never_worse_than_greedy(small_grid: Grid) -> None:
    spec = inference(["london", "frankfurt", "manchester"], slo_ms=6, replicas=3)
    greedy = Scheduler(small_grid).submit(spec).record
    optimal = Scheduler(small_grid, Policy(inference_placement="optimal")).submit(spec).record
    assert greedy.placement is not None and optimal.placement is not None
    assert optimal.placement.gpus == greedy.placement.gpus == 24
    assert optimal.placement.score.total <= greedy.placement.score.total + 1e-9
    for e in optimal.placement.endpoint_latencies:
        assert e.latency_ms <= 6


def test_a_stale_plan_never_double_books_or_resurrects(small_grid: Grid) -> None:
    """The batch solves outside the lock; what changed meanwhile must win at commit."""
    from tests.invariants import ledger_from_jobs, over_capacity

    scheduler = Scheduler(small_grid)
    scheduler.set_drained("sines-gb300", True)
    queued = [scheduler.submit(training(64, ["GB300"], ["EU"])).record for _ in range(2)]
    scheduler.store.set_drained("sines-gb300", False)  # reopened with no retry: only the plan places them
    plan = scheduler.plan_pending(time_limit_s=2, workers=1)
    assert set(plan.result.placements) == {r.id for r in queued}
    # Meanwhile: one planned job is cancelled, and another job takes the whole pool.
    scheduler.cancel(queued[0].id)
    other = scheduler.submit(training(128, ["GB300"], ["EU"], priority=5)).record
    assert other.state.value == "running"
    # queued[0] moved (cancelled) and queued[1] no longer fits: nothing is committed.
    assert scheduler.commit_plan(plan) == []
    assert scheduler.get(queued[1].id).state.value == "pending"
    assert scheduler.get(queued[0].id).state.value == "cancelled"
    jobs = scheduler.store.list_jobs(frozenset(), "", 100)
    assert over_capacity(small_grid, *ledger_from_jobs(small_grid, jobs)) == []
