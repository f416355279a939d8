"""The batch solver plans a whole-domain or slice job only where its commit can give it nodes
(issue 13, "found, not fixed" of the last stop).

Property (real solver, a grid with racks, random node usage and random jobs of three tiers):
committed in queue order as ``scheduler/batch_commit.py`` does (``assign_job_nodes`` on the
nodes the earlier placements left), every placement of the plan gets nodes, so the plan never
over-fills a node; and each topology job also gets its nodes when every *other* placement of the
plan went first, so no placement of the plan breaks a rack that a whole-domain job needs. The
W bound of each tier stays at or above what the plan places.
"""

from __future__ import annotations

import os
from itertools import product

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine.batch import solve_batch
from grid_scheduler.engine.feasibility import compute_checks
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.engine.online import replica_gpus
from grid_scheduler.engine.priority import job_value
from grid_scheduler.engine.topology import assign_job_nodes
from grid_scheduler.model import JobSpec, Placement, Policy, TopologyMode
from tests.test_rack_holds import GB300, RACK, usage_of

EXAMPLES = int(os.environ.get("BATCH_RACK_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
POLICY = Policy()


def gb300(name: str, gpus: int, priority: int, topology: dict[str, object], allowed: list[str],
          gang: bool, preemptible: bool) -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": "acme", "kind": "training", "priority": priority, "preemptible": preemptible,
        "gang": gang, "gpus": {"count": gpus, "types": ["GB300"]}, "topology": topology,
        "residency": {"allowed": allowed}, "training": {"duration_hours": 2},
    })


@st.composite
def rack_jobs(draw: st.DrawFn) -> tuple[int, dict[str, object]]:
    """GPUs and topology: whole racks, slices of 8, 24 or 36, or none."""
    kind = draw(st.sampled_from(["whole", "whole", "slices", "slices", "none", "none"]))
    if kind == "whole":
        return draw(st.sampled_from([RACK, RACK, 2 * RACK])), {"mode": "whole_domains"}
    if kind == "slices":
        n = draw(st.sampled_from([8, 24, 36]))
        return n * draw(st.integers(1, 3)), {"mode": "slices", "slice_gpus": n}
    return draw(st.sampled_from([4, 8, 16, 36, 64, 72, 100])), {}


busy_gpus = st.sampled_from([0, 0, 0, 4, 8, 36, 64, 68, 72])
job = st.tuples(rack_jobs(), st.integers(0, 2), st.sampled_from([[], ["EU"], ["NO"]]), st.booleans(), st.booleans())


def _queue_order(jobs: list[tuple[str, JobSpec]]) -> list[tuple[str, JobSpec]]:
    """Higher tier first, then input (submission) order: the order the batch commit takes."""
    return sorted(jobs, key=lambda j: -j[1].priority)


def _commit(index: GridIndex, node_free: list[np.ndarray], spec: JobSpec, placement: Placement) -> bool:
    """Take the placement's GPUs on nodes as the batch commit does (``online.with_nodes``):
    all of them, or (False) none."""
    taken = []
    for a in placement.assignments:
        p = index.pool_index[a.pool_id]
        nodes = assign_job_nodes(index.pool_shapes[p], node_free[p], a.gpus, spec.topology, replica_gpus(spec))
        if nodes is None:
            return False
        taken.append((p, nodes))
    for p, nodes in taken:
        for node, gpus in nodes:
            node_free[p][node] -= gpus
            assert node_free[p][node] >= 0
    return True


def _free_nodes(index: GridIndex, usage: Usage) -> list[np.ndarray]:
    nodes = usage.nodes(index)
    assert nodes is not None
    return [np.array(nodes.node_free[p], dtype=np.int64) for p in range(len(index.pool_ids))]


@SETTINGS
@given(sines=st.lists(busy_gpus, min_size=2, max_size=2), glomfjord=st.lists(busy_gpus, min_size=3, max_size=3),
       drawn=st.lists(job, min_size=1, max_size=7))
@example(sines=[0, 36], glomfjord=[36, 36, 0],  # one whole rack per pool; two gangs, one of 2 racks
         drawn=[((144, {"mode": "whole_domains"}), 1, [], True, False),
                ((RACK, {"mode": "whole_domains"}), 1, [], True, False)])
@example(sines=[8, 8], glomfjord=[72, 72, 68],  # pool level says a rack is free; no rack is
         drawn=[((RACK, {"mode": "whole_domains"}), 0, ["EU"], True, False)])
