"""Topology inside a pool: nodes, interconnect domains, and which nodes a reservation takes.

A pool's node ``i`` is in domain ``i // nodes_per_domain`` (model.grid.Pool); an NVL72 rack
is one domain of 18 nodes x 4 GPUs. A job may ask for whole domains, or for slices of N GPUs
that each stay inside one domain (model.job.GpuTopology). Everything here is pure: the
functions work on one pool's free GPUs per node, and ``NodeView`` holds every pool's for one
ledger read, so the engine, the scheduler's commit paths and the tests share one definition
of "fits" and one assignment.

Fragmentation is the free GPUs in partly used domains: capacity a whole-domain job cannot
use. ``assign_nodes`` keeps it low by putting unconstrained GPUs and slices into domains
already broken (tightest fit first), so whole free domains stay whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from grid_scheduler.model import GpuTopology, Pool, TopologyMode

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
NodeGpus = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class PoolShape:
    """What the assignment needs of a pool besides its free GPUs."""

    gpus_per_node: int
    nodes_per_domain: int

    @classmethod
    def of(cls, pool: Pool) -> PoolShape:
        return cls(pool.gpus_per_node, pool.nodes_per_domain)

    @property
    def domain_gpus(self) -> int:
        return self.gpus_per_node * self.nodes_per_domain


def node_free_gpus(shape: PoolShape, used_gpus: npt.ArrayLike, out: npt.ArrayLike) -> IntArray:
    """Free GPUs per node: an out-of-service node has none, and usage never makes it negative."""
    used = np.asarray(used_gpus, dtype=np.int64)
    free = np.maximum(shape.gpus_per_node - used, 0)
    return np.asarray(np.where(np.asarray(out, dtype=np.bool_), 0, free), dtype=np.int64)


def packed_node_free_gpus(pool: Pool, used_gpus: int, capacity_gpus: int) -> IntArray:
    """Free GPUs per node when the ledger keeps no node detail: the pool's in-service nodes are
    its first ``capacity_gpus // gpus_per_node`` (the grid file drains the last ones) and its
    used GPUs fill nodes from the first, as assign_nodes would on an empty pool. An optimistic
    view: real usage may be more scattered."""
    in_service = min(max(capacity_gpus, 0) // pool.gpus_per_node, pool.nodes)
    free = np.zeros(pool.nodes, dtype=np.int64)
    free[:in_service] = pool.gpus_per_node
    used = min(max(used_gpus, 0), in_service * pool.gpus_per_node)
    full, rest = divmod(used, pool.gpus_per_node)
    free[:full] = 0
    if rest and full < in_service:
        free[full] -= rest
    return free


def packed_domain_free_gpus(pool: Pool, used_gpus: int, capacity_gpus: int) -> IntArray:
    """domain_free_gpus of packed_node_free_gpus, computed per domain (a pool has 18x fewer)."""
    gpn, per_domain = pool.gpus_per_node, pool.nodes_per_domain
    in_service = min(max(capacity_gpus, 0) // gpn, pool.nodes)
    first = np.arange(0, pool.nodes, per_domain, dtype=np.int64)
    # (np.clip costs more than the arithmetic on arrays this small: minimum/maximum instead)
    capacity = np.maximum(np.minimum(in_service - first, per_domain), 0) * gpn
    used = np.minimum(np.maximum(min(max(used_gpus, 0), in_service * gpn) - first * gpn, 0), capacity)
    return np.asarray(capacity - used, dtype=np.int64)


def domain_free_gpus(shape: PoolShape, node_free: IntArray) -> IntArray:
    """Free GPUs per domain (the last domain holds the remainder of nodes)."""
    starts = np.arange(0, len(node_free), shape.nodes_per_domain)
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    return np.asarray(np.add.reduceat(node_free, starts), dtype=np.int64)


def whole_free_domains(shape: PoolShape, domain_free: IntArray) -> BoolArray:
    """Domains every GPU of which is free and in service (a short last domain never is)."""
    return np.asarray(domain_free == shape.domain_gpus)


def largest_free_domain(shape: PoolShape, node_free: IntArray) -> int:
    """The most free GPUs in any one domain."""
    return int(domain_free_gpus(shape, node_free).max(initial=0))


def fragmented_gpus(shape: PoolShape, node_free: IntArray, node_used: IntArray) -> int:
    """Free GPUs in partly used domains (some GPU reserved, some free): what whole-domain jobs cannot use."""
    free = domain_free_gpus(shape, node_free)
    used = domain_free_gpus(shape, np.asarray(node_used, dtype=np.int64))
    return int(free[(used > 0) & (free > 0)].sum())


def unit_gpus(shape: PoolShape, topology: GpuTopology) -> int:
    """The step a request in this pool comes in: one domain, one slice, or one GPU."""
    if topology.mode is TopologyMode.WHOLE_DOMAINS:
        return shape.domain_gpus
    if topology.mode is TopologyMode.SLICES:
        return topology.slice_gpus
    return 1


def usable_gpus(
    shape: PoolShape, node_free: IntArray, topology: GpuTopology, domain_free: IntArray | None = None
) -> int:
    """GPUs a request of this topology can use in the pool: whole free domains x domain size,
    or the sum over domains of floor(free / N) x N, or every free GPU. ``domain_free``:
    domain_free_gpus of ``node_free``, when the caller has it already."""
    free = domain_free_gpus(shape, node_free) if domain_free is None else domain_free
    if topology.mode is TopologyMode.NONE:
        return int(free.sum())
    if topology.mode is TopologyMode.WHOLE_DOMAINS:
        return int(whole_free_domains(shape, free).sum()) * shape.domain_gpus
    n = topology.slice_gpus
    return int((free // n).sum()) * n


def feasible(shape: PoolShape, node_free: IntArray, gpus: int, topology: GpuTopology) -> bool:
    """Whether ``gpus`` GPUs of this topology fit the pool now (assign_nodes succeeds iff so)."""
    if gpus <= 0 or gpus % unit_gpus(shape, topology):
        return False
    return usable_gpus(shape, node_free, topology) >= gpus


def breaks_whole_domain(shape: PoolShape, domain_free: IntArray, gpus: int, topology: GpuTopology) -> bool:
    """Whether assign_nodes would leave a whole free domain partly used (the fragmentation cost).

    Unconstrained GPUs and slices use broken domains first; only what they cannot hold opens
    whole domains, and it breaks one unless it fills the domains it opens exactly."""
    if topology.mode is TopologyMode.WHOLE_DOMAINS:
        return False
    broken = domain_free[~whole_free_domains(shape, domain_free)]
    if topology.mode is TopologyMode.NONE:
        rest = gpus - int(broken.sum())
        return rest > 0 and rest % shape.domain_gpus != 0
    n = topology.slice_gpus
    rest = gpus // n - int((broken // n).sum())
    per_domain = shape.domain_gpus // n
    if rest <= 0 or per_domain == 0:
        return False
    opened = -(-rest // per_domain)
    return opened * shape.domain_gpus > rest * n


def assign_nodes(
    shape: PoolShape, node_free: IntArray, gpus: int, topology: GpuTopology, domain_free: IntArray | None = None
) -> NodeGpus | None:
    """The nodes ``gpus`` GPUs take, as sorted (node, GPUs) pairs, or None when they do not fit.

    Deterministic. Whole-domain requests take completely free domains, lowest index first.
    Slices go to the domain with the least free GPUs that still holds one (best fit), as many
    as it holds, then the next. Unconstrained GPUs go to the one domain that is not whole
    free and holds them all with least to spare, else fill such domains tightest first, and
    only then open whole free domains (lowest index first). Inside a domain, nodes are filled
    tightest first too, keeping whole free nodes whole. ``domain_free``: domain_free_gpus of
    ``node_free``, when the caller has it already (it is not changed).
    """
    if domain_free is None:
        domain_free = domain_free_gpus(shape, node_free)
    if gpus <= 0 or gpus % unit_gpus(shape, topology) or usable_gpus(shape, node_free, topology, domain_free) < gpus:
        return None
    free = np.asarray(node_free, dtype=np.int64).copy()
    taken = np.zeros(len(free), dtype=np.int64)
    domain_free = domain_free.copy()
    whole = whole_free_domains(shape, domain_free)
    if topology.mode is TopologyMode.WHOLE_DOMAINS:
        for d in np.flatnonzero(whole)[: gpus // shape.domain_gpus]:
            _fill_domain(shape, free, taken, int(d), shape.domain_gpus)
    elif topology.mode is TopologyMode.SLICES:
        n = topology.slice_gpus
        slices = gpus // n
        while slices:
            holds = domain_free // n
            d = int(np.argmin(np.where(holds > 0, domain_free, np.iinfo(np.int64).max)))
            k = min(slices, int(holds[d]))
            _fill_domain(shape, free, taken, d, k * n)
            domain_free[d] -= k * n
            slices -= k
    else:
        _assign_unconstrained(shape, free, taken, domain_free, whole, gpus)
    nodes = np.flatnonzero(taken)
    return tuple(zip(nodes.tolist(), taken[nodes].tolist(), strict=True))


def assign_replica_nodes(
    shape: PoolShape, node_free: IntArray, replicas: int, replica_gpus: int, domain_free: IntArray | None = None
) -> NodeGpus | None:
    """The nodes ``replicas`` inference replicas of ``replica_gpus`` GPUs take with each replica on one
    node, as sorted (node, GPUs) pairs, or None when they do not fit so (a replica bigger than a
    node never does). A failed node then takes exactly the replicas on it, its GPUs over
    ``replica_gpus`` (scheduler/replicas.py), not every replica of the pool. Domains in the order
    unconstrained GPUs use them (one broken domain that holds them all with least to spare, else
    broken domains tightest first, then whole free domains), tightest nodes first inside each.
    """
    if replicas <= 0 or replica_gpus <= 0 or replica_gpus > shape.gpus_per_node:
        return None
    if len(node_free) <= _SMALL_POOL_NODES:
        return _assign_replica_nodes_small(shape, np.asarray(node_free).tolist(), replicas, replica_gpus)
    return _assign_replica_nodes_arrays(shape, node_free, replicas, replica_gpus, domain_free)


def _assign_replica_nodes_arrays(
    shape: PoolShape, node_free: IntArray, replicas: int, replica_gpus: int, domain_free: IntArray | None = None
) -> NodeGpus | None:
    """assign_replica_nodes with NumPy, for pools of many nodes."""
    free = np.asarray(node_free, dtype=np.int64)
    holds = free // replica_gpus  # replicas each node can take whole
    if int(holds.sum()) < replicas:
        return None
    if domain_free is None:
        domain_free = domain_free_gpus(shape, free)
    per_domain = shape.nodes_per_domain
    domain_holds = np.add.reduceat(holds, np.arange(0, len(free), per_domain))
    whole = whole_free_domains(shape, domain_free)
    broken = np.flatnonzero(~whole & (domain_holds > 0))
    holding = broken[domain_holds[broken] >= replicas]
    if len(holding):
        order = [int(holding[np.argmin(domain_free[holding])])]
    else:
        order = [*broken[np.argsort(domain_free[broken], kind="stable")].tolist(),
                 *np.flatnonzero(whole & (domain_holds > 0)).tolist()]
    taken = np.zeros(len(free), dtype=np.int64)
    remaining = replicas
    for d in order:
        start = d * per_domain
        local, local_holds = free[start : start + per_domain], holds[start : start + per_domain]
        for i in np.argsort(np.where(local_holds > 0, local, shape.gpus_per_node + 1), kind="stable"):
            if remaining == 0 or local_holds[i] == 0:
                break
            k = min(remaining, int(local_holds[i]))
            taken[start + i] = k * replica_gpus
            remaining -= k
        if remaining == 0:
            break
    return tuple((int(i), int(taken[i])) for i in np.flatnonzero(taken))


# Pools of at most this many nodes (most pools of a synthetic 500-site grid have 4-16) are
# assigned in plain Python: a dozen NumPy calls on arrays this short cost more than the work.
_SMALL_POOL_NODES = 64


def _assign_replica_nodes_small(shape: PoolShape, free: list[int], replicas: int, replica_gpus: int) -> NodeGpus | None:
    """assign_replica_nodes on a short pool, over lists: the same nodes in the same order (its
    stable argsorts are Python's stable sorts here, its argmins ``min``'s first least item);
    tests/test_engine_fast_paths.py holds the two to it."""
    holds = [f // replica_gpus for f in free]
    if sum(holds) < replicas:
        return None
    per_domain, gpn = shape.nodes_per_domain, shape.gpus_per_node
    starts = range(0, len(free), per_domain)
    domain_free = [sum(free[d : d + per_domain]) for d in starts]
    domain_holds = [sum(holds[d : d + per_domain]) for d in starts]
    whole = [f == shape.domain_gpus for f in domain_free]
    broken = [d for d in range(len(domain_free)) if not whole[d] and domain_holds[d] > 0]
    holding = [d for d in broken if domain_holds[d] >= replicas]
    if holding:
        order = [min(holding, key=domain_free.__getitem__)]
    else:
        order = sorted(broken, key=domain_free.__getitem__)
        order += [d for d in range(len(domain_free)) if whole[d] and domain_holds[d] > 0]
    taken: dict[int, int] = {}
    remaining = replicas
    for d in order:
        start = d * per_domain
        nodes = range(start, min(start + per_domain, len(free)))
        for i in sorted(nodes, key=lambda i: free[i] if holds[i] > 0 else gpn + 1):
            if remaining == 0 or holds[i] == 0:
                break
            k = min(remaining, holds[i])
            taken[i] = k * replica_gpus
            remaining -= k
        if remaining == 0:
            break
    return tuple(sorted(taken.items()))


def assign_job_nodes(
    shape: PoolShape, node_free: IntArray, gpus: int, topology: GpuTopology, replica_gpus: int | None,
    domain_free: IntArray | None = None,
) -> NodeGpus | None:
    """assign_nodes, except that an inference deployment with no topology request (``replica_gpus``
    GPUs per replica) puts each replica on one node when its replicas fit so. When they do not
    (free GPUs scattered in smaller pieces than a replica) the GPUs go where assign_nodes puts them
    and a replica may straddle nodes: a failed node then costs every replica touching it."""
    if replica_gpus and topology.mode is TopologyMode.NONE and gpus % replica_gpus == 0:
        aligned = assign_replica_nodes(shape, node_free, gpus // replica_gpus, replica_gpus, domain_free)
        if aligned is not None:
            return aligned
    return assign_nodes(shape, node_free, gpus, topology, domain_free)


def _assign_unconstrained(
    shape: PoolShape, free: IntArray, taken: IntArray, domain_free: IntArray, whole: BoolArray, gpus: int
) -> None:
    broken = np.flatnonzero(~whole & (domain_free > 0))
    holding = broken[domain_free[broken] >= gpus]
    if len(holding):  # best fit: one broken domain with least to spare
        d = int(holding[np.argmin(domain_free[holding])])
        _fill_domain(shape, free, taken, d, gpus)
        return
    remaining = gpus
    for d in broken[np.argsort(domain_free[broken], kind="stable")].tolist():
        take = min(remaining, int(domain_free[d]))
        _fill_domain(shape, free, taken, d, take)
        remaining -= take
        if remaining == 0:
            return
    # Then whole free domains, lowest index first: every one but the last is taken whole, all in
    # one pass (a gang of 1,000 nodes opens ~50 of them; one _fill_domain each was most of its
    # placement), and the last takes the rest as _fill_domain does, tightest (first) nodes first.
    opened = np.flatnonzero(whole)
    full, rest = divmod(remaining, shape.domain_gpus)
    if full:
        per_domain = shape.nodes_per_domain
        nodes = (opened[:full, None] * per_domain + np.arange(per_domain)).ravel()
        free[nodes] = 0
        taken[nodes] += shape.gpus_per_node
    if rest:
        _fill_domain(shape, free, taken, int(opened[full]), rest)


def _fill_domain(shape: PoolShape, free: IntArray, taken: IntArray, d: int, gpus: int) -> None:
    """Take ``gpus`` GPUs from domain ``d``'s nodes, tightest node first (ties: lowest index)."""
    start = d * shape.nodes_per_domain
    stop = min(start + shape.nodes_per_domain, len(free))
    local = free[start:stop]
    gpn = shape.gpus_per_node
    if stop - start == shape.nodes_per_domain and gpus <= len(local) * gpn and (local == gpn).all():
        # A whole free domain (what big gangs open, one after another): every node ties, so the
        # order below is the nodes' own; filled by slices, not one argsort per domain.
        full, rest = divmod(gpus, gpn)
        free[start : start + full] = 0
        taken[start : start + full] += gpn
        if rest:
            free[start + full] -= rest
            taken[start + full] += rest
        return
    remaining = gpus
    for i in np.argsort(np.where(local > 0, local, shape.gpus_per_node + 1), kind="stable"):
        if remaining == 0 or local[i] == 0:
            break
        take = min(remaining, int(local[i]))
        free[start + i] -= take
        taken[start + i] += take
        remaining -= take
    assert remaining == 0, "domain free count and node free counts disagree"


