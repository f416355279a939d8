"""The grid flattened into NumPy arrays, and the ledger's usage in the same shape.

Every decision reads the same static facts (which site a pool is in, its GPU type,
its power per GPU, the site's tags and envelope); building them once per grid lets
the online path test every pool with a handful of vector operations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

from grid_scheduler.engine.topology import NodeView, PoolShape
from grid_scheduler.model import Grid, JobKind, Pool, ResidencyRule, Workload
from grid_scheduler.topology import Topology

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class GridIndex:
    grid: Grid
    topology: Topology
    _residency_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], BoolArray] = field(default_factory=dict)
    _type_cache: dict[tuple[tuple[str, ...], float], BoolArray] = field(default_factory=dict)
    _transfer_cache: dict[str, FloatArray] = field(default_factory=dict)
    _preference_cache: dict[str, BoolArray] = field(default_factory=dict)
    # Cost terms per pool that depend on the policy's weights alone (engine/scoring.py), per weights.
    _policy_terms_cache: dict[tuple[float, ...], tuple[FloatArray, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, grid: Grid) -> GridIndex:
        return cls(grid, Topology.from_grid(grid))

    # --- sites -----------------------------------------------------------------
    @cached_property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.grid.sites)

    @cached_property
    def site_index(self) -> dict[str, int]:
        return {sid: i for i, sid in enumerate(self.site_ids)}

    @cached_property
    def site_envelope_kw(self) -> FloatArray:
        return np.array([s.power_envelope_mw * 1000.0 for s in self.grid.sites], dtype=np.float64)

    @cached_property
    def site_carbon_term(self) -> FloatArray:
        """Carbon intensity scaled to [0, 1] by the grid's dirtiest site."""
        return _unit_scale([s.carbon_g_per_kwh for s in self.grid.sites])

    @cached_property
    def site_price_term(self) -> FloatArray:
        return _unit_scale([s.energy_price_per_mwh for s in self.grid.sites])

    @cached_property
    def endpoint_index(self) -> dict[str, int]:
        """Row of each endpoint in the topology's latency matrices."""
        return {eid: i for i, eid in enumerate(self.topology.endpoint_ids)}

    # --- pools -----------------------------------------------------------------
    @cached_property
    def pool_ids(self) -> tuple[str, ...]:
        return tuple(p.id for s in self.grid.sites for p in s.pools)

    @cached_property
    def pool_index(self) -> dict[str, int]:
        return {pid: i for i, pid in enumerate(self.pool_ids)}

    @cached_property
    def pool_site(self) -> IntArray:
        return np.array([si for si, s in enumerate(self.grid.sites) for _ in s.pools], dtype=np.int64)

    @cached_property
    def site_pool_bounds(self) -> IntArray:
        """Pools of site ``s`` are ``pool_ids[bounds[s]:bounds[s + 1]]``: the grid lists them site by site."""
        return np.searchsorted(self.pool_site, np.arange(len(self.site_ids) + 1)).astype(np.int64)

    @cached_property
    def pool_gpu_type(self) -> tuple[str, ...]:
        return tuple(p.gpu_type for s in self.grid.sites for p in s.pools)

    @cached_property
    def pool_total_gpus(self) -> IntArray:
        return np.array([p.total_gpus for s in self.grid.sites for p in s.pools], dtype=np.int64)

    @cached_property
    def pool_healthy_gpus(self) -> IntArray:
        """GPUs on nodes the grid file does not mark drained."""
        return np.array([p.healthy_gpus for s in self.grid.sites for p in s.pools], dtype=np.int64)

    @cached_property
    def pool_capacity_at_least_1(self) -> IntArray:
        """Healthy GPUs per pool, at least 1: the divisor of the packing term (engine/scoring.py)."""
        return np.maximum(self.pool_healthy_gpus, 1)

    @cached_property
    def pools(self) -> tuple[Pool, ...]:
        return tuple(p for s in self.grid.sites for p in s.pools)

    @cached_property
    def pool_shapes(self) -> tuple[PoolShape, ...]:
        """Nodes and interconnect domains of each pool (engine/topology.py)."""
        return tuple(PoolShape.of(p) for p in self.pools)

    @cached_property
    def pool_kw_per_gpu(self) -> FloatArray:
        """Facility power one GPU draws: board power times the site's PUE."""
        types = self.grid.gpu_type_by_name
        return np.array(
            [types[p.gpu_type].board_power_kw * s.pue for s in self.grid.sites for p in s.pools], dtype=np.float64
        )

    @cached_property
    def _pool_workload(self) -> tuple[Workload, ...]:
        return tuple(p.workload for s in self.grid.sites for p in s.pools)

    def workload_mask(self, kind: JobKind) -> BoolArray:
        return np.array([w is Workload.ANY or w.value == kind.value for w in self._pool_workload], dtype=np.bool_)

    @cached_property
    def training_pools(self) -> BoolArray:
        return self.workload_mask(JobKind.TRAINING)

    @cached_property
    def inference_pools(self) -> BoolArray:
        return self.workload_mask(JobKind.INFERENCE)

    def residency_mask(self, rules: tuple[ResidencyRule, ...]) -> BoolArray:
        """Sites every rule admits. Cached: a grid sees few distinct rules."""
        allowed = tuple(sorted({"|".join(sorted(r.allowed)) for r in rules if r.allowed}))
        denied = tuple(sorted({t for r in rules for t in r.denied}))
        key = (allowed, denied)
        mask = self._residency_cache.get(key)
        if mask is None:
            mask = np.array([all(r.admits(s.tags) for r in rules) for s in self.grid.sites], dtype=np.bool_)
            self._residency_cache[key] = mask
        return mask

    def preference_sites(self, entry: str, build: Callable[[], BoolArray]) -> BoolArray:
        """Sites a placement-preference entry names (engine/preference.py builds it), cached per entry."""
        mask = self._preference_cache.get(entry)
        if mask is None:
            mask = self._preference_cache[entry] = build()
        return mask

    def dataset_transfer_hours(self, dataset_id: str) -> FloatArray:
        """Hours to bring a dataset from its home to each site, over the lowest-latency path."""
        hours = self._transfer_cache.get(dataset_id)
        if hours is None:
            dataset = self.grid.dataset_by_id[dataset_id]
            gbps = self.topology.bottleneck_gbps_from(dataset.home_site, tuple(self.site_ids))
            hours = np.array([transfer_hours(dataset.size_tb, g) for g in gbps], dtype=np.float64)
            self._transfer_cache[dataset_id] = hours
        return hours

    def gpu_type_mask(self, types: tuple[str, ...], min_memory_gib: float) -> BoolArray:
        key = (types, min_memory_gib)
        mask = self._type_cache.get(key)
        if mask is None:
            by_name = self.grid.gpu_type_by_name
            mask = np.array(
                [(not types or t in types) and by_name[t].memory_gib >= min_memory_gib for t in self.pool_gpu_type],
                dtype=np.bool_,
            )
            self._type_cache[key] = mask
        return mask


