"""A bound on a tier's W (GPU-hours placed) over the whole grid, from GPU prices per pool.

Lagrangian relaxation of every pool's GPU row with a price ``pi[p] >= 0`` per GPU: for any prices,

    W <= sum_p pi[p] * cap[p] + sum_c n_c * max(0, v_c - size_c * min_{p in E_c} pi[p])

where a class ``c`` has ``n_c`` jobs (deployments) worth ``v_c`` each, needing ``size_c`` GPUs
(replicas x GPUs per replica), eligible in pools ``E_c`` (its mask on the tier's starting usage:
usage only grows within a tier, so a pool that cannot take one job now takes none later), and
``cap[p]`` is the largest sum of eligible item sizes within the pool's free GPUs (a bounded
subset sum: no integer answer uses more). Power rows, covering rows and quotas are dropped,
which only loosens it. Unlike the bounds in ``batch._Model`` it ranges over every pool, not the
best K per class, and needs no LP: so it bounds the whole problem, whatever a partitioned solve
did inside its parts (engine/batch_partition.py).

Prices: any non-negative prices give a valid bound. ``price_candidates`` derives them from an
answer (a pool's price is the highest value per GPU of the jobs still waiting that could use it:
market clearing; a waiting job is then worth nothing anywhere, a placed one its surplus), scaled
by a few factors, and zero prices ("every job placed"); the smallest bound is reported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from grid_scheduler.engine.index import BoolArray, FloatArray, GridIndex, IntArray, Usage

if TYPE_CHECKING:
    from grid_scheduler.engine.batch import _Unit

PRICE_SCALES = (0.5, 0.8, 0.9, 1.0, 1.1, 1.25)


@dataclass(frozen=True)
class PriceBound:
    bound: int  # on W, an integer (floored after a margin for float rounding)
    scale: float  # of the market-clearing prices that gave it (0.0: zero prices)


def price_bound(index: GridIndex, usage: Usage, units: list[_Unit], placed: Container[str]) -> PriceBound:
    """The smallest of the bounds above over the candidate prices, for a tier's ``units`` (built
    on ``usage``, the tier's starting usage) and the jobs of the answer ``placed``."""
    free: IntArray = np.maximum(index.pool_healthy_gpus - usage.pool_used_gpus, 0).astype(np.int64)
    cap = _capacity(free, units)
    masks: dict[int, int] = {}  # id(mask) -> row
    rows: list[IntArray] = []
    unit_row = np.zeros(len(units), dtype=np.int64)
    for u, unit in enumerate(units):
        key = id(unit.mask)
        if key not in masks:
            masks[key] = len(rows)
            rows.append(np.flatnonzero(unit.mask))
        unit_row[u] = masks[key]
    count = np.array([len(u.job_ids) for u in units], dtype=np.float64)
    value = np.array([u.value for u in units], dtype=np.float64)
    size = np.array([u.gpus * u.replicas for u in units], dtype=np.float64)
    prices = _market_prices(len(free), units, rows, unit_row, value / np.maximum(size, 1.0), placed)
    # min over each mask of the prices: the scaled prices' minima are the same minima, scaled.
    low = np.array([float(prices[r].min()) if r.size else np.inf for r in rows], dtype=np.float64)
    eligible = np.array([r.size > 0 for r in rows], dtype=np.bool_)[unit_row]
    best = PriceBound(round(float(count[eligible] @ value[eligible])), 0.0)  # zero prices
    for scale in PRICE_SCALES:
        reduced = np.maximum(value - size * scale * low[unit_row], 0.0)
        total = scale * float(prices @ cap) + float(count[eligible] @ reduced[eligible])
        bound = min(best.bound, int(np.floor(total * (1 + 1e-9) + 1e-6)))
        if bound < best.bound:
            best = PriceBound(bound, scale)
    return best


def _market_prices(
    n_pools: int, units: list[_Unit], rows: list[IntArray], unit_row: IntArray, density: FloatArray,
    placed: Container[str],
) -> FloatArray:
    """Per pool, the highest value per GPU among the classes with a job left waiting that may use it."""
    prices = np.zeros(n_pools, dtype=np.float64)
    for u, unit in enumerate(units):
        if all(job_id in placed for job_id in unit.job_ids):
            continue
        pools = rows[int(unit_row[u])]
        if pools.size:
            prices[pools] = np.maximum(prices[pools], density[u])
    return prices


def _capacity(free: IntArray, units: list[_Unit]) -> FloatArray:
    """Per pool, the largest sum <= its free GPUs of item sizes (GPUs per job, or per replica) of
    classes eligible there; 0 where none is."""
    by_size: dict[int, BoolArray] = {}
    for unit in units:
        seen = by_size.get(unit.gpus)
        by_size[unit.gpus] = unit.mask.copy() if seen is None else (seen | unit.mask)
    sizes = sorted(by_size)
    cap = np.zeros(len(free), dtype=np.float64)
    memo: dict[tuple[tuple[int, ...], int], int] = {}
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    eligible = np.array([by_size[s] for s in sizes], dtype=np.bool_).reshape(len(sizes), len(free))
    for p in np.flatnonzero(eligible.any(axis=0) & (free > 0)).tolist():
        groups[tuple(s for s, e in zip(sizes, eligible[:, p].tolist(), strict=True) if e)].append(p)
    for here, pools in groups.items():
        for p in pools:
            key = (here, int(free[p]))
            if key not in memo:
                memo[key] = _largest_sum(here, int(free[p]))
            cap[p] = memo[key]
    return cap


def _largest_sum(sizes: tuple[int, ...], free: int) -> int:
    """The largest total <= ``free`` of any number of items of these sizes (a bitset reach)."""
    mask = (1 << (free + 1)) - 1
    reach = 1
    for s in sizes:
        if s > free:
            continue
        # Unbounded copies of s: shift-or until nothing new (at most free // s rounds, doubling).
        step = s
        while step <= free:
            grown = (reach | (reach << step)) & mask
            if grown == reach and step > s:
                break
            reach = grown
            step *= 2
    return reach.bit_length() - 1
