"""This replica's copy of the ledger: the last snapshot, brought forward by its own commits.

Reading a snapshot is the dearest read on Redis (every pool and site), and a replica's own
commit is what moves the ledger most often. A commit tells the versions it found and left
(``Committed``); when it found the version this view holds, nothing else came in between, and
the view applies the commit's reservations and releases itself (state/ledger_delta.py), or, when
the store hands back the ledger as the commit left it (the in-process store always does: its
arrays are copy-on-write, so that costs no copy), takes that snapshot as it is. Any
other change (another replica, a drain, node health) leaves the view behind the ledger's version,
and the next read takes a fresh snapshot: a view can lag, never be wrong.

Commits made by concurrent threads can be reported out of order; one that found a version the
view has not reached yet waits here until the commits before it are reported (a few at most).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from grid_scheduler.engine import Usage
from grid_scheduler.engine.topology import FEW_NODES
from grid_scheduler.model import Assignment
from grid_scheduler.state import Committed, LedgerSnapshot, Limits, Transition
from grid_scheduler.state.ledger_delta import apply_commit

__all__ = ["LedgerView", "usage_of"]

# Commits reported ahead of the view, kept until the view reaches them. Past this many, the view
# has surely missed one (a commit made without reporting): forget them; the next read refreshes.
MAX_AHEAD = 64

Moves = tuple[tuple[tuple[str, Assignment], ...], tuple[tuple[str, Assignment], ...]]


def usage_of(snap: LedgerSnapshot, limits: Limits) -> Usage:
    """What a decision reads: the snapshot's usage, with GPUs on failed or drained nodes
    (scheduler/fleet.py) taken."""
    used, drained = snap.pool_used_gpus, snap.pool_drained
    if snap.pool_down_gpus is not None and snap.pool_down_gpus.any():
        # A pool with every GPU out of service (a silent site, every node failed) is unhealthy
        # as a whole: its reason is HEALTH, not capacity.
        used = used + snap.pool_down_gpus
        drained = drained | ((snap.pool_down_gpus > 0) & (snap.pool_down_gpus >= limits.pool_gpus))
    return Usage(used, snap.site_used_kw, drained, snap.tenant_pool_gpus, snap.node_used_gpus, snap.node_out)


class LedgerView:
    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._snap: LedgerSnapshot | None = None
        self._usage: Usage | None = None
        self._ahead: dict[int, tuple[int, Moves]] = {}  # ledger_before -> (ledger_after, moves)

    @property
    def version(self) -> int:
        """The ledger version the view is at; -1 before the first snapshot."""
        snap = self._snap
        return snap.version if snap is not None else -1

    @property
    def snapshot(self) -> LedgerSnapshot | None:
        return self._snap

    def at(self, version: int) -> Usage | None:
        """The usage at ``version``, if the view is there."""
        with self._lock:
            if self._snap is not None and self._snap.version == version:
                return self._usage
            return None

    def latest(self) -> tuple[int, Usage] | None:
        """The view's version and usage, read together (None before the first snapshot)."""
        with self._lock:
            if self._snap is None or self._usage is None:
                return None
            return self._snap.version, self._usage

    def reset(self, snap: LedgerSnapshot, newer_only: bool = False) -> Usage:
        """Start again from a snapshot just read (``newer_only``: unless the view is there or past it
        already, as when another thread's commit went further meanwhile)."""
        usage = usage_of(snap, self._limits)
        with self._lock:
            if newer_only and self._snap is not None and self._usage is not None and snap.version <= self._snap.version:
                return self._usage
            self._snap, self._usage = snap, usage
            self._ahead = {k: v for k, v in self._ahead.items() if k >= snap.version}
            self._catch_up()
            return self._usage

    def follow(self, done: Committed, moves: Sequence[Transition]) -> None:
        """A commit of ``moves`` this replica made, as the store reported it."""
        if done.ledger_before < 0:
            return  # nothing applied
        reserved = tuple((t.record.spec.tenant, a) for t in moves for a in t.reserve)
        left = done.after if done.after is not None else done.snapshot
        if left is not None:
            # The ledger as the commit left it: the in-process store's own (shared, read-only), or
            # Redis's when the ledger had moved past the view (``accept_moved``). Taken as it is.
            self._adopt(left, done.ledger_before, (*reserved, *done.released))
            return
        if done.ledger_after == done.ledger_before and not reserved and not done.released:
            return  # moved no capacity (a job that waits, or ends while waiting)
        with self._lock:
            if self._snap is None or done.ledger_before < self._snap.version:
                return
            self._ahead[done.ledger_before] = (done.ledger_after, (reserved, done.released))
            if len(self._ahead) > MAX_AHEAD:
                self._ahead.clear()
                return
            self._catch_up()

    def _adopt(self, snap: LedgerSnapshot, ledger_before: int, moved: Sequence[tuple[str, Assignment]]) -> None:
        """``reset`` to ``snap``, newer only, which a commit of ``moved`` left at ``ledger_before``:
        when the view was there, the node view is brought forward for the pools it moved rather
        than built afresh at the next decision."""
        usage = usage_of(snap, self._limits)
        with self._lock:
            previous, snap_before = self._usage, self._snap
            if snap_before is not None and snap.version <= snap_before.version:
                return
            self._snap, self._usage = snap, usage
            if self._ahead:
                self._ahead = {k: v for k, v in self._ahead.items() if k >= snap.version}
            if previous is not None and snap_before is not None and snap_before.version == ledger_before:
                _carry_node_view(previous, usage, self._touched(moved))
            self._catch_up()

    def _touched(self, moved: Sequence[tuple[str, Assignment]]) -> dict[int, list[int] | None]:
        """The pools whose node arrays a commit of ``moved`` copied (moves naming nodes), with the
        nodes it moved in each (None: too many to bring forward one by one, ``NodeView.updated``):
        named from the moves, not found by comparing every pool's array (2,000 at 500 sites)."""
        touched: dict[int, list[int] | None] = {}
        for _, a in moved:
            if a.nodes:
                pool = self._limits.pool_index[a.pool_id]
                nodes = touched.get(pool, [])
                if nodes is None or len(nodes) + len(a.nodes) > FEW_NODES:
                    touched[pool] = None
                else:
                    nodes.extend(node for node, _ in a.nodes)
                    touched[pool] = nodes
        return touched

    def _catch_up(self) -> None:
        while self._snap is not None and self._snap.version in self._ahead:
            before = self._snap.version
            after, (reserved, released) = self._ahead.pop(before)
            previous = self._usage
            self._snap = apply_commit(self._snap, self._limits, after, reserved, released)
            self._usage = usage_of(self._snap, self._limits)
            if previous is not None:
                _carry_node_view(previous, self._usage, self._touched((*reserved, *released)))


def _carry_node_view(previous: Usage, usage: Usage, changed: dict[int, list[int] | None]) -> None:
    """Give ``usage`` the node view of ``previous`` brought forward (``NodeView.updated``), when
    one was built: a commit copies only the node arrays of the pools it touched (ledger_delta),
    so those are the pools to recompute, and in them only the nodes it moved."""
    cache = previous.node_view_cache
    if not cache or cache[0][0] is not previous.node_used_gpus or not usage.node_used_gpus \
            or usage.node_out is not previous.node_out:
        return
    view = cache[0][1].updated(usage.node_used_gpus, usage.node_out, sorted(changed), changed)
    usage.node_view_cache[:] = [(usage.node_used_gpus, view)]
