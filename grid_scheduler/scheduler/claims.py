"""Capacity this process's deciders chose and its ledger view does not count yet: in-flight claims.

Two decisions on the same ledger view choose the same nodes (``assign_nodes`` is deterministic),
so deciders running at once in one process would collide at commit and decide again, each redoing
its work and a round trip. Instead a decider registers what its placement reserves before it
commits (``register``), and every decision is made on the view with the claims it does not count
yet added (``read``): concurrent deciders of one process then take disjoint nodes, and leave each
other the last GPUs of a pool, a site's last watts and a tenant's last quota. Collisions remain
only across processes (replicas), where the store's re-check refuses and the scheduler decides again.

A claim registered after a decider read the claims was not in its view: ``register`` refuses the
later decider's claim when the two overlap (same nodes, or together past a pool's or a site's
limit), and it decides again, on the view with that claim (no I/O in between).

A claim ends when its commit is refused or applied nothing. A committed claim is counted by views
at or past the ledger version its commit left, and stays in the registry a while longer: a decider
that read before it was registered (and whose view cannot count it) is checked against it at
``register``. Only the oldest committed claims are forgotten, and a decider that read before one of
them decides again. Claims only ever make a decision more cautious; the store's re-check is what
guarantees limits.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from grid_scheduler.engine import GridIndex, Usage
from grid_scheduler.model import Assignment

__all__ = ["Claims", "Read"]

# Slack on the kW comparison: power sums of floats (the stores compare whole watts).
_KW_SLACK = 1e-6
# Committed claims kept for deciders that read before them; past this many, the oldest go.
_KEPT = 64


@dataclass
class _Claim:
    tenant: str
    reserve: tuple[Assignment, ...]
    committed_at: int | None = None  # the ledger version its commit left; None while in flight


@dataclass(frozen=True)
class Read:
    """A decider's view: ``usage`` (the ledger view at ``version``) with the claims it does not count
    added (``claimed``), and the last claim registered then (``generation``)."""

    version: int
    usage: Usage
    claimed: Usage
    generation: int


class Claims:
    def __init__(self, index: GridIndex) -> None:
        self._index = index
        self._lock = threading.Lock()
        self._claims: dict[int, _Claim] = {}  # claim id -> claim, in id order
        self._last = 0  # the last id given
        self._forgotten = 0  # the last id dropped while committed: a read before it cannot be checked
        self._seen = -1  # the newest view version read

    def in_flight(self) -> int:
        """Claims whose commit has not returned."""
        with self._lock:
            return sum(c.committed_at is None for c in self._claims.values())

    def read(self, usage: Usage, version: int) -> Read:
        """``usage``, the ledger view at ``version``, with every claim it does not count yet."""
        with self._lock:
            self._seen = max(self._seen, version)
            live = [c for c in self._claims.values()
                    if c.reserve and (c.committed_at is None or c.committed_at > version)]
            generation = self._last
        claimed = _overlay(self._index, usage, live) if live else usage
        return Read(version, usage, claimed, generation)

    def register(self, read: Read, tenant: str, reserve: Sequence[Assignment]) -> int | None:
        """Claim ``reserve``, decided on ``read``; its id, or None when a claim registered since the
        read overlaps it (decide again on a new read). Nothing to reserve: 0, no claim."""
        if not reserve:
            return 0
        with self._lock:
            if read.generation < self._forgotten:
                return None  # a claim made since the read is forgotten: nothing to check against
            newer: list[_Claim] = []
            for k in reversed(self._claims):
                if k <= read.generation:
                    break
                newer.append(self._claims[k])
            if newer and _overlaps(self._index, read.claimed, newer, reserve):
                return None
            self._last += 1
            self._claims[self._last] = _Claim(tenant, tuple(reserve))
            if len(self._claims) > _KEPT:
                self._forget()
            return self._last

    def _forget(self) -> None:
        """Drop the oldest claims that views count (the newest view read is at or past their commit)."""
        for k in list(self._claims):
            if len(self._claims) <= _KEPT // 2:
                return
            c = self._claims[k]
            if c.committed_at is not None and c.committed_at <= self._seen:
                del self._claims[k]
                self._forgotten = max(self._forgotten, k)

    def release(self) -> int:
        """A release this process is committing (a job ending): it reserves nothing, so it is no
        decision's concern, but it moves the ledger like a claim does (``uncounted``)."""
        with self._lock:
            self._last += 1
            self._claims[self._last] = _Claim("", ())
            return self._last

    def uncounted(self, version: int, besides: int = 0) -> int:
        """Claims other than ``besides`` that a view at ``version`` does not count: the most the ledger
        can have moved past ``version`` by this process's own placements."""
        with self._lock:
            return sum(k != besides and (c.committed_at is None or c.committed_at > version)
                       for k, c in self._claims.items())

    def committed(self, claim: int, ledger_after: int) -> None:
        """The claim's commit took the ledger to ``ledger_after``: views from that version count it."""
        with self._lock:
            c = self._claims.get(claim)
            if c is not None:
                c.committed_at = ledger_after

    def end(self, claim: int) -> None:
        """The claim's commit was refused or applied nothing (unless it was marked committed)."""
        with self._lock:
            c = self._claims.get(claim)
            if c is not None and c.committed_at is None:
                del self._claims[claim]


