"""The grid file: GPU types, sites with their pools, endpoints, links and datasets.

A grid is validated as a whole when it is loaded: ids are unique, every reference
resolves, no link claims to beat light in fibre. Errors carry the path of the bad
field so the file's author can find it (``sites[3].pools[0].gpus_per_node``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from grid_scheduler.model.geo import great_circle_km, light_floor_ms
from grid_scheduler.model.jurisdictions import contradicting_tag, derived_tags

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
Tag = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
MAX_RESIDENCY_TAGS = 64  # tags in each of a residency rule's allowed and denied lists


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Tier(StrEnum):
    AI_FACTORY = "ai_factory"
    REGIONAL_HUB = "regional_hub"
    EDGE = "edge"


class Workload(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"
    ANY = "any"


class GpuType(Frozen):
    name: Annotated[str, Field(min_length=1, max_length=32)]
    memory_gib: float = Field(gt=0)
    board_power_kw: float = Field(gt=0, description="board power per GPU")
    note: str = ""


class Location(Frozen):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]

    @field_validator("country", mode="before")
    @classmethod
    def _yaml_norway(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted NO as false; say so rather than "not a string".
        if isinstance(value, bool):
            raise PydanticCustomError("country", "got a boolean: quote country codes in YAML ('NO', not NO)")
        return value


class Pool(Frozen):
    """A scale unit inside a site: identical nodes of one GPU type."""

    id: Id
    gpu_type: str
    nodes: int = Field(gt=0)
    # At most 255: the Redis ledger keeps a node's used GPUs in one byte (state/redis_store.py).
    gpus_per_node: int = Field(gt=0, le=255)
    interconnect_domain_gpus: int = Field(default=8, gt=0)
    workload: Workload = Workload.ANY
    drained_nodes: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _drained_within_nodes(self) -> Pool:
        if self.drained_nodes > self.nodes:
            raise PydanticCustomError(
                "drained_nodes", "drained_nodes {d} > nodes {n}", {"d": self.drained_nodes, "n": self.nodes}
            )
        return self

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def healthy_gpus(self) -> int:
        return (self.nodes - self.drained_nodes) * self.gpus_per_node

    # Topology inside the pool (issue 11). Nodes are numbered 0..nodes-1; node i belongs to
    # interconnect domain i // nodes_per_domain (an NVL72 rack: 18 nodes x 4 GPUs). The grid
    # file's drained_nodes are the pool's last nodes.
    @property
    def nodes_per_domain(self) -> int:
        return max(1, self.interconnect_domain_gpus // self.gpus_per_node)

    @property
    def domain_gpus(self) -> int:
        """GPUs in one whole interconnect domain (what a whole-domain gang takes)."""
        return self.nodes_per_domain * self.gpus_per_node

    @property
    def domains(self) -> int:
        """Domains in the pool; the last one is partial when nodes is not a multiple."""
        return -(-self.nodes // self.nodes_per_domain)


class Site(Frozen):
    id: Id
    name: str = ""
    tier: Tier
    location: Location
    jurisdictions: list[Tag] = Field(default_factory=list, description="tags beyond those the country implies")
    power_envelope_mw: float = Field(gt=0)
    pue: float = Field(default=1.2, ge=1.0, le=3.0)
    carbon_g_per_kwh: float = Field(default=300.0, ge=0)
    energy_price_per_mwh: float = Field(default=100.0, ge=0)
    pools: list[Pool] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tags_agree_with_country(self) -> Site:
        bad = contradicting_tag(self.location.country, self.jurisdictions)
        if bad is not None:
            raise PydanticCustomError(
                "jurisdiction",
                "{tag} does not apply to a site in {country}",
                {"tag": bad, "country": self.location.country},
            )
        return self

    @cached_property
    def tags(self) -> frozenset[str]:
        """Every jurisdiction tag the site carries: derived from its country, plus its own."""
        return derived_tags(self.location.country) | frozenset(self.jurisdictions)


class Endpoint(Frozen):
    """A place where users or devices are; inference demand attaches here."""

    id: Id
    name: str = ""
    location: Location


class Link(Frozen):
    a: Id
    b: Id
    latency_ms: float | None = Field(default=None, gt=0, description="one way; derived from distance if absent")
    bandwidth_gbps: float = Field(default=100.0, gt=0)


class ResidencyRule(Frozen):
    """Where data or compute may live: at least one of ``allowed`` (if any), none of ``denied``."""

    allowed: list[Tag] = Field(default_factory=list, max_length=MAX_RESIDENCY_TAGS)
    denied: list[Tag] = Field(default_factory=list, max_length=MAX_RESIDENCY_TAGS)

    def admits(self, tags: frozenset[str]) -> bool:
        if self.allowed and tags.isdisjoint(self.allowed):
            return False
        return tags.isdisjoint(self.denied)

    def describe(self) -> str:
        parts = []
        if self.allowed:
            parts.append(" or ".join(self.allowed))
        if self.denied:
            parts.append("not " + " nor ".join(self.denied))
        return " and ".join(parts) or "anywhere"


class Dataset(Frozen):
    id: Id
    size_tb: float = Field(ge=0)
    home_site: Id
    residency: ResidencyRule = Field(default_factory=ResidencyRule)


class Grid(Frozen):
    name: Id
    path_stretch: float = Field(
        default=1.5, ge=1.0, le=5.0, description="fibre route length / great-circle distance for derived latency"
    )
    gpu_types: list[GpuType]
    sites: list[Site]
    endpoints: list[Endpoint] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    datasets: list[Dataset] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references_resolve(self) -> Grid:
        errors: list[InitErrorDetails] = []

        def fail(loc: tuple[str | int, ...], message: str) -> None:
            errors.append({"type": PydanticCustomError("reference", message), "loc": loc, "input": None})

        gpu_names = _first_index((g.name for g in self.gpu_types), ("gpu_types",), "name", fail)
        places = _first_index((s.id for s in self.sites), ("sites",), "id", fail)
        pool_ids: dict[str, tuple[int, int]] = {}
        for si, site in enumerate(self.sites):
            for pi, pool in enumerate(site.pools):
                loc: tuple[str | int, ...] = ("sites", si, "pools", pi)
                if pool.gpu_type not in gpu_names:
                    fail((*loc, "gpu_type"), f"unknown GPU type {pool.gpu_type!r}")
                if pool.id in pool_ids:
                    fail((*loc, "id"), f"duplicate pool id {pool.id!r}")
                pool_ids[pool.id] = (si, pi)
        for ei, endpoint in enumerate(self.endpoints):
            if endpoint.id in places:
                fail(("endpoints", ei, "id"), f"id {endpoint.id!r} is already used by a site or endpoint")
            places[endpoint.id] = ei
        locations = {s.id: s.location for s in self.sites} | {e.id: e.location for e in self.endpoints}
        for li, link in enumerate(self.links):
            for end in ("a", "b"):
                if getattr(link, end) not in places:
                    fail(("links", li, end), f"unknown site or endpoint {getattr(link, end)!r}")
            if link.a == link.b:
                fail(("links", li, "b"), "a link must join two different places")
            elif link.latency_ms is not None and link.a in locations and link.b in locations:
                la, lb = locations[link.a], locations[link.b]
                km = great_circle_km(la.lat, la.lon, lb.lat, lb.lon)
                if link.latency_ms < light_floor_ms(km):
                    fail(
                        ("links", li, "latency_ms"),
                        f"{link.latency_ms} ms is faster than light in fibre over {km:.0f} km "
                        f"(at least {light_floor_ms(km):.2f} ms)",
                    )
        site_ids = {s.id for s in self.sites}
        for di, dataset in enumerate(self.datasets):
            if dataset.home_site not in site_ids:
                fail(("datasets", di, "home_site"), f"unknown site {dataset.home_site!r}")
        _first_index((d.id for d in self.datasets), ("datasets",), "id", fail)
        if errors:
            raise ValidationError.from_exception_data("Grid", errors)
        return self

    @cached_property
    def gpu_type_by_name(self) -> dict[str, GpuType]:
        return {g.name: g for g in self.gpu_types}

    @cached_property
    def site_by_id(self) -> dict[str, Site]:
        return {s.id: s for s in self.sites}

    @cached_property
    def pool_by_id(self) -> dict[str, tuple[Site, Pool]]:
        return {p.id: (s, p) for s in self.sites for p in s.pools}

    @cached_property
    def endpoint_by_id(self) -> dict[str, Endpoint]:
        return {e.id: e for e in self.endpoints}

    @cached_property
    def dataset_by_id(self) -> dict[str, Dataset]:
        return {d.id: d for d in self.datasets}


def _first_index(
    values: Iterable[str],
    loc: tuple[str | int, ...],
    field: str,
    fail: Callable[[tuple[str | int, ...], str], None],
) -> dict[str, int]:
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if value in seen:
            fail((*loc, i, field), f"duplicate {field} {value!r}")
        else:
            seen[value] = i
    return seen
