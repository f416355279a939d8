"""What an operator would otherwise run: first-fit, best-fit, Kubernetes-style spread and pack,
and a fragmentation-aware rule in the spirit of FGD.

Each rule scores the candidate pools of ONE job among those that pass the engine's own hard
constraints (``compute_checks``: residency, GPU type, workload, health, latency SLO, free
GPUs, site power in the ledger's whole watts), so a baseline differs from the engine only in
which feasible pool it picks. Training jobs are gangs in one pool (a split job is placed as
a gang, as the batch optimiser models it). Rules, per pool ``p`` in site ``s``:

- first-fit: the first feasible pool in grid order;
- best-fit: the pool left with the fewest free GPUs after placing (tightest fit);
- LeastAllocated (spread, Kubernetes' default scoring): the highest mean, over GPUs and
  site power, of ``(capacity - requested - used) / capacity``;
- MostAllocated (pack, the bin-packing strategy): the highest mean of ``(used + requested) / capacity``;
- FGD-like (Weng et al., "Beware of Fragmentation", USENIX ATC '23): the pool whose
  fragmentation grows least. Simplified to whole GPUs: a pool's fragmentation with ``f`` free
  GPUs is ``f x P(size > f)``, the expected free GPUs a job drawn from the workload's size
  distribution could not use there (the paper also counts partial-GPU shares and per-node
  CPU; GPUs here are whole and pools are the unit). Ties go to the tighter fit.

An inference deployment is placed replica by replica: first, for each demand endpoint not
yet served, a replica at a pool within its SLO chosen by the rule; then the remaining
replicas on any eligible pool, by the rule. If any replica cannot be placed, or an endpoint
stays unserved, nothing is placed (all-or-nothing, like a gang). Remaining ties go to the
pool listed first, so every baseline is deterministic. A multi-entry placement preference is
not followed (its fence is, when it has one entry): the trace workloads give none.

Nodes (issue 13, with topology inside pools): each rule also chooses the NODES its GPUs take, as
Kubernetes' scorers rate nodes, so ``Assignment.nodes`` is filled and the ledger re-checks it.
A job's topology mode is a hard constraint under every rule (whole-domain jobs take whole free
domains, each slice stays inside one domain); within it:

- LeastAllocated (domain-unaware): the nodes with the most free GPUs first; a slice goes to
  the domain with the most free GPUs that holds it;
- MostAllocated (domain-unaware): the partly used nodes with the fewest free GPUs first; a
  slice goes to the domain with the fewest free GPUs that holds it;
- FGD-like (domain-aware): domain by domain, the choice whose fragmentation grows least, where
  a domain with ``f`` free GPUs loses, per waiting shape drawn from the workload, the GPUs that
  shape cannot use there (all ``f`` for a whole-domain job unless the domain is whole, ``f mod N``
  for slices of ``N``); ties to the tighter domain.

Kubernetes breaks equal node scores at random (``selectHost``): ties among nodes and whole free
domains go by a pseudo-random order drawn from the decider's own seeded generator, so a run
is still reproducible. Without node detail in the ledger, assignments carry no nodes.

``rule_decider`` turns a rule into a ``Scheduler`` decider (scheduler/core.py ``Decider``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grid_scheduler.engine.feasibility import compute_checks, latency_coverage
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.engine.online import Decision, build_placement
from grid_scheduler.engine.scoring import pool_costs
from grid_scheduler.engine.topology import (
    NodeGpus,
    NodeView,
    PoolShape,
    assign_nodes,
    domain_free_gpus,
    whole_free_domains,
)
from grid_scheduler.model import GpuTopology, JobKind, JobSpec, Placement, Policy, TopologyMode

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class PoolState:
    """What a rule sees: per pool free GPUs and capacity, per pool's site headroom and envelope."""

    free: IntArray
    capacity: IntArray
    headroom_kw: FloatArray  # of the pool's site
    envelope_kw: FloatArray  # of the pool's site
    need_gpus: int
    need_kw: FloatArray  # per pool


