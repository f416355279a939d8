"""The heartbeat's one-call store write and the site monitor that touches only the sites that need it.

``agent_beat`` and ``fleet_health`` say what the store's other reads say (both stores). The
server's monitor (``SiteMonitor``) must leave the ledger exactly as a full pass of
``fleet.apply_node_health`` over every site does: two schedulers fed the same script of agent
heartbeats, node failures, operator drains, silences and job traffic (hypothesis on memory, a
fixed script on Redis), one judged by ``fleet.check_sites`` and the other by ``SiteMonitor``,
end every step with the same jobs (state, attempts, placement) and the same ledger. The
changes go into the store directly, never through ``apply_node_health``, so only the monitor
can notice them. A scripted clock: no sleeps, no timing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from uuid import uuid4

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.model import Grid, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.scheduler.site_monitor import SiteMonitor
from grid_scheduler.state import Limits, MemoryStore, Store
from grid_scheduler.state.agents import AgentReplaced, NoAgent, NodeCondition, NodeHealth
from tests.test_store_contract import (
    StoreFactory,
    store_factory,  # noqa: F401  (the memory/redis fixture)
)

TIMEOUT_S = 10.0
GRACE_S = 20.0
SITES = ("sines", "glomfjord", "london-hub", "frankfurt-hub")


@pytest.fixture
def store(store_factory: StoreFactory, small_grid: Grid) -> Iterator[Store]:  # noqa: F811
    s = store_factory(Limits.from_grid(small_grid))
    yield s
    s.close()


def test_agent_beat_and_fleet_health_say_what_the_other_reads_say(store: Store, small_grid: Grid) -> None:
    pools = ["sines-gb300", "sines-h100"]
    with pytest.raises(NoAgent):
        store.agent_beat("sines", "a1", [], 1.0, pools)
    store.register_agent("sines", "a1", {"sines-gb300": [f"n{i}" for i in range(1000)]}, 10.0)
    failed = NodeCondition("sines-gb300", "n2", NodeHealth.FAILED, "XID 79")
    healthy = NodeCondition("sines-gb300", "n1", NodeHealth.HEALTHY)
    store.set_nodes_drained("sines-h100", ["h9", "h3"], True)
    beat = store.agent_beat("sines", "a1", [failed, healthy], 11.0, pools)
    assert beat.previous_heartbeat_at_s == 10.0 and beat.changed and beat.nodes == (failed,)
    assert beat.drained == {"sines-gb300": (), "sines-h100": ("h3", "h9")}
    assert beat.revision == store.last_sequence()
    agent = store.site_agent("sines")
    assert agent is not None and agent.heartbeat_at_s == 11.0 and agent.nodes == (failed,)
    again = store.agent_beat("sines", "a1", [failed], 12.0, pools)
    assert again.previous_heartbeat_at_s == 11.0 and not again.changed
    store.register_agent("sines", "a2", {}, 20.0)
    with pytest.raises(AgentReplaced):
        store.agent_beat("sines", "a1", [], 21.0, pools)
    store.register_agent("glomfjord", "g", {}, 22.0)

    site_pools = {s.id: [p.id for p in s.pools] for s in small_grid.sites}
    health = store.fleet_health(site_pools)
    expected = store.site_agents()
    assert [(a.site_id, a.agent_id, a.generation, a.heartbeat_at_s, a.nodes) for a in health.agents] == [
        (a.site_id, a.agent_id, a.generation, a.heartbeat_at_s, a.nodes) for a in expected]
    assert health.drained == {p: store.drained_nodes(p) for p in ["glomfjord-gb300", *pools]}


# --- the monitor against a full pass ----------------------------------------------------------

@dataclass(frozen=True)
class Beat:
    site: int
    failed: frozenset[int]  # node numbers failed in the site's first pool


@dataclass(frozen=True)
class Drain:
    site: int
    nodes: frozenset[int]
    drained: bool


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Submit:
    kind: int  # which of SPECS


@dataclass(frozen=True)
class Finish:
    nth: int  # the nth running job (modulo their count) completes


Step = Beat | Drain | Wait | Submit | Finish

SPECS = [
    JobSpec.model_validate({"name": "train", "tenant": "acme", "kind": "training", "priority": 7,
                            "gpus": {"count": 64, "types": ["GB300"]}}),
    JobSpec.model_validate({"name": "h100", "tenant": "acme", "kind": "training", "priority": 3,
                            "gpus": {"count": 16, "types": ["H100"]}}),
    JobSpec.model_validate({
        "name": "chat", "tenant": "acme", "kind": "inference", "priority": 5,
        "gpus": {"count": 8, "types": ["H100", "H200", "B200"]}, "residency": {"allowed": ["EU", "UK"]},
        "inference": {"replicas": 1, "demand": [{"endpoint": "london", "weight": 1.0}], "latency_slo_ms": 20}}),
]

steps = st.lists(st.one_of(
    st.builds(Beat, st.integers(0, len(SITES) - 1), st.frozensets(st.integers(0, 7), max_size=4)),
    st.builds(Drain, st.integers(0, len(SITES) - 1), st.frozensets(st.integers(0, 7), min_size=1, max_size=3),
              st.booleans()),
    st.builds(Wait, st.sampled_from([1.0, TIMEOUT_S + 1, GRACE_S])),
    st.builds(Submit, st.integers(0, len(SPECS) - 1)),
    st.builds(Finish, st.integers(0, 50)),
), min_size=1, max_size=25)


class Clock:
    def __init__(self) -> None:
        self.now_s = 1_000_000.0

    def __call__(self) -> float:
        return self.now_s


def scheduler(grid: Grid, store: Store, clock: Clock) -> Scheduler:
    ids = itertools.count()
    s = Scheduler(grid, store=store, clock=clock, job_ids=lambda: f"job-{next(ids):04d}")
    s.heartbeat_timeout_s, s.site_grace_s = TIMEOUT_S, GRACE_S
    for site in SITES:
        s.store.register_agent(site, "agent", {}, clock())
    return s


def apply(s: Scheduler, step: Step, clock: Clock) -> None:
    """One scripted change, straight into the store (never through apply_node_health)."""
    if isinstance(step, Beat):
        pool = s.grid.site_by_id[SITES[step.site]].pools[0].id
        s.store.agent_heartbeat(SITES[step.site], "agent", [
            NodeCondition(pool, f"{pool}-n{i}", NodeHealth.FAILED, "XID 79") for i in sorted(step.failed)], clock())
    elif isinstance(step, Drain):
        pool = s.grid.site_by_id[SITES[step.site]].pools[-1].id
        s.store.set_nodes_drained(pool, [f"{pool}-n{i}" for i in sorted(step.nodes)], step.drained)
    elif isinstance(step, Submit):
        s.submit(SPECS[step.kind])
    elif isinstance(step, Finish):
        running = s.store.running_jobs()
        if running:
            s.complete(running[step.nth % len(running)].id)


def state(s: Scheduler) -> tuple[object, ...]:
    jobs = s.store.list_jobs(frozenset(JobState), "", 1 << 30)
    snap = s.store.snapshot()
    down = snap.pool_down_gpus if snap.pool_down_gpus is not None else np.zeros_like(snap.pool_used_gpus)
    return (
        [(r.id, r.state, r.attempts, r.placement.assignments if r.placement else None) for r in jobs],
        snap.pool_used_gpus.tolist(), snap.site_used_w.tolist(), down.tolist(),
    )


def run_both(grid: Grid, make_store: Callable[[], Store], script: list[Step]) -> None:
    clocks = Clock(), Clock()
    full, judged = scheduler(grid, make_store(), clocks[0]), scheduler(grid, make_store(), clocks[1])
    monitor = SiteMonitor(judged)
    try:
        for n, step in enumerate(script):
            for s, clock in ((full, clocks[0]), (judged, clocks[1])):
                if isinstance(step, Wait):
                    clock.now_s += step.seconds
                apply(s, step, clock)
            assert fleet.check_sites(full) == monitor.check(), f"step {n}: {step}"
            assert state(full) == state(judged), f"step {n}: {step}"
    finally:
        full.store.close()
        judged.store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps)
def test_the_monitor_leaves_the_ledger_as_a_full_pass_does(small_grid: Grid, script: list[Step]) -> None:
    limits = Limits.from_grid(small_grid)
    run_both(small_grid, lambda: MemoryStore(limits), script)


SCRIPT: list[Step] = [
    Submit(0), Submit(1), Submit(2), Submit(0),
    Beat(0, frozenset({0, 1, 2})), Wait(1.0), Drain(2, frozenset({0, 1}), True), Beat(1, frozenset({5})),
    Wait(TIMEOUT_S + 1), Beat(0, frozenset({0, 1, 2})), Submit(2), Wait(GRACE_S), Finish(1),
    Beat(1, frozenset()), Beat(2, frozenset()), Beat(3, frozenset({0})), Drain(2, frozenset({0}), False),
    Submit(0), Beat(0, frozenset()), Wait(1.0),
]


@pytest.mark.redis
def test_the_monitor_leaves_the_ledger_as_a_full_pass_does_on_redis(small_grid: Grid, redis_url: str) -> None:
    from grid_scheduler.state.redis_store import RedisStore

    limits = Limits.from_grid(small_grid)
    run_both(small_grid, lambda: RedisStore(limits, redis_url, f"monitor-{uuid4().hex[:12]}"), SCRIPT)
