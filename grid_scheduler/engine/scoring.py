"""Soft objectives: a cost per pool, kept as separate terms so a decision can be explained.

Each term is scaled to [0, 1] before the policy's weight multiplies it, so weights
compare like with like: carbon and price relative to the grid's worst site, latency
relative to the SLO, packing as the share of the pool left idle, data movement as
t / (t + 1) of the transfer time in hours. The packing term also carries fragmentation
(weight ``fragmentation``): 1 where the job would leave a whole free interconnect domain
partly used, known only when the ledger keeps node detail (engine/topology.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from grid_scheduler.engine.feasibility import Checks, demand_rows
from grid_scheduler.engine.index import FloatArray, GridIndex
from grid_scheduler.model import JobSpec, Policy, ScoreTerms


@dataclass(frozen=True)
class PoolCosts:
    """Weighted cost terms per pool; lower is better."""

    latency: FloatArray
    carbon: FloatArray
    energy_price: FloatArray
    packing: FloatArray
    data_movement: FloatArray

    @cached_property
    def total(self) -> FloatArray:
        return np.asarray(self.latency + self.carbon + self.energy_price + self.packing + self.data_movement)

    def terms_at(self, pools: list[int], gpus: list[int], latency: float | None = None) -> ScoreTerms:
        """GPU-weighted mean of each term over the pools of a placement; ``latency``: the
        placement's own latency term instead (a deployment's, from its nearest replicas)."""
        share = np.asarray(gpus, dtype=np.float64) / max(sum(gpus), 1)
        idx = np.asarray(pools, dtype=np.int64)
        # Validated, not model_construct: pydantic-core validates five floats faster than
        # model_construct's Python loop sets them (pydantic 2.14: ~3 us against ~6 us).
        return ScoreTerms(
            latency=float(share @ self.latency[idx]) if latency is None else latency,
            carbon=float(share @ self.carbon[idx]),
            energy_price=float(share @ self.energy_price[idx]),
            packing=float(share @ self.packing[idx]),
            data_movement=float(share @ self.data_movement[idx]),
        )


def site_data_movement(index: GridIndex, spec: JobSpec) -> FloatArray:
    """Per site, t / (t + 1) of the hours to bring every dataset the job reads."""
    hours = np.zeros(len(index.site_ids), dtype=np.float64)
    for dataset_id in spec.datasets:
        hours = hours + index.dataset_transfer_hours(dataset_id)
    return np.asarray(np.where(np.isinf(hours), 1.0, hours / (hours + 1.0)))


def site_latency(index: GridIndex, spec: JobSpec) -> FloatArray:
    """Per site, demand-weighted latency to the demand endpoints as a share of the SLO (capped at 1)."""
    if spec.inference is None:
        return np.zeros(len(index.site_ids), dtype=np.float64)
    rows, weights = demand_rows(index, spec)
    ratio = np.minimum(index.topology.endpoint_site_latency_ms[rows] / spec.inference.latency_slo_ms, 1.0)
    return np.asarray(weights @ ratio / weights.sum())


# Distinct weight sets kept per index; a policy history or a what-if sweep has a handful.
POLICY_TERMS_KEPT = 16


def policy_pool_terms(index: GridIndex, policy: Policy) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Carbon and energy-price terms per pool, and zeros: they depend on the grid and the policy's
    weights only, so they are computed once per set of weights, not for every job. Read-only:
    every decision shares them."""
    w = policy.weights
    key = (w.carbon, w.energy_price)
    cache = index._policy_terms_cache
    terms = cache.get(key)
    if terms is None:
        if len(cache) >= POLICY_TERMS_KEPT:
            cache.clear()
        site = index.pool_site
        terms = (w.carbon * index.site_carbon_term[site], w.energy_price * index.site_price_term[site],
                 np.zeros(len(site), dtype=np.float64))
        for array in terms:
            array.flags.writeable = False
        cache[key] = terms
    return terms[0], terms[1], terms[2]


def pool_costs(index: GridIndex, checks: Checks, spec: JobSpec, policy: Policy) -> PoolCosts:
    w = policy.weights
    site = checks.pool_site
    carbon, energy_price, zeros = policy_pool_terms(index, policy)
    # Clipped to [0, 1] in place: np.clip's wrapper costs more than the arithmetic on 2,000 pools.
    idle_after = (checks.pool_free_gpus - checks.need_gpus) / index.pool_capacity_at_least_1
    np.minimum(np.maximum(idle_after, 0.0, out=idle_after), 1.0, out=idle_after)
    packing = w.packing * idle_after
    if checks.nodes is not None and w.fragmentation > 0:
        pools = np.flatnonzero(checks.pool_eligible & (checks.pool_free_gpus > 0))
        breaks = checks.nodes.pool_breaks_whole_domain(spec.topology, checks.need_gpus, pools)
        packing = packing + w.fragmentation * breaks
    data_movement = site_data_movement(index, spec) if spec.datasets else None
    return PoolCosts(
        latency=w.latency * site_latency(index, spec)[site] if spec.inference is not None else zeros,
        carbon=carbon,
        energy_price=energy_price,
        packing=packing,
        data_movement=w.data_movement * data_movement[site] if data_movement is not None else zeros,
    )
