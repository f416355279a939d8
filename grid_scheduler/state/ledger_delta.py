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

from grid_scheduler.model import Assignment
from grid_scheduler.state.store import LedgerSnapshot, Limits, to_watts

__all__ = ["apply_commit"]


def apply_commit(
    snapshot: LedgerSnapshot,
    limits: Limits,
    version: int,
    reserved: Sequence[tuple[str, Assignment]],
    released: Sequence[tuple[str, Assignment]] = (),
) -> LedgerSnapshot:
    """``snapshot`` with ``released`` given back and ``reserved`` taken, as of ``version``.

    Each item is (tenant, assignment). Nothing is changed in place: arrays that move are copied,
    so a Usage built on the old snapshot (a decision in flight) never sees the change. Per-node
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
    nodes = list(snapshot.node_used_gpus)
    nodes_copied: set[int] = set()
    for tenant, a, sign in moves:
        pool = limits.pool_index[a.pool_id]
        pool_used[pool] += sign * a.gpus
        site_w[limits.site_index[a.site_id]] += sign * to_watts(a.power_kw)
        if tenant not in copied:
            row = tenants.get(tenant)
            tenants[tenant] = row.copy() if row is not None else np.zeros(len(limits.pool_ids), dtype=np.int64)
            copied.add(tenant)
        tenants[tenant][pool] += sign * a.gpus
        if nodes and a.nodes:
            if pool not in nodes_copied:
                nodes[pool] = nodes[pool].copy()
                nodes_copied.add(pool)
            for node, gpus in a.nodes:
                nodes[pool][node] += sign * gpus
    for tenant in copied:  # only rows that moved can have emptied
        if not tenants[tenant].any():
            del tenants[tenant]
    return replace(
        snapshot, version=version, pool_used_gpus=pool_used, site_used_w=site_w,
        tenant_pool_gpus=tenants, node_used_gpus=tuple(nodes),
    )