# A rule scores candidate pools; the highest score wins (ties: first in grid order).
Rule = Callable[[PoolState, IntArray], FloatArray]


def first_fit(state: PoolState, pools: IntArray) -> FloatArray:
    return np.zeros(len(pools), dtype=np.float64)


def best_fit(state: PoolState, pools: IntArray) -> FloatArray:
    return np.asarray(-(state.free[pools] - state.need_gpus), dtype=np.float64)


def _free_shares(state: PoolState, pools: IntArray) -> FloatArray:
    gpu = (state.free[pools] - state.need_gpus) / np.maximum(state.capacity[pools], 1)
    power = (state.headroom_kw[pools] - state.need_kw[pools]) / np.maximum(state.envelope_kw[pools], 1e-9)
    return np.asarray((gpu + power) / 2.0, dtype=np.float64)


def least_allocated(state: PoolState, pools: IntArray) -> FloatArray:
    return _free_shares(state, pools)


def most_allocated(state: PoolState, pools: IntArray) -> FloatArray:
    return np.asarray(1.0 - _free_shares(state, pools), dtype=np.float64)


def fragmentation_gpus(free: IntArray, sizes: IntArray, share: FloatArray) -> FloatArray:
    """Per pool, ``free x P(size > free)``: free GPUs that a job drawn from ``(sizes, share)`` could not use."""
    too_big = (sizes[None, :] > free[:, None]) @ share
    return np.asarray(free * too_big, dtype=np.float64)


def fgd(size_counts: Mapping[int, float]) -> Rule:
    """The FGD-like rule for a workload whose per-pool slot sizes (GPUs) occur ``size_counts`` times."""
    if not size_counts or any(n < 0 for n in size_counts.values()) or sum(size_counts.values()) <= 0:
        raise ValueError("fgd needs a size distribution with positive total weight")
    sizes = np.array(sorted(size_counts), dtype=np.int64)
    share = np.array([size_counts[int(s)] for s in sizes], dtype=np.float64)
    share /= share.sum()

    def rule(state: PoolState, pools: IntArray) -> FloatArray:
        before = state.free[pools]
        after = before - state.need_gpus
        growth = fragmentation_gpus(after, sizes, share) - fragmentation_gpus(before, sizes, share)
        # The tie-break (tighter fit) is scaled below any whole-GPU difference in growth.
        tighter = after / (np.max(before) + 1.0) * 1e-3
        return np.asarray(-growth - tighter, dtype=np.float64)

    return rule


# A node rule: the nodes ``gpus`` GPUs of ``topology`` take in one pool with ``node_free`` free
# GPUs per node, as sorted (node, GPUs) pairs, or None when they do not fit. ``rank``: a random
# rank per node (a permutation), which breaks ties as Kubernetes' random host choice does.
NodeRule = Callable[[PoolShape, IntArray, int, GpuTopology, IntArray], NodeGpus | None]


def engine_nodes(shape: PoolShape, node_free: IntArray, gpus: int, topology: GpuTopology,
                 rank: IntArray) -> NodeGpus | None:
    """The engine's own assignment (engine/topology.py), for rules that say nothing of nodes."""
    return assign_nodes(shape, node_free, gpus, topology)


def _pairs(taken: IntArray) -> NodeGpus:
    return tuple((int(i), int(taken[i])) for i in np.flatnonzero(taken))


def _fill(free: IntArray, taken: IntArray, nodes: IntArray, gpus: int) -> int:
    """Take up to ``gpus`` GPUs from ``nodes`` in that order; what is left to take."""
    for i in nodes:
        if gpus == 0:
            break
        k = min(gpus, int(free[i]))
        free[i] -= k
        taken[i] += k
        gpus -= k
    return gpus


def _domain(shape: PoolShape, d: int, nodes: int) -> IntArray:
    return np.arange(d * shape.nodes_per_domain, min((d + 1) * shape.nodes_per_domain, nodes), dtype=np.int64)