def _unit_scale(values: list[float]) -> FloatArray:
    array = np.array(values, dtype=np.float64)
    top = array.max() if array.size else 0.0
    return array / top if top > 0 else np.zeros_like(array)


@dataclass(frozen=True)
class Usage:
    """What the ledger holds, as arrays aligned with a GridIndex."""

    pool_used_gpus: IntArray
    site_used_kw: FloatArray
    pool_drained: BoolArray  # drained by an operator, whole pool
    # GPUs each tenant holds per pool (quota accounting, engine/quota.py); tenants holding none are absent.
    tenant_pool_gpus: Mapping[str, IntArray] = field(default_factory=dict)
    # Per pool, one entry per node: GPUs reserved, and out of service (state.store.LedgerSnapshot).
    # Empty: the ledger keeps no node detail; decisions are then made at pool level only.
    node_used_gpus: Sequence[npt.NDArray[np.int32]] = ()
    node_out: Sequence[BoolArray] = ()
    # The NodeView of these arrays, built on first use (a decision reads it for every pool). Passed
    # on by dataclasses.replace, so the usage a hold overlays shares it; it is rebuilt only for
    # node arrays other than those it was built from.
    node_view_cache: list[tuple[object, NodeView]] = field(default_factory=list, repr=False, compare=False)

    def nodes(self, index: GridIndex) -> NodeView | None:
        """Free GPUs per node and domain, or None when the ledger keeps no node detail."""
        if not self.node_used_gpus:
            return None
        cache = self.node_view_cache
        if not cache or cache[0][0] is not self.node_used_gpus:
            cache[:] = [(self.node_used_gpus, NodeView.build(index.pool_shapes, self.node_used_gpus, self.node_out))]
        return cache[0][1]

    def node_view_moved(
        self, index: GridIndex, node_used_gpus: tuple[npt.NDArray[np.int32], ...], pools: Iterable[int],
    ) -> list[tuple[object, NodeView]]:
        """The node-view cache for ``node_used_gpus``, arrays that differ from this usage's only in
        ``pools``: this usage's view brought forward over those pools (``NodeView.updated``), since
        building every pool's view afresh costs more than a decision (7 ms on nscale)."""
        base = self.nodes(index)
        if base is None:
            return []
        return [(node_used_gpus, base.updated(node_used_gpus, self.node_out, sorted(pools)))]

    @classmethod
    def empty(cls, index: GridIndex) -> Usage:
        return cls(
            np.zeros(len(index.pool_ids), dtype=np.int64),
            np.zeros(len(index.site_ids), dtype=np.float64),
            np.zeros(len(index.pool_ids), dtype=np.bool_),
        )


def transfer_hours(size_tb: float, bandwidth_gbps: float) -> float:
    """Hours to move ``size_tb`` over a path whose narrowest link is ``bandwidth_gbps``."""
    if size_tb == 0 or bandwidth_gbps == float("inf"):
        return 0.0
    if bandwidth_gbps <= 0:
        return float("inf")
    return size_tb * 8_000.0 / bandwidth_gbps / 3600.0
