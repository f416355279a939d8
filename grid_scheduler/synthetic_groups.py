"""``synthetic.job_stream``'s jobs as groups of equal specs, cheap enough for a million jobs.

``job_stream`` validates one ``JobSpec`` per job and, per job, re-derives the endpoints and
datasets its residency admits (250 endpoints on a 5,000-pool grid): ~0.8 ms and ~3.5 KB a job,
12.5 min and 3.5 GB for 1M. Here the same random draws, in the same order, give a tuple per
job; a spec is validated once per distinct tuple (its parts, which repeat, shared between
specs: they are frozen), and the job ids (the names ``job_stream`` would give) are grouped
under it (``engine.batch_input.JobGroup``). Flattened, the groups are ``job_stream``'s jobs
(tests/test_batch_compact.py checks it field for field).
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Hashable
from itertools import accumulate
from typing import Any

from grid_scheduler.engine.batch_input import JobGroup
from grid_scheduler.model import (
    Demand,
    GpuRequest,
    GpuTopology,
    Grid,
    InferenceSpec,
    JobKind,
    JobSpec,
    ResidencyRule,
    TrainingSpec,
)
from grid_scheduler.model.jurisdictions import derived_tags
from grid_scheduler.synthetic import RESIDENCY_CHOICES, TENANTS


class _Parts:
    """What ``synthetic_job`` recomputes per job, once per grid; and shared spec parts."""

    def __init__(self, grid: Grid) -> None:
        names = sorted(grid.gpu_type_by_name)
        self.big = [t for t in names if grid.gpu_type_by_name[t].memory_gib >= 200]
        self.small = [t for t in names if t not in self.big]
        self.endpoints: dict[tuple[str, ...], list[str]] = {}
        self.datasets: dict[tuple[str, ...], list[str]] = {}
        for allowed, _ in RESIDENCY_CHOICES:
            rule = ResidencyRule(allowed=list(allowed))
            self.endpoints[allowed] = [e.id for e in grid.endpoints if rule.admits(derived_tags(e.location.country))]
            self.datasets[allowed] = [d.id for d in grid.datasets if rule.admits(grid.site_by_id[d.home_site].tags)]
        self._memo: dict[Hashable, Any] = {}
        # Fields left at their defaults, given explicitly: ``model_construct`` would otherwise call
        # each default factory through ``inspect.signature`` (~0.7 ms a spec).
        self.no_preference: list[str] = []
        self.topology = GpuTopology()
        # ``random.choices`` with weights, k=1: the same single draw, without rebuilding the sums.
        self.residency_choices = [r for r, _ in RESIDENCY_CHOICES]
        self.residency_cum = list(accumulate(w for _, w in RESIDENCY_CHOICES))

    def shared(self, key: Hashable, build: Any) -> Any:
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = build()
        return value


def _draw(rng: random.Random, parts: _Parts, inference_share: float) -> tuple[str, tuple[Any, ...]]:
    """``synthetic_job``'s draws, in its order: (kind prefix, the spec's fields but the name)."""
    cum = parts.residency_cum
    allowed = parts.residency_choices[bisect(cum, rng.random() * (cum[-1] + 0.0), 0, len(cum) - 1)]
    small, big = parts.small, parts.big
    tenant = rng.choice(TENANTS)
    endpoints = parts.endpoints[allowed]
    if rng.random() < inference_share and endpoints:
        demand = rng.sample(endpoints, k=min(len(endpoints), rng.choice((1, 1, 2, 3))))
        count = rng.choice((1, 2, 4, 8))
        types = tuple(rng.choice((small, [], small[-1:])))
        priority = rng.choice((100, 200, 300))
        replicas = rng.choice((1, 2, 2, 3, 4, 8))
        weights = tuple(round(rng.uniform(0.2, 1.0), 2) for _ in demand)
        slo_ms = rng.choice((10.0, 20.0, 30.0, 50.0))
        return "inference", ("i", allowed, tenant, count, types, priority, replicas, tuple(demand), weights, slo_ms)
    if rng.random() < 0.1:  # factory scale
        count, types, gang = rng.choice((1024, 2048, 4096)), tuple(big), True
    else:
        count, types, gang = rng.choice((8, 16, 32, 64, 128, 256)), tuple(rng.choice((small, big, []))), \
            rng.random() < 0.8
    datasets = tuple([d for d in parts.datasets[allowed] if rng.random() < 0.15][:1])
    priority = rng.choice((0, 100, 500))
    preemptible = rng.random() < 0.3
    hours = rng.choice((1.0, 24.0, 168.0))
    return "training", ("t", allowed, tenant, count, types, gang, priority, preemptible, hours, datasets)


def _spec(parts: _Parts, name: str, key: tuple[Any, ...]) -> JobSpec:
    residency = parts.shared(("residency", key[1]), lambda: ResidencyRule(allowed=list(key[1])))
    gpus = parts.shared(("gpus", key[3], key[4]), lambda: GpuRequest(count=key[3], types=list(key[4])))
    if key[0] == "i":
        _, _, tenant, _, _, priority, replicas, demand, weights, slo_ms = key
        # Built from validated parts and values ``synthetic_job`` validates: construct without
        # re-validating (the test compares them with ``job_stream``'s validated specs).
        inference = InferenceSpec.model_construct(
            replicas=replicas, latency_slo_ms=slo_ms,
            demand=[parts.shared(("demand", e, w), lambda e=e, w=w: Demand(endpoint=e, weight=w))
                    for e, w in zip(demand, weights, strict=True)],
        )
        return JobSpec.model_construct(name=name, tenant=tenant, kind=JobKind.INFERENCE, gpus=gpus,
                                       priority=priority, residency=residency, inference=inference,
                                       placement_preference=parts.no_preference, topology=parts.topology)
    _, _, tenant, _, _, gang, priority, preemptible, hours, datasets = key
    training = parts.shared(("training", hours, datasets),
                            lambda: TrainingSpec(duration_hours=hours, datasets=list(datasets)))
    return JobSpec.model_construct(name=name, tenant=tenant, kind=JobKind.TRAINING, gpus=gpus, gang=gang,
                                   priority=priority, preemptible=preemptible, residency=residency, training=training,
                                   placement_preference=parts.no_preference, topology=parts.topology)


def job_groups(grid: Grid, count: int, seed: int = 0, inference_share: float = 0.6) -> list[JobGroup]:
    """``job_stream(grid, count, seed, inference_share)`` as groups (see the module doc)."""
    rng = random.Random(seed)
    parts = _Parts(grid)
    ids: dict[tuple[Any, ...], list[str]] = {}
    specs: list[JobSpec] = []
    for n in range(count):
        prefix, key = _draw(rng, parts, inference_share)
        name = f"{prefix}-{n:06d}"
        members = ids.get(key)
        if members is None:
            members = ids[key] = []
            specs.append(_spec(parts, name, key))
        members.append(name)
    return [JobGroup(spec, members) for spec, members in zip(specs, ids.values(), strict=True)]
