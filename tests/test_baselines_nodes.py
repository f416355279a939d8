"""Baselines choose nodes (issue 13 with topology inside pools): every node rule gives valid node
assignments under each topology mode, and LeastAllocated's domain-unaware spread breaks an NVL72
rack that the engine keeps whole, so a following whole-rack gang waits under it and runs under the engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grid_scheduler.config import load_grid
from grid_scheduler.engine.baselines import (
    NodeRule,
    engine_nodes,
    fgd_nodes,
    least_allocated,
    least_allocated_nodes,
    most_allocated_nodes,
    rule_decider,
)
from grid_scheduler.engine.topology import PoolShape, domain_free_gpus, feasible, whole_free_domains
from grid_scheduler.model import GpuTopology, Grid, JobSpec, JobState, Policy, TopologyMode
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.core import Decider
from grid_scheduler.whatif.fragmentation import domain_fragmented_gpus, fragmented_gpus
from tests.test_domains_scheduler import NodeLedger, _node_violations

NONE = GpuTopology()
WHOLE = GpuTopology(mode=TopologyMode.WHOLE_DOMAINS)
SLICES_8 = GpuTopology(mode=TopologyMode.SLICES, slice_gpus=8)
NODE_RULES: dict[str, NodeRule] = {
    "least-allocated": least_allocated_nodes,
    "most-allocated": most_allocated_nodes,
    "fgd": fgd_nodes({WHOLE: 3.0, SLICES_8: 1.0, NONE: 1.0}),
    "engine": engine_nodes,
}
# NVL72: 4 GPUs per node, 18 nodes per domain; 3 whole domains and a short one of 6 nodes.
SHAPE = PoolShape(gpus_per_node=4, nodes_per_domain=18)
NODES = 3 * 18 + 6


def _problems(node_free: np.ndarray, gpus: int, topology: GpuTopology,
              chosen: tuple[tuple[int, int], ...]) -> list[str]:
    problems = []
    nodes = [i for i, _ in chosen]
    if nodes != sorted(set(nodes)) or not all(0 <= i < NODES for i in nodes):
        problems.append(f"nodes {nodes} not distinct sorted nodes of the pool")
    if sum(g for _, g in chosen) != gpus:
        problems.append(f"{chosen} does not sum to {gpus}")
    for i, g in chosen:
        if not 0 < g <= node_free[i]:  # an out-of-service node has no free GPUs
            problems.append(f"node {i}: takes {g} of {node_free[i]} free")
    per_domain: dict[int, int] = {}
    for i, g in chosen:
        per_domain[i // SHAPE.nodes_per_domain] = per_domain.get(i // SHAPE.nodes_per_domain, 0) + g
    whole = whole_free_domains(SHAPE, domain_free_gpus(SHAPE, node_free))
    if topology.mode is TopologyMode.WHOLE_DOMAINS and any(
            n != SHAPE.domain_gpus or not whole[d] for d, n in per_domain.items()):
        problems.append(f"whole-domain job not on whole free domains: {per_domain}")
    if topology.mode is TopologyMode.SLICES and any(n % topology.slice_gpus for n in per_domain.values()):
        problems.append(f"a slice crosses a domain: {per_domain}")
    return problems


@pytest.mark.parametrize("name", sorted(NODE_RULES))
def test_every_node_rule_gives_valid_nodes_under_every_topology_mode(name: str) -> None:
    rule = NODE_RULES[name]
    rng = np.random.default_rng(13)
    checked = 0
    for case in range(300):
        # Usage from empty to nearly full; some nodes out of service (no free GPUs), some domains whole.
        used = rng.integers(0, 5, NODES) * (rng.random(NODES) < rng.random())
        node_free = np.maximum(4 - used, 0).astype(np.int64)
        node_free[rng.random(NODES) < 0.05] = 0
        if case % 3 == 0:
            node_free[18:36] = 4  # a whole free domain
        for gpus, topology in ((int(rng.integers(1, 40)), NONE), (72 * int(rng.integers(1, 3)), WHOLE),
                               (8 * int(rng.integers(1, 6)), SLICES_8)):
            chosen = rule(SHAPE, node_free.copy(), gpus, topology, rng.permutation(NODES))
            assert (chosen is not None) == feasible(SHAPE, node_free, gpus, topology), (case, gpus, topology)
            if chosen is not None:
                assert _problems(node_free, gpus, topology, chosen) == [], (case, gpus, topology)
                checked += 1
    assert checked > 300  # the cases fit often enough to test something


@pytest.fixture
def two_racks(tmp_path: Path) -> Grid:
    """small.yaml with sines-gb300 as two whole NVL72 racks (36 nodes)."""
    text = (Path(__file__).resolve().parent.parent / "examples" / "grids" / "small.yaml").read_text()
    sines = "{id: sines-gb300, gpu_type: GB300, nodes: "
    assert sines + "32," in text
    path = tmp_path / "two-racks.yaml"
    path.write_text(text.replace(sines + "32,", sines + "36,"))
    return load_grid(path)


def _job(name: str, gpus: int, topology: GpuTopology = NONE) -> JobSpec:
    return JobSpec.model_validate({"name": name, "tenant": "acme", "kind": "training",
                                   "gpus": {"count": gpus, "types": ["GB300"]}, "topology": topology.model_dump()})


def _scripted(grid: Grid, decider: Decider | None) -> tuple[Scheduler, JobState, set[int]]:
    """Six 4-GPU jobs, then a 72-GPU whole-rack gang, on sines-gb300 alone (glomfjord drained)."""
    s = (Scheduler(grid, store=NodeLedger(grid), quiet=True) if decider is None
         else Scheduler(grid, store=NodeLedger(grid), quiet=True, decider=decider))
    s.set_drained("glomfjord-gb300", True)
    racks: set[int] = set()
    for i in range(6):
        record = s.submit(_job(f"small-{i}", 4)).record
        assert record.state is JobState.RUNNING and record.placement is not None
        [a] = record.placement.assignments
        assert a.pool_id == "sines-gb300"
        racks |= {node // 18 for node, _ in a.nodes}
    gang = s.submit(_job("rack", 72, WHOLE)).record
    assert _node_violations(grid, s.store.running_jobs()) == []
    return s, gang.state, racks


def test_least_allocated_breaks_a_rack_the_engine_keeps_whole(two_racks: Grid) -> None:
    _, engine_gang, engine_racks = _scripted(two_racks, None)
    # The engine puts unconstrained GPUs into the rack already broken: rack 1 stays whole.
    assert engine_racks == {0}
    assert engine_gang is JobState.RUNNING
    # LeastAllocated spreads over the least-allocated nodes (random ties, as Kubernetes), domain-unaware:
    # it breaks both racks, and the gang must wait (not an error).
    _, la_gang, la_racks = _scripted(two_racks, rule_decider(least_allocated, seed=0))
    assert la_racks == {0, 1}
    assert la_gang is JobState.PENDING


def test_fragmentation_counts_free_gpus_a_waiting_whole_rack_job_cannot_use(two_racks: Grid) -> None:
    s = Scheduler(two_racks, store=NodeLedger(two_racks), quiet=True)
    s.set_drained("glomfjord-gb300", True)
    assert s.submit(_job("small", 4)).record.state is JobState.RUNNING  # breaks rack 0 of sines-gb300
    usage = s.usage()
    free = usage.nodes(s.index)
    assert free is not None
    total_free = int(np.where(usage.pool_drained, 0, free.pool_free_gpus).sum())
    rack, two_racks_job, small = _job("rack", 72, WHOLE), _job("two", 144, WHOLE), _job("small", 4)
    # The engine's metric: the 68 free GPUs of the broken rack.
    assert domain_fragmented_gpus(s.index, usage) == 68
    # A waiting whole-rack job can use rack 1 only: rack 0's 68 free GPUs are lost to it, and every
    # other pool's GPUs (not GB300) too.
    assert fragmented_gpus(s.index, usage, Policy(), [rack]) == total_free - 72
    # A job asking for two whole racks can start nowhere: every free GPU is lost.
    assert fragmented_gpus(s.index, usage, Policy(), [two_racks_job]) == total_free
    # A waiting 4-GPU job can use every free GB300 GPU.
    assert fragmented_gpus(s.index, usage, Policy(), [rack, small]) == total_free - 140
