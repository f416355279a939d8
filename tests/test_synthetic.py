"""The synthetic grid generator: valid, the size asked for, connected, deterministic."""

from __future__ import annotations

from functools import cache

import networkx as nx
import numpy as np
import pytest

from grid_scheduler.model import Grid, JobKind
from grid_scheduler.model.job import violations_against_grid
from grid_scheduler.model.jurisdictions import EU_MEMBERS
from grid_scheduler.synthetic import job_stream, synthetic_grid
from grid_scheduler.topology import Topology
from grid_scheduler.topology.graph import build_graph

SIZES = [(500, 2000, 266_000), (50, 200, 26_600), (120, 300, 40_000), (10, 10, 5_000)]


@cache
def grid_of(sites: int, pools: int, gpus: int, seed: int = 0) -> Grid:
    return synthetic_grid(sites, pools, gpus, seed)


def total_gpus(grid: Grid) -> int:
    return sum(p.total_gpus for s in grid.sites for p in s.pools)


@pytest.mark.parametrize(("sites", "pools", "gpus"), SIZES)
def test_validates_and_has_the_requested_size(sites: int, pools: int, gpus: int) -> None:
    grid = grid_of(sites, pools, gpus)
    assert Grid.model_validate(grid.model_dump()) == grid
    assert len(grid.sites) == sites
    assert sum(len(s.pools) for s in grid.sites) == pools
    assert abs(total_gpus(grid) - gpus) <= 0.10 * gpus


@pytest.mark.parametrize(("sites", "pools", "gpus"), SIZES)
def test_every_endpoint_reaches_every_site(sites: int, pools: int, gpus: int) -> None:
    grid = grid_of(sites, pools, gpus)
    assert nx.is_connected(build_graph(grid))
    latency = Topology.from_grid(grid).endpoint_site_latency_ms
    assert latency.shape == (len(grid.endpoints), sites)
    assert np.isfinite(latency).all()


def test_same_seed_same_grid_other_seed_other_grid() -> None:
    assert synthetic_grid(60, 240, 30_000, seed=7) == synthetic_grid(60, 240, 30_000, seed=7)
    assert synthetic_grid(60, 240, 30_000, seed=7) != synthetic_grid(60, 240, 30_000, seed=8)
    assert synthetic_grid().model_dump_json() == grid_of(500, 2000, 266_000).model_dump_json()


def test_realistic_mix() -> None:
    grid = grid_of(500, 2000, 266_000)
    allowed_countries = EU_MEMBERS | {"NO", "GB", "US", "CH"}
    assert {s.location.country for s in grid.sites} <= allowed_countries
    assert {e.location.country for e in grid.endpoints} <= allowed_countries
    factories = [s for s in grid.sites if s.tier.value == "ai_factory"]
    assert 1 <= len(factories) <= 10
    for site in grid.sites:
        for pool in site.pools:
            if site.tier.value == "ai_factory":
                assert pool.gpu_type in {"GB300", "VR200", "B200"}
                assert pool.total_gpus >= 1000
            else:
                assert pool.gpu_type in {"H100", "H200", "B200"}
                assert 8 <= pool.total_gpus <= 256
    assert len(grid.endpoints) == 100


def test_power_envelopes_fit_the_gpus_with_headroom() -> None:
    grid = grid_of(500, 2000, 266_000)
    kw = grid.gpu_type_by_name
    for site in grid.sites:
        draw_mw = sum(p.total_gpus * kw[p.gpu_type].board_power_kw for p in site.pools) * site.pue / 1000
        assert 1.10 * draw_mw <= site.power_envelope_mw <= 1.40 * draw_mw + 0.001, site.id


def test_job_stream_is_valid_mixed_and_deterministic() -> None:
    grid = grid_of(120, 300, 40_000)
    jobs = job_stream(grid, 300, seed=3)
    assert jobs == job_stream(grid, 300, seed=3)
    assert jobs != job_stream(grid, 300, seed=4)
    assert all(violations_against_grid(job, grid) == [] for job in jobs)
    assert {job.kind for job in jobs} == {JobKind.TRAINING, JobKind.INFERENCE}
    assert {tuple(job.residency.allowed) for job in jobs} >= {(), ("EU",), ("UK",)}
