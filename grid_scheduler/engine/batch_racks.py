"""Racks in the batch plan: a whole-domain or slice job is planned only where its commit finds nodes.

The batch model counts GPUs per pool; a job asking for whole interconnect domains (racks) or
for slices (model.job.GpuTopology, engine/topology.py) also needs them in the right shape. The
plan is committed in queue order by ``scheduler/batch_commit.py``, each placement taking nodes
with ``assign_job_nodes`` on what the earlier ones left, so the model must keep every order of
commit feasible. Per pool ``p``, with ``S`` GPUs per domain, ``D`` whole free domains and ``F``
free GPUs (on nodes, as the commit will see them):

- a whole-domain slot of ``g`` GPUs counts ``r = g / S`` racks; a slot of ``m`` slices of ``n``
  counts ``r = ceil(m / floor(S / n))`` racks, the racks it would open if no broken domain took a
  slice (conservative: slices are not planned into broken domains, see below);
- rack row: ``sum r * x <= D``;
- GPU row: ``sum_plain g * x + S * sum_topology r * x <= F`` (a topology slot counts its racks'
  GPUs, not its own).

Why that suffices, in any commit order: a whole-domain job takes whole domains only; slices and
unconstrained GPUs take broken domains first (``assign_nodes``' fill order). Unconstrained GPUs
open a whole domain only once every broken domain is full, so when they open their k-th, all of
the broken free GPUs and of the k-1 before are taken, and the GPU row leaves room for every
rack counted; a slice job opens at most its ``r`` domains, and whatever it takes from broken
domains is within the ``S * r`` GPUs the row charged it. tests/test_batch_racks.py checks it
(commit in queue order, and each topology job after all the others) on random racks and jobs.

What is conservative: slices never count on broken domains (a slice job that could fit in the
free parts of broken racks is left to the queue pass, which places it there right after the
commit); inference replicas without topology are aligned to nodes at commit
(``assign_replica_nodes``) and may open a whole domain while broken domains hold free GPUs in
pieces smaller than a replica: in a pool that a same-tier topology job also uses, the plan's
safety check (``RackLedger.admit``) then drops the placement that finds no nodes.

``RackLedger`` carries the nodes from tier to tier: each tier's placements are taken in queue
order (as the commit will), lazily per pool (only pools some topology job can use are built), so
a batch with no topology job costs nothing here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from grid_scheduler.engine.index import GridIndex, IntArray, Usage
from grid_scheduler.engine.online import replica_gpus
from grid_scheduler.engine.topology import (
    PoolShape,
    assign_job_nodes,
    domain_free_gpus,
    packed_node_free_gpus,
    whole_free_domains,
)
from grid_scheduler.model import GpuTopology, JobSpec, Placement, TopologyMode

__all__ = ["RackLedger", "TierRacks", "has_topology", "slot_racks"]


def has_topology(spec: JobSpec) -> bool:
    """Whether the job asks for whole domains or slices inside pools."""
    return spec.topology.mode is not TopologyMode.NONE


def slot_racks(shape: PoolShape, topology: GpuTopology, slot_gpus: int) -> int:
    """Racks one slot (a job, or a replica) counts in a pool's rack row: 0 for no topology,
    -1 where the slot can never fit the pool's domains."""
    size = shape.domain_gpus
    if topology.mode is TopologyMode.WHOLE_DOMAINS:
        return slot_gpus // size if slot_gpus > 0 and slot_gpus % size == 0 else -1
    if topology.mode is TopologyMode.SLICES:
        n = topology.slice_gpus
        per_domain = size // n if n > 0 else 0
        if per_domain == 0 or slot_gpus <= 0 or slot_gpus % n:
            return -1
        return -(-(slot_gpus // n) // per_domain)
    return 0


@dataclass(frozen=True)
class TierRacks:
    """What a tier's model and warm start read of the racks: per pool, whole free domains, free
    GPUs on nodes, and GPUs per domain (every pool; exact where some topology job may go)."""

    whole_domains: IntArray
    free_gpus: IntArray
    domain_gpus: IntArray

    def slot_racks(self, index: GridIndex, spec: JobSpec, slot_gpus: int, pools: IntArray) -> IntArray:
        """``slot_racks`` of ``spec`` at each of ``pools``."""
        if not has_topology(spec):
            return np.zeros(len(pools), dtype=np.int64)
        return np.array([slot_racks(index.pool_shapes[p], spec.topology, slot_gpus) for p in pools.tolist()],
                        dtype=np.int64)


@dataclass
class RackLedger:
    """Free GPUs per node as the plan's commit will find them, tier after tier (see module doc)."""

    index: GridIndex
    usage: Usage  # the batch's starting usage (node detail if the ledger keeps it)
    _free: dict[int, IntArray] = field(default_factory=dict)  # pools built so far
    _later: dict[int, list[tuple[JobSpec, int]]] = field(default_factory=lambda: defaultdict(list))

    def node_free(self, p: int) -> IntArray:
        """Pool ``p``'s free GPUs per node now (built on first use, replaying what it was given)."""
        free = self._free.get(p)
        if free is None:
            nodes = self.usage.nodes(self.index)
            if nodes is not None:
                free = np.array(nodes.node_free[p], dtype=np.int64)
            else:  # no node detail: the pool-level usage packed onto nodes, as the checks see it
                pool = self.index.pools[p]
                free = packed_node_free_gpus(pool, int(self.usage.pool_used_gpus[p]),
                                             int(self.index.pool_healthy_gpus[p])).astype(np.int64)
            self._free[p] = free
            for spec, gpus in self._later.pop(p, []):
                self._take(p, spec, gpus)  # a commit that found no nodes takes none (it stays pending)
        return free

    def _take(self, p: int, spec: JobSpec, gpus: int) -> bool:
        free = self._free[p]
        nodes = assign_job_nodes(self.index.pool_shapes[p], free, gpus, spec.topology, replica_gpus(spec))
        if nodes is None:
            return False
        for node, taken in nodes:
            free[node] -= taken
        return True

    def tier(self, pools: Iterable[int]) -> TierRacks:
        """The figures a tier's model reads, exact at ``pools`` (where its topology jobs may go);
        elsewhere whole domains are 0 (no topology job goes there) and free GPUs unbounded."""
        n = len(self.index.pool_ids)
        whole = np.zeros(n, dtype=np.int64)
        free = np.full(n, np.iinfo(np.int64).max // 4, dtype=np.int64)
        size = np.array([s.domain_gpus for s in self.index.pool_shapes], dtype=np.int64)
        for p in sorted(set(pools)):
            node_free = self.node_free(p)
            shape = self.index.pool_shapes[p]
            whole[p] = int(whole_free_domains(shape, domain_free_gpus(shape, node_free)).sum())
            free[p] = int(node_free.sum())
        return TierRacks(whole, free, size)

    def admit(self, jobs: Iterable[tuple[str, JobSpec]], placements: Mapping[str, Placement]) -> dict[str, Placement]:
        """Take the tier's placements in queue order, as the commit will; a placement that would
        find no nodes (a topology job anywhere, any job in a pool already built) is dropped, whole.
        Plain placements in pools not built yet are only noted (replayed when a pool is built)."""
        kept: dict[str, Placement] = {}
        for job_id, spec in jobs:
            placement = placements.get(job_id)
            if placement is None:
                continue
            parts = [(self.index.pool_index[a.pool_id], a.gpus) for a in placement.assignments]
            if not has_topology(spec) and all(p not in self._free for p, _ in parts):
                for p, gpus in parts:
                    self._later[p].append((spec, gpus))
                kept[job_id] = placement
                continue
            saved = {p: self.node_free(p).copy() for p, _ in parts}
            if all(self._take(p, spec, gpus) for p, gpus in parts):
                kept[job_id] = placement
            else:  # all or nothing: undo the parts taken
                self._free.update(saved)
        return kept
