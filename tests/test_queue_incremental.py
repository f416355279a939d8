"""The incremental queue pass equals the full pass, job for job, on random histories.

Two real schedulers on the small grid get the same history: submissions of every kind (gang and
split training, rack gangs of whole NVL72 domains, inference deployments of one to three
replicas, priorities 0-2, sometimes preemptible, two tenants, durations that vary within a class),
completions, cancels, drains and undrains, explicit passes and policy changes. One retries its
queue with the incremental pass (``place_pending``), the other with the full pass
(``queue_index.force_full_pass``). After every step both ledgers and every job's state and placement must be identical.

The same on Redis (the live server's ledger), fewer examples. Examples: ``QUEUE_EXAMPLES`` (500 by
default), ``QUEUE_REDIS_EXAMPLES`` (100).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any
from uuid import uuid4

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from grid_scheduler.model import Grid, JobRecord, JobSpec, JobState, Policy
from grid_scheduler.scheduler import Scheduler, queue_index
from grid_scheduler.scheduler.batch_commit import OptimizeOutcome
from grid_scheduler.state import Limits, MemoryStore, Store, Transition

EXAMPLES = int(os.environ.get("QUEUE_EXAMPLES", "500"))
REDIS_EXAMPLES = int(os.environ.get("QUEUE_REDIS_EXAMPLES", "100"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
ALL_STATES = frozenset(JobState)
POOLS = ["sines-gb300", "london-b200", "frankfurt-h100", "london-h200", "sines-h100"]
POLICIES = [
    Policy(),
    Policy.model_validate({"version": "globex-uk", "tenant_residency": {"globex": {"allowed": ["UK"]}},
                           "weights": {"packing": 2.0}}),
]
# (types, residency) of training jobs: one pool, one site's two pools, several sites.
TRAINING_SHAPES = [(["GB300"], ["EU"]), ([], ["EU"]), (["H100"], []), (["B200"], []), ([], [])]
ENDPOINTS = ["london", "frankfurt", "manchester", "lisbon"]

training = st.tuples(
    st.just("train"), st.sampled_from([8, 16, 32, 64, 64, 128]), st.integers(0, 2),
    st.sampled_from([False] * 9 + [True]), st.integers(0, len(TRAINING_SHAPES) - 1), st.booleans(),
    st.sampled_from(["acme", "globex"]),
    st.sampled_from([1.0, 2.0, 5.0]),
)
inference = st.tuples(
    st.just("infer"), st.sampled_from([8, 16, 32]), st.integers(0, 2), st.sampled_from([False] * 9 + [True]),
    st.integers(1, 3), st.lists(st.sampled_from(ENDPOINTS), min_size=1, max_size=2, unique=True),
    st.sampled_from([5.0, 15.0, 40.0]), st.sampled_from(["acme", "globex"]),
)
# Rack gangs (whole NVL72 domains of GB300, rule 1's rack-level holds): 72 or 144 GPUs.
rack = st.tuples(st.just("rack"), st.sampled_from([72, 72, 144]), st.integers(0, 2),
                 st.sampled_from(["acme", "globex"]))
step = st.one_of(
    training, training, training, inference, inference, rack,
    st.tuples(st.sampled_from(["complete", "complete", "complete", "cancel"]), st.integers(0, 12)),
    st.tuples(st.sampled_from(["complete", "complete", "complete", "cancel"]), st.integers(0, 60)),
    st.tuples(st.sampled_from(["drain", "undrain"]), st.sampled_from(POOLS)),
    st.tuples(st.just("pass")),
    st.tuples(st.just("policy"), st.integers(0, len(POLICIES) - 1)),
)


def spec_of(op: Sequence[Any], n: int) -> JobSpec:
    if op[0] == "rack":
        _, gpus, priority, tenant = op
        return JobSpec.model_validate({
            "name": f"r{n}", "tenant": tenant, "kind": "training", "priority": priority, "gang": True,
            "gpus": {"count": gpus, "types": ["GB300"]}, "topology": {"mode": "whole_domains"},
        })
    if op[0] == "train":
        _, gpus, priority, preemptible, shape, gang, tenant, hours = op
        types, allowed = TRAINING_SHAPES[shape]
        return JobSpec.model_validate({
            "name": f"t{n}", "tenant": tenant, "kind": "training", "priority": priority, "preemptible": preemptible,
            "gang": gang, "gpus": {"count": gpus, "types": types}, "residency": {"allowed": allowed},
            "training": {"duration_hours": hours},
        })
    _, gpus, priority, preemptible, replicas, endpoints, slo_ms, tenant = op
    return JobSpec.model_validate({
        "name": f"i{n}", "tenant": tenant, "kind": "inference", "priority": priority, "preemptible": preemptible,
        "gpus": {"count": gpus},
        "inference": {"replicas": replicas, "demand": [{"endpoint": e} for e in endpoints], "latency_slo_ms": slo_ms},
    })


def new_scheduler(grid: Grid, full: bool, store: Store | None = None) -> Scheduler:
    clock = itertools.count(1)
    ids = itertools.count()
    store = store if store is not None else MemoryStore(Limits.from_grid(grid))
    s = Scheduler(grid, store=store, clock=lambda: float(next(clock)),
                  quiet=True, job_ids=lambda: f"job-{next(ids):06d}")
    if full:
        queue_index.force_full_pass(s)
    return s


def state_of(s: Scheduler) -> tuple[object, ...]:
    snap = s.store.snapshot()
    jobs = [(r.id, r.state, r.placement.assignments if r.placement else None)
            for r in s.store.list_jobs(ALL_STATES, "", 10_000)]
    return snap.pool_used_gpus.tolist(), snap.site_used_w.tolist(), snap.pool_drained.tolist(), jobs


def apply(s: Scheduler, op: Sequence[Any], n: int, ids: list[str]) -> list[str]:
    """One step; returns the ids of jobs the step's queue pass placed (in order), if it ran one."""
    kind = op[0]
    if kind in ("train", "infer", "rack"):
        s.submit(spec_of(op, n))
    elif kind in ("complete", "cancel") and ids:
        record = s.get(ids[op[1] % len(ids)])
        if kind == "complete" and record.state is JobState.RUNNING:
            s.complete(record.id)
        elif kind == "cancel" and not record.state.is_final:
            s.cancel(record.id)
    elif kind in ("drain", "undrain"):
        s.set_drained(op[1], kind == "drain")
    elif kind == "pass":
        return [r.id for r in s.place_pending()]
    elif kind == "policy" and POLICIES[op[1]] != s.policy:
        s.apply_policy(POLICIES[op[1]], "test", "test")
    return []


