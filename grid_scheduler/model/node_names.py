"""Node names <-> node indices: the one mapping the scheduler, the ledger and the site agents share.

The ledger numbers a pool's nodes 0..nodes-1 (model.grid.Pool); agents, Slurm and Kubernetes name
them. Node i is the i-th name in the inventory the site's agent registered for the pool; a node past
that inventory (or every node, when no agent registered one) is called ``<pool_id>-<i, 5 digits>``,
which is also the inventory the reference agent's ``--simulate`` mode registers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType

__all__ = ["default_node_name", "node_indices", "node_names"]


def default_node_name(pool_id: str, index: int) -> str:
    return f"{pool_id}-{index:05d}"


def node_names(pool_id: str, nodes: int, inventory: Sequence[str] = ()) -> tuple[str, ...]:
    """The name of every node of the pool, by index."""
    return _names(pool_id, nodes, tuple(inventory))


def node_indices(pool_id: str, nodes: int, inventory: Sequence[str] = ()) -> Mapping[str, int]:
    """Name -> index for every node of the pool. An inventory name wins over a default name that
    happens to spell the same (only possible past a short inventory)."""
    return _indices(pool_id, nodes, tuple(inventory))


# Cached: the site monitor and every WatchAssignments stream ask for the same pools again and again,
# and a factory pool has thousands of nodes. Keyed by the inventory itself, so a new one is a new entry.
@lru_cache(maxsize=256)
def _names(pool_id: str, nodes: int, inventory: tuple[str, ...]) -> tuple[str, ...]:
    named = inventory[:nodes]
    return named + tuple(default_node_name(pool_id, i) for i in range(len(named), nodes))


@lru_cache(maxsize=256)
def _indices(pool_id: str, nodes: int, inventory: tuple[str, ...]) -> Mapping[str, int]:
    names = _names(pool_id, nodes, inventory)
    out: dict[str, int] = {}
    for i in range(len(inventory[:nodes]), nodes):
        out[names[i]] = i
    out.update((name, i) for i, name in enumerate(inventory[:nodes]))
    return MappingProxyType(out)  # shared by every caller: read-only
