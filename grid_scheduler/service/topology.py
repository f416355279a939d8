"""TopologyService: sites, pools, endpoints, capacity roll-ups, drain and undrain."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np

from grid_scheduler._proto.v1 import topology_pb2 as pb
from grid_scheduler._proto.v1 import topology_pb2_grpc as pb_grpc
from grid_scheduler.engine.capacity import CapacityRow, PoolStatus, capacity, pool_statuses
from grid_scheduler.scheduler import InvalidJob, NotFound, Scheduler, fleet
from grid_scheduler.service.convert import TIER_FROM_PB, TIER_TO_PB
from grid_scheduler.service.handlers import handled

SITE_HEALTH_TO_PB: dict[fleet.SiteHealth, Any] = {
    h: pb.SiteHealth.Value("SITE_HEALTH_" + h.name) for h in fleet.SiteHealth}


class TopologyServicer(pb_grpc.TopologyServiceServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def _sites(self) -> list[pb.Site]:
        index = self.scheduler.index
        usage = self.scheduler.usage()
        statuses = pool_statuses(index, usage)
        by_site: dict[str, list[pb.Pool]] = {}
        for status, (site, pool) in zip(statuses, index.grid.pool_by_id.values(), strict=True):
            by_site.setdefault(site.id, []).append(_pool_pb(status, pool.gpu_type, pool.workload.value,
                                                            pool.nodes, pool.gpus_per_node,
                                                            pool.interconnect_domain_gpus))
        return [
            pb.Site(
                id=site.id, name=site.name, tier=TIER_TO_PB[site.tier], country=site.location.country,
                lat=site.location.lat, lon=site.location.lon, jurisdictions=sorted(site.tags),
                power_envelope_mw=site.power_envelope_mw, power_used_mw=float(usage.site_used_kw[s]) / 1000.0,
                pue=site.pue, carbon_g_per_kwh=site.carbon_g_per_kwh,
                energy_price_per_mwh=site.energy_price_per_mwh, pools=by_site.get(site.id, []),
            )
            for s, site in enumerate(index.grid.sites)
        ]

    @handled
    def ListSites(self, request: pb.ListSitesRequest, context: grpc.ServicerContext) -> pb.ListSitesResponse:
        if request.tier and request.tier not in TIER_FROM_PB:
            raise InvalidJob([("tier", f"unknown tier {request.tier}")])
        sites = [
            s for s in self._sites()
            if (not request.tier or s.tier == request.tier)
            and (not request.jurisdiction or request.jurisdiction in s.jurisdictions)
        ]
        return pb.ListSitesResponse(sites=sites)

    @handled
    def GetSite(self, request: pb.GetSiteRequest, context: grpc.ServicerContext) -> pb.GetSiteResponse:
        if not request.id:
            raise InvalidJob([("id", "required")])
        for site in self._sites():
            if site.id == request.id:
                return pb.GetSiteResponse(site=site)
        raise NotFound("site", request.id)

    @handled
    def ListEndpoints(
        self, request: pb.ListEndpointsRequest, context: grpc.ServicerContext
    ) -> pb.ListEndpointsResponse:
        index = self.scheduler.index
        topo = index.topology
        endpoints = []
        for e, endpoint in enumerate(index.grid.endpoints):
            row = topo.endpoint_site_latency_ms[e]
            order = np.argsort(row, kind="stable")
            endpoints.append(
                pb.Endpoint(
                    id=endpoint.id, name=endpoint.name, country=endpoint.location.country,
                    lat=endpoint.location.lat, lon=endpoint.location.lon,
                    site_latencies=[
                        pb.SiteLatency(site_id=topo.site_ids[s], latency_ms=float(row[s]))
                        for s in order if np.isfinite(row[s])
                    ],
                )
            )
        return pb.ListEndpointsResponse(endpoints=endpoints)

    @handled
    def GetCapacity(self, request: pb.GetCapacityRequest, context: grpc.ServicerContext) -> pb.GetCapacityResponse:
        cap = capacity(self.scheduler.index, self.scheduler.usage())
        return pb.GetCapacityResponse(
            fleet=_row_pb(cap.fleet),
            by_site=[_row_pb(r) for r in cap.by_site],
            by_jurisdiction=[_row_pb(r) for r in cap.by_jurisdiction],
            by_tier=[_row_pb(r) for r in cap.by_tier],
            by_gpu_type=[_row_pb(r) for r in cap.by_gpu_type],
        )

    @handled
    def DrainPool(self, request: pb.DrainPoolRequest, context: grpc.ServicerContext) -> pb.DrainPoolResponse:
        return pb.DrainPoolResponse(pool=self._set_drained(request.pool_id, True))

    @handled
    def UndrainPool(self, request: pb.UndrainPoolRequest, context: grpc.ServicerContext) -> pb.UndrainPoolResponse:
        return pb.UndrainPoolResponse(pool=self._set_drained(request.pool_id, False))

    @handled
    def DrainNodes(self, request: pb.DrainNodesRequest, context: grpc.ServicerContext) -> pb.DrainNodesResponse:
        pool, drained = self._drain_nodes(request.pool_id, list(request.nodes), True)
        return pb.DrainNodesResponse(pool=pool, drained_nodes=drained)

    @handled
    def UndrainNodes(self, request: pb.UndrainNodesRequest, context: grpc.ServicerContext) -> pb.UndrainNodesResponse:
        pool, drained = self._drain_nodes(request.pool_id, list(request.nodes), False)
        return pb.UndrainNodesResponse(pool=pool, drained_nodes=drained)

    @handled
    def GetFleet(self, request: pb.GetFleetRequest, context: grpc.ServicerContext) -> pb.GetFleetResponse:
        sites = []
        for v in fleet.fleet_view(self.scheduler):
            site = pb.FleetSite(
                site_id=v.site_id, agent_id=v.agent.agent_id if v.agent else "", health=SITE_HEALTH_TO_PB[v.health],
                generation=v.agent.generation if v.agent else 0, nodes_total=v.nodes_total,
                nodes_healthy=v.nodes_healthy, nodes_failed=v.nodes_failed, nodes_draining=v.nodes_draining,
                gpus_up=v.gpus_up, gpus_down=v.gpus_down,
                nodes=[pb.FleetNode(pool_id=p, node=n, health=h, reason=r) for p, n, h, r in v.unhealthy],
                pools=[pb.FleetPoolUsage(
                    pool_id=u.pool_id, gpus_total=u.gpus_total, gpus_used=u.gpus_used, gpus_out=u.gpus_out,
                    gpus_free=u.gpus_free, nodes_used=u.nodes_used, fragmented_gpus=u.fragmented_gpus,
                    largest_free_domain_gpus=u.largest_free_domain_gpus) for u in v.pools],
            )
            if v.agent is not None:
                site.last_heartbeat.FromNanoseconds(int(v.agent.heartbeat_at_s * 1e9))
            sites.append(site)
        return pb.GetFleetResponse(sites=sites)

    def _drain_nodes(self, pool_id: str, nodes: list[str], drained: bool) -> tuple[pb.Pool, list[str]]:
        if not pool_id:
            raise InvalidJob([("pool_id", "required")])
        found = self.scheduler.grid.pool_by_id.get(pool_id)
        if found is None:
            raise NotFound("pool", pool_id)
        site, grid_pool = found
        fleet.drain_nodes(self.scheduler, site.id, grid_pool.id, nodes, drained)
        pool = next(p for s in self._sites() if s.id == site.id for p in s.pools if p.id == pool_id)
        return pool, list(self.scheduler.store.drained_nodes(pool_id))

    def _set_drained(self, pool_id: str, drained: bool) -> pb.Pool:
        if not pool_id:
            raise InvalidJob([("pool_id", "required")])
        self.scheduler.set_drained(pool_id, drained)
        for site in self._sites():
            for pool in site.pools:
                if pool.id == pool_id:
                    return pool
        raise NotFound("pool", pool_id)


def _pool_pb(
    status: PoolStatus, gpu_type: str, workload: str, nodes: int, gpus_per_node: int, domain: int
) -> pb.Pool:
    return pb.Pool(
        id=status.pool_id, site_id=status.site_id, gpu_type=gpu_type, workload=workload, nodes=nodes,
        gpus_per_node=gpus_per_node, interconnect_domain_gpus=domain, total_gpus=status.total_gpus,
        used_gpus=status.used_gpus, free_gpus=status.free_gpus, drained_gpus=status.drained_gpus,
        drained=status.drained,
    )


def _row_pb(row: CapacityRow) -> pb.CapacityRow:
    return pb.CapacityRow(
        key=row.key, total_gpus=row.total_gpus, used_gpus=row.used_gpus, free_gpus=row.free_gpus,
        drained_gpus=row.drained_gpus, power_envelope_mw=row.power_envelope_mw, power_used_mw=row.power_used_mw,
    )
