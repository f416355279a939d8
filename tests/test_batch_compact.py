"""The batch's compact input (engine/batch_input.py): groups of jobs with one spec give the same
plan as the same jobs as ``(job_id, JobSpec)`` pairs in the same queue order; the million-job
generator (synthetic_groups.py) gives ``job_stream``'s jobs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import GridIndex, Usage
from grid_scheduler.engine.batch import BatchResult, _build_units, solve_batch
from grid_scheduler.engine.batch_input import JobGroup, as_groups, flatten, group_jobs
from grid_scheduler.engine.batch_partition import split_groups
from grid_scheduler.engine.priority import Holds
from grid_scheduler.engine.verify import check_solution
from grid_scheduler.model import Grid, JobSpec, Policy
from grid_scheduler.synthetic import job_stream, synthetic_grid
from grid_scheduler.synthetic_groups import job_groups
from tests.strategies import inference_specs, training_specs

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
fills = st.lists(st.sampled_from([0.0, 0.0, 0.25, 0.5, 0.9, 1.0]), min_size=7, max_size=7)
group_lists = st.lists(st.tuples(st.one_of(training_specs(), inference_specs()), st.integers(1, 4)),
                       min_size=1, max_size=10)


@pytest.fixture(scope="module")
def index(small_grid: Grid) -> GridIndex:
    return GridIndex.build(small_grid)


def _preload(index: GridIndex, fill: list[float]) -> Usage:
    used = np.array([int(index.pool_healthy_gpus[p] * f) for p, f in enumerate(fill)], dtype=np.int64)
    kw = np.bincount(index.pool_site, weights=used * index.pool_kw_per_gpu, minlength=len(index.site_ids))
    return Usage(used, kw.astype(np.float64), np.zeros(len(used), dtype=np.bool_))


def _groups(drawn: list[tuple[JobSpec, int]]) -> list[JobGroup]:
    """Each spec with ``count`` job ids; the same spec may come again later (another group)."""
    out, n = [], 0
    for spec, count in drawn:
        out.append(JobGroup(spec, [f"job-{n + i:03d}" for i in range(count)]))
        n += count
    return out


def _pairs(groups: list[JobGroup]) -> list[tuple[str, JobSpec]]:
    """The same jobs as (job_id, spec) pairs, each spec named after its job, in queue order."""
    return [(job_id, spec.model_copy(update={"name": job_id})) for job_id, spec in flatten(groups)]


def _same_plan(a: BatchResult, b: BatchResult) -> None:
    assert a.placements == b.placements
    assert a.unplaced == b.unplaced
    assert (a.weighted_gpus, a.greedy_value, a.classes, a.method) == (b.weighted_gpus, b.greedy_value, b.classes,
                                                                      b.method)
    assert [(t.priority, t.jobs, t.placed, t.value) for t in a.tiers] == [
        (t.priority, t.jobs, t.placed, t.value) for t in b.tiers]


@SETTINGS
@given(drawn=group_lists, fill=fills, by_class=st.booleans(), accept_gap=st.sampled_from([0.0, 0.02]))
def test_groups_and_jobspecs_give_the_same_plan(
    index: GridIndex, small_grid: Grid, drawn: list[tuple[JobSpec, int]], fill: list[float], by_class: bool,
    accept_gap: float,
) -> None:
    groups = _groups(drawn)
    usage = _preload(index, fill)
    kwargs = {"time_limit_s": 2.0, "workers": 1, "seed": 3, "by_class": by_class, "accept_gap": accept_gap}
    compact = solve_batch(index, usage, groups, Policy(), **kwargs)  # type: ignore[arg-type]
    pairs = _pairs(groups)
    _same_plan(compact, solve_batch(index, usage, pairs, Policy(), **kwargs))  # type: ignore[arg-type]
    spec_of = dict(pairs)
    placed = {j: (spec_of[j], p) for j, p in compact.placements.items()}
    assert check_solution(small_grid, placed, usage, Policy(), index.topology, gang_training=True) == []
    if accept_gap and compact.extra.get("model_skipped"):
        assert compact.gap <= accept_gap + 1e-12  # kept only within the gap of a valid bound


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=group_lists, fill=fills, parts=st.integers(1, 3))
def test_groups_and_jobspecs_give_the_same_partitioned_plan(
    index: GridIndex, drawn: list[tuple[JobSpec, int]], fill: list[float], parts: int
) -> None:
    groups = _groups(drawn)
    usage = _preload(index, fill)
    kwargs = {"time_limit_s": 1.0, "workers": 1, "partition": True, "parts": parts, "processes": 1}
    compact = solve_batch(index, usage, groups, Policy(), **kwargs)  # type: ignore[arg-type]
    _same_plan(compact, solve_batch(index, usage, _pairs(groups), Policy(), **kwargs))  # type: ignore[arg-type]


@SETTINGS
@given(drawn=group_lists)
def test_a_group_is_one_class_per_key_and_its_jobs_keep_their_order(
    index: GridIndex, drawn: list[tuple[JobSpec, int]]
) -> None:
    groups = _groups(drawn)
    units = _build_units(index, Usage.empty(index), groups, Policy(), Holds(index))
    pair_units = _build_units(index, Usage.empty(index), _pairs(groups), Policy(), Holds(index))
    assert [u.job_ids for u in units] == [u.job_ids for u in pair_units]
    for unit in units:  # runs: the input groups of a class's jobs, in its job order
        assert sum(count for _, count in unit.runs) == len(unit.job_ids)
        at = 0
        for g, count in unit.runs:
            assert set(unit.job_ids[at:at + count]) <= set(groups[g].job_ids)
            at += count


def test_the_generator_gives_job_streams_jobs() -> None:
    grid = synthetic_grid(sites=50, pools=200, gpus_target=133 * 200, seed=1)
    stream = {s.name: s for s in job_stream(grid, 3_000, seed=5, inference_share=0.3)}
    groups = job_groups(grid, 3_000, seed=5, inference_share=0.3)
    assert len(groups) < len(stream)  # some jobs share a spec
    got = dict(flatten(groups))
    assert sorted(got) == sorted(stream)
    for job_id, spec in got.items():
        assert spec.model_dump() | {"name": job_id} == stream[job_id].model_dump()
        JobSpec.model_validate(spec.model_dump())  # a valid spec, though constructed without validation


def test_group_jobs_groups_equal_specs_in_order_of_first_appearance() -> None:
    grid = synthetic_grid(sites=20, pools=80, gpus_target=133 * 80, seed=2)
    pairs = [(s.name, s) for s in job_stream(grid, 400, seed=2, inference_share=0.3)]
    groups = group_jobs(pairs)
    assert sorted(job_id for job_id, _ in flatten(groups)) == sorted(job_id for job_id, _ in pairs)
    firsts = [g.job_ids[0] for g in groups]
    order = {job_id: i for i, (job_id, _) in enumerate(pairs)}
    assert firsts == sorted(firsts, key=order.__getitem__)
    assert as_groups(groups) == groups and as_groups([]) == []


@SETTINGS
@given(drawn=group_lists, fill=fills, parts=st.integers(1, 4), seed=st.integers(0, 3))
def test_the_split_gives_each_job_the_part_its_sample_draws(
    index: GridIndex, drawn: list[tuple[JobSpec, int]], fill: list[float], parts: int, seed: int
) -> None:
    """``split_groups`` hands out slices; the reference draws a part per job (the points of the
    systematic sample, as POP does), and every job lands where its point falls."""
    groups = _groups(drawn)
    usage = _preload(index, fill)
    units = _build_units(index, usage, groups, Policy(), Holds(index))
    pool_part = np.arange(len(index.pool_ids)) % parts
    got, nowhere = split_groups(units, list(range(len(groups))), pool_part, parts, np.random.default_rng(seed))
    want: list[dict[int, list[str]]] = [{} for _ in range(parts)]
    rng = np.random.default_rng(seed)
    group_of = {job_id: g for g, (_, ids) in enumerate(groups) for job_id in ids}
    for unit in units:
        cap = np.bincount(pool_part, weights=np.where(unit.mask, unit.checks.pool_free_gpus, 0), minlength=parts)
        if cap.sum() <= 0:
            assert set(unit.job_ids) <= set(nowhere)
            continue
        cum = np.cumsum(cap / cap.sum())
        cum[-1] = 1.0
        u, n = rng.random(), len(unit.job_ids)
        for k, job_id in enumerate(unit.job_ids):
            i = min(int(np.searchsorted(cum * n, u + k, side="right")), parts - 1)
            assert cap[i] > 0  # never a part where the class has no room
            want[i].setdefault(group_of[job_id], []).append(job_id)
    assert [dict(p) for p in got] == want