def run_both(grid: Grid, steps: list[tuple[Any, ...]], store: Store | None = None) -> None:
    """``store``: the incremental scheduler's ledger (in-memory by default)."""
    incremental, full = new_scheduler(grid, False, store), new_scheduler(grid, True)
    for n, op in enumerate(steps):
        ids = [r.id for r in incremental.store.list_jobs(ALL_STATES, "", 10_000)]
        placed = apply(incremental, op, n, ids), apply(full, op, n, ids)
        assert placed[0] == placed[1], f"step {n} {op}: the passes placed different jobs"
        assert state_of(incremental) == state_of(full), f"step {n} {op}: the ledgers differ"


# A deep queue of one class behind a big gang job, freed bit by bit; split and replica jobs
# that the greedy fill may place after a placement changed their pools.
DEEP = [("train", 128, 1, False, 0, True, "acme", 1.0), *[("train", 64, 1, False, 0, True, "acme", h)
                                                          for h in (1.0, 2.0, 5.0)] * 3,
        ("train", 32, 0, False, 1, False, "acme", 1.0), ("infer", 16, 2, False, 2, ["london"], 15.0, "acme"),
        ("complete", 0), ("complete", 1), ("pass",), ("drain", "sines-gb300"), ("complete", 2),
        ("undrain", "sines-gb300")]
MIXED = [("infer", 32, 1, False, 3, ["london", "frankfurt"], 40.0, "acme"),
         ("infer", 32, 1, False, 3, ["london", "frankfurt"], 40.0, "globex"),
         ("train", 64, 1, False, 4, False, "acme", 1.0), ("train", 64, 0, False, 4, False, "globex", 1.0),
         ("policy", 1), ("complete", 0), ("complete", 2), ("policy", 0), ("pass",), ("complete", 1)]

