"""Fleet capacity: GPUs and power per pool, rolled up by site, jurisdiction, tier and GPU type."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from grid_scheduler.engine.index import GridIndex, Usage


@dataclass(frozen=True)
class PoolStatus:
    pool_id: str
    site_id: str
    total_gpus: int
    used_gpus: int
    free_gpus: int  # what new work can take now
    drained_gpus: int  # nodes the grid marks drained, or the whole pool when an operator drained it
    drained: bool


@dataclass
class CapacityRow:
    key: str
    total_gpus: int = 0
    used_gpus: int = 0
    free_gpus: int = 0
    drained_gpus: int = 0
    power_envelope_mw: float = 0.0
    power_used_mw: float = 0.0


def pool_statuses(index: GridIndex, usage: Usage) -> list[PoolStatus]:
    out = []
    for p, pool_id in enumerate(index.pool_ids):
        total = int(index.pool_total_gpus[p])
        healthy = int(index.pool_healthy_gpus[p])
        used = int(usage.pool_used_gpus[p])
        drained = bool(usage.pool_drained[p])
        out.append(
            PoolStatus(
                pool_id=pool_id,
                site_id=index.site_ids[int(index.pool_site[p])],
                total_gpus=total,
                used_gpus=used,
                free_gpus=0 if drained else max(healthy - used, 0),
                drained_gpus=total if drained else total - healthy,
                drained=drained,
            )
        )
    return out


@dataclass(frozen=True)
class Capacity:
    fleet: CapacityRow
    by_site: list[CapacityRow]
    by_jurisdiction: list[CapacityRow]
    by_tier: list[CapacityRow]
    by_gpu_type: list[CapacityRow]


def capacity(index: GridIndex, usage: Usage) -> Capacity:
    """Roll pool figures up; a site's power counts once in every row its site belongs to."""
    statuses = pool_statuses(index, usage)
    rows: dict[str, dict[str, CapacityRow]] = {k: {} for k in ("fleet", "site", "jurisdiction", "tier", "gpu")}

    def row(kind: str, key: str) -> CapacityRow:
        return rows[kind].setdefault(key, CapacityRow(key))

    site_keys: dict[int, list[CapacityRow]] = defaultdict(list)
    for s, site in enumerate(index.grid.sites):
        keyed = [row("fleet", "fleet"), row("site", site.id), row("tier", site.tier.value)]
        keyed += [row("jurisdiction", tag) for tag in sorted(site.tags)]
        for r in keyed:
            r.power_envelope_mw += site.power_envelope_mw
            r.power_used_mw += float(usage.site_used_kw[s]) / 1000.0
        site_keys[s] = keyed
    for p, status in enumerate(statuses):
        for r in [*site_keys[int(index.pool_site[p])], row("gpu", index.pool_gpu_type[p])]:
            r.total_gpus += status.total_gpus
            r.used_gpus += status.used_gpus
            r.free_gpus += status.free_gpus
            r.drained_gpus += status.drained_gpus
    return Capacity(
        fleet=rows["fleet"]["fleet"],
        by_site=list(rows["site"].values()),
        by_jurisdiction=sorted(rows["jurisdiction"].values(), key=lambda r: r.key),
        by_tier=list(rows["tier"].values()),
        by_gpu_type=sorted(rows["gpu"].values(), key=lambda r: r.key),
    )
