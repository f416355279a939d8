"""Fair share (issue 10): one rule (engine/fairshare.py), the same on the queue pass and the batch cycle.

- property: with fair share off the order is exactly ``queue_key`` order; with it on, tiers stay
  strict, each tenant keeps its own submission order, and each next job of a tier belongs to the
  tenant lowest in weighted share counting what was ordered ahead of it;
- a backlog of two tenants on the real scheduler (both stores): the tenant below its share is
  served first; with fair share off, the older backlog is;
- the batch cycle commits in the same order.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.cli import main
from grid_scheduler.client import Client
from grid_scheduler.engine import GridIndex, Usage
from grid_scheduler.engine.batch import solve_batch
from grid_scheduler.engine.fairshare import FleetCapacity, TenantUse, fair_order, fair_shares, weighted_shares
from grid_scheduler.engine.priority import queue_key
from grid_scheduler.model import (
    Assignment,
    EventType,
    FairShare,
    Grid,
    JobRecord,
    JobSpec,
    JobState,
    Placement,
    Policy,
    ScoreTerms,
)
from grid_scheduler.scheduler import AlreadyExists, Scheduler
from grid_scheduler.service.server import start_server
from grid_scheduler.state import Limits, MemoryStore, Store, Transition
from tests.test_priority_properties import check, roomy, spec_of
from tests.test_priority_properties import step as priority_step

TENANTS = ["acme", "globex", "initech", "umbrella"]


def spec(name: str, gpus: int, tenant: str, priority: int = 0, hours: float = 4.0) -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": tenant, "kind": "training", "priority": priority,
        "gpus": {"count": gpus, "types": ["GB300"]}, "residency": {"allowed": ["EU"]},
        "training": {"duration_hours": hours},
    })


def pending(job_id: str, s: JobSpec, created_at: float) -> JobRecord:
    return JobRecord(id=job_id, spec=s, state=JobState.PENDING, created_at=created_at, updated_at=created_at)


def running(job_id: str, tenant: str, gpus: int, power_kw: float) -> JobRecord:
    placement = Placement(assignments=[Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300",
                                                  gpus=gpus, power_kw=power_kw)], score=ScoreTerms())
    return JobRecord(id=job_id, spec=spec(job_id, gpus, tenant), state=JobState.RUNNING, placement=placement,
                     created_at=0.0, updated_at=0.0)


def fair_policy(weights: dict[str, float] | None = None) -> Policy:
    return Policy(fair_share=FairShare(enabled=True, weights=weights or {}))


waiting_jobs = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.sampled_from([4, 8, 16, 64]), st.integers(0, 2), st.integers(0, 5)),
    min_size=0, max_size=25,
)
running_jobs = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.sampled_from([4, 8, 64, 256]), st.floats(0, 300)), max_size=6,
)
weights = st.dictionaries(st.sampled_from(TENANTS), st.sampled_from([0.5, 1.0, 2.0, 3.0]), max_size=4)


def _records(waiting: list[tuple[str, int, int, int]]) -> list[JobRecord]:
    # Created-at ties on purpose (integers 0..5): the id breaks them, as in queue_key.
    return [pending(f"job-{i:03d}", spec(f"j{i}", gpus, tenant, prio), float(t))
            for i, (tenant, gpus, prio, t) in enumerate(waiting)]


def _running(held: list[tuple[str, int, float]]) -> list[JobRecord]:
    return [running(f"run-{i}", tenant, gpus, kw) for i, (tenant, gpus, kw) in enumerate(held)]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(waiting_jobs, running_jobs)
def test_with_fair_share_off_the_order_is_exactly_queue_key(
    small_grid: Grid, waiting: list[tuple[str, int, int, int]], held: list[tuple[str, int, float]]
) -> None:
    index = GridIndex.build(small_grid)
    records = _records(waiting)
    shuffled = list(reversed(records))
    assert fair_order(shuffled, _running(held), index, Policy()) == sorted(records, key=queue_key)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(waiting_jobs, running_jobs, weights)
def test_fair_order_keeps_tiers_strict_and_serves_the_lowest_weighted_share_next(
    small_grid: Grid, waiting: list[tuple[str, int, int, int]], held: list[tuple[str, int, float]],
    tenant_weights: dict[str, float],
) -> None:
    index = GridIndex.build(small_grid)
    policy = fair_policy(tenant_weights)
    records = _records(waiting)
    runs = _running(held)
    order = fair_order(records, runs, index, policy)
    assert sorted(r.id for r in order) == sorted(r.id for r in records)  # a permutation
    priorities = [r.spec.priority for r in order]
    assert priorities == sorted(priorities, reverse=True)  # tiers strict
    by_tenant: dict[tuple[int, str], list[JobRecord]] = defaultdict(list)
    for r in order:
        by_tenant[(r.spec.priority, r.spec.tenant)].append(r)
    for jobs in by_tenant.values():
        assert jobs == sorted(jobs, key=queue_key)  # a tenant's own jobs keep submission order

    # Replayed from the definition: shares from the running jobs' real GPUs and power, a job
    # ordered ahead charged at the fleet's mean kW per GPU; the next job's tenant is never above
    # another tenant that still has work in the same tier.
    capacity = FleetCapacity.of(index)
    kw_per_gpu = FleetCapacity.mean_kw_per_gpu(index)
    use: dict[str, TenantUse] = defaultdict(TenantUse)
    for r in runs:
        assert r.placement is not None
        use[r.spec.tenant] = use[r.spec.tenant].plus(r.placement.gpus, r.placement.power_kw)
    share = {t: use[t].dominant_share(capacity) / policy.fair_share.weight(t) for t in TENANTS}
    for i, r in enumerate(order):
        rest = {x.spec.tenant for x in order[i:] if x.spec.priority == r.spec.priority}
        assert all(share[r.spec.tenant] <= share[t] + 1e-12 for t in rest)
        gpus = r.spec.total_gpus
        share[r.spec.tenant] += (TenantUse(gpus, gpus * kw_per_gpu).dominant_share(capacity)
                                 / policy.fair_share.weight(r.spec.tenant))


def test_a_tenant_further_below_its_share_goes_first_and_tenants_then_interleave(small_grid: Grid) -> None:
    index = GridIndex.build(small_grid)
    heavy = [pending(f"h{i}", spec(f"h{i}", 16, "heavy"), float(i)) for i in range(3)]
    light = [pending(f"l{i}", spec(f"l{i}", 16, "light"), 10.0 + i) for i in range(3)]
    runs = [running("r0", "heavy", 32, 40.0)]
    order = [r.id for r in fair_order(heavy + light, runs, index, fair_policy())]
    # light is owed 32 GPUs: two of its jobs first, then turns (ties go to the older job).
    assert order == ["l0", "l1", "h0", "l2", "h1", "h2"]
    # Weight 3 for heavy: its 32 GPUs weigh as 10.7, less than one 16-GPU job of light.
    order = [r.id for r in fair_order(heavy + light, runs, index, fair_policy({"heavy": 3.0}))]
    assert order[:2] == ["l0", "h0"]


def test_fair_shares_report_share_entitlement_borrowed_and_waiting_gpu_hours(small_grid: Grid) -> None:
    index = GridIndex.build(small_grid)
    capacity = FleetCapacity.of(index)
    waiting = [pending("w1", spec("w1", 16, "light", hours=5.0), 1.0), pending("w2", spec("w2", 8, "light"), 2.0)]
    runs = [running("r0", "heavy", 256, 10.0), running("r1", "heavy", 64, 10.0)]
    shares = {s.tenant: s for s in fair_shares(index, fair_policy({"heavy": 3.0}), runs, waiting)}
    assert set(shares) == {"heavy", "light"}  # idle tenants do not count
    heavy, light = shares["heavy"], shares["light"]
    assert heavy.entitlement == pytest.approx(0.75) and light.entitlement == pytest.approx(0.25)
    assert heavy.gpus == 320 and heavy.power_kw == pytest.approx(20.0)
    assert heavy.share == pytest.approx(max(320 / capacity.gpus, 20.0 / capacity.power_kw))
    assert heavy.borrowed_gpus == max(0, 320 - int(0.75 * capacity.gpus))
    assert light.share == 0.0 and light.borrowed_gpus == 0
    assert light.waiting_gpu_hours == pytest.approx(16 * 5.0 + 8 * 4.0)
    assert (light.waiting_jobs, heavy.running_jobs, heavy.waiting_gpu_hours) == (2, 2, 0.0)
    assert weighted_shares(index, fair_policy(), runs) == {"heavy": pytest.approx(heavy.share)}


def test_weights_must_be_positive() -> None:
    with pytest.raises(ValueError, match="weights must be > 0"):
        FairShare(weights={"acme": 0.0})


# --- the real scheduler, both stores ----------------------------------------------------------
@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, small_grid: Grid) -> Iterator[Store]:
    limits = Limits.from_grid(small_grid)
    if request.param == "memory":
        yield MemoryStore(limits)
        return
    from grid_scheduler.state.redis_store import RedisStore

    redis_store = RedisStore(limits, request.getfixturevalue("redis_url"), f"fair-{uuid4().hex[:12]}")
    yield redis_store
    redis_store.close()


def _clocked(small_grid: Grid, store: Store, policy: Policy) -> Scheduler:
    ticks = itertools.count(1000)
    return Scheduler(small_grid, policy, store, clock=lambda: float(next(ticks)))


def _backlog(s: Scheduler) -> dict[str, str]:
    """sines-gb300 (128 GPUs, the only EU GB300 pool) full of heavy's work, then a backlog of
    two 64-GPU jobs each, heavy's first. Returns name -> job id."""
    ids = {}
    for name, tenant in [("h-run0", "heavy"), ("h-run1", "heavy"), ("h0", "heavy"), ("h1", "heavy"),
                         ("l0", "light"), ("l1", "light")]:
        ids[name] = s.submit(spec(name, 64, tenant)).record.id
    assert [s.get(ids[n]).state for n in ("h-run0", "h-run1", "h0", "l0")] == [
        JobState.RUNNING, JobState.RUNNING, JobState.PENDING, JobState.PENDING]
    return ids


