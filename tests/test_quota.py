"""Quotas: cohorts, borrowing and lending limits, enforced by the engine and by both ledgers.

The invariant checks here recompute groups and usage from the grid and the running jobs, not
through engine/quota.py, so a bug there cannot hide itself.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from uuid import uuid4

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.config import EXAMPLES_DIR
from grid_scheduler.engine.quota import compile_rules
from grid_scheduler.model import Assignment, EventType, Grid, JobRecord, JobSpec, JobState, Policy, ReasonCode
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.state import Limits, MemoryStore, QuotaConflict, Store, Transition
from tests.strategies import job_specs

EXAMPLE = EXAMPLES_DIR / "policies" / "quotas.yaml"
TENANTS = ["acme", "bank", "retail", "media", "other"]


def example_policy() -> Policy:
    return Policy.model_validate(yaml.safe_load(EXAMPLE.read_text()))


def spec(tenant: str, gpus: int, types: tuple[str, ...] = ("GB300",), residency: dict | None = None,
         priority: int = 0, gang: bool = True, preemptible: bool = True) -> JobSpec:
    return JobSpec.model_validate({
        "name": "q", "tenant": tenant, "kind": "training", "gang": gang, "priority": priority,
        "preemptible": preemptible, "gpus": {"count": gpus, "types": list(types)},
        "residency": residency or {}, "training": {"duration_hours": 1},
    })


EU = {"allowed": ["EU"]}
PT = {"allowed": ["PT"]}  # sines only
NOT_EU = {"denied": ["EU"]}  # GB300 outside the EU: glomfjord, group gb300


# --- an independent oracle ------------------------------------------------------------
def group_of(grid: Grid, policy: Policy) -> dict[str, str]:
    """pool id -> the first resource group matching it."""
    out = {}
    for site in grid.sites:
        for pool in site.pools:
            for g in policy.quotas.resource_groups:
                if ((not g.gpu_types or pool.gpu_type in g.gpu_types)
                        and (not g.jurisdictions or set(g.jurisdictions) & set(site.tags))
                        and (not g.tiers or site.tier.value in g.tiers)
                        and (not g.sites or site.id in g.sites)):
                    out[pool.id] = g.name
                    break
    return out


def usage_by_running(store: Store) -> dict[str, dict[str, int]]:
    """tenant -> pool -> GPUs, from the running jobs' placements."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in store.running_jobs():
        assert r.placement is not None
        for a in r.placement.assignments:
            out[r.spec.tenant][a.pool_id] += a.gpus
    return out


def assert_within_quotas(grid: Grid, policy: Policy, store: Store) -> None:
    running = usage_by_running(store)
    snap = store.snapshot()
    limits = Limits.from_grid(grid)
    # The ledger's quota usage is exactly the sum over running jobs.
    for tenant in set(running) | set(snap.tenant_pool_gpus):
        row = snap.tenant_pool_gpus.get(tenant)
        for pool_id, i in limits.pool_index.items():
            assert (int(row[i]) if row is not None else 0) == running[tenant].get(pool_id, 0), (tenant, pool_id)
    groups = group_of(grid, policy)
    used: dict[tuple[str, str], int] = defaultdict(int)
    for tenant, pools in running.items():
        for pool_id, n in pools.items():
            if pool_id in groups:
                used[(tenant, groups[pool_id])] += n
    for cohort in policy.quotas.cohorts:
        shared: dict[str, int] = defaultdict(int)
        lends: dict[str, int] = defaultdict(int)
        for tenant, quotas in cohort.tenants.items():
            for group, q in quotas.items():
                u = used[(tenant, group)]
                if q.borrowing_limit_gpus is not None:
                    assert u <= q.nominal_gpus + q.borrowing_limit_gpus, (tenant, group, u)
                lend = q.nominal_gpus if q.lending_limit_gpus is None else q.lending_limit_gpus
                lends[group] += lend
                shared[group] += max(0, u - (q.nominal_gpus - lend))
        for group, borrowed in shared.items():
            assert borrowed <= lends[group], (cohort.name, group, borrowed, lends[group])