def _spread_order(free: IntArray, nodes: IntArray, rank: IntArray) -> IntArray:
    """Least allocated first: most free GPUs, ties at random."""
    nodes = nodes[free[nodes] > 0]
    return nodes[np.lexsort((rank[nodes], -free[nodes]))]


def _pack_order(free: IntArray, nodes: IntArray, rank: IntArray) -> IntArray:
    """Most allocated first: fewest free GPUs (but some), ties at random."""
    nodes = nodes[free[nodes] > 0]
    return nodes[np.lexsort((rank[nodes], free[nodes]))]


NodeOrder = Callable[[IntArray, IntArray, IntArray], IntArray]


def _usable(shape: PoolShape, domain_free: IntArray, gpus: int, topology: GpuTopology) -> bool:
    if gpus <= 0:
        return False
    if topology.mode is TopologyMode.WHOLE_DOMAINS:
        whole = int(whole_free_domains(shape, domain_free).sum())
        return gpus % shape.domain_gpus == 0 and whole * shape.domain_gpus >= gpus
    if topology.mode is TopologyMode.SLICES:
        n = topology.slice_gpus
        return gpus % n == 0 and int((domain_free // n).sum()) * n >= gpus
    return int(domain_free.sum()) >= gpus


def _whole_domains(shape: PoolShape, free: IntArray, taken: IntArray, domain_free: IntArray, gpus: int,
                   rank: IntArray) -> None:
    """Whole free domains, in random order (all score alike node by node)."""
    whole = np.flatnonzero(whole_free_domains(shape, domain_free))
    first_rank = rank[whole * shape.nodes_per_domain]
    for d in whole[np.argsort(first_rank, kind="stable")][: gpus // shape.domain_gpus]:
        nodes = _domain(shape, int(d), len(free))
        _fill(free, taken, nodes, shape.domain_gpus)


def _kubernetes_nodes(order: NodeOrder, spread: bool) -> NodeRule:
    """A domain-unaware Kubernetes scorer: nodes in ``order``; a slice in the domain with the
    most (spread) or fewest (pack) free GPUs that holds it, ties at random."""

    def rule(shape: PoolShape, node_free: IntArray, gpus: int, topology: GpuTopology,
             rank: IntArray) -> NodeGpus | None:
        free = np.asarray(node_free, dtype=np.int64).copy()
        domain_free = domain_free_gpus(shape, free)
        if not _usable(shape, domain_free, gpus, topology):
            return None
        taken = np.zeros(len(free), dtype=np.int64)
        if topology.mode is TopologyMode.WHOLE_DOMAINS:
            _whole_domains(shape, free, taken, domain_free, gpus, rank)
        elif topology.mode is TopologyMode.SLICES:
            n = topology.slice_gpus
            domain_rank = rank[np.arange(len(domain_free)) * shape.nodes_per_domain]
            for _ in range(gpus // n):
                holds = np.flatnonzero(domain_free >= n)
                key = -domain_free[holds] if spread else domain_free[holds]
                d = int(holds[np.lexsort((domain_rank[holds], key))[0]])
                _fill(free, taken, order(free, _domain(shape, d, len(free)), rank), n)
                domain_free[d] -= n
        else:
            _fill(free, taken, order(free, np.arange(len(free), dtype=np.int64), rank), gpus)
        return _pairs(taken)

    return rule


least_allocated_nodes: NodeRule = _kubernetes_nodes(_spread_order, spread=True)
most_allocated_nodes: NodeRule = _kubernetes_nodes(_pack_order, spread=False)


def fgd_nodes(shapes: Mapping[GpuTopology, float]) -> NodeRule:
    """The FGD-like node rule for a workload whose jobs ask for each topology ``shapes`` times
    (by GPU-demand, say). A domain with ``f`` free GPUs is fragmented, per shape, by what that
    shape cannot use there; each step takes the domain whose fragmentation grows least."""
    total = sum(shapes.values())
    if not shapes or total <= 0 or any(w < 0 for w in shapes.values()):
        raise ValueError("fgd_nodes needs topology shares with positive total weight")
    whole_share = sum(w for t, w in shapes.items() if t.mode is TopologyMode.WHOLE_DOMAINS) / total
    slice_shares = [(t.slice_gpus, w / total) for t, w in shapes.items() if t.mode is TopologyMode.SLICES]

    def frag(shape: PoolShape, f: IntArray) -> FloatArray:
        out = whole_share * np.where(f < shape.domain_gpus, f, 0).astype(np.float64)
        for n, share in slice_shares:
            out += share * (f % n)
        return np.asarray(out, dtype=np.float64)

    def best(shape: PoolShape, domain_free: IntArray, candidates: IntArray, take: IntArray) -> int:
        growth = frag(shape, domain_free[candidates] - take) - frag(shape, domain_free[candidates])
        # Least growth, then the tighter domain, then the lower index (lexsort: last key first).
        return int(candidates[np.lexsort((candidates, domain_free[candidates], growth))[0]])

    def rule(shape: PoolShape, node_free: IntArray, gpus: int, topology: GpuTopology,
             rank: IntArray) -> NodeGpus | None:
        free = np.asarray(node_free, dtype=np.int64).copy()
        domain_free = domain_free_gpus(shape, free)
        if not _usable(shape, domain_free, gpus, topology):
            return None
        taken = np.zeros(len(free), dtype=np.int64)
        lowest = np.arange(len(free), dtype=np.int64)  # whole domains all alike: lowest first
        if topology.mode is TopologyMode.WHOLE_DOMAINS:
            _whole_domains(shape, free, taken, domain_free, gpus, lowest)
            return _pairs(taken)
        step = topology.slice_gpus if topology.mode is TopologyMode.SLICES else 0
        remaining = gpus
        while remaining:
            candidates = np.flatnonzero(domain_free >= max(step, 1))
            take = np.full(len(candidates), step) if step else np.minimum(domain_free[candidates], remaining)
            d = best(shape, domain_free, candidates, take)
            k = step or min(int(domain_free[d]), remaining)
            _fill(free, taken, _pack_order(free, _domain(shape, d, len(free)), lowest), k)
            domain_free[d] -= k
            remaining -= k
        return _pairs(taken)

    return rule


NODE_RULES: dict[Rule, NodeRule] = {least_allocated: least_allocated_nodes, most_allocated: most_allocated_nodes}


BASELINES: dict[str, Rule] = {
    "first-fit": first_fit,
    "best-fit": best_fit,
    "least-allocated": least_allocated,
    "most-allocated": most_allocated,
}


def as_gang(spec: JobSpec) -> JobSpec:
    """The spec a baseline places: non-gang training becomes a gang (one pool)."""
    if spec.kind is JobKind.TRAINING and not spec.gang:
        return spec.model_copy(update={"gang": True})
    return spec


def place_one(index: GridIndex, usage: Usage, spec: JobSpec, policy: Policy, rule: Rule) -> Placement | None:
    return decide_by_rule(index, usage, spec, policy, rule).placement


def decide_by_rule(index: GridIndex, usage: Usage, spec: JobSpec, policy: Policy, rule: Rule,
                   node_rule: NodeRule | None = None, rng: np.random.Generator | None = None) -> Decision:
    """The rule's choice among the pools every hard constraint allows, as an engine ``Decision``;
    with node detail in the ledger, ``node_rule`` (default: the rule's own in NODE_RULES, else the
    engine's assignment) picks the nodes, breaking ties by ``rng``."""
    spec = as_gang(spec)
    nodes_by = node_rule if node_rule is not None else NODE_RULES.get(rule, engine_nodes)
    random = rng if rng is not None else np.random.default_rng(0)

    def placed(slots: list[tuple[int, int]]) -> Placement:
        placement = build_placement(index, spec, policy, costs, slots)
        return with_rule_nodes(index, checks.nodes, spec, placement, nodes_by, random)

    checks = compute_checks(index, usage, spec, policy)
    costs = pool_costs(index, checks, spec, policy)  # only to report the score terms of the placement
    site = index.pool_site
    free = checks.pool_free_gpus.copy()
    headroom_w = checks.site_headroom_w.copy()
    need_w = checks.pool_need_w
    capacity = np.maximum(index.pool_healthy_gpus, 1)
    envelope = index.site_envelope_kw[site]

    def pick(allowed: BoolArray) -> int | None:
        # Power in the ledger's whole watts, as pool_feasible does: a pick never fails its commit by rounding.
        ok = allowed & checks.pool_eligible & (free >= checks.need_gpus) & (headroom_w[site] >= need_w)
        pools = np.flatnonzero(ok)
        if pools.size == 0:
            return None
        state = PoolState(free, capacity, headroom_w[site] / 1000.0, envelope, checks.need_gpus, checks.pool_need_kw)
        scores = rule(state, pools)
        return int(pools[int(np.argmax(scores))])  # argmax keeps the first of equal scores

    def take(p: int) -> None:
        free[p] -= checks.need_gpus
        headroom_w[site[p]] -= need_w[p]

    everywhere = np.ones(len(free), dtype=np.bool_)
    if spec.inference is None:
        p = pick(everywhere)
        placement = None if p is None else placed([(p, checks.need_gpus)])
        return Decision(spec, checks, costs, placement)
    cover = latency_coverage(index, spec)  # [endpoint, site]
    served = np.zeros(len(cover), dtype=np.bool_)
    chosen: dict[int, int] = {}
    for _ in range(spec.inference.replicas):
        unserved = np.flatnonzero(~served)
        allowed = cover[unserved[0]][site] if unserved.size else everywhere
        p = pick(allowed)
        if p is None:
            break
        take(p)
        chosen[p] = chosen.get(p, 0) + 1
        served |= cover[:, site[p]]
    if sum(chosen.values()) < spec.inference.replicas or not served.all():
        uncovered = tuple(d.endpoint for d, ok in zip(spec.inference.demand, served, strict=True) if not ok)
        return Decision(spec, checks, costs, None, uncovered_endpoints=uncovered)
    slots = [(p, n * checks.need_gpus) for p, n in sorted(chosen.items())]
    return Decision(spec, checks, costs, placed(slots))


def with_rule_nodes(index: GridIndex, nodes: NodeView | None, spec: JobSpec, placement: Placement,
                    node_rule: NodeRule, rng: np.random.Generator) -> Placement:
    """``placement`` with the nodes ``node_rule`` gives each assignment (none without node detail)."""
    if nodes is None:
        return placement
    assignments = []
    for a in placement.assignments:
        p = index.pool_index[a.pool_id]
        shape, free = index.pool_shapes[p], nodes.node_free[p]
        chosen = node_rule(shape, free, a.gpus, spec.topology, rng.permutation(len(free)))
        # The checks counted these GPUs usable in this pool, so every rule finds nodes for them.
        assert chosen is not None, f"{a.pool_id}: the node rule found no nodes for {a.gpus} GPUs"
        assignments.append(a.model_copy(update={"nodes": chosen}))
    return placement.model_copy(update={"assignments": assignments})


def rule_decider(rule: Rule, node_rule: NodeRule | None = None,
                 seed: int = 0) -> Callable[[GridIndex, Usage, JobSpec, Policy], Decision]:
    """A ``Scheduler`` decider that places by ``rule`` and ``node_rule`` (see decide_by_rule and
    scheduler/core.py ``Decider``); ties among nodes from a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)

    def decider(index: GridIndex, usage: Usage, spec: JobSpec, policy: Policy) -> Decision:
        return decide_by_rule(index, usage, spec, policy, rule, node_rule, rng)

    return decider


__all__ = ["BASELINES", "NODE_RULES", "NodeRule", "PoolState", "Rule", "as_gang", "decide_by_rule", "engine_nodes",
           "fgd", "fgd_nodes", "fragmentation_gpus", "least_allocated_nodes", "most_allocated_nodes", "place_one",
           "rule_decider", "with_rule_nodes"]
