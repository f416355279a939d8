"""A commit that expects the ledger at a version (``Store.commit_delta(expect_ledger=...)``), both stores.

It is how a submission costs one round trip on a current view (Scheduler.submit): refused with
LedgerMoved when anything moved the ledger since, writing nothing and bringing the versions and a
snapshot equal to a fresh one; a retried request still returns its twin first; a current one commits.
"""

from __future__ import annotations

import numpy as np
import pytest

from grid_scheduler.model import Grid, JobSpec
from grid_scheduler.scheduler import Scheduler, transitions
from grid_scheduler.state import CapacityConflict, LedgerMoved, Store, Transition
from tests.test_ledger_delta import assert_same

SPEC = JobSpec.model_validate({"name": "e", "tenant": "acme", "kind": "training", "gpus": {"count": 8}})


def placed(s: Scheduler, name: str, request_id: str = "") -> Transition:
    decision = s.decide(SPEC.model_copy(update={"name": name}))
    assert decision.placement is not None
    return transitions.new_placed(f"job-{name}", SPEC.model_copy(update={"name": name}), request_id,
                                  decision.placement, s.now(), policy_version=s.policy_version)


def test_a_moved_ledger_refuses_and_brings_the_snapshot(store: Store, small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=store, quiet=True)
    s.submit(SPEC)
    seen = store.versions().ledger
    create = placed(s, "mine")
    Scheduler(small_grid, store=store, quiet=True).submit(SPEC)  # another replica moves the ledger
    before = store.snapshot()
    with pytest.raises(LedgerMoved) as refused:
        store.commit_delta((), create, expect_ledger=seen)
    assert refused.value.versions == store.versions()
    assert_same(refused.value.snapshot, store.snapshot())
    for got, fresh in zip(refused.value.snapshot.node_used_gpus, store.snapshot().node_used_gpus, strict=True):
        np.testing.assert_array_equal(got, fresh)
    assert store.get_job("job-mine") is None  # nothing written
    assert_same(store.snapshot(), before)
    # Decided again on the ledger as it is now, expecting its version: commits.
    done = store.commit_delta((), placed(s, "again"), expect_ledger=refused.value.versions.ledger)
    assert done.created and done.ledger_before == refused.value.versions.ledger


def test_a_retried_request_finds_its_twin_before_the_version_check(store: Store, small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=store, quiet=True)
    first = s.submit(SPEC, request_id="again").record
    seen = store.versions().ledger
    Scheduler(small_grid, store=store, quiet=True).submit(SPEC)  # the ledger moves
    done = store.commit_delta((), placed(s, "retry", request_id="again"), expect_ledger=seen)
    assert not done.created and done.record is not None and done.record.id == first.id


def test_slack_accepts_the_callers_own_commits_in_flight_and_no_more(store: Store, small_grid: Grid) -> None:
    """A decision that took its process's in-flight claims as taken may find the ledger that many
    steps further (their commits landed first); one step more is someone else's change: refused."""
    s = Scheduler(small_grid, store=store, quiet=True)
    s.submit(SPEC)
    seen = store.versions().ledger
    other = Scheduler(small_grid, store=store, quiet=True)
    other.submit(SPEC.model_copy(update={"name": "o1"}))
    other.submit(SPEC.model_copy(update={"name": "o2"}))  # the ledger is 2 past ``seen``
    with pytest.raises(LedgerMoved):
        store.commit_delta((), placed(s, "one"), expect_ledger=seen, expect_slack=1)
    done = store.commit_delta((), placed(s, "two"), expect_ledger=seen, expect_slack=2)
    assert done.created and done.ledger_before == seen + 2


def test_accepting_a_moved_ledger_commits_on_the_recheck_and_brings_the_ledger_it_left(
    store: Store, small_grid: Grid
) -> None:
    """``accept_moved`` (an online submission: another replica's commit is no reason to decide again):
    the commit is re-checked against live usage like any other, and brings the ledger as it left it."""
    s = Scheduler(small_grid, store=store, quiet=True)
    s.submit(SPEC)
    seen = store.versions().ledger
    Scheduler(small_grid, store=store, quiet=True).submit(SPEC)  # another replica moves the ledger
    done = store.commit_delta((), placed(s, "mine"), expect_ledger=seen, accept_moved=True)
    assert done.created and done.ledger_before == seen + 1 and done.ledger_after == seen + 2
    assert done.snapshot is not None
    assert_same(done.snapshot, store.snapshot())
    for got, fresh in zip(done.snapshot.node_used_gpus, store.snapshot().node_used_gpus, strict=True):
        np.testing.assert_array_equal(got, fresh)
    # On a current ledger nothing is brought: the caller follows its own commit.
    again = store.commit_delta((), placed(s, "current"), expect_ledger=done.ledger_after, accept_moved=True)
    assert again.created and again.snapshot is None


def test_accepting_a_moved_ledger_still_refuses_what_no_longer_fits(store: Store, small_grid: Grid) -> None:
    """The decision was made on a view another replica's commit has since filled: the re-check refuses
    it, writes nothing, and brings the ledger as it is."""
    s = Scheduler(small_grid, store=store, quiet=True)
    s.submit(SPEC)
    seen = store.versions().ledger
    create = placed(s, "late")
    [a] = create.reserve
    pool_gpus = s.limits.pool_gpus[s.limits.pool_index[a.pool_id]]
    used = store.snapshot().pool_used_gpus[s.limits.pool_index[a.pool_id]]
    fill = SPEC.model_copy(update={"name": "fill", "gpus": SPEC.gpus.model_copy(
        update={"count": int(pool_gpus - used), "types": [a.gpu_type]})})
    other = Scheduler(small_grid, store=store, quiet=True)
    filled = other.submit(fill).record  # takes what is left of that pool (or somewhere as good)
    assert filled.placement is not None and filled.placement.assignments[0].pool_id == a.pool_id
    before = store.snapshot()
    with pytest.raises(LedgerMoved) as refused:  # with what deciding again needs: no read
        store.commit_delta((), create, expect_ledger=seen, accept_moved=True)
    assert isinstance(refused.value, CapacityConflict)
    assert_same(refused.value.snapshot, store.snapshot())
    assert store.get_job("job-late") is None
    assert_same(store.snapshot(), before)
