"""Random histories through the real scheduler: the priority rules hold on every path.

Submissions (with request-id retries), completions, cancels, drains, queue passes and batch
commits, in any order. After every step:

- GPUs and facility power never exceed a pool's or a site's limit, and the ledger equals
  what the running jobs hold; every running job sits where its residency allows;
- no eviction without its preemptor placed in the same commit (the PREEMPTED events of a
  commit are followed at once by the preemptor's PLACED event);
- strict tiers: no waiting job could start if the lower-tier work that it could not evict,
  and that started after it began waiting, were not there.

Examples: ``PRIORITY_EXAMPLES`` (2,000 by default, the issue's bar; CI runs them).
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import decide
from grid_scheduler.engine.preemption import release
from grid_scheduler.engine.priority import Holds
from grid_scheduler.model import EventType, Grid, JobSpec, JobState
from grid_scheduler.scheduler import AlreadyExists, Scheduler
from grid_scheduler.state import Limits, MemoryStore
from grid_scheduler.state.store import to_watts

EXAMPLES = int(os.environ.get("PRIORITY_EXAMPLES", "2000"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

# (types, residency): GB300 in the EU is sines-gb300 alone (128 GPUs); B200 is london-b200 alone
# (64); H100 anywhere is three pools. Few, small pools keep the grid contended, where the faults are.
SHAPES = [(["GB300"], ["EU"]), (["GB300"], ["EU"]), (["B200"], []), (["H100"], [])]
POOLS = ["sines-gb300", "london-b200", "frankfurt-h100"]

submit = st.tuples(
    st.just("submit"), st.sampled_from([16, 32, 64, 64, 128]), st.integers(0, 2), st.booleans(),
    st.integers(0, len(SHAPES) - 1), st.sampled_from(["", "", "r1", "r2"]),
)
step = st.one_of(
    submit, submit, submit,
    st.tuples(st.sampled_from(["complete", "complete", "cancel"]), st.integers(0, 30)),
    st.tuples(st.sampled_from(["complete", "complete", "cancel"]), st.integers(0, 30)),
    st.tuples(st.sampled_from(["drain", "undrain"]), st.sampled_from(POOLS)),
    st.tuples(st.just("pass")),
    st.tuples(st.just("optimize")),
)


def roomy(grid: Grid) -> Grid:
    """The small grid with power to spare: tiers are judged on GPUs here (power holds are
    tested in tests/test_priority_paths.py)."""
    data = grid.model_dump(mode="json")
    for site in data["sites"]:
        site["power_envelope_mw"] *= 10
    return Grid.model_validate(data)


def spec_of(gpus: int, priority: int, preemptible: bool, shape: int, n: int) -> JobSpec:
    types, allowed = SHAPES[shape]
    return JobSpec.model_validate({
        "name": f"j{n}", "tenant": "acme", "kind": "training", "priority": priority, "preemptible": preemptible,
        "gpus": {"count": gpus, "types": types}, "residency": {"allowed": allowed},
    })


# Starvation, as reported: a priority-2 job waits behind non-preemptible priority-1 work, and a
# priority-0 job takes the GPUs that free meanwhile (random search rarely strings these together).
STARVED = [("submit", 64, 1, False, 0, ""), ("submit", 64, 0, False, 0, ""), ("submit", 128, 2, False, 0, ""),
           ("complete", 1), ("submit", 64, 0, False, 0, ""), ("complete", 0)]
# The same through the batch cycle: the plan may not give the priority-0 job what priority 2 holds.
STARVED_BATCH = [("drain", "sines-gb300"), *STARVED[:3], ("undrain", "sines-gb300"), ("complete", 1),
                 ("drain", "sines-gb300"), ("submit", 64, 0, False, 0, ""), ("undrain", "sines-gb300"),
                 ("optimize",), ("complete", 0)]
# A twin resubmission with preemption in between, and a victim re-queued that must hold too.
TWINS = [("submit", 64, 0, True, 2, "r1"), ("submit", 64, 2, False, 2, "r2"), ("submit", 64, 2, False, 2, "r2"),
         ("submit", 32, 0, False, 2, ""), ("complete", 1)]


@SETTINGS
@example(steps=STARVED)
@example(steps=STARVED_BATCH)
@example(steps=TWINS)
@given(steps=st.lists(step, min_size=1, max_size=20))
def test_priority_rules_hold_on_every_path(small_grid: Grid, steps: list[tuple[object, ...]]) -> None:
    grid = roomy(small_grid)
    clock = itertools.count(1)
    s = Scheduler(grid, store=MemoryStore(Limits.from_grid(grid)), clock=lambda: float(next(clock)))
    ids: list[str] = []
    for n, op in enumerate(steps):
        kind = op[0]
        if kind == "submit":
            _, gpus, priority, preemptible, shape, rid = op
            spec = spec_of(int(gpus), int(priority), bool(preemptible), int(shape), n)  # type: ignore[call-overload]
            try:
                ids.append(s.submit(spec, request_id=str(rid)).record.id)
            except AlreadyExists as e:
                assert s.get(e.job_id).spec != spec
        elif kind in ("complete", "cancel") and ids:
            record = s.get(ids[int(op[1]) % len(ids)])  # type: ignore[call-overload]
            if kind == "complete" and record.state is JobState.RUNNING:
                s.complete(record.id)
            elif kind == "cancel" and not record.state.is_final:
                s.cancel(record.id)
        elif kind in ("drain", "undrain"):
            s.set_drained(str(op[1]), kind == "drain")
        elif kind == "pass":
            s.place_pending()
        elif kind == "optimize":
            s.optimize_pending(time_limit_s=0.2, workers=1)
        check(s)


def check(s: Scheduler) -> None:
    limits = s.limits
    snap = s.store.snapshot()
    running = s.store.running_jobs()
    gpus = np.zeros(len(limits.pool_ids), dtype=np.int64)
    watts = np.zeros(len(limits.site_ids), dtype=np.int64)
    tags = {site.id: site.tags for site in s.grid.sites}
    for r in running:
        assert r.placement is not None
        for a in r.placement.assignments:
            gpus[limits.pool_index[a.pool_id]] += a.gpus
            watts[limits.site_index[a.site_id]] += to_watts(a.power_kw)
            assert r.spec.residency.admits(tags[a.site_id])
    assert (snap.pool_used_gpus == gpus).all() and (snap.site_used_w == watts).all()
    assert (gpus <= limits.pool_gpus).all() and (watts <= limits.site_power_w).all()

    events = s.store.events_after(0, 0)
    for i, e in enumerate(events):
        if e.type is EventType.PREEMPTED:
            by = e.message.removeprefix("preempted by ")
            j = i
            while events[j].type is EventType.PREEMPTED:
                assert events[j].message == e.message
                j += 1
            assert events[j].job_id == by and events[j].type is EventType.PLACED

    usage = s.usage()
    pending = s.store.pending_jobs()
    by_tier = defaultdict(list)
    for r in pending:
        by_tier[r.spec.priority].append(r)
    for waiting in pending:
        if waiting.spec.priority == 0:
            continue
        since = waiting.queued_at if waiting.queued_at is not None else waiting.created_at
        lower = [
            r for r in running if r.spec.priority < waiting.spec.priority
            and (r.spec.preemptible or r.updated_at > since)
        ]
        freed = release(s.index, usage, [r.placement for r in lower if r.placement is not None])
        holds = Holds(s.index)
        for r in pending:
            if r.spec.priority > waiting.spec.priority:
                holds.hold_for(r.spec, s.policy)
        could = decide(s.index, holds.overlay(freed, waiting.spec), waiting.spec, s.policy).placement
        assert could is None, f"{waiting.id} (priority {waiting.spec.priority}) waits for capacity lower tiers took"
