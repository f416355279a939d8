"""What an operator would otherwise run, for the batch benchmark: every pending job placed one
by one by a baseline rule (grid_scheduler/engine/baselines.py: first-fit, best-fit, Kubernetes
LeastAllocated and MostAllocated, FGD-like; the rules and their hard constraints are documented
there).

The pending jobs are taken in the same order as the greedy warm start (highest priority first,
then submission order, as a Kubernetes priority queue would), each placed on free capacity
re-evaluated after every placement.
"""

from __future__ import annotations

from collections.abc import Sequence

from grid_scheduler.engine.baselines import BASELINES, PoolState, Rule, fgd, place_one
from grid_scheduler.engine.batch import as_modelled
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.model import JobSpec, Placement, Policy

__all__ = ["BASELINES", "PoolState", "Rule", "fgd", "place_all", "place_one"]


def place_all(
    index: GridIndex, usage: Usage, jobs: Sequence[tuple[str, JobSpec]], policy: Policy, rule: Rule
) -> dict[str, Placement]:
    running = Usage(usage.pool_used_gpus.copy(), usage.site_used_kw.copy(), usage.pool_drained.copy())
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][1].priority)
    placements: dict[str, Placement] = {}
    for i in order:
        job_id, spec = jobs[i]
        placement = place_one(index, running, as_modelled(spec), policy, rule)
        if placement is None:
            continue
        placements[job_id] = placement
        for a in placement.assignments:
            p = index.pool_index[a.pool_id]
            running.pool_used_gpus[p] += a.gpus
            running.site_used_kw[index.pool_site[p]] += a.power_kw
    return placements