def _overlaps(index: GridIndex, claimed: Usage, newer: Sequence[_Claim], reserve: Sequence[Assignment]) -> bool:
    """Whether ``reserve`` (which fits ``claimed``) and the ``newer`` claims (not in ``claimed``) cannot all
    be reserved: a node taken by both, or a pool or site past its limit with both."""
    pool_gpus: dict[int, int] = {}
    site_kw: dict[int, float] = {}
    nodes: dict[int, set[int]] = {}
    for c in newer:
        for a in c.reserve:
            p, s = index.pool_index[a.pool_id], index.site_index[a.site_id]
            pool_gpus[p] = pool_gpus.get(p, 0) + a.gpus
            site_kw[s] = site_kw.get(s, 0.0) + a.power_kw
            nodes.setdefault(p, set()).update(n for n, _ in a.nodes)
    for a in reserve:
        p, s = index.pool_index[a.pool_id], index.site_index[a.site_id]
        if p in pool_gpus:
            if a.nodes and nodes[p]:
                # Each fit its nodes on ``claimed``: on disjoint nodes both fit, pool included.
                if nodes[p] & {n for n, _ in a.nodes}:
                    return True
            elif claimed.pool_used_gpus[p] + pool_gpus[p] + a.gpus > index.pool_healthy_gpus[p]:
                return True
        if s in site_kw and claimed.site_used_kw[s] + site_kw[s] + a.power_kw > index.site_envelope_kw[s] + _KW_SLACK:
            return True
    return False


def _overlay(index: GridIndex, usage: Usage, claims: Sequence[_Claim]) -> Usage:
    """``usage`` with the claims' reservations taken: pools, sites, tenants' quota usage and nodes.
    Nothing changes in place (``usage`` is shared by every decision at its version)."""
    pool_used = usage.pool_used_gpus.copy()
    site_kw = usage.site_used_kw.copy()
    tenants: dict[str, npt.NDArray[np.int64]] = dict(usage.tenant_pool_gpus)
    copied: set[str] = set()
    node_used = list(usage.node_used_gpus)
    touched: set[int] = set()
    for c in claims:
        if c.tenant not in copied:
            row = tenants.get(c.tenant)
            tenants[c.tenant] = row.copy() if row is not None else np.zeros(len(pool_used), dtype=np.int64)
            copied.add(c.tenant)
        for a in c.reserve:
            p = index.pool_index[a.pool_id]
            pool_used[p] += a.gpus
            site_kw[index.site_index[a.site_id]] += a.power_kw
            tenants[c.tenant][p] += a.gpus
            if node_used and a.nodes:
                if p not in touched:
                    node_used[p] = node_used[p].copy()
                    touched.add(p)
                for node, gpus in a.nodes:
                    node_used[p][node] += gpus
    if not touched:
        return replace(usage, pool_used_gpus=pool_used, site_used_kw=site_kw, tenant_pool_gpus=tenants)
    nodes = tuple(node_used)
    # The node view of ``usage`` brought forward over the claimed pools only (rebuilding every
    # pool's costs more than the decision); a fresh cache list, so ``usage``'s own stays its own.
    base = usage.nodes(index)
    assert base is not None
    view = base.updated(nodes, usage.node_out, sorted(touched))
    return replace(usage, pool_used_gpus=pool_used, site_used_kw=site_kw, tenant_pool_gpus=tenants,
                   node_used_gpus=nodes, node_view_cache=[(nodes, view)])
