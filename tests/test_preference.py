"""Ordered placement preference with overflow (model/preference.py, engine/preference.py).

On the small grid (see small.yaml): GB300 training fits at sines (128, EU) and glomfjord (480
healthy, NO); glomfjord is the cheaper site (carbon 15 vs 120 g/kWh, price 35 vs 80), so a job
without a preference goes there.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler._proto.v1 import placement_pb2_grpc as pb_grpc
from grid_scheduler._proto.v1 import policy_pb2 as ppb
from grid_scheduler._proto.v1 import policy_pb2_grpc as ppb_grpc
from grid_scheduler.engine import Usage, decide, site_reasons, wait_info
from grid_scheduler.engine.batch import solve_batch
from grid_scheduler.engine.index import GridIndex
from grid_scheduler.model import Grid, JobSpec, Policy, ReasonCode
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.convert import spec_to_pb
from grid_scheduler.service.server import start_server
from tests.invariants import placement_violations
from tests.strategies import PREFERENCES, job_specs


def gb300(count: int, preference: list[str] | None = None, tenant: str = "acme") -> JobSpec:
    return JobSpec.model_validate({
        "name": "t", "tenant": tenant, "kind": "training", "gpus": {"count": count, "types": ["GB300"]},
        "placement_preference": preference or [],
    })


@pytest.fixture(scope="module")
def index(small_grid: Grid) -> GridIndex:
    return GridIndex.build(small_grid)


def used(index: GridIndex, **pools: int) -> Usage:
    usage = Usage.empty(index)
    for pool_id, gpus in pools.items():
        usage.pool_used_gpus[index.pool_index[pool_id.replace("_", "-")]] = gpus
    return usage


def sites_of(index: GridIndex, spec: JobSpec, usage: Usage, policy: Policy | None = None) -> list[str] | None:
    placement = decide(index, usage, spec, policy or Policy()).placement
    return placement.site_ids if placement is not None else None


def test_the_first_entry_that_can_take_the_job_wins(index: GridIndex) -> None:
    empty = Usage.empty(index)
    assert sites_of(index, gb300(64), empty) == ["glomfjord"]  # the cheaper site, without a preference
    assert sites_of(index, gb300(64, ["site:sines", "site:glomfjord"]), empty) == ["sines"]
    # sines full: the job overflows to the next entry
    assert sites_of(index, gb300(64, ["site:sines", "site:glomfjord"]), used(index, sines_gb300=100)) == ["glomfjord"]
    assert sites_of(index, gb300(64, ["jurisdiction:EU", "jurisdiction:EEA"]), empty) == ["sines"]
    assert sites_of(index, gb300(64, ["tier:regional_hub", "tier:ai_factory"]), empty) == ["glomfjord"]


def test_without_a_star_the_job_waits_inside_its_preference(index: GridIndex) -> None:
    spec = gb300(64, ["site:sines"])
    usage = used(index, sines_gb300=100)
    decision = decide(index, usage, spec, Policy())
    assert decision.placement is None
    by_site = {r.site_id: r for r in site_reasons(index, decision, Policy())}
    pool = {r.pool_id: r for r in site_reasons(index, decision, Policy())}["sines-gb300"]
    assert pool.code is ReasonCode.CAPACITY and pool.available == 28
    assert by_site["glomfjord"].code is ReasonCode.POLICY
    assert by_site["glomfjord"].message == "not in the placement preference (site:sines)"
    assert wait_info(index, decision, Policy()).site_counts["policy"] == len(index.site_ids) - 1
    # '*' lets it overflow anywhere the hard rules allow
    assert sites_of(index, gb300(64, ["site:sines", "*"]), usage) == ["glomfjord"]


def test_reasons_say_why_an_entry_was_skipped_and_which_were_not_reached(index: GridIndex) -> None:
    spec = gb300(64, ["site:sines", "site:glomfjord", "*"])
    decision = decide(index, used(index, sines_gb300=100), spec, Policy())
    assert decision.placement is not None and decision.placement.site_ids == ["glomfjord"]
    assert decision.preference_reached == 2
    by_site = {r.site_id: r for r in site_reasons(index, decision, Policy())}
    pool = {r.pool_id: r for r in site_reasons(index, decision, Policy())}["sines-gb300"]
    assert pool.code is ReasonCode.CAPACITY  # why entry 1 was skipped, with its numbers
    assert pool.required == 64 and pool.available == 28
    later = by_site["london-hub"]
    assert later.code is ReasonCode.POLICY
    assert later.message == "placement preference entry 3 (*) not reached: entry 2 (site:glomfjord) took the job"


def test_a_tenant_preference_applies_unless_the_job_gives_its_own(index: GridIndex) -> None:
    policy = Policy(tenant_placement_preference={"bank": ["site:sines", "*"]})
    empty = Usage.empty(index)
    assert sites_of(index, gb300(64, tenant="bank"), empty, policy) == ["sines"]
    assert sites_of(index, gb300(64, tenant="acme"), empty, policy) == ["glomfjord"]
    assert sites_of(index, gb300(64, ["site:glomfjord"], tenant="bank"), empty, policy) == ["glomfjord"]


def test_residency_still_binds_inside_a_preference(index: GridIndex) -> None:
    spec = JobSpec.model_validate({
        "name": "t", "tenant": "acme", "kind": "training", "gpus": {"count": 64, "types": ["GB300"]},
        "residency": {"allowed": ["EU"]}, "placement_preference": ["site:glomfjord", "*"],
    })
    assert sites_of(index, spec, Usage.empty(index)) == ["sines"]


def test_unknown_names_are_refused_naming_the_field(small_grid: Grid) -> None:
    from grid_scheduler.scheduler import InvalidJob

    s = Scheduler(small_grid)
    with pytest.raises(InvalidJob) as e:
        s.submit(gb300(8, ["site:atlantis", "jurisdiction:XX", "*", "*"]))
    fields = [f for f, _ in e.value.violations]
    assert fields == ["placement_preference[0]", "placement_preference[1]", "placement_preference[3]"]
    with pytest.raises(ValueError, match="tier"):
        gb300(8, ["tier:moon"])
    with pytest.raises(ValueError, match="not site:ID"):
        gb300(8, ["sines"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(spec=job_specs(), preference=st.sampled_from(PREFERENCES), full=st.lists(st.sampled_from(
    ["sines-gb300", "sines-h100", "glomfjord-gb300", "london-b200", "london-h200", "frankfurt-h100"]), max_size=3))
def test_placed_at_the_earliest_entry_that_could_take_it(
    small_grid: Grid, index: GridIndex, spec: JobSpec, preference: list[str], full: list[str]
) -> None:
    spec = spec.model_copy(update={"placement_preference": preference})
    usage = Usage.empty(index)
    for pool_id in full:
        p = index.pool_index[pool_id]
        usage.pool_used_gpus[p] = index.pool_total_gpus[p]
    decision = decide(index, usage, spec, Policy())
    if decision.placement is None:
        return
    assert placement_violations(small_grid, spec, decision.placement, Policy()) == []
    reached = decision.preference_reached
    for k in range(1, reached):  # no shorter prefix (as a fence of its own) could take it
        prefix = spec.model_copy(update={"placement_preference": preference[:k]})
        assert decide(index, usage, prefix, Policy()).placement is None, preference[:k]


def test_the_batch_optimiser_keeps_the_fence_and_fills_the_first_entry(small_grid: Grid, index: GridIndex) -> None:
    jobs = [(f"j{i}", gb300(32, ["site:sines", "site:glomfjord"])) for i in range(6)]
    jobs += [("fenced", gb300(32, ["site:london-hub"]))]  # no GB300 there: stays unplaced
    result = solve_batch(index, Usage.empty(index), jobs, Policy(), time_limit_s=5.0, workers=1)
    sites = {job_id: p.site_ids for job_id, p in result.placements.items()}
    assert "fenced" not in sites
    assert sorted(s[0] for s in sites.values()) == ["glomfjord"] * 2 + ["sines"] * 4  # sines holds 4 x 32
    for job_id, spec in jobs:
        if job_id in result.placements:
            assert placement_violations(small_grid, spec, result.placements[job_id], Policy()) == []


def test_over_grpc_the_preference_round_trips_and_bad_entries_name_their_field(small_grid: Grid) -> None:
    running = start_server(Scheduler(small_grid), "127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.PlacementServiceStub(channel)
            message = spec_to_pb(gb300(64, ["site:sines", "*"]))
            job = stub.SubmitJob(pb.SubmitJobRequest(spec=message)).job
            assert list(job.spec.placement_preference) == ["site:sines", "*"]
            assert [a.site_id for a in job.placement.assignments] == ["sines"]
            message.placement_preference[:] = ["site:atlantis"]
            with pytest.raises(grpc.RpcError) as e:
                stub.SubmitJob(pb.SubmitJobRequest(spec=message))
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "placement_preference[0]" in (e.value.details() or "")
            policy = ppb_grpc.PolicyServiceStub(channel)
            with pytest.raises(grpc.RpcError) as e:
                policy.ValidatePolicy(ppb.ValidatePolicyRequest(document=ppb.PolicyDocument(
                    yaml="tenant_placement_preference: {acme: ['site:atlantis']}")))
            assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "document.yaml.tenant_placement_preference.acme[0]" in (e.value.details() or "")
            ok = policy.ValidatePolicy(ppb.ValidatePolicyRequest(document=ppb.PolicyDocument(
                yaml="tenant_placement_preference: {acme: ['jurisdiction:UK', '*']}")))
            assert list(ok.policy.policy.tenant_placement_preference["acme"].entries) == ["jurisdiction:UK", "*"]
    finally:
        running.stop(0)
    assert np.all(np.asarray(Usage.empty(GridIndex.build(small_grid)).pool_used_gpus) == 0)
