"""The store's site-agent state, the same contract on memory and Redis: registration and its
generation, heartbeats and node health, the per-job report compare-and-set (hypothesis over orders)."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.model import Grid
from grid_scheduler.state import Limits, Store
from grid_scheduler.state.agents import AgentReplaced, JobPhase, JobReport, NoAgent, NodeCondition, NodeHealth
from tests.test_store_contract import (
    StoreFactory,
    store_factory,  # noqa: F401  (the memory/redis fixture)
)


@pytest.fixture
def store(store_factory: StoreFactory, small_grid: Grid) -> Iterator[Store]:  # noqa: F811
    s = store_factory(Limits.from_grid(small_grid))
    yield s
    s.close()


def test_registration_generation_heartbeat_and_node_health(store: Store) -> None:
    assert store.site_agent("sines") is None and store.site_agents() == []
    with pytest.raises(NoAgent):
        store.agent_heartbeat("sines", "a1", [], 1.0)
    first = store.register_agent("sines", "a1", {"sines-gb300": ["n1", "n2"]}, 10.0)
    assert (first.site_id, first.agent_id, first.generation, first.heartbeat_at_s) == ("sines", "a1", 1, 10.0)
    assert first.pools == {"sines-gb300": ("n1", "n2")} and first.nodes == ()
    failed = NodeCondition("sines-gb300", "n2", NodeHealth.FAILED, "XID 79")
    agent, changed = store.agent_heartbeat("sines", "a1", [failed, NodeCondition("sines-gb300", "n1",
                                                                                 NodeHealth.HEALTHY)], 11.0)
    assert changed and agent.nodes == (failed,) and agent.heartbeat_at_s == 11.0
    agent, changed = store.agent_heartbeat("sines", "a1", [failed], 12.0)
    assert not changed and agent.heartbeat_at_s == 12.0
    # A new agent: generation 2, node health kept until it says otherwise; the old one is refused.
    second = store.register_agent("sines", "a2", {}, 20.0)
    assert second.generation == 2 and second.nodes == (failed,)
    with pytest.raises(AgentReplaced):
        store.agent_heartbeat("sines", "a1", [], 21.0)
    with pytest.raises(AgentReplaced):
        store.report_job("sines", "a1", JobReport("j", JobPhase.RUNNING, 1))
    store.register_agent("glomfjord", "g", {}, 22.0)
    assert [a.site_id for a in store.site_agents()] == ["glomfjord", "sines"]
    assert store.site_agent("sines") == store.site_agents()[1]


REPORTS = st.lists(st.tuples(st.sampled_from(["j1", "j2"]), st.integers(1, 5), st.sampled_from(list(JobPhase))),
                   min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reports=REPORTS)
def test_the_report_with_the_highest_sequence_wins_whatever_the_order(
    store: Store, reports: list[tuple[str, int, JobPhase]]
) -> None:
    site = "sines"
    store.register_agent(site, "a", {}, 1.0)
    run = uuid4().hex  # job ids of this example only: the store outlives the examples
    best: dict[str, tuple[int, JobPhase]] = {}
    for job, sequence, phase in reports:
        applied, kept = store.report_job(site, "a", JobReport(f"{run}-{job}", phase, sequence))
        assert applied == (job not in best or sequence > best[job][0])
        if applied:
            best[job] = (sequence, phase)
        assert (kept.sequence, kept.phase) == best[job]
    mine = {r.job_id.rsplit("-", 1)[1]: (r.sequence, r.phase) for r in store.job_reports(site)
            if r.job_id.startswith(f"{run}-")}
    assert mine == best