# --- the rule ---------------------------------------------------------------------------
def test_example_policy_has_two_cohorts_and_four_tenants(small_grid: Grid) -> None:
    policy = example_policy()
    assert len(policy.quotas.cohorts) == 2
    assert sum(len(c.tenants) for c in policy.quotas.cohorts) == 4
    rules = compile_rules(small_grid, policy.quotas)
    assert rules.groups == ("gb300-eu", "gb300", "hub-h100")


def test_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="unknown resource group"):
        Policy.model_validate({"quotas": {"cohorts": [{"name": "c", "tenants": {"a": {"nope": {"nominal_gpus": 1}}}}]}})
    with pytest.raises(ValueError, match="lending_limit_gpus cannot exceed"):
        Policy.model_validate({"quotas": {"resource_groups": [{"name": "g"}], "cohorts": [
            {"name": "c", "tenants": {"a": {"g": {"nominal_gpus": 1, "lending_limit_gpus": 2}}}}]}})


def test_borrowing_stops_at_the_limit_and_the_wait_says_why(small_grid: Grid) -> None:
    """acme: nominal 64 + borrowing 32 of GB300 in EU (sines, 128 GPUs); bank lends its 64."""
    s = Scheduler(small_grid, example_policy())
    first = s.submit(spec("acme", 64, residency=EU)).record
    assert first.state is JobState.RUNNING
    second = s.submit(spec("acme", 32, residency=EU)).record
    assert second.state is JobState.RUNNING  # borrowed from bank's unused nominal quota
    third = s.submit(spec("acme", 8, residency=EU)).record
    assert third.state is JobState.PENDING
    assert third.waiting is not None and third.waiting.site_counts.get("quota") == 1
    reasons = [r for r in s.reasons_now(third) if r.code is ReasonCode.QUOTA]
    assert len(reasons) == 1
    r = reasons[0]
    assert (r.used, r.nominal, r.borrowable, r.unit, r.required, r.available) == (96, 64, 0, "gpus", 8, 0)
    # bank takes the 32 GPUs left; 33 more would put it over its nominal 64 (and it may not borrow).
    assert s.submit(spec("bank", 32, residency=EU)).record.state is JobState.RUNNING
    assert s.submit(spec("bank", 33, residency=EU)).record.state is JobState.PENDING
    assert s.get(second.id).state is JobState.RUNNING  # no reclaim beyond bank's nominal quota
    # Completing acme's job frees quota: the waiting acme job starts.
    s.complete(first.id)
    assert s.get(third.id).state is JobState.RUNNING
    assert_within_quotas(small_grid, s.policy, s.store)


def test_lending_limit_keeps_part_of_the_nominal_quota(small_grid: Grid) -> None:
    """products: media lends only 64 of its 128 GB300 (glomfjord, 480 healthy); retail may borrow 128."""
    s = Scheduler(small_grid, example_policy())
    assert s.submit(spec("retail", 256, residency=NOT_EU)).record.state is JobState.RUNNING
    # retail's nominal 256 plus what media lends (64): 320, not the 384 its borrowing limit allows.
    assert s.submit(spec("retail", 64, residency=NOT_EU)).record.state is JobState.RUNNING
    assert s.submit(spec("retail", 1, residency=NOT_EU)).record.state is JobState.PENDING
    # media's guaranteed 64 are still there for it without touching retail.
    borrowed = s.store.running_jobs()
    assert s.submit(spec("media", 64, residency=NOT_EU)).record.state is JobState.RUNNING
    assert {r.id for r in s.store.running_jobs()} >= {r.id for r in borrowed}
    # Its lent 64 are in use by retail: one GPU more is a reclaim of retail's borrowed job.
    assert s.submit(spec("media", 1, residency=NOT_EU)).record.state is JobState.RUNNING
    # The reclaim evicted retail's borrowed 64; what media does not use of them goes back to the
    # queue at once (a preempting submission runs a queue pass), and retail's waiting 1-GPU job
    # borrows one of the 63 media still lends: retail holds its nominal 256 plus 1, not 320.
    assert sorted(r.placement.gpus for r in s.store.running_jobs()
                  if r.spec.tenant == "retail" and r.placement is not None) == [1, 256]
    assert sorted(r.spec.gpus.count for r in s.store.pending_jobs() if r.spec.tenant == "retail") == [64]
    # Unlisted tenants and groups are unlimited.
    assert s.submit(spec("other", 32, residency=NOT_EU)).record.state is JobState.RUNNING


