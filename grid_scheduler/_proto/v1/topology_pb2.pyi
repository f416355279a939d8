import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_AI_FACTORY: _ClassVar[Tier]
    TIER_REGIONAL_HUB: _ClassVar[Tier]
    TIER_EDGE: _ClassVar[Tier]

class SiteHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SITE_HEALTH_UNSPECIFIED: _ClassVar[SiteHealth]
    SITE_HEALTH_NO_AGENT: _ClassVar[SiteHealth]
    SITE_HEALTH_HEALTHY: _ClassVar[SiteHealth]
    SITE_HEALTH_UNHEALTHY: _ClassVar[SiteHealth]
    SITE_HEALTH_LOST: _ClassVar[SiteHealth]
TIER_UNSPECIFIED: Tier
TIER_AI_FACTORY: Tier
TIER_REGIONAL_HUB: Tier
TIER_EDGE: Tier
SITE_HEALTH_UNSPECIFIED: SiteHealth
SITE_HEALTH_NO_AGENT: SiteHealth
SITE_HEALTH_HEALTHY: SiteHealth
SITE_HEALTH_UNHEALTHY: SiteHealth
SITE_HEALTH_LOST: SiteHealth

class Pool(_message.Message):
    __slots__ = ("id", "site_id", "gpu_type", "workload", "nodes", "gpus_per_node", "interconnect_domain_gpus", "total_gpus", "used_gpus", "free_gpus", "drained_gpus", "drained")
    ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    GPUS_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    INTERCONNECT_DOMAIN_GPUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_GPUS_FIELD_NUMBER: _ClassVar[int]
    USED_GPUS_FIELD_NUMBER: _ClassVar[int]
    FREE_GPUS_FIELD_NUMBER: _ClassVar[int]
    DRAINED_GPUS_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    id: str
    site_id: str
    gpu_type: str
    workload: str
    nodes: int
    gpus_per_node: int
    interconnect_domain_gpus: int
    total_gpus: int
    used_gpus: int
    free_gpus: int
    drained_gpus: int
    drained: bool
    def __init__(self, id: _Optional[str] = ..., site_id: _Optional[str] = ..., gpu_type: _Optional[str] = ..., workload: _Optional[str] = ..., nodes: _Optional[int] = ..., gpus_per_node: _Optional[int] = ..., interconnect_domain_gpus: _Optional[int] = ..., total_gpus: _Optional[int] = ..., used_gpus: _Optional[int] = ..., free_gpus: _Optional[int] = ..., drained_gpus: _Optional[int] = ..., drained: _Optional[bool] = ...) -> None: ...

class Site(_message.Message):
    __slots__ = ("id", "name", "tier", "country", "lat", "lon", "jurisdictions", "power_envelope_mw", "power_used_mw", "pue", "carbon_g_per_kwh", "energy_price_per_mwh", "pools")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    JURISDICTIONS_FIELD_NUMBER: _ClassVar[int]
    POWER_ENVELOPE_MW_FIELD_NUMBER: _ClassVar[int]
    POWER_USED_MW_FIELD_NUMBER: _ClassVar[int]
    PUE_FIELD_NUMBER: _ClassVar[int]
    CARBON_G_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    ENERGY_PRICE_PER_MWH_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    tier: Tier
    country: str
    lat: float
    lon: float
    jurisdictions: _containers.RepeatedScalarFieldContainer[str]
    power_envelope_mw: float
    power_used_mw: float
    pue: float
    carbon_g_per_kwh: float
    energy_price_per_mwh: float
    pools: _containers.RepeatedCompositeFieldContainer[Pool]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ..., country: _Optional[str] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., jurisdictions: _Optional[_Iterable[str]] = ..., power_envelope_mw: _Optional[float] = ..., power_used_mw: _Optional[float] = ..., pue: _Optional[float] = ..., carbon_g_per_kwh: _Optional[float] = ..., energy_price_per_mwh: _Optional[float] = ..., pools: _Optional[_Iterable[_Union[Pool, _Mapping]]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("id", "name", "country", "lat", "lon", "site_latencies")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    SITE_LATENCIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    country: str
    lat: float
    lon: float
    site_latencies: _containers.RepeatedCompositeFieldContainer[SiteLatency]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., country: _Optional[str] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., site_latencies: _Optional[_Iterable[_Union[SiteLatency, _Mapping]]] = ...) -> None: ...

