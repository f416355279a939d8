"""DiffPolicy's dry run: it predicts what applying the policy does, and changes nothing."""

from __future__ import annotations

from grid_scheduler.engine.policy_diff import PolicyDiff
from grid_scheduler.model import Grid, JobSpec, JobState, Placement, Policy
from grid_scheduler.scheduler import Scheduler
from tests.test_policy_live import CHAT, GREEN, NEAR

FRANKFURT_EU = JobSpec.model_validate({
    "name": "eu-chat", "tenant": "beta", "kind": "inference", "gpus": {"count": 8, "types": ["H100"]},
    "residency": {"allowed": ["EU"]},
    "inference": {"replicas": 1, "demand": [{"endpoint": "frankfurt", "weight": 1}], "latency_slo_ms": 30},
})
TRAIN = JobSpec.model_validate({"name": "train", "tenant": "beta", "kind": "training",
                                "gpus": {"count": 64, "types": ["GB300"]}})
HISTORY = [CHAT, CHAT, FRANKFURT_EU, TRAIN, CHAT]


def replay(grid: Grid) -> tuple[Scheduler, list[str]]:
    """The same history on a fresh in-memory scheduler; job ids in submission order."""
    s = Scheduler(grid, NEAR)
    s.seed_policy("seed")
    ids = [s.submit(spec).record.id for spec in HISTORY]
    return s, ids


def where(p: Placement | None) -> list[tuple[str, int]]:
    assert p is not None
    return sorted((a.pool_id, a.gpus) for a in p.assignments)


def test_diff_predicts_where_each_running_job_goes_once_applied(small_grid: Grid) -> None:
    a, a_ids = replay(small_grid)
    diff, version = a.diff_policy(GREEN)
    assert version == 1 and diff.jobs_considered == len(HISTORY)
    moved = {m.job_id: m for m in diff.moved}
    assert set(moved) == set(a_ids)  # every job of this history moves under GREEN
    for k, job_id in enumerate(a_ids):
        move = moved[job_id]
        # "before" is the active policy's answer: here, where the job runs (nothing else changed).
        assert where(move.before) == where(a.get(job_id).placement)
        assert {t.term for t in move.terms} >= {"carbon"}
        # Apply on a copy of the same state; the job submitted again (its GPUs freed) lands where the diff said.
        b, b_ids = replay(small_grid)
        b.apply_policy(GREEN, "green", "ops", expected_version=1)
        b.cancel(b_ids[k])
        again = b.submit(HISTORY[k]).record
        assert where(again.placement) == where(move.after), HISTORY[k].name


def test_diff_totals_and_deltas_add_up(small_grid: Grid) -> None:
    a, _ = replay(small_grid)
    diff, _ = a.diff_policy(GREEN)
    assert diff.before.jobs_placed == diff.after.jobs_placed == len(HISTORY)
    assert diff.after.carbon_kg_per_hour < diff.before.carbon_kg_per_hour
    # Everything that leaves a site arrives at another: GPU deltas sum to zero.
    assert sum(d.gpus_after - d.gpus_before for d in diff.sites) == 0
    assert {d.site_id for d in diff.sites} >= {"manchester-edge", "sines"}
    assert diff.tenants == []  # every tenant keeps its GPUs, and every site has PUE 1.25: no tenant changes
    assert ("weights.carbon", "0.0", "10.0") in diff.policy_changes


def test_diff_reports_jobs_that_would_become_unplaceable_with_reasons(small_grid: Grid) -> None:
    a, ids = replay(small_grid)
    norway_only = Policy.model_validate({"weights": NEAR.weights.model_dump(),
                                         "tenant_residency": {"acme": {"allowed": ["NO"]}}})
    diff, _ = a.diff_policy(norway_only)
    lost = {c.job_id: c for c in diff.became_unplaceable}
    acme = [ids[k] for k, spec in enumerate(HISTORY) if spec.tenant == "acme"]
    assert set(lost) == set(acme)
    assert all(c.reasons for c in lost.values())
    assert not diff.moved and diff.after.jobs_placed == len(HISTORY) - len(acme)
    assert [(d.tenant, d.gpus_before, d.gpus_after) for d in diff.tenants] == [("acme", 24, 0)]