def test_the_tenant_below_its_share_is_served_first_then_turns(small_grid: Grid, store: Store) -> None:
    s = _clocked(small_grid, store, fair_policy())
    ids = _backlog(s)
    s.complete(ids["h-run0"])  # heavy still holds 64, light none: light's oldest goes
    assert s.get(ids["l0"]).state is JobState.RUNNING and s.get(ids["h0"]).state is JobState.PENDING
    s.complete(ids["h-run1"])  # heavy 0, light 64: heavy's turn
    assert s.get(ids["h0"]).state is JobState.RUNNING and s.get(ids["l1"]).state is JobState.PENDING


def test_without_fair_share_the_older_backlog_goes_first(small_grid: Grid, store: Store) -> None:
    s = _clocked(small_grid, store, Policy())
    ids = _backlog(s)
    s.complete(ids["h-run0"])
    assert s.get(ids["h0"]).state is JobState.RUNNING and s.get(ids["l0"]).state is JobState.PENDING


def _batch_state(small_grid: Grid, store: Store, policy: Policy) -> tuple[Scheduler, dict[str, str]]:
    """heavy runs 64 of sines-gb300's 128 GPUs; one 64-GPU job each waits, heavy's older. The
    waiting jobs go straight into the store (no queue pass), so the batch cycle decides."""
    s = _clocked(small_grid, store, policy)
    ids = {"h-run": s.submit(spec("h-run", 64, "heavy")).record.id}
    for name, tenant, t in [("h0", "heavy", 1.0), ("l0", "light", 2.0)]:
        record = pending(f"job-{name}", spec(name, 64, tenant), t)
        store.create_job(Transition(record, EventType.PENDING))
        ids[name] = record.id
    return s, ids