class SiteLatency(_message.Message):
    __slots__ = ("site_id", "latency_ms")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    latency_ms: float
    def __init__(self, site_id: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class ListSitesRequest(_message.Message):
    __slots__ = ("tier", "jurisdiction")
    TIER_FIELD_NUMBER: _ClassVar[int]
    JURISDICTION_FIELD_NUMBER: _ClassVar[int]
    tier: Tier
    jurisdiction: str
    def __init__(self, tier: _Optional[_Union[Tier, str]] = ..., jurisdiction: _Optional[str] = ...) -> None: ...

class ListSitesResponse(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[Site]
    def __init__(self, sites: _Optional[_Iterable[_Union[Site, _Mapping]]] = ...) -> None: ...

class GetSiteRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetSiteResponse(_message.Message):
    __slots__ = ("site",)
    SITE_FIELD_NUMBER: _ClassVar[int]
    site: Site
    def __init__(self, site: _Optional[_Union[Site, _Mapping]] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class CapacityRow(_message.Message):
    __slots__ = ("key", "total_gpus", "used_gpus", "free_gpus", "drained_gpus", "power_envelope_mw", "power_used_mw")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOTAL_GPUS_FIELD_NUMBER: _ClassVar[int]
    USED_GPUS_FIELD_NUMBER: _ClassVar[int]
    FREE_GPUS_FIELD_NUMBER: _ClassVar[int]
    DRAINED_GPUS_FIELD_NUMBER: _ClassVar[int]
    POWER_ENVELOPE_MW_FIELD_NUMBER: _ClassVar[int]
    POWER_USED_MW_FIELD_NUMBER: _ClassVar[int]
    key: str
    total_gpus: int
    used_gpus: int
    free_gpus: int
    drained_gpus: int
    power_envelope_mw: float
    power_used_mw: float
    def __init__(self, key: _Optional[str] = ..., total_gpus: _Optional[int] = ..., used_gpus: _Optional[int] = ..., free_gpus: _Optional[int] = ..., drained_gpus: _Optional[int] = ..., power_envelope_mw: _Optional[float] = ..., power_used_mw: _Optional[float] = ...) -> None: ...

class GetCapacityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCapacityResponse(_message.Message):
    __slots__ = ("fleet", "by_site", "by_jurisdiction", "by_tier", "by_gpu_type")
    FLEET_FIELD_NUMBER: _ClassVar[int]
    BY_SITE_FIELD_NUMBER: _ClassVar[int]
    BY_JURISDICTION_FIELD_NUMBER: _ClassVar[int]
    BY_TIER_FIELD_NUMBER: _ClassVar[int]
    BY_GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    fleet: CapacityRow
    by_site: _containers.RepeatedCompositeFieldContainer[CapacityRow]
    by_jurisdiction: _containers.RepeatedCompositeFieldContainer[CapacityRow]
    by_tier: _containers.RepeatedCompositeFieldContainer[CapacityRow]
    by_gpu_type: _containers.RepeatedCompositeFieldContainer[CapacityRow]
    def __init__(self, fleet: _Optional[_Union[CapacityRow, _Mapping]] = ..., by_site: _Optional[_Iterable[_Union[CapacityRow, _Mapping]]] = ..., by_jurisdiction: _Optional[_Iterable[_Union[CapacityRow, _Mapping]]] = ..., by_tier: _Optional[_Iterable[_Union[CapacityRow, _Mapping]]] = ..., by_gpu_type: _Optional[_Iterable[_Union[CapacityRow, _Mapping]]] = ...) -> None: ...

class DrainPoolRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class DrainPoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class UndrainPoolRequest(_message.Message):
    __slots__ = ("pool_id",)
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    def __init__(self, pool_id: _Optional[str] = ...) -> None: ...

class UndrainPoolResponse(_message.Message):
    __slots__ = ("pool",)
    POOL_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ...) -> None: ...

class DrainNodesRequest(_message.Message):
    __slots__ = ("pool_id", "nodes")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool_id: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class DrainNodesResponse(_message.Message):
    __slots__ = ("pool", "drained_nodes")
    POOL_FIELD_NUMBER: _ClassVar[int]
    DRAINED_NODES_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    drained_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ..., drained_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class UndrainNodesRequest(_message.Message):
    __slots__ = ("pool_id", "nodes")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool_id: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class UndrainNodesResponse(_message.Message):
    __slots__ = ("pool", "drained_nodes")
    POOL_FIELD_NUMBER: _ClassVar[int]
    DRAINED_NODES_FIELD_NUMBER: _ClassVar[int]
    pool: Pool
    drained_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool: _Optional[_Union[Pool, _Mapping]] = ..., drained_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class FleetNode(_message.Message):
    __slots__ = ("pool_id", "node", "health", "reason")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    node: str
    health: str
    reason: str
    def __init__(self, pool_id: _Optional[str] = ..., node: _Optional[str] = ..., health: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class FleetSite(_message.Message):
    __slots__ = ("site_id", "agent_id", "health", "last_heartbeat", "generation", "nodes_total", "nodes_healthy", "nodes_failed", "nodes_draining", "gpus_up", "gpus_down", "nodes", "pools")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    NODES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    NODES_HEALTHY_FIELD_NUMBER: _ClassVar[int]
    NODES_FAILED_FIELD_NUMBER: _ClassVar[int]
    NODES_DRAINING_FIELD_NUMBER: _ClassVar[int]
    GPUS_UP_FIELD_NUMBER: _ClassVar[int]
    GPUS_DOWN_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    agent_id: str
    health: SiteHealth
    last_heartbeat: _timestamp_pb2.Timestamp
    generation: int
    nodes_total: int
    nodes_healthy: int
    nodes_failed: int
    nodes_draining: int
    gpus_up: int
    gpus_down: int
    nodes: _containers.RepeatedCompositeFieldContainer[FleetNode]
    pools: _containers.RepeatedCompositeFieldContainer[FleetPoolUsage]
    def __init__(self, site_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., health: _Optional[_Union[SiteHealth, str]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., generation: _Optional[int] = ..., nodes_total: _Optional[int] = ..., nodes_healthy: _Optional[int] = ..., nodes_failed: _Optional[int] = ..., nodes_draining: _Optional[int] = ..., gpus_up: _Optional[int] = ..., gpus_down: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[FleetNode, _Mapping]]] = ..., pools: _Optional[_Iterable[_Union[FleetPoolUsage, _Mapping]]] = ...) -> None: ...

class FleetPoolUsage(_message.Message):
    __slots__ = ("pool_id", "gpus_total", "gpus_used", "gpus_out", "gpus_free", "nodes_used", "fragmented_gpus", "largest_free_domain_gpus")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    GPUS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GPUS_USED_FIELD_NUMBER: _ClassVar[int]
    GPUS_OUT_FIELD_NUMBER: _ClassVar[int]
    GPUS_FREE_FIELD_NUMBER: _ClassVar[int]
    NODES_USED_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTED_GPUS_FIELD_NUMBER: _ClassVar[int]
    LARGEST_FREE_DOMAIN_GPUS_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    gpus_total: int
    gpus_used: int
    gpus_out: int
    gpus_free: int
    nodes_used: int
    fragmented_gpus: int
    largest_free_domain_gpus: int
    def __init__(self, pool_id: _Optional[str] = ..., gpus_total: _Optional[int] = ..., gpus_used: _Optional[int] = ..., gpus_out: _Optional[int] = ..., gpus_free: _Optional[int] = ..., nodes_used: _Optional[int] = ..., fragmented_gpus: _Optional[int] = ..., largest_free_domain_gpus: _Optional[int] = ...) -> None: ...

class GetFleetRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetFleetResponse(_message.Message):
    __slots__ = ("sites",)
    SITES_FIELD_NUMBER: _ClassVar[int]
    sites: _containers.RepeatedCompositeFieldContainer[FleetSite]
    def __init__(self, sites: _Optional[_Iterable[_Union[FleetSite, _Mapping]]] = ...) -> None: ...