def test_split_jobs_respect_the_group_total(small_grid: Grid) -> None:
    """A split job over several pools of one group gets no more than the group's headroom."""
    policy = Policy.model_validate({"quotas": {
        "resource_groups": [{"name": "sines", "sites": ["sines"]}],
        "cohorts": [{"name": "c", "tenants": {"acme": {"sines": {"nominal_gpus": 150, "borrowing_limit_gpus": 0}}}}],
    }})
    s = Scheduler(small_grid, policy)
    both = ("GB300", "H100")
    # More than the tenant may ever hold (nominal + borrowing limit): no waiting can help.
    assert s.submit(spec("acme", 200, both, residency=PT, gang=False)).record.state is JobState.REJECTED
    assert s.submit(spec("acme", 100, ("H100",), residency=PT)).record.state is JobState.RUNNING
    split = s.submit(spec("acme", 60, both, residency=PT, gang=False)).record
    assert split.state is JobState.PENDING  # only 50 left in the group, though both pools have room
    assert split.waiting is not None and split.waiting.site_counts.get("quota") == 1
    placed = s.submit(spec("acme", 50, both, residency=PT, gang=False)).record
    assert placed.state is JobState.RUNNING and placed.placement is not None
    assert sum(a.gpus for a in placed.placement.assignments) == 50


def test_the_ledger_refuses_what_another_decision_already_took(small_grid: Grid) -> None:
    """Two decisions made on the same snapshot, each within quota alone: the second commit is refused."""
    policy = example_policy()
    rules = compile_rules(small_grid, policy.quotas)
    store = MemoryStore(Limits.from_grid(small_grid))
    _commit_two_racing(store, rules)


@pytest.mark.redis
def test_the_redis_script_refuses_what_another_replica_already_took(small_grid: Grid, redis_url: str) -> None:
    from grid_scheduler.state.redis_store import RedisStore

    rules = compile_rules(small_grid, example_policy().quotas)
    store = RedisStore(Limits.from_grid(small_grid), redis_url, f"quota-{uuid4().hex[:12]}")
    try:
        _commit_two_racing(store, rules)
    finally:
        store.close()


def _commit_two_racing(store: Store, rules: object) -> None:
    def placed(job_id: str, gpus: int) -> Transition:
        s = spec("acme", gpus, residency=EU)
        record = JobRecord(id=job_id, spec=s, state=JobState.RUNNING, created_at=0.0, updated_at=0.0)
        a = Assignment(site_id="sines", pool_id="sines-gb300", gpu_type="GB300", gpus=gpus, power_kw=gpus * 1.75)
        return Transition(record.model_copy(update={"placement": None}), EventType.PLACED, reserve=[a])

    store.commit((), placed("job-a", 64), quota=rules)  # type: ignore[arg-type]
    with pytest.raises(QuotaConflict):
        store.commit((), placed("job-b", 40), quota=rules)  # type: ignore[arg-type]
    assert store.get_job("job-b") is None
    assert int(store.snapshot().tenant_pool_gpus["acme"].sum()) == 64
    store.commit((), placed("job-c", 32), quota=rules)  # type: ignore[arg-type]


# --- random histories -------------------------------------------------------------------
Step = tuple[str, int, int, int, int]  # (op, tenant or job index, GPUs, type choice, priority)

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["submit", "submit", "submit", "complete", "cancel"]),
        st.integers(0, 40),
        st.sampled_from([8, 16, 32, 64, 96, 128]),
        st.integers(0, 3),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=14,
)
TYPE_CHOICES = [(("GB300",), EU), (("GB300",), None), (("H100",), None), (("GB300", "H100"), None)]


