"""Large, deterministic, plausible grids and job streams for benchmarks and tests.

``synthetic_grid`` builds a :class:`~grid_scheduler.model.Grid` directly (no YAML): a few
AI factories with big NVL72 / HGX pools, many regional hubs and edge sites with small
HGX pools, spread over the EU, Norway, the UK, Switzerland and the US. Every figure is
illustrative. Power envelopes fit the GPUs with 10-40 % headroom; links form a connected
graph (an MST plus nearest-neighbour mesh between hubs and factories, each edge site to
its nearest hub or factory, each endpoint to its nearest sites); site-to-site latencies
are left out so the topology derives them from distance.

``synthetic_job`` / ``job_stream`` draw valid training and inference jobs for a grid.
The same seed always gives the same grid and the same jobs.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from grid_scheduler.model import (
    Dataset,
    Demand,
    Endpoint,
    GpuRequest,
    GpuType,
    Grid,
    InferenceSpec,
    JobKind,
    JobSpec,
    Link,
    Location,
    Pool,
    ResidencyRule,
    Site,
    Tier,
    TrainingSpec,
)
from grid_scheduler.model.geo import EARTH_RADIUS_KM, FIBRE_KM_PER_MS
from grid_scheduler.model.grid import Workload
from grid_scheduler.model.jurisdictions import derived_tags

GPU_TYPES = (
    GpuType(name="H100", memory_gib=80, board_power_kw=0.7),
    GpuType(name="H200", memory_gib=141, board_power_kw=0.7),
    GpuType(name="B200", memory_gib=180, board_power_kw=1.0),
    GpuType(name="GB300", memory_gib=288, board_power_kw=1.4),
    GpuType(name="VR200", memory_gib=288, board_power_kw=1.8, note="board power is an estimate"),
)
_BOARD_KW = {g.name: g.board_power_kw for g in GPU_TYPES}
SMALL_TYPES = ("H100", "H200", "B200")  # HGX: 8 GPUs per node, 8 per NVLink domain
RACK_GPUS = 72  # GB300 / VR200 NVL72: 18 trays x 4 GPUs


@dataclass(frozen=True)
class Country:
    code: str
    weight: float  # share of hubs and edge sites
    carbon_g_per_kwh: float
    price_per_mwh: float
    metros: tuple[tuple[str, float, float], ...]  # (id, lat, lon)


# Carbon intensity and industrial energy prices are rough, illustrative figures.
COUNTRIES: tuple[Country, ...] = (
    Country("AT", 2, 110, 120, (("vienna", 48.21, 16.37), ("graz", 47.07, 15.44))),
    Country("BE", 2, 150, 130, (("brussels", 50.85, 4.35), ("antwerp", 51.22, 4.40))),
    Country("BG", 1, 400, 110, (("sofia", 42.70, 23.32),)),
    Country("HR", 0.7, 200, 120, (("zagreb", 45.81, 15.98),)),
    Country("CY", 0.4, 600, 180, (("nicosia", 35.17, 33.36),)),
    Country("CZ", 1.5, 430, 130, (("prague", 50.08, 14.44), ("brno", 49.20, 16.61))),
    Country("DK", 1.5, 130, 110, (("copenhagen", 55.68, 12.57), ("aarhus", 56.16, 10.20))),
    Country("EE", 0.5, 550, 110, (("tallinn", 59.44, 24.75),)),
    Country("FI", 1.5, 80, 70, (("helsinki", 60.17, 24.94), ("tampere", 61.50, 23.76))),
    Country("FR", 8, 50, 100, (("paris", 48.86, 2.35), ("lyon", 45.76, 4.84), ("marseille", 43.30, 5.37),
                               ("toulouse", 43.60, 1.44), ("lille", 50.63, 3.06))),
    Country("DE", 9, 350, 140, (("frankfurt", 50.11, 8.68), ("berlin", 52.52, 13.40), ("munich", 48.14, 11.58),
                                ("hamburg", 53.55, 9.99), ("dusseldorf", 51.23, 6.78))),
    Country("GR", 1, 350, 120, (("athens", 37.98, 23.73),)),
    Country("HU", 1, 200, 120, (("budapest", 47.50, 19.04),)),
    Country("IE", 3, 280, 170, (("dublin", 53.35, -6.26), ("cork", 51.90, -8.47))),
    Country("IT", 5, 250, 140, (("milan", 45.46, 9.19), ("rome", 41.90, 12.50), ("turin", 45.07, 7.69))),
    Country("LV", 0.4, 120, 120, (("riga", 56.95, 24.11),)),
    Country("LT", 0.4, 150, 120, (("vilnius", 54.69, 25.28),)),
    Country("LU", 0.5, 80, 120, (("luxembourg", 49.61, 6.13),)),
    Country("MT", 0.3, 400, 150, (("valletta", 35.90, 14.51),)),
    Country("NL", 5, 300, 120, (("amsterdam", 52.37, 4.90), ("rotterdam", 51.92, 4.48),
                                ("eindhoven", 51.44, 5.48))),
    Country("PL", 3, 650, 130, (("warsaw", 52.23, 21.01), ("krakow", 50.06, 19.94))),
    Country("PT", 2, 120, 80, (("lisbon", 38.72, -9.14), ("porto", 41.15, -8.61))),
    Country("RO", 1.5, 250, 110, (("bucharest", 44.43, 26.10),)),
    Country("SK", 0.7, 110, 120, (("bratislava", 48.15, 17.11),)),
    Country("SI", 0.5, 220, 120, (("ljubljana", 46.06, 14.51),)),
    Country("ES", 5, 130, 90, (("madrid", 40.42, -3.70), ("barcelona", 41.39, 2.17), ("valencia", 39.47, -0.38))),
    Country("SE", 3, 40, 60, (("stockholm", 59.33, 18.07), ("gothenburg", 57.71, 11.97))),
    Country("NO", 2, 20, 50, (("oslo", 59.91, 10.75), ("bergen", 60.39, 5.32))),
    Country("GB", 8, 170, 160, (("london", 51.51, -0.13), ("manchester", 53.48, -2.24),
                                ("birmingham", 52.49, -1.89), ("edinburgh", 55.95, -3.19))),
    Country("CH", 2, 40, 130, (("zurich", 47.38, 8.54), ("geneva", 46.20, 6.14))),
    Country("US", 22, 380, 80, (("ashburn", 39.04, -77.49), ("new-york", 40.71, -74.01), ("chicago", 41.88, -87.63),
                                ("dallas", 32.78, -96.80), ("atlanta", 33.75, -84.39), ("san-jose", 37.34, -121.89),
                                ("los-angeles", 34.05, -118.24), ("seattle", 47.61, -122.33),
                                ("phoenix", 33.45, -112.07), ("denver", 39.74, -104.99), ("boston", 42.36, -71.06),
                                ("miami", 25.76, -80.19))),
)
_COUNTRY = {c.code: c for c in COUNTRIES}

# Where AI factories go: cheap power and land, away from metro centres. Used in order, then cycled.
FACTORY_LOCATIONS: tuple[tuple[str, str, float, float], ...] = (
    ("US", "west-virginia", 38.84, -82.14),
    ("PT", "sines", 37.95, -8.83),
    ("NO", "glomfjord", 66.81, 13.95),
    ("GB", "essex", 51.65, 0.07),
    ("US", "texas", 31.90, -102.10),
    ("SE", "lulea", 65.58, 22.15),
    ("FI", "kajaani", 64.22, 27.73),
    ("ES", "aragon", 41.65, -0.88),
    ("US", "iowa", 41.60, -93.60),
    ("FR", "dunkirk", 51.03, 2.37),
    ("DK", "esbjerg", 55.47, 8.45),
    ("DE", "brandenburg", 52.40, 13.00),
)


# --- the grid --------------------------------------------------------------------------------


def synthetic_grid(sites: int = 500, pools: int = 2000, gpus_target: int = 266_000, seed: int = 0) -> Grid:
    """A connected grid with exactly ``sites`` sites and ``pools`` pools, ~``gpus_target`` GPUs."""
    if sites < 3:
        raise ValueError("a synthetic grid needs at least 3 sites")
    if pools < sites:
        raise ValueError("every site has at least one pool: pools must be >= sites")
    rng = random.Random(seed)
    n_factories = max(1, round(sites / 100))
    n_hubs = max(1, round(sites * 0.16))
    n_small = sites - n_factories
    per_factory = max(1, min(12, (pools - n_small) // n_factories, max(2, round(pools * 0.02 / n_factories))))
    # Every hub and edge site has one pool; the rest go to hubs (weight 3) and edges (weight 1).
    small_counts = [1] * n_small
    extra = pools - n_small - per_factory * n_factories
    for i in rng.choices(range(n_small), weights=[3.0 if i < n_hubs else 1.0 for i in range(n_small)], k=extra):
        small_counts[i] += 1

    small_pools = [[_small_pool_shape(rng, i < n_hubs) for _ in range(small_counts[i])]
                   for i in range(n_small)]
    small_total = sum(n * 8 for site in small_pools for _, n, _ in site)
    if small_total > 0.45 * gpus_target:  # keep most GPUs in the factories, as in real grids
        scale = 0.45 * gpus_target / small_total
        small_pools = [[(t, max(1, round(n * scale)), w) for t, n, w in site] for site in small_pools]
        small_total = sum(n * 8 for site in small_pools for _, n, _ in site)
    factory_budget = max(gpus_target - small_total, n_factories * per_factory * RACK_GPUS)

    built: list[Site] = []
    weights = [c.weight for c in COUNTRIES]
    for f in range(n_factories):
        code, place, lat, lon = FACTORY_LOCATIONS[f % len(FACTORY_LOCATIONS)]
        if f >= len(FACTORY_LOCATIONS):
            lat, lon = lat + rng.uniform(-1.0, 1.0), lon + rng.uniform(-1.0, 1.0)
        site_id = f"factory-{code.lower()}-{place}-{f:02d}"
        shares = [rng.uniform(0.5, 1.5) for _ in range(per_factory)]
        budget = factory_budget / n_factories
        shapes = [_factory_pool_shape(rng, budget * s / sum(shares)) for s in shares]
        built.append(_site(rng, site_id, f"{place} AI factory", Tier.AI_FACTORY, code, lat, lon, shapes))
    metro_sites: Counter[tuple[str, str, float, float]] = Counter()
    for i in range(n_small):
        hub = i < n_hubs
        country = rng.choices(COUNTRIES, weights=weights)[0]
        metro, lat, lon = rng.choice(country.metros)
        metro_sites[(country.code, metro, lat, lon)] += 1
        spread_lat, spread_lon = (0.1, 0.15) if hub else (0.6, 0.9)
        lat, lon = lat + rng.uniform(-spread_lat, spread_lat), lon + rng.uniform(-spread_lon, spread_lon)
        tier, word = (Tier.REGIONAL_HUB, "hub") if hub else (Tier.EDGE, "edge")
        site_id = f"{word}-{country.code.lower()}-{metro}-{i:03d}"
        built.append(_site(rng, site_id, f"{metro} {word} {i}", tier, country.code, lat, lon, small_pools[i]))

    endpoints = _endpoints(rng, metro_sites, max(1, round(sites / 5)))
    return Grid(
        name=f"synthetic-{sites}-{pools}-{seed}",
        gpu_types=list(GPU_TYPES),
        sites=built,
        endpoints=endpoints,
        links=_links(built, endpoints),
        datasets=_datasets(rng, built[:n_factories]),
    )


PoolShape = tuple[str, int, Workload]  # gpu type, nodes, workload


def _small_pool_shape(rng: random.Random, hub: bool) -> PoolShape:
    """HGX servers of 8 GPUs: 32-256 GPUs at a hub, 8-64 at the edge."""
    gpu_type = rng.choice(SMALL_TYPES)
    if hub:
        return gpu_type, rng.choice((4, 8, 16, 32)), rng.choice((Workload.ANY, Workload.ANY, Workload.INFERENCE))
    return gpu_type, rng.choice((1, 2, 4, 8)), rng.choice((Workload.INFERENCE, Workload.INFERENCE, Workload.ANY))


def _factory_pool_shape(rng: random.Random, gpus: float) -> PoolShape:
    """Whole NVL72 racks of GB300 / VR200, or HGX B200 servers."""
    gpu_type = rng.choices(("GB300", "VR200", "B200"), weights=(2, 1, 1))[0]
    workload = rng.choices((Workload.TRAINING, Workload.ANY), weights=(7, 3))[0]
    if gpu_type == "B200":
        return gpu_type, max(1, round(gpus / 8)), workload
    return gpu_type, max(1, round(gpus / RACK_GPUS)) * (RACK_GPUS // 4), workload


def _site(
    rng: random.Random, site_id: str, name: str, tier: Tier, code: str, lat: float, lon: float,
    shapes: list[PoolShape],
) -> Site:
    country = _COUNTRY[code]
    pue = {Tier.AI_FACTORY: rng.uniform(1.08, 1.25), Tier.REGIONAL_HUB: rng.uniform(1.2, 1.4),
           Tier.EDGE: rng.uniform(1.3, 1.5)}[tier]
    pools = []
    for j, (gpu_type, nodes, workload) in enumerate(shapes):
        per_node = 8 if gpu_type in SMALL_TYPES else 4
        domain = 8 if gpu_type in SMALL_TYPES else RACK_GPUS
        drained = 1 if tier is not Tier.AI_FACTORY and nodes > 1 and rng.random() < 0.02 else 0
        pools.append(Pool(id=f"{site_id}-p{j}", gpu_type=gpu_type, nodes=nodes, gpus_per_node=per_node,
                          interconnect_domain_gpus=domain, workload=workload, drained_nodes=drained))
    pue = round(pue, 2)
    draw_kw = sum(p.total_gpus * _BOARD_KW[p.gpu_type] for p in pools) * pue
    envelope_mw = math.ceil(draw_kw * (1.0 + rng.uniform(0.10, 0.40))) / 1000.0  # whole kW, rounded up
    return Site(
        id=site_id,
        name=name,
        tier=tier,
        location=Location(lat=round(max(-90.0, min(90.0, lat)), 4), lon=round(lon, 4), country=code),
        power_envelope_mw=envelope_mw,
        pue=pue,
        carbon_g_per_kwh=round(country.carbon_g_per_kwh * rng.uniform(0.85, 1.15), 1),
        energy_price_per_mwh=round(country.price_per_mwh * rng.uniform(0.85, 1.15), 1),
        pools=pools,
    )


def _endpoints(rng: random.Random, metro_sites: Counter[tuple[str, str, float, float]], count: int) -> list[Endpoint]:
    """Metro centres, those with most sites first; beyond the list, extra zones per metro."""
    metros = [(c.code, m, lat, lon) for c in COUNTRIES for m, lat, lon in c.metros]
    ranked = sorted(metros, key=lambda k: -metro_sites[k])  # stable: table order breaks ties
    out = []
    for i in range(count):
        code, metro, lat, lon = ranked[i % len(ranked)]
        zone = i // len(ranked)
        if zone:
            metro, lat, lon = f"{metro}-{zone + 1}", lat + rng.uniform(-0.3, 0.3), lon + rng.uniform(-0.4, 0.4)
        out.append(Endpoint(id=metro, name=metro.replace("-", " ").title(),
                            location=Location(lat=round(lat, 4), lon=round(lon, 4), country=code)))
    return out


FloatMatrix = npt.NDArray[np.float64]


def _km_matrix(a: list[Location], b: list[Location]) -> FloatMatrix:
    lat_a = np.radians([p.lat for p in a])[:, None]
    lon_a = np.radians([p.lon for p in a])[:, None]
    lat_b = np.radians([p.lat for p in b])[None, :]
    lon_b = np.radians([p.lon for p in b])[None, :]
    h = np.sin((lat_b - lat_a) / 2) ** 2 + np.cos(lat_a) * np.cos(lat_b) * np.sin((lon_b - lon_a) / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h))), dtype=np.float64)


def _links(sites: list[Site], endpoints: list[Endpoint]) -> list[Link]:
    """Backbone (hubs, factories): MST plus each node's 2 nearest; edges to their nearest backbone
    site; endpoints to their nearest site and nearest backbone site. Site links derive latency."""
    backbone = [i for i, s in enumerate(sites) if s.tier is not Tier.EDGE]
    edges = [i for i, s in enumerate(sites) if s.tier is Tier.EDGE]
    locations = [s.location for s in sites]
    pairs: dict[tuple[int, int], None] = {}  # ordered set of site pairs

    def join(i: int, j: int) -> None:
        pairs[(min(i, j), max(i, j))] = None

    bb_km = _km_matrix([locations[i] for i in backbone], [locations[i] for i in backbone])
    for a, b in _mst(bb_km):
        join(backbone[a], backbone[b])
    for a in range(len(backbone)):
        for b in np.argsort(bb_km[a], kind="stable")[1:3]:
            join(backbone[a], backbone[int(b)])
    if edges:
        edge_km = _km_matrix([locations[i] for i in edges], [locations[i] for i in backbone])
        for e, b in zip(edges, edge_km.argmin(axis=1), strict=True):
            join(e, backbone[int(b)])

    def bandwidth(i: int, j: int) -> float:
        tiers = {sites[i].tier, sites[j].tier}
        return 3200.0 if Tier.AI_FACTORY in tiers else 400.0 if Tier.EDGE in tiers else 1600.0

    links = [Link(a=sites[i].id, b=sites[j].id, bandwidth_gbps=bandwidth(i, j)) for i, j in pairs]
    ep_km = _km_matrix([e.location for e in endpoints], locations)
    for e, endpoint in enumerate(endpoints):
        nearest = {int(ep_km[e].argmin()), backbone[int(ep_km[e, backbone].argmin())]}
        for s in sorted(nearest):
            # Metro access: fibre over the distance (stretched) plus switching, never below the light floor.
            latency_ms = round(0.3 + 1.5 * float(ep_km[e, s]) / FIBRE_KM_PER_MS, 3)
            links.append(Link(a=endpoint.id, b=sites[s].id, latency_ms=latency_ms,
                              bandwidth_gbps=100.0 if sites[s].tier is Tier.EDGE else 400.0))
    return links


def _mst(km: FloatMatrix) -> list[tuple[int, int]]:
    """Prim's algorithm over a dense distance matrix; edges as (parent, child)."""
    n = km.shape[0]
    in_tree = np.zeros(n, dtype=np.bool_)
    in_tree[0] = True
    best = km[0].copy()
    parent = np.zeros(n, dtype=np.int64)
    out = []
    for _ in range(n - 1):
        child = int(np.argmin(np.where(in_tree, np.inf, best)))
        out.append((int(parent[child]), child))
        in_tree[child] = True
        closer = km[child] < best
        best = np.where(closer, km[child], best)
        parent = np.where(closer, child, parent)
    return out


