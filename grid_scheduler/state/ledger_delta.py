"""A commit's change applied to a snapshot: how a replica follows its own commits without reading.

A replica that holds the snapshot at version ``v`` and commits the change that takes the ledger
from ``v`` to ``w`` (``Committed.ledger_before == v``: nothing else came in between) knows the
ledger at ``w`` exactly: its snapshot, less what the commit released, plus what it reserved. The
stores count the same integers (GPUs, whole watts), so the result equals a fresh snapshot
(tests/test_ledger_delta.py holds both stores to that after random histories).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from grid_scheduler.engine.topology import PoolArrays
from grid_scheduler.model import Assignment
from grid_scheduler.state.store import LedgerSnapshot, Limits, to_watts

__all__ = ["add_node_gpus", "apply_commit"]

# Nodes past which one fancy-indexed add beats a NumPy scalar update per node.
_VECTOR_NODES = 32


def add_node_gpus(used: npt.NDArray[np.int32], nodes: Sequence[tuple[int, int]], sign: int) -> None:
    """``used[node] += sign * gpus`` for each (node, gpus) of one assignment, in place (its nodes
    are distinct: Limits.check_nodes). A factory gang names ~1,000 nodes, a replica one or two."""
    if len(nodes) < _VECTOR_NODES:
        for node, gpus in nodes:
            used[node] += sign * gpus
        return
    pairs = np.asarray(nodes, dtype=np.int64)
    used[pairs[:, 0]] += (sign * pairs[:, 1]).astype(used.dtype)


def apply_commit(
    snapshot: LedgerSnapshot,
    limits: Limits,
    version: int,
    reserved: Sequence[tuple[str, Assignment]],
    released: Sequence[tuple[str, Assignment]] = (),
) -> LedgerSnapshot:
    """``snapshot`` with ``released`` given back and ``reserved`` taken, as of ``version``.

    Each item is (tenant, assignment). Nothing is changed in place: arrays that move are copied
    (per-node arrays only for the pools touched; the result's are read-only and shared with the
    snapshot elsewhere), so a Usage built on the old snapshot (a decision in flight) never sees the change. Per-node
    usage is followed when the snapshot carries it (``node_used_gpus``) and the assignment names
    its nodes. Tenants left holding nothing drop out, as the stores' snapshots leave them out.
    """
    moves = [(tenant, a, -1) for tenant, a in released] + [(tenant, a, +1) for tenant, a in reserved]
    if not moves:
        return replace(snapshot, version=version)
    pool_used = snapshot.pool_used_gpus.copy()
    site_w = snapshot.site_used_w.copy()
    tenants: dict[str, npt.NDArray[np.int64]] = dict(snapshot.tenant_pool_gpus)
    copied: set[str] = set()
    # Copy-on-write per touched pool: the untouched pools' arrays (2,000 at 500 sites) are shared
    # through PoolArrays' chunks, not copied into a new tuple on every commit.
    nodes: dict[int, npt.NDArray[np.int32]] = {}
    for tenant, a, sign in moves:
        pool = limits.pool_index[a.pool_id]
        pool_used[pool] += sign * a.gpus
        site_w[limits.site_index[a.site_id]] += sign * to_watts(a.power_kw)
        if tenant not in copied:
            row = tenants.get(tenant)
            tenants[tenant] = row.copy() if row is not None else np.zeros(len(limits.pool_ids), dtype=np.int64)
            copied.add(tenant)
        tenants[tenant][pool] += sign * a.gpus
        if snapshot.node_used_gpus and a.nodes:
            if pool not in nodes:
                nodes[pool] = snapshot.node_used_gpus[pool].copy()
            add_node_gpus(nodes[pool], a.nodes, sign)
    for tenant in copied:  # only rows that moved can have emptied
        if not tenants[tenant].any():
            del tenants[tenant]
    node_used = snapshot.node_used_gpus
    if nodes:
        for array in nodes.values():
            array.flags.writeable = False
        node_used = PoolArrays.of(node_used).replaced(nodes)
    return replace(
        snapshot, version=version, pool_used_gpus=pool_used, site_used_w=site_w,
        tenant_pool_gpus=tenants, node_used_gpus=node_used,
    )