def run_history(grid: Grid, schedulers: list[Scheduler], steps: list[Step]) -> None:
    jobs: list[str] = []
    for n, (op, who, gpus, choice, priority) in enumerate(steps):
        s = schedulers[n % len(schedulers)]  # replicas take turns
        if op == "submit":
            types, residency = TYPE_CHOICES[choice]
            jobs.append(s.submit(spec(TENANTS[who % len(TENANTS)], gpus, types, residency, priority,
                                      gang=priority % 2 == 0)).record.id)
        elif jobs:
            job_id = jobs[who % len(jobs)]
            record = s.get(job_id)
            if op == "complete" and record.state is JobState.RUNNING:
                s.complete(job_id)
            elif op == "cancel" and not record.state.is_final:
                s.cancel(job_id)
        assert_within_quotas(grid, schedulers[0].policy, schedulers[0].store)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_random_histories_never_exceed_quotas_memory(small_grid: Grid, steps: list[Step]) -> None:
    run_history(small_grid, [Scheduler(small_grid, example_policy())], steps)


@pytest.fixture
def redis_stores(small_grid: Grid, redis_url: str) -> Iterator[object]:
    from grid_scheduler.state.redis_store import RedisStore

    opened: list[RedisStore] = []

    def open_pair() -> tuple[RedisStore, RedisStore]:
        name = f"quota-{uuid4().hex[:12]}"
        pair = (RedisStore(Limits.from_grid(small_grid), redis_url, name),
                RedisStore(Limits.from_grid(small_grid), redis_url, name))
        opened.extend(pair)
        return pair

    yield open_pair
    for store in opened:
        store.close()


@pytest.mark.redis
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_random_histories_never_exceed_quotas_redis(small_grid: Grid, redis_stores, steps: list[Step]) -> None:  # type: ignore[no-untyped-def]
    first, _ = redis_stores()
    run_history(small_grid, [Scheduler(small_grid, example_policy(), store=first)], steps)


@pytest.mark.redis
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_random_histories_two_replicas_on_one_redis(small_grid: Grid, redis_stores, steps: list[Step]) -> None:  # type: ignore[no-untyped-def]
    first, second = redis_stores()
    replicas = [Scheduler(small_grid, example_policy(), store=first),
                Scheduler(small_grid, example_policy(), store=second)]
    run_history(small_grid, replicas, steps)


