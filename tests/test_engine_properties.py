"""Invariants of the engine and the scheduler, over random jobs and random histories."""

from __future__ import annotations

import contextlib

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import GridIndex, Usage, decide, site_reasons, wait_info
from grid_scheduler.engine.topology import PoolShape, feasible, node_free_gpus
from grid_scheduler.model import Grid, JobSpec, JobState, Policy, ReasonCode, ResidencyRule, TopologyMode
from grid_scheduler.scheduler import Scheduler, WrongState
from tests.invariants import ledger_from_jobs, over_capacity, placement_violations, residency_ok
from tests.strategies import job_specs

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
POLICY = Policy(tenant_residency={"bank": ResidencyRule(allowed=["UK"])})

operations = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), job_specs()),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("complete"), st.integers(0, 50)),
        st.tuples(st.just("drain"), st.sampled_from(["sines-h100", "london-b200", "glomfjord-gb300"])),
        st.tuples(st.just("undrain"), st.sampled_from(["sines-h100", "london-b200", "glomfjord-gb300"])),
    ),
    max_size=25,
)


def run(scheduler: Scheduler, ops: list[tuple[str, object]]) -> list[str]:
    ids: list[str] = []
    for op, arg in ops:
        if op == "submit":
            assert isinstance(arg, JobSpec)
            ids.append(scheduler.submit(arg).record.id)
        elif op in ("cancel", "complete") and ids:
            assert isinstance(arg, int)
            with contextlib.suppress(WrongState):
                getattr(scheduler, op)(ids[arg % len(ids)])
        elif op in ("drain", "undrain"):
            assert isinstance(arg, str)
            scheduler.set_drained(arg, op == "drain")
    return ids


def after(grid: Grid, history: list[JobSpec], drain_pool: str | None = None) -> Scheduler:
    """A scheduler on ``grid`` that has been sent ``history``, with ``drain_pool`` drained."""
    scheduler = Scheduler(grid, POLICY)
    for earlier in history:
        scheduler.submit(earlier)
    if drain_pool is not None:
        scheduler.set_drained(drain_pool, True)
    return scheduler


@SETTINGS
@given(ops=operations)
def test_any_history_keeps_the_ledger_true(small_grid: Grid, ops: list[tuple[str, object]]) -> None:
    scheduler = Scheduler(small_grid, POLICY)
    run(scheduler, ops)
    jobs = scheduler.store.list_jobs(frozenset(), "", 10_000)
    gpus, power_kw = ledger_from_jobs(small_grid, jobs)
    # Never over a pool's healthy GPUs or a site's power envelope.
    assert over_capacity(small_grid, gpus, power_kw) == []
    # The stored counters are exactly what running jobs hold.
    snap = scheduler.store.snapshot()
    for pool_id, p in scheduler.limits.pool_index.items():
        assert snap.pool_used_gpus[p] == gpus.get(pool_id, 0)
    for site_id, s in scheduler.limits.site_index.items():
        assert abs(snap.site_used_kw[s] - power_kw.get(site_id, 0.0)) < 0.01
    # Every placement honours residency, GPU type, gang and SLO, checked independently.
    for job in jobs:
        if job.placement is not None and job.state is JobState.RUNNING:
            assert placement_violations(small_grid, job.spec, job.placement, POLICY) == []


@SETTINGS
@given(ops=operations)
def test_cancelling_everything_restores_an_empty_ledger(small_grid: Grid, ops: list[tuple[str, object]]) -> None:
    scheduler = Scheduler(small_grid, POLICY)
    empty = scheduler.store.snapshot()
    run(scheduler, ops)
    for job in scheduler.store.list_jobs(frozenset(), "", 10_000):
        if not job.state.is_final:
            scheduler.cancel(job.id)
    after = scheduler.store.snapshot()
    assert np.array_equal(after.pool_used_gpus, empty.pool_used_gpus)
    assert np.array_equal(after.site_used_w, empty.site_used_w)


@SETTINGS
@given(spec=job_specs(), history=st.lists(job_specs(), max_size=6))
def test_same_input_same_decision(small_grid: Grid, spec: JobSpec, history: list[JobSpec]) -> None:
    scheduler = after(small_grid, history)
    usage = scheduler.usage()
    first = decide(scheduler.index, usage, spec, POLICY)
    # A fresh index over the same grid, the same usage arrays copied.
    again_index = GridIndex.build(small_grid)
    again_usage = Usage(usage.pool_used_gpus.copy(), usage.site_used_kw.copy(), usage.pool_drained.copy(),
                        node_used_gpus=tuple(a.copy() for a in usage.node_used_gpus),
                        node_out=tuple(a.copy() for a in usage.node_out))
    second = decide(again_index, again_usage, spec, POLICY)
    assert first.placement == second.placement
    assert first.uncovered_endpoints == second.uncovered_endpoints