# Pools per chunk of the per-pool containers below: a commit that touches one pool copies one
# chunk's references, not one per pool of the grid (2,000 at 500 sites).
_CHUNK = 64

# Moved nodes of a pool past which NodeView.updated recomputes the pool in NumPy rather than
# bringing it forward node by node in Python (a replica moves one or two, a factory gang ~1,000).
FEW_NODES = 32


class PoolArrays(Sequence[npt.NDArray[Any]]):
    """One array per pool, read by index or in order, held in chunks of _CHUNK pools; immutable.

    ``replaced`` shares every chunk but those of the pools it changes. Copying a tuple of 2,000
    arrays per commit touched 2,000 reference counts scattered over the heap; with the caches
    cold that cost ~0.1 ms of each submission at 500 sites. The ledger's per-node arrays
    (state.store.LedgerSnapshot) are held so too: a commit replaces the arrays of the pools it
    touched, and readers keep the PoolArrays they read, unchanged."""

    __slots__ = ("_chunks", "_len")

    def __init__(self, arrays: Iterable[npt.NDArray[Any]]) -> None:
        items = list(arrays)
        self._chunks = tuple(tuple(items[i : i + _CHUNK]) for i in range(0, len(items), _CHUNK))
        self._len = len(items)

    @classmethod
    def of(cls, arrays: Sequence[npt.NDArray[Any]]) -> PoolArrays:
        """``arrays`` as PoolArrays (itself when it is one already: nothing copied)."""
        return arrays if isinstance(arrays, PoolArrays) else cls(arrays)

    @overload
    def __getitem__(self, p: int) -> npt.NDArray[Any]: ...

    @overload
    def __getitem__(self, p: slice) -> list[npt.NDArray[Any]]: ...

    def __getitem__(self, p: int | slice) -> npt.NDArray[Any] | list[npt.NDArray[Any]]:
        if isinstance(p, slice):
            return list(self)[p]
        if p < 0:
            p += self._len
        if not 0 <= p < self._len:
            raise IndexError(p)
        return self._chunks[p // _CHUNK][p % _CHUNK]

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[npt.NDArray[Any]]:
        return chain.from_iterable(self._chunks)

    def __repr__(self) -> str:
        return f"PoolArrays({self._len} pools)"

    def replaced(self, new: Mapping[int, npt.NDArray[Any]]) -> PoolArrays:
        chunks = list(self._chunks)
        for c in {p // _CHUNK for p in new}:
            chunk = list(chunks[c])
            for p, array in new.items():
                if p // _CHUNK == c:
                    chunk[p % _CHUNK] = array
            chunks[c] = tuple(chunk)
        out = PoolArrays(())
        out._chunks, out._len = tuple(chunks), self._len
        return out


class _PoolCache:
    """A value per pool computed on first use, in chunks of _CHUNK pools. Views share the chunks
    of pools whose node arrays they share, so what one computes the other reads (the same value:
    it is a function of those arrays)."""

    __slots__ = ("_chunks",)

    def __init__(self, pools: int) -> None:
        self._chunks = [[None] * _CHUNK for _ in range(-(-pools // _CHUNK))]  # type: list[list[IntArray | None]]

    def get(self, p: int) -> IntArray | None:
        return self._chunks[p // _CHUNK][p % _CHUNK]

    def set(self, p: int, value: IntArray) -> None:
        self._chunks[p // _CHUNK][p % _CHUNK] = value

    def replaced(self, new: Mapping[int, IntArray]) -> _PoolCache:
        out = _PoolCache(0)
        out._chunks = list(self._chunks)
        for p, value in new.items():
            c = p // _CHUNK
            if out._chunks[c] is self._chunks[c]:
                out._chunks[c] = list(self._chunks[c])
            out._chunks[c][p % _CHUNK] = value
        return out


@dataclass(frozen=True)
class NodeView:
    """Every pool's free GPUs per node, with per-domain figures computed once per ledger read."""

    shapes: tuple[PoolShape, ...]
    node_free: PoolArrays
    node_used: PoolArrays
    pool_free_gpus: IntArray  # free GPUs per pool, summed over its nodes
    # Free GPUs outside whole free domains, per pool: what an unconstrained job can take
    # breaking no whole domain.
    pool_broken_free_gpus: IntArray

    @classmethod
    def build(
        cls,
        shapes: tuple[PoolShape, ...],
        node_used_gpus: Sequence[npt.ArrayLike],
        node_out: Sequence[npt.ArrayLike],
    ) -> NodeView:
        """The view of a snapshot's node arrays. Every pool at once, on the nodes of all pools laid
        end to end: it is built once per ledger version, before the first decision on it."""
        used = np.concatenate(node_used_gpus).astype(np.int64)
        out = np.concatenate(node_out).astype(np.bool_)
        nodes = np.array([np.shape(u)[0] for u in node_used_gpus], dtype=np.int64)
        free = np.repeat(np.array([s.gpus_per_node for s in shapes], dtype=np.int64), nodes)
        free -= used
        np.maximum(free, 0, out=free)
        free[out] = 0
        node_start = np.concatenate([[0], np.cumsum(nodes)])
        domain_start = np.concatenate([
            np.arange(node_start[p], node_start[p + 1], s.nodes_per_domain) for p, s in enumerate(shapes)
        ]).astype(np.int64)
        domains = np.array([-(-int(n) // s.nodes_per_domain) for n, s in zip(nodes, shapes, strict=True)])
        domain_free = np.add.reduceat(free, domain_start) if len(domain_start) else np.zeros(0, dtype=np.int64)
        domain_gpus = np.array([s.domain_gpus for s in shapes], dtype=np.int64)
        whole = domain_free == np.repeat(domain_gpus, domains)
        domain_pool = np.repeat(np.arange(len(shapes)), domains)
        broken = np.bincount(domain_pool, weights=np.where(whole, 0, domain_free), minlength=len(shapes))
        pool_free = np.add.reduceat(free, node_start[:-1])
        # Slices, not np.split: its per-part overhead is most of the cost for 51 pools.
        bounds = list(zip(node_start[:-1].tolist(), node_start[1:].tolist(), strict=True))
        view = cls(
            shapes,
            PoolArrays(free[a:b] for a, b in bounds),
            PoolArrays(used[a:b] for a, b in bounds),
            np.asarray(pool_free, dtype=np.int64),
            np.asarray(broken, dtype=np.int64),
        )
        domain_end = np.cumsum(domains).tolist()
        for p, b in enumerate(domain_end):
            view._domain_free.set(p, domain_free[b - int(domains[p]) : b])
        view.__dict__["pool_domain_gpus"] = domain_gpus
        return view

    # Free GPUs per domain, per pool, computed when a pool is first asked about (None: a cache
    # for every pool of ``shapes``, made at construction).
    _domain_free: _PoolCache = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self._domain_free is None:
            object.__setattr__(self, "_domain_free", _PoolCache(len(self.shapes)))

    def updated(
        self, node_used_gpus: Sequence[npt.ArrayLike], node_out: Sequence[npt.ArrayLike], pools: list[int],
        nodes: Mapping[int, Sequence[int] | None] | None = None,
    ) -> NodeView:
        """What ``build`` gives for node arrays that differ from this view's only in ``pools``: those
        pools recomputed, the others shared. A replica following its own commit changes one or two
        pools; rebuilding every pool (72,754 nodes on nscale) was a third of a submission's time.
        ``nodes``: the only nodes of each pool whose usage moved, when the caller knows them (a
        commit names them; None for a pool: many): a pool with few is brought forward at those
        nodes alone."""
        free: dict[int, IntArray] = {}
        used: dict[int, IntArray] = {}
        domains: dict[int, IntArray] = {}
        pool_free, broken = self.pool_free_gpus.copy(), self.pool_broken_free_gpus.copy()
        for p in pools:
            shape = self.shapes[p]
            moved = nodes.get(p) if nodes is not None else None
            if moved is not None and len(moved) < FEW_NODES:
                before = self.domain_free(p)  # this view's, computed now if no decision asked yet
                u = np.asarray(node_used_gpus[p], dtype=np.int64)
                f, d = self.node_free[p].copy(), before.copy()
                out = np.asarray(node_out[p], dtype=np.bool_)
                gpn, per_domain, whole = shape.gpus_per_node, shape.nodes_per_domain, shape.domain_gpus
                for n in moved:
                    new = 0 if out[n] else max(gpn - int(u[n]), 0)
                    change = new - int(f[n])
                    if change:
                        k = n // per_domain
                        old_d, new_d = int(d[k]), int(d[k]) + change
                        f[n], d[k] = new, new_d
                        pool_free[p] += change
                        # Free GPUs outside whole free domains: each domain counts unless it is whole.
                        broken[p] += (0 if new_d == whole else new_d) - (0 if old_d == whole else old_d)
                free[p], used[p], domains[p] = f, u, d
                continue
            u = np.asarray(node_used_gpus[p], dtype=np.int64)
            f = np.maximum(shape.gpus_per_node - u, 0)
            f[np.asarray(node_out[p], dtype=np.bool_)] = 0
            d = domain_free_gpus(shape, f)
            free[p], used[p], domains[p] = f, u, d
            pool_free[p] = int(f.sum())
            broken[p] = int(d[d != shape.domain_gpus].sum())
        # Only the chunks holding ``pools`` are copied (PoolArrays): the rest are this view's.
        view = NodeView(self.shapes, self.node_free.replaced(free), self.node_used.replaced(used), pool_free, broken,
                        self._domain_free.replaced(domains))
        if "pool_domain_gpus" in self.__dict__:  # depends on the shapes alone: carried, not rebuilt
            view.__dict__["pool_domain_gpus"] = self.__dict__["pool_domain_gpus"]
        return view

    @classmethod
    def packed(
        cls,
        pools: tuple[Pool, ...],
        shapes: tuple[PoolShape, ...],
        used_gpus: IntArray,
        capacity_gpus: IntArray,
        only: BoolArray,
    ) -> NodeView:
        """The view of pool-level usage with no node detail (as packed_node_free_gpus lays it out),
        at domain level only, for the pools in ``only`` (the rest have no domains in it). It
        answers feasibility and explanations; it has no nodes to assign."""
        none = np.zeros(0, dtype=np.int64)
        zeros = np.zeros(len(pools), dtype=np.int64)  # (read only with node detail)
        view = cls(shapes, PoolArrays(none for _ in pools), PoolArrays(none for _ in pools), zeros, zeros)
        for p in np.flatnonzero(only).tolist():
            view._domain_free.set(p, packed_domain_free_gpus(pools[p], int(used_gpus[p]), int(capacity_gpus[p])))
        return view

    def domain_free(self, p: int) -> IntArray:
        """Free GPUs per domain of pool ``p``."""
        free = self._domain_free.get(p)
        if free is None:
            free = domain_free_gpus(self.shapes[p], self.node_free[p])
            self._domain_free.set(p, free)
        return free

    @cached_property
    def pool_domain_gpus(self) -> IntArray:
        return np.array([s.domain_gpus for s in self.shapes], dtype=np.int64)

    @cached_property
    def pool_fragmented_gpus(self) -> IntArray:
        """Free GPUs in partly used domains, per pool (the fragmentation metric)."""
        return np.array(
            [fragmented_gpus(s, f, u) for s, f, u in zip(self.shapes, self.node_free, self.node_used, strict=True)],
            dtype=np.int64,
        )

    def pool_usable_gpus(self, topology: GpuTopology, pools: IntArray) -> IntArray:
        """usable_gpus for each pool in ``pools`` (0 elsewhere)."""
        out = np.zeros(len(self.shapes), dtype=np.int64)
        for p in pools:
            out[p] = usable_gpus(self.shapes[p], self.node_free[p], topology, self.domain_free(p))
        return out

    def pool_breaks_whole_domain(self, topology: GpuTopology, gpus: int, pools: IntArray) -> BoolArray:
        """breaks_whole_domain for each pool in ``pools`` (False elsewhere)."""
        out = np.zeros(len(self.shapes), dtype=np.bool_)
        if topology.mode is TopologyMode.NONE:  # vectorised: the common case, on every decision
            rest = gpus - self.pool_broken_free_gpus
            out[pools] = ((rest > 0) & (rest % self.pool_domain_gpus != 0))[pools]
            return out
        for p in pools:
            out[p] = breaks_whole_domain(self.shapes[p], self.domain_free(p), gpus, topology)
        return out

    def largest_free_domain(self, p: int) -> int:
        return int(self.domain_free(p).max(initial=0))