@pytest.mark.redis
def test_two_replicas_racing_threads_never_overshoot(small_grid: Grid, redis_stores) -> None:  # type: ignore[no-untyped-def]
    """Two replicas submit for the same tenant at once (bounded: 2 x 12 jobs); the script keeps the cap."""
    first, second = redis_stores()
    replicas = [Scheduler(small_grid, example_policy(), store=first),
                Scheduler(small_grid, example_policy(), store=second)]
    start = threading.Barrier(2)

    def submit_many(s: Scheduler) -> None:
        start.wait(timeout=30)
        for _ in range(12):
            s.submit(spec("acme", 8, residency=EU))

    threads = [threading.Thread(target=submit_many, args=(s,)) for s in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert_within_quotas(small_grid, replicas[0].policy, first)
    held = sum(r.placement.gpus for r in first.running_jobs() if r.placement is not None)
    assert held == 96  # nominal 64 + borrowing limit 32, exactly


# --- the batch optimiser ------------------------------------------------------------------
def assert_placements_within_quotas(grid: Grid, policy: Policy, held: dict[str, dict[str, int]]) -> None:
    groups = group_of(grid, policy)
    used: dict[tuple[str, str], int] = defaultdict(int)
    for tenant, pools in held.items():
        for pool_id, n in pools.items():
            if pool_id in groups:
                used[(tenant, groups[pool_id])] += n
    for cohort in policy.quotas.cohorts:
        shared: dict[str, int] = defaultdict(int)
        lends: dict[str, int] = defaultdict(int)
        for tenant, quotas in cohort.tenants.items():
            for group, q in quotas.items():
                u = used[(tenant, group)]
                if q.borrowing_limit_gpus is not None:
                    assert u <= q.nominal_gpus + q.borrowing_limit_gpus, (tenant, group, u)
                lend = q.nominal_gpus if q.lending_limit_gpus is None else q.lending_limit_gpus
                lends[group] += lend
                shared[group] += max(0, u - (q.nominal_gpus - lend))
        for group, borrowed in shared.items():
            assert borrowed <= lends[group], (cohort.name, group, borrowed, lends[group])


@settings(max_examples=8, deadline=None)
@given(jobs=st.lists(st.tuples(st.integers(0, 4), st.sampled_from([8, 16, 32, 64]), st.integers(0, 3),
                               st.integers(0, 2)), min_size=1, max_size=30))
def test_batch_plans_respect_quotas(small_grid: Grid, jobs: list[tuple[int, int, int, int]]) -> None:
    from grid_scheduler.engine import GridIndex, Usage
    from grid_scheduler.engine.batch import solve_batch

    policy = example_policy()
    index = GridIndex.build(small_grid)
    specs = []
    for i, (who, gpus, choice, priority) in enumerate(jobs):
        types, residency = TYPE_CHOICES[choice]
        specs.append((f"job-{i:03d}", spec(TENANTS[who], gpus, types, residency, priority)))
    result = solve_batch(index, Usage.empty(index), specs, policy, time_limit_s=1.0, workers=1)
    held: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    spec_of = dict(specs)
    for job_id, placement in result.placements.items():
        for a in placement.assignments:
            held[spec_of[job_id].tenant][a.pool_id] += a.gpus
    assert_placements_within_quotas(small_grid, policy, held)


def test_batch_fills_a_quota_exactly_and_no_more(small_grid: Grid) -> None:
    """16 x 8 GB300 in EU for acme fit sines' 128 GPUs, but acme may hold 96 (64 + 32 borrowed)."""
    from grid_scheduler.engine import GridIndex, Usage
    from grid_scheduler.engine.batch import solve_batch

    policy = example_policy()
    index = GridIndex.build(small_grid)
    specs = [(f"job-{i:02d}", spec("acme", 8, residency=EU, priority=1)) for i in range(16)]
    specs += [(f"job-b{i:02d}", spec("bank", 8, residency=EU, priority=0)) for i in range(8)]
    result = solve_batch(index, Usage.empty(index), specs, policy, time_limit_s=2.0, workers=1)
    acme = sum(p.gpus for j, p in result.placements.items() if not j.startswith("job-b"))
    bank = sum(p.gpus for j, p in result.placements.items() if j.startswith("job-b"))
    assert (acme, bank) == (96, 32)


# --- reclaim ---------------------------------------------------------------------------------
def test_reclaim_returns_a_tenant_to_its_nominal_quota(small_grid: Grid) -> None:
    """acme borrows all that bank lends; bank, under its nominal quota, takes it back by preempting
    acme's borrowed work (lowest priority first), even though acme's jobs rank higher."""
    s = Scheduler(small_grid, example_policy())
    acme = [s.submit(spec("acme", 32, residency=EU, priority=p)).record for p in (5, 4, 3)]
    assert all(r.state is JobState.RUNNING for r in acme)  # 96: nominal 64 + 32 borrowed from bank
    assert s.submit(spec("acme", 8, residency=EU, priority=1)).record.state is JobState.PENDING
    # sines-gb300 has 32 left; bank wants its full nominal 64: 32 must come back from acme.
    bank = s.submit(spec("bank", 64, residency=EU, priority=0)).record
    assert bank.state is JobState.RUNNING
    states = {r.id: s.get(r.id).state for r in acme}
    assert states == {acme[0].id: JobState.RUNNING, acme[1].id: JobState.RUNNING, acme[2].id: JobState.PENDING}
    assert_within_quotas(small_grid, s.policy, s.store)
    # bank is at its nominal quota: it reclaims nothing more.
    assert s.submit(spec("bank", 8, residency=EU, priority=0)).record.state is JobState.PENDING
    assert {r.id: s.get(r.id).state for r in acme} == states


def test_no_reclaim_from_a_tenant_within_its_nominal_quota(small_grid: Grid) -> None:
    s = Scheduler(small_grid, example_policy())
    mine = s.submit(spec("acme", 64, residency=EU, priority=0)).record
    other = s.submit(spec("other", 64, residency=EU, priority=0)).record  # unlimited, in no cohort
    assert mine.state is JobState.RUNNING and other.state is JobState.RUNNING
    assert s.submit(spec("bank", 64, residency=EU, priority=0)).record.state is JobState.PENDING
    assert s.get(mine.id).state is JobState.RUNNING and s.get(other.id).state is JobState.RUNNING


# --- GetQuotaUsage and `grid-scheduler quotas` -----------------------------------------------
def test_get_quota_usage_over_grpc_and_reasons_carry_the_numbers(small_grid: Grid) -> None:
    from grid_scheduler._proto.v1 import placement_pb2 as ppb
    from grid_scheduler.client import Client
    from grid_scheduler.service.server import start_server

    s = Scheduler(small_grid, example_policy())
    running = start_server(s, "127.0.0.1:0", max_workers=4)
    try:
        with Client(f"127.0.0.1:{running.port}", timeout_s=10) as client:
            client.submit(spec("acme", 64, residency=EU))
            client.submit(spec("acme", 32, residency=EU))
            waiting = client.submit(spec("acme", 8, residency=EU), full=True)
            assert waiting.job.state == ppb.JOB_STATE_PENDING
            quota = [r for r in waiting.job.reasons if r.code == ppb.REASON_CODE_QUOTA]
            assert [(r.used, r.nominal, r.borrowable, r.unit) for r in quota] == [(96, 64, 0, "gpus")]
            reply = client.quota_usage()
            rows = {(q.tenant, q.resource_group): q for q in reply.usage}
            acme = rows[("acme", "gb300-eu")]
            assert (acme.cohort, acme.used_gpus, acme.nominal_gpus, acme.borrowed_gpus, acme.borrowable_gpus,
                    acme.headroom_gpus, acme.borrowing_limit_gpus, acme.HasField("lending_limit_gpus")) == (
                "research", 96, 64, 32, 0, 0, 32, False)
            bank = rows[("bank", "gb300-eu")]
            assert (bank.used_gpus, bank.headroom_gpus) == (0, 32)  # 32 of its 64 are lent to acme
            assert len(rows) == 6
            assert [q.tenant for q in client.quota_usage("bank").usage] == ["bank", "bank"]
    finally:
        running.stop(grace_s=0.5)


def test_quotas_cli_table_and_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess
    import sys
    import time
    from pathlib import Path

    from grid_scheduler.client import Client
    from tests.conftest import GRIDS
    from tests.net import free_port

    bin_dir = Path(sys.executable).parent
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [str(bin_dir / "grid-scheduler"), "serve", "--grid", str(GRIDS / "nscale.yaml"), "--address", address,
         "--policy", str(EXAMPLE), "--log-json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        with Client(address, timeout_s=2) as client:
            while True:
                try:
                    client.check_health()
                    break
                except Exception:
                    assert time.monotonic() < deadline and process.poll() is None, "server did not start"
                    time.sleep(0.2)
            client.submit(spec("acme", 72, residency=EU))

        def cli(*args: str) -> str:
            result = subprocess.run([str(bin_dir / "grid-scheduler"), "quotas", *args, "--address", address],
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            return result.stdout

        table = cli()
        assert "cohort" in table.splitlines()[0] and "borrowable" in table.splitlines()[0]
        acme = next(line for line in table.splitlines() if " acme " in f" {line} " and "gb300-eu" in line)
        assert acme.split()[:6] == ["research", "acme", "gb300-eu", "72", "64", "8"]
        data = json.loads(cli("--json", "--tenant", "acme"))
        assert [(u["resourceGroup"] if "resourceGroup" in u else u["resource_group"]) for u in data["usage"]] == [
            "gb300-eu", "hub-h100"]
    finally:
        process.kill()
        process.wait()


def run_reclaim(grid: Grid, replicas: list[Scheduler], borrower: list[tuple[int, int]], claims: list[int]) -> None:
    """acme fills what it can of GB300 in the EU (sines: 128 = acme's 64 + bank's 64 nominal), then
    bank asks for its nominal 64 in ``claims``-sized jobs: it must get all of it back."""
    for n, (gpus, priority) in enumerate(borrower):
        replicas[n % len(replicas)].submit(spec("acme", gpus, residency=EU, priority=priority))
        assert_within_quotas(grid, replicas[0].policy, replicas[0].store)
    for n, gpus in enumerate(claims):
        replicas[n % len(replicas)].submit(spec("bank", gpus, residency=EU, priority=0))
        assert_within_quotas(grid, replicas[0].policy, replicas[0].store)
    held = usage_by_running(replicas[0].store)
    assert sum(held["bank"].values()) == 64  # back at its nominal quota
    assert sum(held["acme"].values()) <= 64  # acme borrows nothing of bank's any more


CLAIMS = st.sampled_from([[64], [32, 32], [16, 16, 32], [8] * 8, [8, 8, 16, 32]])
BORROWER = st.lists(st.tuples(st.sampled_from([8, 16, 32]), st.integers(0, 9)), min_size=1, max_size=10)


@settings(max_examples=25, deadline=None)
@given(borrower=BORROWER, claims=CLAIMS)
def test_reclaim_always_returns_the_lender_to_its_nominal_quota(
    small_grid: Grid, borrower: list[tuple[int, int]], claims: list[int]
) -> None:
    run_reclaim(small_grid, [Scheduler(small_grid, example_policy())], borrower, claims)


@pytest.mark.redis
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(borrower=BORROWER, claims=CLAIMS)
def test_reclaim_with_two_replicas_on_one_redis(  # type: ignore[no-untyped-def]
    small_grid: Grid, redis_stores, borrower: list[tuple[int, int]], claims: list[int]
) -> None:
    first, second = redis_stores()
    run_reclaim(small_grid, [Scheduler(small_grid, example_policy(), store=first),
                             Scheduler(small_grid, example_policy(), store=second)], borrower, claims)


@settings(max_examples=40, deadline=None)
@given(job=job_specs(), history=st.lists(job_specs(), max_size=8))
def test_wait_info_counts_agree_with_the_rendered_quota_reasons(
    small_grid: Grid, job: JobSpec, history: list[JobSpec]
) -> None:
    """Under quotas too, wait_info's array counts and site_reasons' sentences agree."""
    from grid_scheduler.engine import decide, site_reasons, wait_info

    s = Scheduler(small_grid, example_policy())
    for h in history:
        s.submit(h)
    decision = decide(s.index, s.usage(), job, s.policy)
    by_site: dict[str, set[str]] = {}
    for reason in site_reasons(s.index, decision, s.policy):
        by_site.setdefault(reason.site_id, set()).add(reason.code.value)
        if reason.code is ReasonCode.QUOTA:
            assert reason.unit == "gpus" and reason.available < reason.required
    expected: dict[str, int] = {}
    for codes in by_site.values():
        for code in codes:
            expected[code] = expected.get(code, 0) + 1
    assert wait_info(s.index, decision, s.policy).site_counts == dict(sorted(expected.items()))
    if decision.placement is not None:  # the decision itself keeps the tenant within its quotas
        rules = compile_rules(small_grid, s.policy.quotas)
        adds = [(s.index.pool_index[a.pool_id], a.gpus) for a in decision.placement.assignments]
        assert rules.over(s.usage().tenant_pool_gpus, job.tenant, adds) == ""
