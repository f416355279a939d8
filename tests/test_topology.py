"""Latency: shortest paths, derived from distance where a link has none, never beating light.
And topology inside a pool: nodes, interconnect domains, and the nodes a reservation takes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import Usage, decide, site_reasons, wait_info
from grid_scheduler.engine.index import GridIndex
from grid_scheduler.engine.topology import (
    NodeView,
    PoolShape,
    assign_nodes,
    breaks_whole_domain,
    domain_free_gpus,
    feasible,
    fragmented_gpus,
    largest_free_domain,
    node_free_gpus,
    packed_domain_free_gpus,
    packed_node_free_gpus,
    unit_gpus,
    usable_gpus,
)
from grid_scheduler.model import GpuTopology, Grid, JobSpec, Policy, Pool, ReasonCode, TopologyMode, Weights
from grid_scheduler.model.geo import great_circle_km, light_floor_ms
from grid_scheduler.topology import Topology


def test_small_grid_latencies_match_its_table(small_grid: Grid) -> None:
    topo = Topology.from_grid(small_grid)
    expected = {  # from the table in small.yaml's header
        "london": [11, 18, 1, 6, 4],
        "frankfurt": [16, 13, 6, 1, 9],
        "manchester": [14, 21, 4, 9, 1],
        "lisbon": [1, 28, 11, 16, 14],
    }
    for e, endpoint in enumerate(topo.endpoint_ids):
        assert topo.endpoint_site_latency_ms[e].tolist() == expected[endpoint]


def test_no_latency_beats_light(nscale_grid: Grid) -> None:
    topo = Topology.from_grid(nscale_grid)
    places = {s.id: s.location for s in nscale_grid.sites} | {e.id: e.location for e in nscale_grid.endpoints}
    for e, endpoint in enumerate(topo.endpoint_ids):
        for s, site in enumerate(topo.site_ids):
            a, b = places[endpoint], places[site]
            floor = light_floor_ms(great_circle_km(a.lat, a.lon, b.lat, b.lon))
            assert topo.endpoint_site_latency_ms[e, s] >= floor - 1e-9
    assert np.isfinite(topo.endpoint_site_latency_ms).all()


coords = st.tuples(st.floats(-60, 70), st.floats(-170, 170))


@settings(max_examples=50, deadline=None)
@given(points=st.lists(coords, min_size=3, max_size=8), stretch=st.floats(1.0, 3.0),
       edges=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), min_size=2, max_size=20))
def test_derived_paths_respect_the_floor_and_the_stretch(
    points: list[tuple[float, float]], stretch: float, edges: list[tuple[int, int]]
) -> None:
    n = len(points)
    grid = Grid.model_validate(
        {
            "name": "g",
            "path_stretch": stretch,
            "gpu_types": [{"name": "H100", "memory_gib": 80, "board_power_kw": 0.7}],
            "sites": [
                {"id": f"s{i}", "tier": "edge", "location": {"lat": lat, "lon": lon, "country": "US"},
                 "power_envelope_mw": 1}
                for i, (lat, lon) in enumerate(points)
            ],
            "links": [{"a": f"s{a % n}", "b": f"s{b % n}"} for a, b in edges if a % n != b % n],
        }
    )
    topo = Topology.from_grid(grid)
    for i, (lat1, lon1) in enumerate(points):
        for j, (lat2, lon2) in enumerate(points):
            latency = topo.site_site_latency_ms[i, j]
            floor = light_floor_ms(great_circle_km(lat1, lon1, lat2, lon2))
            assert latency >= floor - 1e-9
            if topo.graph.has_edge(f"s{i}", f"s{j}"):
                # A direct link is never beaten by more than the detour it saves.
                assert latency <= floor * stretch + 1e-9


def test_bottleneck_bandwidth(small_grid: Grid) -> None:
    topo = Topology.from_grid(small_grid)
    assert topo.bottleneck_gbps("sines", "sines") == float("inf")
    assert topo.bottleneck_gbps("sines", "glomfjord") == 400
    assert topo.bottleneck_gbps("lisbon", "london") == 100


@pytest.mark.parametrize("seed", [0, 1])
def test_bottleneck_from_one_source_equals_the_per_pair_answer(small_grid: Grid, seed: int) -> None:
    from grid_scheduler.synthetic import synthetic_grid

    for grid in (small_grid, synthetic_grid(sites=60, pools=240, gpus_target=133 * 240, seed=seed)):
        topo = Topology.from_grid(grid)
        targets = tuple(s.id for s in grid.sites)
        for source in [*targets[:: max(1, len(targets) // 6)], *(d.home_site for d in grid.datasets)]:
            assert topo.bottleneck_gbps_from(source, targets) == [topo.bottleneck_gbps(source, t) for t in targets]


# --- Topology inside a pool: nodes and interconnect domains (engine/topology.py) -------------


@st.composite
def pools_and_requests(draw: st.DrawFn) -> tuple[PoolShape, np.ndarray, np.ndarray, int, GpuTopology]:
    gpus_per_node = draw(st.sampled_from([1, 2, 4, 8]))
    shape = PoolShape(gpus_per_node, draw(st.integers(1, 6)))
    nodes = draw(st.integers(1, 30))
    used = np.array(draw(st.lists(st.integers(0, gpus_per_node), min_size=nodes, max_size=nodes)), dtype=np.int64)
    # Mostly idle nodes, so whole free domains occur often enough to matter.
    busy = np.array(draw(st.lists(st.integers(0, 3), min_size=nodes, max_size=nodes))) == 0
    used = np.where(busy, used, 0)
    out = np.array(draw(st.lists(st.integers(0, 15), min_size=nodes, max_size=nodes)), dtype=np.int64) == 0
    mode = draw(st.sampled_from(list(TopologyMode)))
    if mode is TopologyMode.WHOLE_DOMAINS:
        gpus = draw(st.one_of(st.integers(1, 3).map(lambda k: k * shape.domain_gpus), st.integers(1, 60)))
        topo = GpuTopology(mode=mode)
    elif mode is TopologyMode.SLICES:
        n = draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
        gpus = n * draw(st.integers(1, 12))
        topo = GpuTopology(mode=mode, slice_gpus=n)
    else:
        gpus = draw(st.integers(1, nodes * gpus_per_node + 4))
        topo = GpuTopology()
    return shape, used, out, gpus, topo


def _per_domain(shape: PoolShape, per_node: np.ndarray) -> np.ndarray:
    return domain_free_gpus(shape, per_node)


@settings(max_examples=400, deadline=None)
@given(case=pools_and_requests())
def test_assign_nodes_keeps_every_topology_promise(
    case: tuple[PoolShape, np.ndarray, np.ndarray, int, GpuTopology],
) -> None:
    shape, used, out, gpus, topo = case
    free = node_free_gpus(shape, used, out)
    assigned = assign_nodes(shape, free, gpus, topo)
    # Feasibility says yes exactly when an assignment exists.
    assert feasible(shape, free, gpus, topo) == (assigned is not None)
    assert (assigned is not None) == (gpus % unit_gpus(shape, topo) == 0 and usable_gpus(shape, free, topo) >= gpus)
    if assigned is None:
        return
    taken = np.zeros(len(free), dtype=np.int64)
    for node, n in assigned:
        taken[node] += n
    nodes = [node for node, _ in assigned]
    assert nodes == sorted(set(nodes)), "sorted, one entry per node"
    assert all(n > 0 for _, n in assigned)
    assert int(taken.sum()) == gpus
    assert np.all(taken <= free), "never over-fills a node"
    assert not np.any(taken[out]), "never uses an out-of-service node"
    domain_taken = _per_domain(shape, taken)
    domain_free = _per_domain(shape, free)
    if topo.mode is TopologyMode.WHOLE_DOMAINS:
        for d in np.flatnonzero(domain_taken):
            # Each domain it uses was completely free, and is used whole: no partial domain.
            assert domain_free[d] == shape.domain_gpus
            assert domain_taken[d] == shape.domain_gpus
    elif topo.mode is TopologyMode.SLICES:
        # Each domain's share is whole slices: no slice crosses a domain.
        assert np.all(domain_taken % topo.slice_gpus == 0)
    # The fragmentation cost predicts what the assignment does to whole free domains.
    whole = domain_free == shape.domain_gpus
    broke = bool(np.any(whole & (domain_taken > 0) & (domain_taken < shape.domain_gpus)))
    assert breaks_whole_domain(shape, domain_free, gpus, topo) == broke
    if topo.mode is TopologyMode.NONE and gpus <= int(domain_free[~whole].sum()):
        assert not np.any(domain_taken[whole]), "whole free domains stay whole while broken ones can hold the job"


@settings(max_examples=200, deadline=None)
@given(case=pools_and_requests())
def test_assign_nodes_is_deterministic(case: tuple[PoolShape, np.ndarray, np.ndarray, int, GpuTopology]) -> None:
    shape, used, out, gpus, topo = case
    free = node_free_gpus(shape, used, out)
    assert assign_nodes(shape, free, gpus, topo) == assign_nodes(shape, free.copy(), gpus, topo)


def test_slices_go_to_the_tightest_domain_that_holds_them() -> None:
    shape = PoolShape(gpus_per_node=4, nodes_per_domain=4)  # 16-GPU domains
    free = np.array([4, 4, 4, 4, 4, 4, 0, 0, 4, 4, 4, 0], dtype=np.int64)  # domains: 16, 8, 12 free
    assert assign_nodes(shape, free, 8, GpuTopology(mode=TopologyMode.SLICES, slice_gpus=8)) == ((4, 4), (5, 4))
    assert assign_nodes(shape, free, 12, GpuTopology(mode=TopologyMode.SLICES, slice_gpus=12)) == (
        (8, 4), (9, 4), (10, 4))
    assert assign_nodes(shape, free, 16, GpuTopology(mode=TopologyMode.WHOLE_DOMAINS)) == (
        (0, 4), (1, 4), (2, 4), (3, 4))
    assert assign_nodes(shape, free, 32, GpuTopology(mode=TopologyMode.WHOLE_DOMAINS)) is None
    # Unconstrained: the broken domain that holds it with least to spare; the whole one stays whole.
    assert assign_nodes(shape, free, 6, GpuTopology()) == ((4, 4), (5, 2))
    assert fragmented_gpus(shape, free, np.where(free == 0, 4, 0)) == 8 + 12


@settings(max_examples=300, deadline=None)
@given(nodes=st.integers(1, 60), gpn=st.sampled_from([1, 4, 8]), domain=st.sampled_from([1, 8, 16, 72]),
       drained=st.integers(0, 60), used=st.integers(0, 600))
def test_packed_domains_agree_with_packed_nodes(nodes: int, gpn: int, domain: int, drained: int, used: int) -> None:
    pool = Pool(id="p", gpu_type="X", nodes=nodes, gpus_per_node=gpn, interconnect_domain_gpus=domain,
                drained_nodes=min(drained, nodes))
    free = packed_node_free_gpus(pool, used, pool.healthy_gpus)
    assert packed_domain_free_gpus(pool, used, pool.healthy_gpus).tolist() == domain_free_gpus(
        PoolShape.of(pool), free).tolist()


def test_packed_view_without_node_detail(nscale_grid: Grid) -> None:
    _, pool = nscale_grid.pool_by_id["monarch-gb300-c"]  # 36 drained nodes: the last two racks
    free = packed_node_free_gpus(pool, used_gpus=74, capacity_gpus=pool.healthy_gpus)
    assert free[:18].sum() == 0 and free[18] == 2 and free[19] == 4
    assert not free[-36:].any()
    assert largest_free_domain(PoolShape.of(pool), free) == 72


def _gb300_job(topology: dict[str, object], gpus: int = 72) -> JobSpec:
    return JobSpec.model_validate({
        "name": "rack-gang", "tenant": "acme", "kind": "training", "gang": True,
        "gpus": {"count": gpus, "types": ["GB300"]}, "topology": topology,
    })


def _fragmented_usage(index: GridIndex, whole: dict[str, int]) -> Usage:
    """Node detail for every pool: drained nodes out; in each GB300 pool one node of every domain
    busy (68 of 72 free), except the domains listed in ``whole`` (pool -> domain), left free."""
    used_nodes, out_nodes = [], []
    for pool, shape in zip(index.pools, index.pool_shapes, strict=True):
        used = np.zeros(pool.nodes, dtype=np.int32)
        if pool.gpu_type == "GB300":
            used[:: shape.nodes_per_domain] = pool.gpus_per_node
            if pool.id in whole:
                used[whole[pool.id] * shape.nodes_per_domain] = 0
        out = np.arange(pool.nodes) >= pool.nodes - pool.drained_nodes
        used[out] = 0
        used_nodes.append(used)
        out_nodes.append(out)
    pool_used = np.array([int(u.sum()) for u in used_nodes], dtype=np.int64)
    return Usage(pool_used, np.zeros(len(index.site_ids)), np.zeros(len(index.pool_ids), dtype=np.bool_),
                 node_used_gpus=tuple(used_nodes), node_out=tuple(out_nodes))


@pytest.fixture(scope="module")
def nscale_index(nscale_grid: Grid) -> GridIndex:
    return GridIndex.build(nscale_grid)


def test_whole_domain_gang_lands_only_on_a_whole_free_domain(nscale_index: GridIndex) -> None:
    index = nscale_index
    usage = _fragmented_usage(index, {"glomfjord-gb300-a": 5})
    decision = decide(index, usage, _gb300_job({"mode": "whole_domains"}), Policy())
    assert decision.placement is not None
    [a] = decision.placement.assignments
    assert a.pool_id == "glomfjord-gb300-a"
    assert a.nodes == tuple((n, 4) for n in range(5 * 18, 6 * 18)), "the one whole free rack, every node whole"


def test_whole_domain_gang_waits_naming_the_largest_free_domain(nscale_index: GridIndex) -> None:
    index = nscale_index
    usage = _fragmented_usage(index, {})
    spec = _gb300_job({"mode": "whole_domains"})
    decision = decide(index, usage, spec, Policy())
    assert decision.placement is None
    reasons = [r for r in site_reasons(index, decision, Policy()) if r.pool_id == "monarch-gb300-a"]
    assert [r.message for r in reasons] == ["no domain with 72 free GPUs in pool monarch-gb300-a (largest free: 68)"]
    assert (reasons[0].code, reasons[0].required, reasons[0].available) == (ReasonCode.CAPACITY, 72, 0)
    summary = wait_info(index, decision, Policy()).summary
    assert any("no domain with 72 free GPUs" in line and "(largest free: 68)" in line for line in summary)
    # Pool level, the same GPUs are plenty: an unconstrained job of the same size places, and
    # its nodes fill one broken rack (best fit), breaking no whole one.
    free = decide(index, usage, _gb300_job({}), Policy())
    assert free.placement is not None
    [a] = free.placement.assignments
    assert sum(n for _, n in a.nodes) == 72
    assert len({node // 18 for node, _ in a.nodes}) == 2  # 68 in one rack, 4 in the next: no rack holds 72


def test_slices_count_only_whole_slices_per_domain(nscale_index: GridIndex) -> None:
    index = nscale_index
    usage = _fragmented_usage(index, {})
    # 16-GPU slices: 4 fit in every 68-free rack, so 8 of them place, two racks' worth at most.
    decision = decide(index, usage, _gb300_job({"mode": "slices", "slice_gpus": 16}, gpus=128), Policy())
    assert decision.placement is not None
    [a] = decision.placement.assignments
    racks: dict[int, int] = {}
    for node, n in a.nodes:
        racks[node // 18] = racks.get(node // 18, 0) + n
    assert sorted(racks.values()) == [64, 64]
    # 72-GPU slices fit no 68-free rack: the reason counts slices.
    waits = decide(index, usage, _gb300_job({"mode": "slices", "slice_gpus": 72}, gpus=144), Policy())
    assert waits.placement is None
    [reason] = [r for r in site_reasons(index, waits, Policy()) if r.pool_id == "sines-gb300-a"]
    assert reason.message == "room for 0 of 2 slices of 72 GPUs in pool sines-gb300-a (largest free domain: 68 of 72)"


def test_without_node_detail_placements_stay_pool_level(nscale_index: GridIndex) -> None:
    decision = decide(nscale_index, Usage.empty(nscale_index), _gb300_job({"mode": "whole_domains"}, 144), Policy())
    assert decision.placement is not None
    assert all(a.nodes == () for a in decision.placement.assignments)
    # A job whose size is not whole racks can never run: every GB300 pool says why.
    never = decide(nscale_index, Usage.empty(nscale_index), _gb300_job({"mode": "whole_domains"}, 100), Policy())
    assert never.placement is None
    messages = {r.message for r in site_reasons(nscale_index, never, Policy()) if r.pool_id == "sines-gb300-a"}
    assert messages == {"100 GPUs are not whole 72-GPU domains of pool sines-gb300-a"}


def test_fragmentation_cost_prefers_the_pool_that_breaks_no_rack(nscale_index: GridIndex) -> None:
    index = nscale_index
    empty = _fragmented_usage(index, {})
    # Every rack whole, but one rack of monarch-gb300-b with one node busy (68 free), and one of
    # monarch-gb300-a all busy (so -a is fuller: the packing term alone prefers it).
    used = tuple(np.zeros_like(u) for u in empty.node_used_gpus)
    used[index.pool_index["monarch-gb300-b"]][0] = 4
    used[index.pool_index["monarch-gb300-a"]][:18] = 4
    pool_used = np.array([int(u.sum()) for u in used], dtype=np.int64)
    usage = Usage(pool_used, empty.site_used_kw, empty.pool_drained, node_used_gpus=used, node_out=empty.node_out)
    spec = JobSpec.model_validate({
        "name": "small", "tenant": "acme", "kind": "training", "gpus": {"count": 8, "types": ["GB300"]},
        "placement_preference": ["site:monarch"],
    })
    chosen = decide(index, usage, spec, Policy()).placement
    assert chosen is not None
    [a] = chosen.assignments
    assert (a.pool_id, a.nodes) == ("monarch-gb300-b", ((1, 4), (2, 4))), "into the broken rack"
    # Without the term, the fuller pool wins and a whole rack is broken.
    flat = Policy(weights=Weights(fragmentation=0.0))
    [a] = decide(index, usage, spec, flat).placement.assignments  # type: ignore[union-attr]
    assert (a.pool_id, a.nodes) == ("monarch-gb300-a", ((18, 4), (19, 4)))


@settings(max_examples=150, deadline=None)
@given(cases=st.lists(pools_and_requests(), min_size=1, max_size=5))
def test_node_view_of_all_pools_agrees_with_each_pool(
    cases: list[tuple[PoolShape, np.ndarray, np.ndarray, int, GpuTopology]],
) -> None:
    shapes = tuple(c[0] for c in cases)
    view = NodeView.build(shapes, tuple(c[1].astype(np.int32) for c in cases), tuple(c[2] for c in cases))
    for p, (shape, used, out, _, _) in enumerate(cases):
        free = node_free_gpus(shape, used, out)
        domains = domain_free_gpus(shape, free)
        assert view.node_free[p].tolist() == free.tolist()
        assert view.domain_free(p).tolist() == domains.tolist()
        assert int(view.pool_free_gpus[p]) == int(free.sum())
        assert int(view.pool_broken_free_gpus[p]) == int(domains[domains != shape.domain_gpus].sum())
        assert int(view.pool_fragmented_gpus[p]) == fragmented_gpus(shape, free, used)


@settings(max_examples=150, deadline=None)
@given(cases=st.lists(pools_and_requests(), min_size=1, max_size=5), data=st.data())
def test_a_node_view_brought_forward_equals_one_built_afresh(
    cases: list[tuple[PoolShape, np.ndarray, np.ndarray, int, GpuTopology]], data: st.DataObject,
) -> None:
    """NodeView.updated (a replica following its own commit) recomputes only the pools that moved:
    it must give what build gives on the new arrays, for every pool."""
    shapes = tuple(c[0] for c in cases)
    used = tuple(c[1].astype(np.int32) for c in cases)
    out = tuple(c[2] for c in cases)
    before = NodeView.build(shapes, used, out)
    for p in data.draw(st.lists(st.integers(0, len(cases) - 1), max_size=3)):
        before.domain_free(p)  # some pools' domain figures already asked for, as decisions do
    moved = sorted(set(data.draw(st.lists(st.integers(0, len(cases) - 1), max_size=len(cases)))))
    new_used = list(used)
    for p in moved:
        gpn = shapes[p].gpus_per_node
        new_used[p] = np.array(data.draw(st.lists(st.integers(0, gpn), min_size=len(used[p]), max_size=len(used[p]))),
                               dtype=np.int32)
    after = before.updated(tuple(new_used), out, moved)
    fresh = NodeView.build(shapes, tuple(new_used), out)
    for p in range(len(cases)):
        assert after.node_free[p].tolist() == fresh.node_free[p].tolist()
        assert after.node_used[p].tolist() == fresh.node_used[p].tolist()
        assert after.domain_free(p).tolist() == fresh.domain_free(p).tolist()
    assert after.pool_free_gpus.tolist() == fresh.pool_free_gpus.tolist()
    assert after.pool_broken_free_gpus.tolist() == fresh.pool_broken_free_gpus.tolist()
    assert after.pool_fragmented_gpus.tolist() == fresh.pool_fragmented_gpus.tolist()


def test_a_split_job_takes_whole_domains_from_each_pool(nscale_index: GridIndex) -> None:
    def split(gpus: int) -> JobSpec:
        return JobSpec.model_validate({
            "name": "split", "tenant": "acme", "kind": "training", "gang": False,
            "gpus": {"count": gpus, "types": ["GB300"]}, "topology": {"mode": "whole_domains"},
        })

    # 1 GPU is no whole 72-GPU domain: not in one pool, nor as shares of several.
    assert decide(nscale_index, Usage.empty(nscale_index), split(1), Policy()).placement is None
    usage = _fragmented_usage(nscale_index, {"sines-gb300-a": 3, "sines-gb300-b": 7})
    placement = decide(nscale_index, usage, split(144), Policy()).placement
    assert placement is not None
    assert sorted((a.pool_id, a.gpus) for a in placement.assignments) == [("sines-gb300-a", 72), ("sines-gb300-b", 72)]
    assert all(len({n // 18 for n, _ in a.nodes}) == 1 for a in placement.assignments)