# A priority-1 job held the GB300 pool against priority 0; once it starts, it holds nothing.
HELD = [("train", 128, 0, False, 0, True, "acme", 1.0), ("train", 64, 1, False, 0, True, "acme", 1.0),
        ("train", 32, 0, False, 0, True, "globex", 1.0), ("complete", 0), ("train", 16, 0, False, 0, True, "acme", 1.0)]


@SETTINGS
@example(steps=HELD)
@example(steps=DEEP)
@example(steps=MIXED)
@given(steps=st.lists(step, min_size=1, max_size=40))
def test_incremental_pass_equals_full_pass(small_grid: Grid, steps: list[tuple[Any, ...]]) -> None:
    run_both(small_grid, steps)


# A drain left the Redis replica's view behind, so it ignored its own later commits (the rack
# job's end) and placed the next job on nodes as they were two commits before.
DRAINED = [("train", 8, 0, False, 0, False, "acme", 1.0), ("rack", 72, 0, "acme"), ("drain", "sines-gb300"),
           ("complete", 1), ("train", 64, 0, False, 4, False, "acme", 1.0)]


@settings(max_examples=REDIS_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@example(steps=DRAINED)
@example(steps=HELD)
@example(steps=DEEP)
@example(steps=MIXED)
@given(steps=st.lists(step, min_size=1, max_size=25))
def test_incremental_pass_on_redis_equals_full_pass(small_grid: Grid, redis_url: str,
                                                    steps: list[tuple[Any, ...]]) -> None:
    """The live server's case: the index read from Redis (``pending_jobs``), usage re-read per decision."""
    from grid_scheduler.state.redis_store import RedisStore

    store = RedisStore(Limits.from_grid(small_grid), redis_url, f"queue-{uuid4().hex[:12]}")
    try:
        run_both(small_grid, steps, store)
    finally:
        store.close()


class Counting:
    """An observer that counts engine decisions (the cost the incremental pass avoids)."""

    def __init__(self) -> None:
        self.decisions = 0

    def decided(self, seconds: float) -> None:
        self.decisions += 1

    def committed(self, seconds: float, transitions: Sequence[Transition], conflict: str | None) -> None:
        pass

    def submitted(self, record: JobRecord, created: bool) -> None:
        pass

    def optimized(self, outcome: OptimizeOutcome) -> None:
        pass


def decisions_of(s: Scheduler, action: Callable[[], object]) -> int:
    counting = Counting()
    s.observer = counting
    action()
    return counting.decisions


def test_a_completion_elsewhere_decides_nothing_for_a_deep_queue(small_grid: Grid) -> None:
    """300 split jobs and 300 inference deployments wait for the GB300 pool and the London hub; a job
    finishing in Frankfurt frees nothing they could use: the incremental pass decides nothing, the
    full pass decides every one of them (split and replica jobs are not skipped by shape there)."""
    counts = []
    for full in (False, True):
        s = new_scheduler(small_grid, full)
        s.submit(spec_of(("train", 128, 0, False, 0, True, "acme", 1.0), 0))
        s.submit(spec_of(("infer", 8, 0, False, 1, ["frankfurt"], 5.0, "acme"), 1))
        s.submit(spec_of(("infer", 64, 0, False, 2, ["london"], 5.0, "acme"), 2))
        for n in range(300):
            s.submit(spec_of(("train", 64, 0, False, 0, False, "acme", 1.0 + n % 7), 3 + 2 * n))
            s.submit(spec_of(("infer", 64, 0, False, 1, ["london"], 5.0, "globex"), 4 + 2 * n))
        s.place_pending()  # the first pass decides what each class gets now
        waiting = len(s.store.pending_jobs())
        frankfurt = next(r for r in s.store.running_jobs() if r.spec.name == "i1")
        counts.append(decisions_of(s, lambda: s.complete(frankfurt.id)))  # noqa: B023 (called at once)
        assert len(s.store.pending_jobs()) == waiting >= 590
    assert counts[0] == 0
    assert counts[1] >= 590
