# ruff: noqa: F811  (pytest fixtures imported from the store contract module)
"""The policy-history part of the Store contract, run against both stores (fixtures from
tests/test_store_contract.py): versions 1, 2, ..., compare-and-set on the active version, history
newest first and paged, the active version visible through ``versions()``, events carry it."""

from __future__ import annotations

import threading

import pytest

from grid_scheduler.model import EventType, JobState, Policy, PolicyVersion, Weights, policy_sha256
from grid_scheduler.state import StalePolicy, Store, Transition
from tests.test_store_contract import limits, record, store, store_factory  # noqa: F401 (fixtures)


def entry(carbon: float, reason: str = "why", by: str = "ops", rollback_of: int = 0) -> PolicyVersion:
    return PolicyVersion.new(Policy(weights=Weights(carbon=carbon)), by, 1000.0 + carbon, reason, rollback_of)


def test_no_policy_before_the_first_apply(store: Store) -> None:
    assert store.get_policy() is None
    assert store.get_policy(1) is None
    assert store.policy_history(0, 10) == []
    assert store.versions().policy == 0


def test_apply_numbers_versions_and_keeps_every_field(store: Store) -> None:
    first = store.apply_policy(0, entry(1.0, "seed", "alice"))
    second = store.apply_policy(1, entry(2.0, "greener", "bob", rollback_of=0))
    assert (first.version, second.version) == (1, 2)
    assert store.versions().policy == 2
    got = store.get_policy(1)
    assert got == first
    assert got is not None and got.policy.weights.carbon == 1.0
    assert got.sha256 == policy_sha256(got.policy) and got.applied_by == "alice" and got.reason == "seed"
    assert got.applied_at == 1001.0
    assert store.get_policy() == second == store.get_policy(2)
    assert store.get_policy(3) is None


def test_apply_is_compare_and_set(store: Store) -> None:
    store.apply_policy(0, entry(1.0))
    with pytest.raises(StalePolicy) as stale:
        store.apply_policy(0, entry(2.0))
    assert (stale.value.expected, stale.value.current) == (0, 1)
    with pytest.raises(StalePolicy):
        store.apply_policy(5, entry(2.0))
    assert store.versions().policy == 1
    assert [v.version for v in store.policy_history(0, 10)] == [1]


def test_concurrent_applies_on_one_version_only_one_wins(store: Store) -> None:
    store.apply_policy(0, entry(1.0))
    wins: list[int] = []
    stale: list[int] = []

    def apply(i: int) -> None:
        try:
            wins.append(store.apply_policy(1, entry(float(i + 2))).version)
        except StalePolicy:
            stale.append(i)

    threads = [threading.Thread(target=apply, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == [2] and len(stale) == 7


def test_history_is_newest_first_and_paged(store: Store) -> None:
    for n in range(5):
        store.apply_policy(n, entry(float(n), reason=f"r{n}"))
    page1 = store.policy_history(0, 2)
    assert [v.version for v in page1] == [5, 4]
    page2 = store.policy_history(page1[-1].version, 2)
    assert [v.version for v in page2] == [3, 2]
    assert [v.version for v in store.policy_history(page2[-1].version, 2)] == [1]
    assert store.policy_history(1, 2) == []
    assert [v.reason for v in store.policy_history(0, 10)] == ["r4", "r3", "r2", "r1", "r0"]


def test_policy_does_not_move_the_ledger_version(store: Store) -> None:
    before = store.versions().ledger
    store.apply_policy(0, entry(1.0))
    assert store.versions().ledger == before == store.ledger_version()


def test_events_carry_the_policy_version_of_the_record(store: Store) -> None:
    r = record("j1").model_copy(update={"policy_version": 7})
    store.create_job(Transition(r, EventType.PENDING, "waits"))
    events = store.events_after(0, 0)
    assert [(e.job_id, e.policy_version) for e in events] == [("j1", 7)]
    got = store.get_job("j1")
    assert got is not None and got.policy_version == 7 and got.state is JobState.PENDING


def test_a_commit_decided_under_an_older_policy_is_refused(store: Store) -> None:
    """A replica one decision behind an apply (it read the versions, then another replica applied)
    must not commit under the old policy's rules, e.g. its quotas: PolicyMoved, nothing written."""
    from grid_scheduler.state import PolicyMoved
    from tests.test_store_contract import a

    store.apply_policy(0, entry(1.0))
    placed = record("j1", state=JobState.RUNNING)
    take = Transition(placed, EventType.PLACED, "placed", reserve=[a("sines-h100", "sines", 8, 7.0)])
    with pytest.raises(PolicyMoved):
        store.commit((), take, policy_version=0)
    assert store.get_job("j1") is None and int(store.snapshot().pool_used_gpus.sum()) == 0
    store.apply_policy(1, entry(2.0))
    with pytest.raises(PolicyMoved):
        store.commit((), take, policy_version=1)
    created, ok = store.commit((), take, policy_version=2)
    assert ok and created is not None and int(store.snapshot().pool_used_gpus.sum()) == 8
    # Without a version (a completion, a cancel, a what-if copy) nothing is checked.
    store.commit((), Transition(record("j2"), EventType.PENDING, "waits"))
