"""Hard constraints: which sites and pools may take a job, and the numbers behind each no.

Every check is kept as its own array so that an explanation can say *which* rule
failed and by how much, not only that a pool was masked out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

import numpy as np

from grid_scheduler.engine import preference
from grid_scheduler.engine.index import BoolArray, FloatArray, GridIndex, IntArray, Usage
from grid_scheduler.engine.quota import UNLIMITED, QuotaState, policy_rules
from grid_scheduler.engine.topology import NodeView
from grid_scheduler.model import GpuTopology, JobKind, JobSpec, Policy, ResidencyRule, TopologyMode


class Unit(Enum):
    """What must fit inside one pool."""

    GANG = "gang"  # the whole job, in one pool
    SPLIT = "split"  # the whole job, across pools of one site
    REPLICA = "replica"  # one inference replica per pool slot


def unit_of(spec: JobSpec) -> Unit:
    if spec.kind is JobKind.INFERENCE:
        return Unit.REPLICA
    return Unit.GANG if spec.gang else Unit.SPLIT


def residency_rules(spec: JobSpec, index: GridIndex, policy: Policy) -> tuple[ResidencyRule, ...]:
    """The job's own rule, its tenant's rule, and the rule of every dataset it reads."""
    rules = [spec.residency]
    tenant_rule = policy.tenant_residency.get(spec.tenant)
    if tenant_rule is not None:
        rules.append(tenant_rule)
    rules.extend(index.grid.dataset_by_id[d].residency for d in spec.datasets)
    return tuple(rules)


@dataclass(frozen=True)
class Checks:
    unit: Unit
    need_gpus: int  # per pool slot: the job (GANG, SPLIT) or one replica (REPLICA)
    site_residency_ok: BoolArray
    site_latency_ok: BoolArray  # inference: the site is within SLO of at least one demand endpoint
    pool_type_ok: BoolArray
    pool_workload_ok: BoolArray
    pool_health_ok: BoolArray
    pool_free_gpus: IntArray
    site_headroom_kw: FloatArray
    pool_need_kw: FloatArray  # power one slot draws in this pool
    pool_site: IntArray
    # Inference: [demand endpoint, site] within the SLO; None for training.
    demand_cover: BoolArray | None = None
    # Sites the job's placement preference lets it use (engine/preference.py); None: no fence.
    site_preference_ok: BoolArray | None = None
    # The tenant's quota (engine/quota.py), per resource group it is limited in; empty: unlimited.
    quota: Mapping[int, QuotaState] = field(default_factory=dict)
    pool_quota_group: IntArray | None = None  # each pool's resource group, -1 for none
    # Topology inside pools (engine/topology.py). For a job asking for whole domains or slices,
    # pool_free_gpus counts only the GPUs its mode can use; pool_topology_ok is False where the
    # slot is not whole steps of the pool's domains (there pool_free_gpus is 0 but for a split job).
    topology: GpuTopology = field(default_factory=GpuTopology)
    pool_topology_ok: BoolArray | None = None  # None: every pool (the job asks for no topology)
    pool_unit_gpus: IntArray | None = None  # the step a pool's share of a split job comes in
    # The ledger's free GPUs per node (None: it keeps no node detail): placements take nodes from it.
    nodes: NodeView | None = None
    # What the topology figures were counted on: ``nodes``, or (no node detail) the pool-level
    # usage packed onto nodes. None for a job that asks for no topology.
    domain_view: NodeView | None = None

    @cached_property
    def pool_quota_gpus(self) -> IntArray:
        """GPUs the tenant's quota still allows in each pool's group (UNLIMITED where none applies)."""
        out = np.full(len(self.pool_site), UNLIMITED, dtype=np.int64)
        if self.pool_quota_group is not None:
            for g, state in self.quota.items():
                out[self.pool_quota_group == g] = state.headroom
        return out

    def group_headroom(self) -> dict[int, int]:
        """Mutable copy of the headroom per limited group, for a search that fills several pools."""
        return {g: s.headroom for g, s in self.quota.items()}

    def quota_group_of(self, pool: int) -> int:
        if self.pool_quota_group is None:
            return -1
        g = int(self.pool_quota_group[pool])
        return g if g in self.quota else -1

    @cached_property
    def pool_static_ok(self) -> BoolArray:
        """Passes every rule that no change of load can change."""
        site_ok = self.site_residency_ok & self.site_latency_ok
        if self.site_preference_ok is not None:
            site_ok = site_ok & self.site_preference_ok
        return np.asarray(site_ok[self.pool_site] & self.pool_type_ok & self.pool_workload_ok)

    @cached_property
    def pool_eligible(self) -> BoolArray:
        return np.asarray(self.pool_static_ok & self.pool_health_ok)

    @cached_property
    def pool_capacity_ok(self) -> BoolArray:
        """Room for the whole slot in the pool (a split job tries one pool first, then several)."""
        room = self.pool_free_gpus >= self.need_gpus
        if self.pool_topology_ok is not None:
            room &= self.pool_topology_ok
        return np.asarray(room)

    @cached_property
    def pool_quota_ok(self) -> BoolArray:
        return np.asarray(self.pool_quota_gpus >= self.need_gpus)

    @cached_property
    def site_headroom_w(self) -> IntArray:
        """Headroom in the ledger's own unit, integer watts (``state.store.to_watts``), so a decision
        the engine finds feasible never fails its commit by rounding."""
        return np.asarray(watts(self.site_headroom_kw), dtype=np.int64)

    @cached_property
    def pool_need_w(self) -> IntArray:
        return np.asarray(watts(self.pool_need_kw), dtype=np.int64)

    @cached_property
    def pool_power_ok(self) -> BoolArray:
        return np.asarray(self.site_headroom_w[self.pool_site] >= self.pool_need_w)

    @cached_property
    def pool_feasible(self) -> BoolArray:
        return np.asarray(self.pool_eligible & self.pool_capacity_ok & self.pool_power_ok & self.pool_quota_ok)


def watts(kw: FloatArray) -> IntArray:
    """kW to whole watts, rounded as the ledger rounds each reservation (half to even)."""
    return np.asarray(np.round(np.asarray(kw) * 1000.0), dtype=np.int64)


def compute_checks(
    index: GridIndex,
    usage: Usage,
    spec: JobSpec,
    policy: Policy,
    capacity_gpus: IntArray | None = None,
) -> Checks:
    """Checks against ``usage``; ``capacity_gpus`` defaults to the healthy GPUs per pool."""
    capacity = index.pool_healthy_gpus if capacity_gpus is None else capacity_gpus
    unit = unit_of(spec)
    pool_type_ok = index.gpu_type_mask(tuple(spec.gpus.types), spec.gpus.min_memory_gib)
    pool_workload_ok = index.training_pools if spec.kind is JobKind.TRAINING else index.inference_pools
    need_gpus = spec.gpus.count if unit is not Unit.SPLIT else spec.total_gpus
    cover = latency_coverage(index, spec) if spec.inference is not None else None
    quota: dict[int, QuotaState] = {}
    pool_quota_group: IntArray | None = None
    rules = policy_rules(index, policy)
    if rules is not None:
        for (tenant, g) in rules.limits:
            if tenant == spec.tenant:
                state = rules.state(usage.tenant_pool_gpus, tenant, g)
                assert state is not None
                quota[g] = state
        pool_quota_group = rules.pool_group if quota else None
    nodes = usage.nodes(index)
    free = np.maximum(capacity - usage.pool_used_gpus, 0)
    if nodes is not None:  # a node out of service, or over-filled, takes nothing
        free = np.minimum(free, nodes.pool_free_gpus)
    topo = _topology_free(index, usage, spec, unit, need_gpus, capacity, free, pool_type_ok & pool_workload_ok, nodes)
    free = topo.free
    site_latency_ok: BoolArray = (
        np.asarray(cover.any(axis=0)) if cover is not None else np.ones(len(index.site_ids), dtype=np.bool_)
    )
    return Checks(
        unit=unit,
        need_gpus=need_gpus,
        site_residency_ok=index.residency_mask(residency_rules(spec, index, policy)),
        site_latency_ok=site_latency_ok,
        pool_type_ok=pool_type_ok,
        pool_workload_ok=pool_workload_ok,
        pool_health_ok=~usage.pool_drained & (capacity > 0),
        pool_free_gpus=free,
        site_headroom_kw=index.site_envelope_kw - usage.site_used_kw,
        pool_need_kw=index.pool_kw_per_gpu * need_gpus,
        pool_site=index.pool_site,
        demand_cover=cover,
        site_preference_ok=preference.allowed_sites(index, spec, policy),
        quota=quota,
        pool_quota_group=pool_quota_group,
        topology=spec.topology,
        pool_topology_ok=topo.ok,
        pool_unit_gpus=topo.unit_gpus,
        nodes=nodes,
        domain_view=topo.view,
    )


@dataclass(frozen=True)
class _TopologyFree:
    free: IntArray
    ok: BoolArray | None = None
    unit_gpus: IntArray | None = None
    view: NodeView | None = None


def _topology_free(
    index: GridIndex, usage: Usage, spec: JobSpec, unit: Unit, need_gpus: int, capacity: IntArray,
    free: IntArray, candidates: BoolArray, nodes: NodeView | None,
) -> _TopologyFree:
    """Free GPUs a topology-constrained job can use per pool: whole free domains, or whole slices."""
    if spec.topology.mode is TopologyMode.NONE:
        return _TopologyFree(free)
    only = candidates & (free > 0)
    view = nodes if nodes is not None else NodeView.packed(
        index.pools, index.pool_shapes, usage.pool_used_gpus, capacity, only)
    usable = view.pool_usable_gpus(spec.topology, np.flatnonzero(only))
    unit_gpus = (view.pool_domain_gpus if spec.topology.mode is TopologyMode.WHOLE_DOMAINS
                 else np.full(len(free), spec.topology.slice_gpus, dtype=np.int64))
    # A slot in one pool must be whole steps itself; a split job's share of each of several pools
    # comes in that pool's steps, so its pools keep their usable GPUs when the whole is not.
    ok = np.asarray(need_gpus % unit_gpus == 0)
    usable = np.minimum(free, usable)
    return _TopologyFree(usable if unit is Unit.SPLIT else np.where(ok, usable, 0), ok, unit_gpus, view)


def demand_rows(index: GridIndex, spec: JobSpec) -> tuple[IntArray, FloatArray]:
    """Row of each demand endpoint in the latency matrix, and its traffic weight."""
    assert spec.inference is not None
    rows = [index.endpoint_index[d.endpoint] for d in spec.inference.demand]
    weights = [d.weight for d in spec.inference.demand]
    return np.array(rows, dtype=np.int64), np.array(weights, dtype=np.float64)


def latency_coverage(index: GridIndex, spec: JobSpec) -> BoolArray:
    """[demand endpoint, site]: is the site within the SLO of that endpoint."""
    assert spec.inference is not None
    rows, _ = demand_rows(index, spec)
    return np.asarray(index.topology.endpoint_site_latency_ms[rows] <= spec.inference.latency_slo_ms)
