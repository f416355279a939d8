"""The site monitor's pass: apply node and site health only where it would change something.

Every replica runs it every second. ``fleet.apply_node_health`` for every site each time took the
scheduler lock, read each site's agent (its whole node inventory) two more times, every pool's
drains, and, at a site with failed nodes, the ledger: about 160 Redis round trips a second for
20 sites. Here one batched read of every agent's health and drains plus one ledger snapshot decide
which sites need it: those whose health, unhealthy nodes or drains changed since the last pass,
and those whose ledger disagrees with what their health allows (out-of-service GPUs not as
computed, jobs still running at a lost site, running work beyond a pool's healthy nodes). The
second test alone would do (the outcome is that of ``apply_node_health`` everywhere); the first
keeps any effect of a node set that the ledger check does not see yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from grid_scheduler.scheduler import fleet
from grid_scheduler.state.agents import AgentHealth, NodeCondition, NodeHealth
from grid_scheduler.state.store import LedgerSnapshot

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler

Signature = tuple[fleet.SiteHealth, int, tuple[NodeCondition, ...], tuple[tuple[str, ...], ...]]


class SiteMonitor:
    """One replica's monitor; it remembers what each site looked like when it last applied it."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._site_pools = {site.id: tuple(p.id for p in site.pools) for site in scheduler.grid.sites}
        self._applied: dict[str, Signature] = {}

    def check(self) -> dict[str, fleet.SiteHealth]:
        """Every registered site's health; the sites that need it get ``fleet.apply_node_health``."""
        s = self.scheduler
        health_now = s.store.fleet_health(self._site_pools)
        if not health_now.agents:
            return {}
        snap = s.store.snapshot()
        now = s.now()
        out: dict[str, fleet.SiteHealth] = {}
        for agent in health_now.agents:
            health = fleet.site_health(s, agent, now)
            drains = tuple(health_now.drained.get(p, ()) for p in self._site_pools.get(agent.site_id, ()))
            signature: Signature = (health, agent.generation, agent.nodes, drains)
            if self._applied.get(agent.site_id) != signature or _ledger_disagrees(
                    s, agent, health, health_now.drained, snap):
                fleet.apply_node_health(s, agent.site_id)
                # Only once applied: a pass cut short (a store outage) is retried at the next one.
                self._applied[agent.site_id] = signature
            out[agent.site_id] = health
        return out


def _ledger_disagrees(
    s: Scheduler, agent: AgentHealth, health: fleet.SiteHealth, drained: Mapping[str, tuple[str, ...]],
    snap: LedgerSnapshot,
) -> bool:
    """Whether ``apply_node_health`` would change the ledger at the site now, judged from data
    already read (fleet.PoolHealth's arithmetic; were it to differ, a site would only be applied
    more often than needed, never less: any change of its nodes changes its signature too)."""
    silent = health in (fleet.SiteHealth.UNHEALTHY, fleet.SiteHealth.LOST)
    down_now = snap.pool_down_gpus if snap.pool_down_gpus is not None else np.zeros_like(snap.pool_used_gpus)
    for pool in s.grid.site_by_id[agent.site_id].pools:
        failed = {n.node for n in agent.nodes if n.pool_id == pool.id and n.health is NodeHealth.FAILED}
        out = {n.node for n in agent.nodes if n.pool_id == pool.id} | set(drained.get(pool.id, ()))
        down = pool.healthy_gpus if silent else min(pool.healthy_gpus, len(out) * pool.gpus_per_node)
        i = s.limits.pool_index[pool.id]
        if int(down_now[i]) != down:
            return True
        used = int(snap.pool_used_gpus[i])
        if health is fleet.SiteHealth.LOST and used > 0:
            return True
        room = pool.healthy_gpus - min(pool.healthy_gpus, len(failed) * pool.gpus_per_node)
        if health is fleet.SiteHealth.HEALTHY and failed and used > room:
            return True
    return False