def test_every_planned_topology_job_gets_nodes_when_the_plan_is_committed(
    racks_index: GridIndex, sines: list[int], glomfjord: list[int],
    drawn: list[tuple[tuple[int, dict[str, object]], int, list[str], bool, bool]],
) -> None:
    index = racks_index
    usage = usage_of(index, {"sines-gb300": sines, "glomfjord-gb300": glomfjord})
    jobs = [(f"j{i}", gb300(f"j{i}", gpus, priority, topology, allowed, gang, preemptible))
            for i, ((gpus, topology), priority, allowed, gang, preemptible) in enumerate(drawn)]
    result = solve_batch(index, usage, jobs, POLICY, time_limit_s=1.0, workers=1)
    plan = [(job_id, spec, result.placements[job_id]) for job_id, spec in _queue_order(jobs)
            if job_id in result.placements]

    # In queue order, every placement takes nodes: nothing is over-filled, nothing left half-done.
    node_free = _free_nodes(index, usage)
    for job_id, spec, placement in plan:
        assert _commit(index, node_free, spec, placement), f"{job_id} ({spec.topology}) gets no nodes in queue order"

    # A topology job gets its nodes after every other placement of the plan: no other placement
    # breaks a rack it needs, whatever order they are committed in.
    for job_id, spec, placement in plan:
        if spec.topology.mode is TopologyMode.NONE:
            continue
        node_free = _free_nodes(index, usage)
        for other_id, other, other_placement in plan:
            if other_id != job_id:
                assert _commit(index, node_free, other, other_placement)
        assert _commit(index, node_free, spec, placement), f"{job_id} ({spec.topology}) gets no nodes last"

    # The model and its warm start keep to the racks themselves: the safety check after the
    # solve (``RackLedger.admit``) dropped nothing.
    assert result.extra.get("rack_dropped", 0.0) == 0.0

    # Each tier's bound on W stays at or above what the plan places in it.
    for tier in result.tiers:
        placed = sum(job_value(spec) for job_id, spec in jobs
                     if spec.priority == tier.priority and job_id in result.placements)
        assert tier.value == placed
        assert tier.best_bound >= tier.objective - 1e-6


def test_the_solver_plans_a_gang_where_a_rack_is_free_and_not_where_none_is(racks_index: GridIndex) -> None:
    """Pool level would take both gangs (sines 108 free, glomfjord 144 free); racks take one: sines
    has one whole rack, glomfjord none (its free GPUs are scattered over its three racks)."""
    index = racks_index
    usage = usage_of(index, {"sines-gb300": [0, 36], "glomfjord-gb300": [24, 36, 12]})
    gangs = [(f"gang-{i}", gb300(f"gang-{i}", RACK, 1, {"mode": "whole_domains"}, [], True, False))
             for i in range(2)]
    plain = [("plain", gb300("plain", 36, 1, {}, ["EU"], True, False))]  # sines: only its broken rack keeps the gang's
    result = solve_batch(index, usage, [*gangs, *plain], POLICY, time_limit_s=2.0, workers=1)
    assert sorted(result.placements) == ["gang-0", "plain"]
    assert [a.pool_id for a in result.placements["gang-0"].assignments] == ["sines-gb300"]
    assert result.unplaced == ["gang-1"]
    # The price bound (every pool) knows glomfjord has no whole rack: W is proven at once.
    assert result.extra["price_weighted_gpus_bound"] == result.weighted_gpus
    node_free = _free_nodes(index, usage)
    for job_id, spec in [*gangs, *plain]:
        if job_id in result.placements:
            assert _commit(index, node_free, spec, result.placements[job_id])


whole_or_plain = st.tuples(
    st.sampled_from([(RACK, {"mode": "whole_domains"}), (2 * RACK, {"mode": "whole_domains"}),
                     (8, {}), (36, {}), (64, {}), (100, {})]),
    st.sampled_from([[], ["EU"], ["NO"]]),
)


@SETTINGS
@given(sines=st.lists(busy_gpus, min_size=2, max_size=2), glomfjord=st.lists(busy_gpus, min_size=3, max_size=3),
       drawn=st.lists(whole_or_plain, min_size=1, max_size=4))
def test_the_bound_on_w_is_never_below_the_best_plan_the_racks_allow(
    racks_index: GridIndex, sines: list[int], glomfjord: list[int],
    drawn: list[tuple[tuple[int, dict[str, object]], list[str]]],
) -> None:
    """One tier of whole-rack and plain gangs (where the rack rows are exact, not conservative):
    every choice of pool or none per job is tried, committed in queue order; the solver's bound on
    W is at least the best W among those whose commit gives every job nodes, and its plan is one."""
    index = racks_index
    usage = usage_of(index, {"sines-gb300": sines, "glomfjord-gb300": glomfjord})
    jobs = [(f"j{i}", gb300(f"j{i}", gpus, 1, topology, allowed, True, False))
            for i, ((gpus, topology), allowed) in enumerate(drawn)]
    pools = [index.pool_index[p] for p in GB300]
    allowed_pools = [[p for p in pools if compute_checks(index, Usage.empty(index), spec, POLICY).pool_static_ok[p]]
                     for _, spec in jobs]
    best = 0
    for choice in product(*[[None, *ps] for ps in allowed_pools]):
        node_free = _free_nodes(index, usage)
        value = 0
        for (_, spec), p in zip(jobs, choice, strict=True):
            if p is None:
                continue
            nodes = assign_job_nodes(index.pool_shapes[p], node_free[p], spec.gpus.count, spec.topology, None)
            if nodes is None:
                break
            for node, gpus in nodes:
                node_free[p][node] -= gpus
            value += job_value(spec)
        else:
            best = max(best, value)
    result = solve_batch(index, usage, jobs, POLICY, time_limit_s=1.0, workers=1)
    bound = result.extra.get("weighted_gpus_bound", float(result.weighted_gpus))
    assert bound >= best, f"W bound {bound} below the best plan the racks allow ({best})"
    assert result.weighted_gpus <= best
    if result.status == "OPTIMAL":  # proven: for whole racks and plain jobs the rows lose no plan
        assert result.weighted_gpus == best