@pytest.mark.parametrize("fair", [True, False])
def test_the_batch_cycle_serves_the_tenant_below_its_share(small_grid: Grid, store: Store, fair: bool) -> None:
    s, ids = _batch_state(small_grid, store, fair_policy() if fair else Policy())
    outcome = s.optimize_pending(dry_run=False, time_limit_s=2.0, workers=1)
    assert list(outcome.result.placements) == [ids["l0"] if fair else ids["h0"]]
    winner, loser = (ids["l0"], ids["h0"]) if fair else (ids["h0"], ids["l0"])
    assert [r.id for r in outcome.committed] == [winner]
    assert s.get(loser).state is JobState.PENDING


def test_the_batch_objective_alone_prefers_the_tenant_below_its_share(small_grid: Grid) -> None:
    """The jobs handed over heavy-first (so the greedy hint favours heavy): the fairness term
    in the objective, not the order, makes light's job the one placed."""
    index = GridIndex.build(small_grid)
    usage = Usage.empty(index)
    usage.pool_used_gpus[index.pool_index["sines-gb300"]] = 64
    jobs = [("h0", spec("h0", 64, "heavy")), ("l0", spec("l0", 64, "light"))]
    fair = solve_batch(index, usage, jobs, fair_policy(), time_limit_s=2.0, workers=1,
                       weighted_shares={"heavy": 0.05})
    assert list(fair.placements) == ["l0"]
    plain = solve_batch(index, usage, jobs, Policy(), time_limit_s=2.0, workers=1)
    assert list(plain.placements) == ["h0"]


