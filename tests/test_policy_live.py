"""A policy applied on one replica decides the next placement on every replica; stale applies
are refused; a rollback restores the previous decisions; every record says which version decided."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import pytest

from grid_scheduler.model import Grid, JobSpec, JobState, Policy, Weights
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.scheduler.errors import StalePolicyVersion
from grid_scheduler.state import Limits, MemoryStore, Store

# One 8-GPU H100 deployment serving London: with only latency weighted it goes to Manchester
# (4 ms), with only carbon weighted to Sines (120 g/kWh against Manchester's 170).
CHAT = JobSpec.model_validate({
    "name": "chat", "tenant": "acme", "kind": "inference", "gpus": {"count": 8, "types": ["H100"]},
    "inference": {"replicas": 1, "demand": [{"endpoint": "london", "weight": 1}], "latency_slo_ms": 30},
})
NEAR = Policy(weights=Weights(latency=10, carbon=0, energy_price=0, packing=0, data_movement=0))
GREEN = Policy(weights=Weights(latency=0, carbon=10, energy_price=0, packing=0, data_movement=0))


def sites(s: Scheduler) -> list[str]:
    placement = s.submit(CHAT).record.placement
    assert placement is not None
    return placement.site_ids


@pytest.fixture(params=["memory", "redis"])
def shared_store(request: pytest.FixtureRequest, small_grid: Grid) -> Iterator[Store]:
    limits = Limits.from_grid(small_grid)
    if request.param == "memory":
        yield MemoryStore(limits)
        return
    from grid_scheduler.state.redis_store import RedisStore

    store = RedisStore(limits, request.getfixturevalue("redis_url"), f"policy-{uuid4().hex[:12]}")
    yield store
    store.close()


def test_apply_on_one_replica_decides_the_next_placement_on_the_other(small_grid: Grid, redis_url: str) -> None:
    from grid_scheduler.state.redis_store import RedisStore

    name = f"replicas-{uuid4().hex[:12]}"
    limits = Limits.from_grid(small_grid)
    store_a, store_b = RedisStore(limits, redis_url, name), RedisStore(limits, redis_url, name)
    try:
        a, b = Scheduler(small_grid, NEAR, store=store_a), Scheduler(small_grid, NEAR, store=store_b)
        assert a.seed_policy("seed").version == 1
        assert b.seed_policy("seed").version == 1  # already seeded: b adopts version 1, adds nothing
        assert sites(b) == ["manchester-edge"]
        applied = a.apply_policy(GREEN, "carbon first", "ops", expected_version=1)
        assert applied.version == 2
        record = b.submit(CHAT).record  # b never heard of the apply but for the shared store
        assert record.placement is not None and record.placement.site_ids == ["sines"]
        assert record.policy_version == 2
        assert b.policy_entry().applied_by == "ops"
    finally:
        store_a.close()
        store_b.close()


def test_stale_expected_version_is_refused_and_changes_nothing(small_grid: Grid, shared_store: Store) -> None:
    a, b = Scheduler(small_grid, NEAR, store=shared_store), Scheduler(small_grid, NEAR, store=shared_store)
    a.seed_policy("seed")
    b.apply_policy(GREEN, "green", "bob", expected_version=1)
    with pytest.raises(StalePolicyVersion) as stale:
        a.apply_policy(NEAR, "near again", "alice", expected_version=1)
    assert (stale.value.expected, stale.value.current) == (1, 2)
    assert shared_store.versions().policy == 2
    assert sites(a) == ["sines"]


def test_rollback_restores_the_previous_decisions(small_grid: Grid, shared_store: Store) -> None:
    s = Scheduler(small_grid, NEAR, store=shared_store)
    s.seed_policy("seed")
    before = sites(s)
    s.apply_policy(GREEN, "green", "ops")
    assert sites(s) != before
    back = s.rollback_policy(1, "green moved chat away from London users", "ops", expected_version=2)
    assert (back.version, back.rollback_of, back.policy) == (3, 1, NEAR)
    assert sites(s) == before
    assert [v.version for v in shared_store.policy_history(0, 10)] == [3, 2, 1]


def test_records_events_and_batch_plans_name_the_policy_version(small_grid: Grid, shared_store: Store) -> None:
    s = Scheduler(small_grid, NEAR, store=shared_store)
    s.seed_policy("seed")
    first = s.submit(CHAT).record
    s.apply_policy(GREEN, "green", "ops")
    second = s.submit(CHAT).record
    assert (first.policy_version, second.policy_version) == (1, 2)
    events = {e.job_id: e.policy_version for e in shared_store.events_after(0, 0)}
    assert events == {first.id: 1, second.id: 2}
    big = {"name": "big", "tenant": "acme", "kind": "training", "gpus": {"count": 4096}}
    waiting = s.submit(JobSpec.model_validate(big)).record
    assert waiting.state is JobState.REJECTED and waiting.policy_version == 2
    assert s.optimize_pending(dry_run=True, time_limit_s=1).policy_version == 2


def test_a_new_policy_places_waiting_work_at_once(small_grid: Grid) -> None:
    s = Scheduler(small_grid, Policy(tenant_residency={"acme": {"allowed": ["UK"]}}))
    s.seed_policy("seed")
    # The only UK pool for training (london-b200) is full: acme's job waits for it.
    filler = {"name": "f", "tenant": "other", "kind": "training", "gpus": {"count": 64, "types": ["B200"]}}
    assert s.submit(JobSpec.model_validate(filler)).record.state is JobState.RUNNING
    job = {"name": "t", "tenant": "acme", "kind": "training", "gpus": {"count": 64, "types": ["B200", "GB300"]}}
    waiting = s.submit(JobSpec.model_validate(job)).record
    assert waiting.state is JobState.PENDING
    s.apply_policy(Policy(), "acme may train in the EU", "ops")
    placed = s.get(waiting.id)
    assert placed.state is JobState.RUNNING and placed.policy_version == 2
