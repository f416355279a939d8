"""Rack-level holds (engine/priority.py rule 1): a waiting whole-domain gang holds the domains
closest to draining in the pools it could use, not the pools.

- property (engine, random node usage and waiting gangs): a held domain never receives a job of
  a lower tier; the held domains of a pool are its least-used ones, no more than the gangs need;
  and the holds take from a lower-tier job exactly the held domains' GPUs, nothing it could use
  otherwise (a pool no gang could use decides as if nothing were held);
- the scheduler (real MemoryStore ledger with nodes): a lower-tier job starts in a partly used
  rack while the gang waits, never in the held rack, and the gang starts when that rack drains.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import Usage, decide
from grid_scheduler.engine.batch import solve_batch
from grid_scheduler.engine.index import GridIndex
from grid_scheduler.engine.priority import Holds, shadow
from grid_scheduler.model import Grid, JobSpec, JobState, Policy
from grid_scheduler.scheduler import Scheduler

EXAMPLES = int(os.environ.get("RACK_HOLD_EXAMPLES", "300"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
POLICY = Policy()
RACK = 72  # GB300 NVL72: 18 nodes x 4 GPUs
GB300 = ("sines-gb300", "glomfjord-gb300")


def gb300(name: str, gpus: int, priority: int, topology: dict[str, object] | None = None,
          allowed: list[str] | None = None, preemptible: bool = False) -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": "acme", "kind": "training", "priority": priority, "preemptible": preemptible,
        "gang": True, "gpus": {"count": gpus, "types": ["GB300"]}, "topology": topology or {},
        "residency": {"allowed": allowed or []},
    })


def usage_of(index: GridIndex, busy: dict[str, list[int]]) -> Usage:
    """Node detail: in each listed pool, domain d has ``busy[pool][d]`` GPUs reserved, filling its
    nodes from the first; every other node is free."""
    used_nodes, out_nodes = [], []
    for pool, shape in zip(index.pools, index.pool_shapes, strict=True):
        used = np.zeros(pool.nodes, dtype=np.int32)
        for d, gpus in enumerate(busy.get(pool.id, [])):
            start = d * shape.nodes_per_domain
            full, rest = divmod(gpus, shape.gpus_per_node)
            used[start:start + full] = shape.gpus_per_node
            if rest:
                used[start + full] = rest
        used_nodes.append(used)
        out_nodes.append(np.zeros(pool.nodes, dtype=np.bool_))
    pool_used = np.array([int(u.sum()) for u in used_nodes], dtype=np.int64)
    return Usage(pool_used, np.zeros(len(index.site_ids)), np.zeros(len(index.pool_ids), dtype=np.bool_),
                 node_used_gpus=tuple(used_nodes), node_out=tuple(out_nodes))


def domain_used(index: GridIndex, usage: Usage, p: int) -> np.ndarray:
    shape = index.pool_shapes[p]
    used = np.asarray(usage.node_used_gpus[p], dtype=np.int64)
    return np.add.reduceat(used, np.arange(0, len(used), shape.nodes_per_domain))


busy_gpus = st.sampled_from([0, 0, 4, 8, 16, 36, 64, 68, 72])
gang = st.tuples(st.sampled_from([RACK, 2 * RACK]), st.sampled_from([1, 2]), st.sampled_from([[], ["EU"], ["NO"]]))
lower = st.tuples(
    st.sampled_from([4, 8, 16, 32, 64, 72, 100]), st.integers(0, 0),
    st.sampled_from([{}, {}, {"mode": "slices", "slice_gpus": 8}, {"mode": "whole_domains"}]),
    st.sampled_from([[], ["EU"], ["NO"]]),
)


@SETTINGS
@given(sines=st.lists(busy_gpus, min_size=2, max_size=2), glomfjord=st.lists(busy_gpus, min_size=3, max_size=3),
       gangs=st.lists(gang, min_size=1, max_size=4), low=lower)
def test_held_domains_get_no_lower_tier_job_and_block_nothing_else(
    racks_index: GridIndex, sines: list[int], glomfjord: list[int],
    gangs: list[tuple[int, int, list[str]]], low: tuple[int, int, dict[str, object], list[str]],
) -> None:
    index = racks_index
    usage = usage_of(index, {"sines-gb300": sines, "glomfjord-gb300": glomfjord})
    holds = Holds(index)
    specs = [gb300(f"gang-{i}", gpus, priority, {"mode": "whole_domains"}, allowed)
             for i, (gpus, priority, allowed) in enumerate(gangs)]
    for spec in specs:
        holds.hold_for(spec, POLICY)
    gpus, priority, topology, allowed = low
    if topology.get("mode") == "whole_domains":
        gpus = RACK
    elif topology.get("mode") == "slices":
        gpus = 8 * max(1, gpus // 8)
    spec = gb300("low", gpus, priority, topology, allowed)
    held = holds.held_domains(usage, spec)

    # At most what the gangs need: each gang holds its racks in one pool.
    assert sum(len(d) for d in held.values()) <= sum(g // RACK for g, _, _ in gangs)
    for p, domains in held.items():
        assert index.pool_ids[p] in GB300
        used = domain_used(index, usage, p)
        others = np.setdiff1d(np.arange(len(used)), domains)
        # Closest to draining: no domain left open has fewer GPUs reserved than a held one.
        if len(others):
            assert used[domains].max() <= used[others].min()

    overlay = holds.overlay(usage, spec)
    decision = decide(index, overlay, spec, POLICY)
    if decision.placement is not None:
        for a in decision.placement.assignments:
            p = index.pool_index[a.pool_id]
            per_domain = index.pool_shapes[p].nodes_per_domain
            assert not {node // per_domain for node, _ in a.nodes} & set(held.get(p, np.array([])).tolist()), \
                "a lower-tier job took GPUs in a domain held for a waiting gang"

    # Nothing else is taken: the same usage with only the held domains made full decides alike.
    filled = usage_of(index, {
        pool: [RACK if d in set(held.get(index.pool_index[pool], np.array([])).tolist()) else b
               for d, b in enumerate(busy)]
        for pool, busy in (("sines-gb300", sines), ("glomfjord-gb300", glomfjord))
    })
    site_kw = holds.overlay(Usage.empty(index), spec).site_used_kw  # the power held, alone
    filled = Usage(filled.pool_used_gpus, filled.site_used_kw + site_kw, filled.pool_drained,
                   node_used_gpus=filled.node_used_gpus, node_out=filled.node_out)
    alike = decide(index, filled, spec, POLICY)
    assert (alike.placement is None) == (decision.placement is None)
    if alike.placement is not None and decision.placement is not None:
        assert alike.placement.assignments == decision.placement.assignments
    # A pool no gang could use: the lower-tier job decides there as if nothing were held.
    h100 = JobSpec.model_validate({"name": "h100", "tenant": "acme", "kind": "training", "priority": priority,
                                   "gpus": {"count": 8, "types": ["H100"]}})
    free = decide(index, usage, h100, POLICY)
    assert free.placement is not None
    held_h100 = decide(index, holds.overlay(usage, h100), h100, POLICY)
    assert held_h100.placement is not None
    assert held_h100.placement.assignments == free.placement.assignments


def test_a_lower_tier_job_starts_beside_the_held_rack_and_the_gang_gets_the_rack_that_drains(
    racks_grid: Grid,
) -> None:
    s = Scheduler(racks_grid)  # the in-memory ledger, with nodes
    no = ["NO"]  # glomfjord-gb300 alone: 3 racks
    x1 = s.submit(gb300("x1", 72, 0, allowed=no)).record  # rack 0, exactly
    x2 = s.submit(gb300("x2", 40, 0, allowed=no)).record  # opens rack 1
    x3 = s.submit(gb300("x3", 40, 0, allowed=no)).record  # rack 1's 32 free, then 8 of rack 2
    assert all(r.state is JobState.RUNNING for r in (x1, x2, x3))
    gang = s.submit(gb300("gang", 72, 5, {"mode": "whole_domains"}, no)).record
    assert gang.state is JobState.PENDING  # no whole free rack
    s.complete(x2.id)  # rack 1: 32 used (x3), 40 free; rack 2 (8 used) is the one closest to draining
    assert s.get(gang.id).state is JobState.PENDING

    def racks(job_id: str) -> set[int]:
        placement = s.get(job_id).placement
        assert placement is not None
        return {node // 18 for a in placement.assignments for node, _ in a.nodes}

    assert racks(x3.id) == {1, 2}
    # A whole-pool hold made this wait; the rack hold lets it start in rack 1, never in rack 2.
    low = s.submit(gb300("low", 16, 0, allowed=no)).record
    assert low.state is JobState.RUNNING
    assert racks(low.id) == {1}
    # What only the held rack could hold waits, with the hold as its reason.
    big = s.submit(gb300("big", 48, 0, allowed=no)).record
    assert big.state is JobState.PENDING
    assert big.waiting is not None
    assert "held for waiting jobs of higher priority" in big.waiting.summary[0]
    s.complete(x3.id)  # rack 2 drains whole: the gang takes it at once
    assert s.get(gang.id).state is JobState.RUNNING
    assert racks(gang.id) == {2}
    # No gang waits now: nothing is held, and rack 1 (56 free) takes what waited.
    assert s.get(big.id).state is JobState.RUNNING
    assert racks(big.id) == {1}


def test_without_node_detail_a_gang_holds_its_pools_whole(racks_index: GridIndex) -> None:
    index = racks_index
    holds = Holds(index)
    holds.hold_for(gb300("gang", 72, 5, {"mode": "whole_domains"}, ["EU"]), POLICY)
    low = gb300("low", 8, 0, allowed=["EU"])
    usage = Usage.empty(index)
    assert holds.held_domains(usage, low) == {}
    assert decide(index, holds.overlay(usage, low), low, POLICY).placement is None
    held = holds.held_pools(low)
    assert held is not None and held[index.pool_index["sines-gb300"]]
    # Unhold: nothing is held any more.
    holds.unhold_for(gb300("gang", 72, 5, {"mode": "whole_domains"}, ["EU"]), POLICY)
    assert holds.held_pools(low) is None
    assert decide(index, holds.overlay(usage, low), low, POLICY).placement is not None


def test_holding_for_n_gangs_at_once_is_n_holds(racks_index: GridIndex) -> None:
    """The batch solver holds a class of waiting gangs in one call (``jobs``): one rack each."""
    index = racks_index
    usage = usage_of(index, {"glomfjord-gb300": [24, 60, 64], "sines-gb300": [4, 4]})
    gang = gb300("gang", 72, 2, {"mode": "whole_domains"}, ["NO"])
    low = gb300("low", 8, 0, allowed=["NO"])
    one_by_one, at_once = Holds(index), Holds(index)
    for _ in range(2):
        one_by_one.hold_for(gang, POLICY)
    pools, site_kw = shadow(index, gang, POLICY)
    at_once.hold_for(gang, POLICY, (pools, site_kw * 2), jobs=2)
    held = one_by_one.held_domains(usage, low)
    assert {p: d.tolist() for p, d in held.items()} == {index.pool_index["glomfjord-gb300"]: [0, 1]}
    assert {p: d.tolist() for p, d in at_once.held_domains(usage, low).items()} == {
        p: d.tolist() for p, d in held.items()}
    assert np.allclose(at_once.overlay(usage, low).site_used_kw, one_by_one.overlay(usage, low).site_used_kw)


@pytest.mark.parametrize("by_class", [True, False])
def test_the_batch_solver_holds_the_pools_of_waiting_gangs_whole(racks_index: GridIndex, by_class: bool) -> None:
    """The batch solver plans at pool level (no node detail): a waiting gang's pools are held whole
    there, stricter than the online path, never looser; its commit takes nodes on the held view."""
    index = racks_index
    # glomfjord's 3 racks: 48, 12 and 8 GPUs free; no gang fits, not even at pool level (68 free).
    usage = usage_of(index, {"glomfjord-gb300": [24, 60, 64]})
    gang = ("gang", gb300("gang", 72, 2, {"mode": "whole_domains"}, ["NO"]))
    lows = [(f"low-{i}", gb300(f"low-{i}", 8, 0, allowed=["NO"])) for i in range(4)]
    result = solve_batch(index, usage, [gang, *lows], POLICY, time_limit_s=2.0, workers=1, by_class=by_class)
    assert not result.placements
