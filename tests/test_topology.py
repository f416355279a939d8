"""Latency: shortest paths, derived from distance where a link has none, never beating light."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from grid_scheduler.model import Grid
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