def test_diff_predicts_waiting_jobs_that_become_placeable(small_grid: Grid) -> None:
    uk_only = Policy(tenant_residency={"acme": {"allowed": ["UK"]}})
    filler = JobSpec.model_validate({"name": "f", "tenant": "other", "kind": "training",
                                     "gpus": {"count": 64, "types": ["B200"]}})
    job = JobSpec.model_validate({"name": "t", "tenant": "acme", "kind": "training",
                                  "gpus": {"count": 64, "types": ["B200", "GB300"]}})

    def history() -> tuple[Scheduler, str]:
        s = Scheduler(small_grid, uk_only)
        s.seed_policy("seed")
        s.submit(filler)
        return s, s.submit(job).record.id

    a, a_id = history()
    diff, _ = a.diff_policy(Policy())
    assert [c.job_id for c in diff.became_placeable] == [a_id]
    assert diff.became_placeable[0].reasons  # why it waits under the active policy
    b, b_id = history()
    b.apply_policy(Policy(), "acme may train in the EU", "ops")
    placed = b.get(b_id)
    assert placed.state is JobState.RUNNING
    assert where(placed.placement) == where(diff.became_placeable[0].placement)


def test_diff_changes_nothing(small_grid: Grid) -> None:
    a, ids = replay(small_grid)
    a.cancel(ids[0])  # a finished job, for last_finished
    records = {r.id: r for r in a.store.list_jobs(frozenset(), "", 100)}
    versions, last_event = a.store.versions(), a.store.last_sequence()
    diff: PolicyDiff
    diff, _ = a.diff_policy(GREEN, last_finished=5)
    assert diff.jobs_considered == len(HISTORY)  # 4 live + the cancelled one
    assert a.store.versions() == versions and a.store.last_sequence() == last_event
    assert {r.id: r for r in a.store.list_jobs(frozenset(), "", 100)} == records
    assert a.policy == NEAR and a.policy_version == 1


def summary(diff: PolicyDiff) -> tuple[object, ...]:
    return (
        sorted((m.job_id, tuple(where(m.before)), tuple(where(m.after))) for m in diff.moved),
        sorted((c.job_id, tuple(where(c.placement))) for c in diff.became_placeable),
        sorted((c.job_id, tuple(where(c.placement))) for c in diff.became_unplaceable),
        sorted((d.site_id, d.gpus_before, d.gpus_after) for d in diff.sites),
        (diff.after.jobs_placed, diff.after.gpus, round(diff.after.carbon_kg_per_hour, 6)),
    )


def test_shortcuts_give_the_exhaustive_answer(small_grid: Grid) -> None:
    """The diff skips jobs a change cannot touch (other tenants' rules, waiting gangs under new
    weights); on a busy grid with every kind of job, skipping must not change the answer."""
    from grid_scheduler.synthetic import job_stream

    s = Scheduler(small_grid, Policy())
    s.seed_policy("seed")
    for spec in job_stream(small_grid, 300, seed=3):
        s.submit(spec)
    assert s.store.pending_jobs() and s.store.running_jobs()
    tenants = sorted({r.spec.tenant for r in s.store.running_jobs()})
    candidates = [
        Policy(weights=GREEN.weights),
        Policy(weights=NEAR.weights),
        Policy(tenant_residency={tenants[0]: {"allowed": ["EU"]}}),
        Policy(tenant_residency={tenants[-1]: {"allowed": ["UK"]}}),
    ]
    for candidate in candidates:
        fast, _ = s.diff_policy(candidate)
        slow, _ = s.diff_policy(candidate, exhaustive=True)
        assert summary(fast) == summary(slow), candidate


def test_a_rule_for_one_tenant_moves_another_through_what_the_queue_holds(small_grid: Grid) -> None:
    """acme's waiting 400-GPU gang holds both GB300 pools against lower tiers, so beta's
    priority-0 job went to London's B200s. Restricting acme to the UK (where no pool can ever take
    it) frees those holds: beta's decision changes although beta's own rule did not."""
    s = Scheduler(small_grid, Policy())
    s.seed_policy("seed")

    def job(name: str, tenant: str, gpus: int, priority: int, types: list[str]) -> JobSpec:
        return JobSpec.model_validate({"name": name, "tenant": tenant, "kind": "training", "priority": priority,
                                       "preemptible": False, "gpus": {"count": gpus, "types": types}})

    assert s.submit(job("filler", "other", 300, 9, ["GB300"])).record.state is JobState.RUNNING
    assert s.submit(job("big", "acme", 400, 5, ["GB300"])).record.state is JobState.PENDING
    beta = s.submit(job("small", "beta", 64, 0, ["GB300", "B200"])).record
    assert beta.placement is not None and beta.placement.site_ids == ["london-hub"]
    uk_acme = Policy(tenant_residency={"acme": {"allowed": ["UK"]}})
    diff, _ = s.diff_policy(uk_acme)
    moved = {m.job_id: m for m in diff.moved}
    assert beta.id in moved and moved[beta.id].after.site_ids != ["london-hub"]
    assert summary(diff) == summary(s.diff_policy(uk_acme, exhaustive=True)[0])