# --- visibility: GetFairShare over gRPC, and the CLI --------------------------------------------
@pytest.fixture
def fair_server(small_grid: Grid) -> Iterator[tuple[Client, Scheduler, str]]:
    s = Scheduler(small_grid, fair_policy({"heavy": 3.0}))
    running_server = start_server(s, "127.0.0.1:0", max_workers=4)
    address = f"127.0.0.1:{running_server.port}"
    with Client(address, timeout_s=10) as client:
        yield client, s, address
    running_server.stop(grace_s=0.5)


def test_get_fair_share_over_grpc_and_the_cli(
    fair_server: tuple[Client, Scheduler, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client, s, address = fair_server
    for name, tenant in [("h0", "heavy"), ("h1", "heavy"), ("h2", "heavy"), ("l0", "light")]:
        client.submit(spec(name, 64, tenant, hours=2.0))
    reply = client.fair_share()
    index = GridIndex.build(s.grid)
    capacity = FleetCapacity.of(index)
    assert reply.enabled and reply.fleet_gpus == capacity.gpus
    tenants = {t.tenant: t for t in reply.tenants}
    assert set(tenants) == {"heavy", "light"}
    heavy, light = tenants["heavy"], tenants["light"]
    # sines-gb300 takes two: heavy's h0 and h1 run; h2 and light's l0 wait.
    assert (heavy.running_jobs, heavy.waiting_jobs, light.running_jobs, light.waiting_jobs) == (2, 1, 0, 1)
    assert heavy.gpus == 128 and heavy.weight == 3.0 and light.weight == 1.0
    assert heavy.entitlement == pytest.approx(0.75) and light.entitlement == pytest.approx(0.25)
    assert heavy.share == pytest.approx(max(128 / capacity.gpus, heavy.power_kw / capacity.power_kw))
    assert heavy.borrowed_gpus == max(0, 128 - int(0.75 * capacity.gpus)) and light.borrowed_gpus == 0
    assert heavy.waiting_gpu_hours == pytest.approx(128.0) and light.waiting_gpu_hours == pytest.approx(128.0)

    capsys.readouterr()
    assert main(["fairshare", "--address", address, "--json"]) == 0
    out = capsys.readouterr().out.splitlines()  # the server's logs go to stdout too: one line each
    data = json.loads("\n".join(out[out.index("{"):out.index("}") + 1]))
    assert [t["tenant"] for t in data["tenants"]] == ["heavy", "light"] and data["enabled"] is True
    assert main(["fairshare", "--address", address]) == 0
    table = capsys.readouterr().out
    assert "fair share on" in table and "borrowed GPUs" in table and "heavy" in table


def test_the_policy_diff_shows_the_queue_order_fair_share_changes(
    fair_server: tuple[Client, Scheduler, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Jobs are re-decided one at a time in the diff, so only the queue section shows what turning
    fair share off does: heavy's older h2 goes before light's l0 again."""
    client, _s, address = fair_server
    ids = {name: client.submit(spec(name, 64, tenant)).job.id
           for name, tenant in [("h0", "heavy"), ("h1", "heavy"), ("h2", "heavy"), ("l0", "light")]}
    plain = "fair_share: {enabled: false}\n"
    reply = client.diff_policy(plain, max_jobs=10)
    assert reply.queue_shift_count == 2
    turns = {q.job_id: (q.tenant, q.position_before, q.position_after) for q in reply.queue_shifts}
    assert turns == {ids["h2"]: ("heavy", 2, 1), ids["l0"]: ("light", 1, 2)}
    # The same policy changes no turn, and neither does a diff between two policies without fair share.
    assert client.diff_policy("fair_share: {enabled: true, weights: {heavy: 3.0}}\n").queue_shift_count == 0

    path = tmp_path / "plain.yaml"
    path.write_text(plain)
    capsys.readouterr()
    assert main(["policy", "diff", str(path), "--address", address]) == 0
    out = capsys.readouterr().out
    assert "queue order (fair share): 2 waiting jobs change turn" in out and ids["h2"] in out


# --- every other rule still holds with fair share on: random histories, several tenants --------
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(priority_step, min_size=1, max_size=20), tenant_weights=weights)
def test_priority_and_ledger_rules_hold_with_fair_share_on(
    small_grid: Grid, steps: list[tuple[object, ...]], tenant_weights: dict[str, float]
) -> None:
    """test_priority_properties' histories (strict tiers, limits, residency, evictions only with
    their preemptor), with fair share on and the jobs spread over four tenants."""
    grid = roomy(small_grid)
    clock = itertools.count(1)
    s = Scheduler(grid, fair_policy(tenant_weights), MemoryStore(Limits.from_grid(grid)),
                  clock=lambda: float(next(clock)))
    ids: list[str] = []
    for n, op in enumerate(steps):
        kind = op[0]
        if kind == "submit":
            _, gpus, priority, preemptible, shape, rid = op
            job = spec_of(int(gpus), int(priority), bool(preemptible), int(shape), n)  # type: ignore[call-overload]
            job = job.model_copy(update={"tenant": TENANTS[n % len(TENANTS)]})
            try:
                ids.append(s.submit(job, request_id=str(rid)).record.id)
            except AlreadyExists as e:
                assert s.get(e.job_id).spec != job
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


@pytest.mark.parametrize("fair", [True, False])
def test_over_grpc_the_tenant_below_its_share_is_served_first(small_grid: Grid, store: Store, fair: bool) -> None:
    """The backlog of two tenants through a real server on loopback (both stores): a completion
    frees room for one job; with fair share on it goes to the tenant with nothing running."""
    s = Scheduler(small_grid, fair_policy() if fair else Policy(), store)
    running_server = start_server(s, "127.0.0.1:0", max_workers=4)
    try:
        with Client(f"127.0.0.1:{running_server.port}", timeout_s=10) as client:
            ids = {name: client.submit(spec(name, 64, tenant)).job.id
                   for name, tenant in [("h-run0", "heavy"), ("h-run1", "heavy"), ("h0", "heavy"), ("l0", "light")]}
            client.complete(ids["h-run0"])
            first, second = ("l0", "h0") if fair else ("h0", "l0")
            assert client.get_job(ids[first]).state == ppb.JOB_STATE_RUNNING
            assert client.get_job(ids[second]).state == ppb.JOB_STATE_PENDING
    finally:
        running_server.stop(grace_s=0.5)


@pytest.mark.parametrize(("tenant_weights", "expected"), [({}, {"a": 4, "b": 4}), ({"b": 2.0}, {"a": 3, "b": 5}),
                                                          ({"a": 3.0}, {"a": 6, "b": 2})])
def test_within_one_batch_cycle_tenants_fill_by_weight(
    small_grid: Grid, tenant_weights: dict[str, float], expected: dict[str, int]
) -> None:
    """128 free GPUs in the only pool the jobs may use, nothing running, eight 16-GPU jobs each:
    progressive filling gives each tenant GPUs in proportion to its weight (as far as whole jobs
    allow), whatever the order the jobs come in."""
    index = GridIndex.build(small_grid)
    jobs = [(f"{t}{i}", spec(f"{t}{i}", 16, t)) for t in ("a", "b") for i in range(8)]
    result = solve_batch(index, Usage.empty(index), jobs, fair_policy(tenant_weights), time_limit_s=5.0, workers=1,
                         weighted_shares={})
    placed = {t: sum(1 for j in result.placements if j.startswith(t)) for t in ("a", "b")}
    assert placed == expected
