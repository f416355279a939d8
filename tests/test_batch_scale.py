"""The batch at grid scale: class checks/costs from shared parts equal the online functions', the
class-by-class warm start is a valid placement and a point of the model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import GridIndex, Usage
from grid_scheduler.engine.batch import (
    _build_units,
    _choose_candidates,
    _decode,
    _greedy,
    _greedy_answer,
    _Model,
    as_modelled,
    solve_batch,
)
from grid_scheduler.engine.batch_arrays import ClassArrays
from grid_scheduler.engine.batch_partition import site_parts
from grid_scheduler.engine.feasibility import compute_checks
from grid_scheduler.engine.priority import Holds
from grid_scheduler.engine.priority import shadow as exact_shadow
from grid_scheduler.engine.scoring import pool_costs
from grid_scheduler.engine.verify import check_solution
from grid_scheduler.model import Grid, JobSpec, Policy, ResidencyRule
from grid_scheduler.synthetic import job_stream, synthetic_grid
from tests.strategies import inference_specs, training_specs

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
POLICIES = [Policy(), Policy(tenant_residency={"bank": ResidencyRule(allowed=["EU"])})]

job_lists = st.lists(st.one_of(training_specs(), inference_specs()), min_size=1, max_size=14)
fills = st.lists(st.sampled_from([0.0, 0.0, 0.25, 0.5, 0.9, 1.0]), min_size=7, max_size=7)


@pytest.fixture(scope="module")
def index(small_grid: Grid) -> GridIndex:
    return GridIndex.build(small_grid)


def _jobs(specs: list[JobSpec]) -> list[tuple[str, JobSpec]]:
    return [(f"job-{i:03d}", s.model_copy(update={"name": f"job-{i:03d}"})) for i, s in enumerate(specs)]


def _preload(index: GridIndex, fill: list[float]) -> Usage:
    used = np.array([int(index.pool_healthy_gpus[p] * f) for p, f in enumerate(fill)], dtype=np.int64)
    kw = np.bincount(index.pool_site, weights=used * index.pool_kw_per_gpu, minlength=len(index.site_ids))
    return Usage(used, kw.astype(np.float64), np.zeros(len(used), dtype=np.bool_))


def _holding(index: GridIndex, policy: Policy, specs: list[JobSpec]) -> Holds:
    """Holds as a tier above would leave them: the first spec, at a higher priority, waits."""
    holds = Holds(index)
    holds.hold_for(specs[0].model_copy(update={"priority": 11}), policy)
    return holds


@SETTINGS
@given(specs=job_lists, fill=fills, policy=st.sampled_from(POLICIES), held=st.booleans(), prepared=st.booleans())
def test_class_checks_and_costs_equal_the_online_functions(
    index: GridIndex, specs: list[JobSpec], fill: list[float], policy: Policy, held: bool, prepared: bool
) -> None:
    """``prepared``: the deployments' covers and masks computed for all of them at once first
    (``ClassArrays.prepare``, as ``_build_units`` does), then read one by one."""
    usage = _preload(index, fill)
    holds = _holding(index, policy, specs) if held else Holds(index)
    arrays = ClassArrays(index, usage, policy, holds)
    if prepared:
        arrays.prepare([as_modelled(s) for s in specs])
    for original in specs:
        spec = as_modelled(original)
        got = arrays.checks(spec)
        want = compute_checks(index, holds.overlay(usage, spec), spec, policy)
        for name in ("unit", "need_gpus", "quota", "pool_quota_group"):
            assert getattr(got, name) == getattr(want, name), name
        for name in ("site_residency_ok", "site_latency_ok", "pool_type_ok", "pool_workload_ok", "pool_health_ok",
                     "pool_free_gpus", "site_headroom_kw", "pool_need_kw", "pool_site", "demand_cover",
                     "site_preference_ok", "pool_static_ok", "pool_eligible", "pool_feasible"):
            a, b = getattr(got, name), getattr(want, name)
            assert (a is None) == (b is None), name
            if a is not None:
                np.testing.assert_array_equal(a, b, err_msg=name)
        got_costs, want_costs = arrays.costs(spec, got), pool_costs(index, want, spec, policy)
        for name in ("latency", "carbon", "energy_price", "packing", "data_movement", "total"):
            np.testing.assert_array_equal(getattr(got_costs, name), getattr(want_costs, name), err_msg=name)
        pools, site_kw = arrays.shadow(original)
        np.testing.assert_array_equal(pools, want.pool_static_ok)
        assert site_kw.shape == (len(index.site_ids),)
        np.testing.assert_array_equal(site_kw, exact_shadow(index, original, policy)[1])


@SETTINGS
@given(specs=job_lists, fill=fills, held=st.booleans())
def test_prepared_classes_equal_the_classes_built_one_by_one(
    index: GridIndex, specs: list[JobSpec], fill: list[float], held: bool
) -> None:
    """``_build_units`` (which calls ``ClassArrays.prepare``) gives the classes that checks built
    one class at a time give: same jobs, same candidate masks and free GPUs, element for element."""
    usage = _preload(index, fill)
    policy = Policy()
    holds = _holding(index, policy, specs) if held else Holds(index)
    jobs = _jobs(specs)

    class OneByOne(ClassArrays):
        def prepare(self, specs: object) -> None:
            pass  # the path before ``prepare``: every class's checks computed when first asked for

    got = _build_units(index, usage, jobs, policy, holds)
    want = _build_units(index, usage, jobs, policy, holds, OneByOne(index, usage, policy, holds))
    assert [u.job_ids for u in got] == [u.job_ids for u in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.checks.pool_free_gpus, b.checks.pool_free_gpus)
        np.testing.assert_array_equal(a.checks.pool_static_ok, b.checks.pool_static_ok)
        assert (a.checks.demand_cover is None) == (b.checks.demand_cover is None)
        if a.checks.demand_cover is not None:
            np.testing.assert_array_equal(a.checks.demand_cover, b.checks.demand_cover)


@SETTINGS
@given(specs=job_lists, fill=fills)
def test_the_class_warm_start_is_valid_and_a_point_of_the_model(
    index: GridIndex, small_grid: Grid, specs: list[JobSpec], fill: list[float]
) -> None:
    policy = Policy()
    usage = _preload(index, fill)
    jobs = _jobs(specs)
    holds = _holding(index, policy, specs)
    units = _build_units(index, usage, jobs, policy, holds)
    _greedy(index, usage, policy, jobs, units, holds, by_class=True)
    placements = _decode(index, policy, units, _greedy_answer(units), from_solver=False)
    spec_of = dict(jobs)
    placed = {j: (spec_of[j], p) for j, p in placements.items()}
    assert check_solution(small_grid, placed, usage, policy, index.topology, gang_training=True) == []
    for unit in units:
        _choose_candidates(index, unit, 8)
    model = _Model(index, usage, units)
    assert model.satisfies(model.vector(_greedy_answer(units)))


@SETTINGS
@given(specs=job_lists, fill=fills)
def test_solve_batch_with_the_class_warm_start_is_valid(
    index: GridIndex, small_grid: Grid, specs: list[JobSpec], fill: list[float]
) -> None:
    usage = _preload(index, fill)
    jobs = _jobs(specs)
    result = solve_batch(index, usage, jobs, Policy(), time_limit_s=1.0, workers=1, by_class=True)
    spec_of = dict(jobs)
    placed = {j: (spec_of[j], p) for j, p in result.placements.items()}
    assert check_solution(small_grid, placed, usage, Policy(), index.topology, gang_training=True) == []
    assert set(result.placements).isdisjoint(result.unplaced)
    assert set(result.placements) | set(result.unplaced) == set(spec_of)
    assert all(t.value >= t.greedy_value for t in result.tiers)
    # The price bound (every pool) joins the single solve's bounds; summed over tiers, as W is.
    assert result.extra.get("price_weighted_gpus_bound", result.weighted_gpus) >= result.weighted_gpus


# --- partitioned (POP-style) solve ----------------------------------------------------------------
def _synthetic(n_jobs: int, n_pools: int, seed: int = 0) -> tuple[Grid, GridIndex, Usage, list[tuple[str, JobSpec]]]:
    """A generated grid half busy (power counted, never above a site's envelope) and generated jobs."""
    grid = synthetic_grid(sites=n_pools // 4, pools=n_pools, gpus_target=133 * n_pools, seed=seed)
    index = GridIndex.build(grid)
    rng = np.random.default_rng(seed)
    used = np.floor(index.pool_healthy_gpus * rng.uniform(0.0, 1.0, len(index.pool_ids))).astype(np.int64)
    kw = np.bincount(index.pool_site, weights=used * index.pool_kw_per_gpu, minlength=len(index.site_ids))
    scale = np.minimum(1.0, index.site_envelope_kw * 0.98 / np.maximum(kw, 1e-9))
    used = np.floor(used * scale[index.pool_site]).astype(np.int64)
    kw = np.bincount(index.pool_site, weights=used * index.pool_kw_per_gpu, minlength=len(index.site_ids))
    usage = Usage(used, kw.astype(np.float64), np.zeros(len(used), dtype=np.bool_))
    jobs = [(s.name, s) for s in job_stream(grid, n_jobs, seed=seed, inference_share=0.3)]
    return grid, index, usage, jobs


def test_partitioned_solve_in_worker_processes_gives_a_valid_plan_with_a_global_bound() -> None:
    grid, index, usage, jobs = _synthetic(2_000, 100)
    result = solve_batch(index, usage, jobs, Policy(), time_limit_s=4.0, workers=1, partition=True, parts=4,
                         processes=2)
    assert result.method.startswith("partitioned") and result.extra["parts"] == 4.0
    spec_of = dict(jobs)
    placed = {j: (spec_of[j], p) for j, p in result.placements.items()}
    assert check_solution(grid, placed, usage, Policy(), index.topology, gang_training=True) == []
    assert set(result.placements).isdisjoint(result.unplaced)
    assert sorted(set(result.placements) | set(result.unplaced)) == sorted(spec_of)
    assert len(result.unplaced) == len(set(result.unplaced))
    assert result.weighted_gpus == sum(t.value for t in result.tiers) > 0
    for tier in result.tiers:
        assert tier.best_bound >= tier.value
    # Sites are cut into parts whole: every multi-pool placement (a deployment's replicas) stays in one part.
    parts = site_parts(index, usage, 4)
    for placement in result.placements.values():
        assert len({int(parts[index.site_index[a.site_id]]) for a in placement.assignments}) == 1


@pytest.mark.parametrize("n_pools", [200, 800])
def test_sites_split_into_parts_of_about_equal_free_gpus(n_pools: int) -> None:
    _, index, usage, _ = _synthetic(10, n_pools)
    parts = site_parts(index, usage, 4)
    free = np.maximum(index.pool_healthy_gpus - usage.pool_used_gpus, 0)
    site_free = np.bincount(index.pool_site, weights=free, minlength=len(index.site_ids))
    per_part = np.bincount(parts, weights=site_free, minlength=4)
    assert len(per_part) == 4
    # A part overshoots its share by at most one site; a site bigger than a share is a part alone.
    assert per_part.max() <= max(per_part.sum() / 4, site_free.max()) + site_free.max()
    if site_free.max() < per_part.sum() / 8:
        assert (per_part > 0).all()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(st.one_of(training_specs(), inference_specs()), min_size=1, max_size=10), fill=fills,
       parts=st.integers(1, 3))
def test_the_global_bound_is_at_least_the_exact_optimum(
    index: GridIndex, small_grid: Grid, specs: list[JobSpec], fill: list[float], parts: int
) -> None:
    """One tier (same priority), on the small grid: a long single solve over every pool (top K = all)
    that proves W optimal gives the exact optimum; the partitioned solve's bound is never below it."""
    jobs = [(j, s.model_copy(update={"priority": 5})) for j, s in _jobs(specs)]
    usage = _preload(index, fill)
    exact = solve_batch(index, usage, jobs, Policy(), time_limit_s=5.0, workers=1, top_k=len(index.pool_ids))
    assume(exact.extra.get("weighted_gpus_gap", 0.0) == 0.0)
    result = solve_batch(index, usage, jobs, Policy(), time_limit_s=1.0, workers=1, partition=True, parts=parts,
                         processes=1)
    assert result.best_bound >= exact.weighted_gpus >= result.weighted_gpus
    spec_of = dict(jobs)
    placed = {j: (spec_of[j], p) for j, p in result.placements.items()}
    assert check_solution(small_grid, placed, usage, Policy(), index.topology, gang_training=True) == []
