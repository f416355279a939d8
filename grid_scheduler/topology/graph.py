"""The grid as a networkx graph, and the latency between its places.

Nodes are sites and endpoints; edges are links weighted by one-way latency. A link
without a latency gets one from great-circle distance: light in fibre covers about
200 km per ms, and real routes are longer than the great circle by the grid's
``path_stretch``. Shortest paths are computed once per topology; they are what
placement decisions read, so they live in dense NumPy matrices indexed like the
grid's lists of sites and endpoints.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import networkx as nx
import numpy as np
import numpy.typing as npt

from grid_scheduler.model import Grid, Location
from grid_scheduler.model.geo import EARTH_RADIUS_KM, FIBRE_KM_PER_MS, great_circle_km, light_floor_ms

FloatMatrix = npt.NDArray[np.float64]


def _km(a: Location, b: Location) -> float:
    return great_circle_km(a.lat, a.lon, b.lat, b.lon)


def build_graph(grid: Grid) -> nx.Graph:
    graph = nx.Graph()
    for site in grid.sites:
        graph.add_node(site.id, kind="site", location=site.location)
    for endpoint in grid.endpoints:
        graph.add_node(endpoint.id, kind="endpoint", location=endpoint.location)
    for link in grid.links:
        km = _km(graph.nodes[link.a]["location"], graph.nodes[link.b]["location"])
        latency_ms = link.latency_ms if link.latency_ms is not None else light_floor_ms(km) * grid.path_stretch
        # Parallel links: the faster one carries the traffic.
        if graph.has_edge(link.a, link.b) and graph.edges[link.a, link.b]["latency_ms"] <= latency_ms:
            continue
        graph.add_edge(
            link.a,
            link.b,
            latency_ms=latency_ms,
            bandwidth_gbps=link.bandwidth_gbps,
            derived=link.latency_ms is None,
        )
    return graph


@dataclass(frozen=True)
class Topology:
    """Latency matrices over a grid; ``inf`` where no path exists."""

    graph: nx.Graph
    site_ids: tuple[str, ...]
    endpoint_ids: tuple[str, ...]
    endpoint_site_latency_ms: FloatMatrix  # [endpoint, site]
    site_site_latency_ms: FloatMatrix  # [site, site]

    @classmethod
    def from_grid(cls, grid: Grid) -> Topology:
        graph = build_graph(grid)
        site_ids = tuple(s.id for s in grid.sites)
        endpoint_ids = tuple(e.id for e in grid.endpoints)
        site_col = {sid: i for i, sid in enumerate(site_ids)}
        endpoint_site = _latency_rows(graph, endpoint_ids, site_col)
        site_site = _latency_rows(graph, site_ids, site_col)
        # Each edge is at least its own light floor, so by the triangle inequality every
        # path is too; the floor here only guards against a future edge source that forgets.
        places = {**{s.id: s.location for s in grid.sites}, **{e.id: e.location for e in grid.endpoints}}
        endpoint_site = np.maximum(endpoint_site, _floor_matrix(places, endpoint_ids, site_ids))
        site_site = np.maximum(site_site, _floor_matrix(places, site_ids, site_ids))
        return cls(graph, site_ids, endpoint_ids, endpoint_site, site_site)

    def bottleneck_gbps(self, source: str, target: str) -> float:
        """Bandwidth of the narrowest link on the lowest-latency path (inf at the same place)."""
        if source == target:
            return float("inf")
        try:
            path = nx.shortest_path(self.graph, source, target, weight="latency_ms")
        except nx.NetworkXNoPath:
            return 0.0
        return float(min(self.graph.edges[u, v]["bandwidth_gbps"] for u, v in itertools.pairwise(path)))


    def bottleneck_gbps_from(self, source: str, targets: tuple[str, ...]) -> list[float]:
        """``bottleneck_gbps(source, t)`` for every ``t``, from one Dijkstra over the whole graph
        (the per-pair calls run one bidirectional search each: 1,250 sites x 12 datasets took
        ~40 s on a 5,000-pool grid). Equal to the per-pair answer wherever the lowest-latency path
        is unique (tests/test_topology.py compares them)."""
        try:
            paths = nx.single_source_dijkstra_path(self.graph, source, weight="latency_ms")
        except nx.NodeNotFound:
            return [0.0] * len(targets)
        edges = self.graph.edges
        out = []
        for target in targets:
            path = paths.get(target)
            if target == source:
                out.append(float("inf"))
            elif path is None:
                out.append(0.0)
            else:
                out.append(float(min(edges[u, v]["bandwidth_gbps"] for u, v in itertools.pairwise(path))))
        return out


def _latency_rows(graph: nx.Graph, sources: tuple[str, ...], column: dict[str, int]) -> FloatMatrix:
    matrix = np.full((len(sources), len(column)), np.inf)
    for row, source in enumerate(sources):
        lengths = nx.single_source_dijkstra_path_length(graph, source, weight="latency_ms")
        for node, latency_ms in lengths.items():
            col = column.get(node)
            if col is not None:
                matrix[row, col] = latency_ms
    return matrix


def _floor_matrix(places: dict[str, Location], rows: tuple[str, ...], cols: tuple[str, ...]) -> FloatMatrix:
    lat_r = np.radians([places[r].lat for r in rows])[:, None]
    lon_r = np.radians([places[r].lon for r in rows])[:, None]
    lat_c = np.radians([places[c].lat for c in cols])[None, :]
    lon_c = np.radians([places[c].lon for c in cols])[None, :]
    a = np.sin((lat_c - lat_r) / 2) ** 2 + np.cos(lat_r) * np.cos(lat_c) * np.sin((lon_c - lon_r) / 2) ** 2
    km = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))
    return np.asarray(km / FIBRE_KM_PER_MS, dtype=np.float64)