def _datasets(rng: random.Random, factories: list[Site]) -> list[Dataset]:
    """One training corpus per factory, bound to the factory's bloc (EU, UK) where it has one."""
    out = []
    for site in factories:
        tags = derived_tags(site.location.country)
        allowed = ["EU"] if "EU" in tags else ["UK"] if "UK" in tags else []
        out.append(Dataset(id=f"corpus-{site.id}", size_tb=round(rng.uniform(20, 500), 1), home_site=site.id,
                           residency=ResidencyRule(allowed=allowed)))
    return out


# --- jobs ------------------------------------------------------------------------------------

TENANTS = ("acme-ai", "eu-bank", "uk-gov", "media-co", "robotics-lab")
RESIDENCY_CHOICES: tuple[tuple[tuple[str, ...], float], ...] = (
    ((), 0.40), (("EU",), 0.30), (("UK",), 0.10), (("EU", "UK"), 0.10), (("EEA",), 0.05), (("US",), 0.05),
)


def synthetic_job(rng: random.Random, grid: Grid, n: int = 0, inference_share: float = 0.6) -> JobSpec:
    """A valid job for ``grid``: mostly small inference deployments and mid-size training, a few big
    factory-scale (1,024-4,096 GPU) training gangs; residency EU / UK / EU-or-UK / EEA / US / none."""
    allowed = rng.choices([r for r, _ in RESIDENCY_CHOICES], weights=[w for _, w in RESIDENCY_CHOICES])[0]
    residency = ResidencyRule(allowed=list(allowed))
    names = sorted(grid.gpu_type_by_name)
    big = [t for t in names if grid.gpu_type_by_name[t].memory_gib >= 200]
    small = [t for t in names if t not in big]
    tenant = rng.choice(TENANTS)
    endpoints = [e.id for e in grid.endpoints if residency.admits(derived_tags(e.location.country))]
    if rng.random() < inference_share and endpoints:
        demand = rng.sample(endpoints, k=min(len(endpoints), rng.choice((1, 1, 2, 3))))
        return JobSpec(
            name=f"inference-{n:06d}", tenant=tenant, kind=JobKind.INFERENCE,
            gpus=GpuRequest(count=rng.choice((1, 2, 4, 8)), types=rng.choice((small, [], small[-1:]))),
            priority=rng.choice((100, 200, 300)), residency=residency,
            inference=InferenceSpec(
                replicas=rng.choice((1, 2, 2, 3, 4, 8)),
                demand=[Demand(endpoint=e, weight=round(rng.uniform(0.2, 1.0), 2)) for e in demand],
                latency_slo_ms=rng.choice((10.0, 20.0, 30.0, 50.0)),
            ),
        )
    if rng.random() < 0.1:  # factory scale
        count, types, gang = rng.choice((1024, 2048, 4096)), big, True
    else:
        count, types, gang = rng.choice((8, 16, 32, 64, 128, 256)), rng.choice((small, big, [])), rng.random() < 0.8
    datasets = [d.id for d in grid.datasets
                if residency.admits(grid.site_by_id[d.home_site].tags) and rng.random() < 0.15][:1]
    return JobSpec(
        name=f"training-{n:06d}", tenant=tenant, kind=JobKind.TRAINING,
        gpus=GpuRequest(count=count, types=types), gang=gang, priority=rng.choice((0, 100, 500)),
        preemptible=rng.random() < 0.3, residency=residency,
        training=TrainingSpec(duration_hours=rng.choice((1.0, 24.0, 168.0)), datasets=datasets),
    )


def job_stream(grid: Grid, count: int, seed: int = 0, inference_share: float = 0.6) -> list[JobSpec]:
    """``count`` jobs from ``synthetic_job``; the same seed gives the same stream."""
    rng = random.Random(seed)
    return [synthetic_job(rng, grid, n, inference_share) for n in range(count)]