@SETTINGS
@given(spec=job_specs(), history=st.lists(job_specs(), max_size=6), drained=st.booleans())
@example(  # found by hypothesis: a topology reason counts the GPUs its mode can use, not the pool's free
    spec=JobSpec.model_validate({"name": "train", "tenant": "acme", "kind": "training", "gpus": {"count": 1},
                                 "training": {"duration_hours": 2.0}, "topology": {"mode": "whole_domains"}}),
    history=[], drained=False,
)
def test_every_reason_is_true_of_the_grid(
    small_grid: Grid, spec: JobSpec, history: list[JobSpec], drained: bool
) -> None:
    scheduler = after(small_grid, history, "london-b200" if drained else None)
    usage = scheduler.usage()
    decision = decide(scheduler.index, usage, spec, POLICY)
    snap = scheduler.store.snapshot()
    limits = scheduler.limits
    for reason in site_reasons(scheduler.index, decision, POLICY):
        site = small_grid.site_by_id[reason.site_id]
        if reason.code is ReasonCode.RESIDENCY:
            assert not residency_ok(small_grid, spec, site.id, POLICY)
        elif reason.code is ReasonCode.GPU_TYPE:
            _, pool = small_grid.pool_by_id[reason.pool_id]
            memory = small_grid.gpu_type_by_name[pool.gpu_type].memory_gib
            assert (spec.gpus.types and pool.gpu_type not in spec.gpus.types) or memory < spec.gpus.min_memory_gib
        elif reason.code is ReasonCode.HEALTH:
            assert snap.pool_drained[limits.pool_index[reason.pool_id]]
        elif reason.code is ReasonCode.CAPACITY and reason.pool_id and spec.topology.mode is not TopologyMode.NONE:
            # In domains or slices: the job does not fit the pool's nodes as they are, and what the
            # reason offers is at most the pool's free GPUs (a 1-GPU whole-domain job in a pool of
            # 72-GPU domains has 128 free GPUs and 0 it can use).
            _, pool = small_grid.pool_by_id[reason.pool_id]
            p = limits.pool_index[reason.pool_id]
            shape = PoolShape.of(pool)
            node_free = node_free_gpus(shape, snap.node_used_gpus[p], snap.node_out[p])
            assert not feasible(shape, node_free, spec.total_gpus, spec.topology)
            assert reason.available < reason.required
            assert reason.available <= int(node_free.sum())
        elif reason.code is ReasonCode.CAPACITY and reason.pool_id:
            _, pool = small_grid.pool_by_id[reason.pool_id]
            free = pool.healthy_gpus - int(snap.pool_used_gpus[limits.pool_index[reason.pool_id]])
            assert free == reason.available < reason.required
        elif reason.code is ReasonCode.CAPACITY:
            assert reason.available < reason.required
        elif reason.code is ReasonCode.POWER:
            headroom_mw = site.power_envelope_mw - snap.site_used_w[limits.site_index[site.id]] / 1e6
            assert abs(headroom_mw - reason.available) < 1e-6 or reason.available == 0
            assert reason.available < reason.required
        elif reason.code is ReasonCode.LATENCY:
            assert spec.inference is not None
            assert reason.available > spec.inference.latency_slo_ms
        if decision.placement is not None:
            assert reason.site_id not in decision.placement.site_ids


@SETTINGS
@given(spec=job_specs(), history=st.lists(job_specs(), max_size=8))
def test_a_decision_fits_on_its_own(small_grid: Grid, spec: JobSpec, history: list[JobSpec]) -> None:
    """The engine alone, before the store re-checks anything, never over-allocates."""
    scheduler = after(small_grid, history)
    decision = decide(scheduler.index, scheduler.usage(), spec, POLICY)
    if decision.placement is None:
        return
    jobs = scheduler.store.list_jobs(frozenset(), "", 10_000)
    gpus, power_kw = ledger_from_jobs(small_grid, jobs)
    for a in decision.placement.assignments:
        gpus[a.pool_id] = gpus.get(a.pool_id, 0) + a.gpus
        power_kw[a.site_id] = power_kw.get(a.site_id, 0.0) + a.power_kw
    assert over_capacity(small_grid, gpus, power_kw) == []
    assert placement_violations(small_grid, spec, decision.placement, POLICY) == []


@SETTINGS
@given(spec=job_specs(), history=st.lists(job_specs(), max_size=8), drained=st.booleans())
def test_wait_info_counts_agree_with_the_rendered_reasons(
    small_grid: Grid, spec: JobSpec, history: list[JobSpec], drained: bool
) -> None:
    """wait_info counts with arrays; site_reasons renders every sentence: they must agree."""
    scheduler = after(small_grid, history, "sines-h100" if drained else None)
    decision = decide(scheduler.index, scheduler.usage(), spec, POLICY)
    by_site: dict[str, set[str]] = {}
    for reason in site_reasons(scheduler.index, decision, POLICY):
        by_site.setdefault(reason.site_id, set()).add(reason.code.value)
    expected: dict[str, int] = {}
    for codes in by_site.values():
        for code in codes:
            expected[code] = expected.get(code, 0) + 1
    assert wait_info(scheduler.index, decision, POLICY).site_counts == dict(sorted(expected.items()))
