"""The grid as a graph: shortest-path latency between endpoints and sites."""

from grid_scheduler.topology.graph import Topology, build_graph

__all__ = ["Topology", "build_graph"]
