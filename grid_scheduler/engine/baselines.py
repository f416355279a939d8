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
from grid_scheduler.model import JobKind, JobSpec, Placement, Policy

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


def decide_by_rule(index: GridIndex, usage: Usage, spec: JobSpec, policy: Policy, rule: Rule) -> Decision:
    """The rule's choice among the pools every hard constraint allows, as an engine ``Decision``."""
    spec = as_gang(spec)
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
        placement = None if p is None else build_placement(index, spec, policy, costs, [(p, checks.need_gpus)])
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
    return Decision(spec, checks, costs, build_placement(index, spec, policy, costs, slots))


def rule_decider(rule: Rule) -> Callable[[GridIndex, Usage, JobSpec, Policy], Decision]:
    """A ``Scheduler`` decider that places by ``rule`` (see scheduler/core.py ``Decider``)."""

    def decider(index: GridIndex, usage: Usage, spec: JobSpec, policy: Policy) -> Decision:
        return decide_by_rule(index, usage, spec, policy, rule)

    return decider


__all__ = ["BASELINES", "PoolState", "Rule", "as_gang", "decide_by_rule", "fgd", "fragmentation_gpus",
           "place_one", "rule_decider"]
