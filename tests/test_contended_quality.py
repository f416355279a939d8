"""Baseline deciders in the simulator keep every hard constraint; fragmentation is counted right."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from grid_scheduler.engine.baselines import (
    PoolState,
    Rule,
    fgd,
    fragmentation_gpus,
    least_allocated,
    most_allocated,
    rule_decider,
)
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.model import Grid, JobSpec, Policy
from grid_scheduler.scheduler.core import Decider
from grid_scheduler.whatif.fragmentation import fragmented_gpus
from grid_scheduler.whatif.simulator import Simulator
from tests.invariants import placement_violations
from tests.whatif_scenarios import EVENTFUL_CHANGES, load, small

RULES: dict[str, Rule] = {
    "least-allocated": least_allocated,
    "most-allocated": most_allocated,
    "fgd": fgd({8: 5, 16: 3, 64: 2, 256: 1}),
}


def _placements(decider: Decider | None) -> tuple[dict[str, tuple[str, ...]], Simulator]:
    """Every placement a run makes (job -> pools), each checked against the grid as it is made."""
    seen: dict[str, tuple[str, ...]] = {}
    problems: list[str] = []

    def check(sim: Simulator) -> None:
        grid, policy = sim.scheduler.grid, sim.scheduler.policy
        for job_id, placement in sim.running.items():
            pools = tuple(a.pool_id for a in placement.assignments)
            if seen.get(job_id) == pools:
                continue
            seen[job_id] = pools
            problems.extend(f"{job_id}: {p}" for p in placement_violations(grid, sim.jobs[job_id].spec, placement,
                                                                           policy))

    # check_invariants: GPUs within every pool's healthy capacity and power within every site's
    # envelope after every event, through failures, power cuts, drains and deliveries.
    sim = Simulator(load(small(changes=EVENTFUL_CHANGES)), check_invariants=True, on_event=check, decider=decider)
    result = sim.run()
    assert problems == []
    assert result.summary["residency"]["violations"] == 0
    return seen, sim


@pytest.mark.parametrize("name", sorted(RULES))
def test_baseline_decider_keeps_every_hard_constraint_through_grid_changes(name: str) -> None:
    decider = rule_decider(RULES[name])
    placed, sim = _placements(decider)
    assert len(placed) > 100
    assert sim.pending < len(sim.jobs)
    # Grid changes rebuild the scheduler (whatif/ledger.py carry_over): the rule is carried over.
    assert sim.scheduler.decider is decider
    # The rule decides: its placements are not the engine's.
    engine, _ = _placements(None)
    assert placed != engine


def _job(data: dict[str, object]) -> JobSpec:
    return JobSpec.model_validate({"tenant": "acme", "priority": 0, **data})


def _usage(index: GridIndex, used: dict[str, int], drained: tuple[str, ...] = ()) -> Usage:
    gpus = np.zeros(len(index.pool_ids), dtype=np.int64)
    for pool, n in used.items():
        gpus[index.pool_index[pool]] = n
    kw = np.bincount(index.pool_site, weights=gpus * index.pool_kw_per_gpu, minlength=len(index.site_ids))
    mask = np.array([p in drained for p in index.pool_ids], dtype=np.bool_)
    return Usage(gpus, kw.astype(np.float64), mask)


def test_fragmentation_counts_free_gpus_no_waiting_job_could_start_on(small_grid: Grid) -> None:
    index = GridIndex.build(small_grid)
    policy = Policy()
    # Free: sines-gb300 48, glomfjord-gb300 10 (480 healthy), sines-h100 256, london-h200 128,
    # london-b200 64, frankfurt-h100 128, manchester-h100 64.
    usage = _usage(index, {"sines-gb300": 80, "glomfjord-gb300": 470})
    gang = _job({"name": "gang", "kind": "training", "gpus": {"count": 40, "types": ["GB300"]}})
    serve = _job({"name": "serve", "kind": "inference", "gpus": {"count": 8},
                  "inference": {"replicas": 1, "latency_slo_ms": 5, "demand": [{"endpoint": "london", "weight": 1}]}})
    assert fragmented_gpus(index, usage, policy, []) == 0  # nothing waits: nothing is lost
    # The 40-GPU GB300 gang fits only sines-gb300 (48 free; 70 kW within sines' 210 kW headroom).
    assert fragmented_gpus(index, usage, policy, [gang]) == 10 + 256 + 128 + 64 + 128 + 64
    # A deployment within 5 ms of london also uses the london hub (1 ms) and manchester (4 ms),
    # not frankfurt (6 ms) nor sines (11 ms).
    assert fragmented_gpus(index, usage, policy, [gang, serve, gang]) == 10 + 256 + 128
    # A drained pool's GPUs are not free; a pool without power for the gang is no use to it.
    drained = _usage(index, {"sines-gb300": 80, "glomfjord-gb300": 470}, drained=("frankfurt-h100",))
    assert fragmented_gpus(index, drained, policy, [gang, serve]) == 10 + 256
    hot = _usage(index, {"sines-gb300": 80, "glomfjord-gb300": 470, "sines-h100": 200})  # 140 + 175 kW of 350
    assert fragmented_gpus(index, hot, policy, [gang]) == 48 + 10 + 56 + 128 + 64 + 128 + 64


def test_fgd_fragmentation_and_choice() -> None:
    sizes, share = np.array([8, 32], dtype=np.int64), np.array([0.5, 0.5])
    # 40 free: both sizes fit (0); 20 free: half the jobs (32) cannot use them (10); 4 free: none can (4).
    assert fragmentation_gpus(np.array([40, 20, 4]), sizes, share).tolist() == [0.0, 10.0, 4.0]
    rule = fgd(Counter({8: 1, 32: 1}))
    free = np.array([40, 32, 64], dtype=np.int64)
    state = PoolState(free, np.array([64, 64, 64]), np.full(3, 100.0), np.full(3, 100.0), 8, np.full(3, 1.0))
    # 40 -> 32: none lost; 32 -> 24: 12 lost; 64 -> 56: none lost, looser fit than 40 -> 32.
    assert int(np.argmax(rule(state, np.arange(3)))) == 0
