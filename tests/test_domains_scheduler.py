"""Topology inside a site, end to end through the Scheduler: submissions, the queue, preemption
and the batch cycle all give reservations their nodes, and whole-domain jobs stay on whole racks.

The ledger is the real memory store, which keeps per-node usage (tests/test_node_ledger.py
checks both stores' node accounting).
"""

from __future__ import annotations

from dataclasses import replace

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.client import Client
from grid_scheduler.model import EventType, Grid, JobRecord, JobSpec, JobState, Policy
from grid_scheduler.scheduler import Scheduler, transitions
from grid_scheduler.scheduler.queue_index import _new_class
from grid_scheduler.service.convert import spec_dict, spec_to_pb
from grid_scheduler.service.metrics import LedgerCollector
from grid_scheduler.state import Limits, MemoryStore
from tests.invariants import placement_violations
from tests.strategies import training_specs
from tests.test_service import bad_request_fields


def NodeLedger(grid: Grid) -> MemoryStore:
    """The memory store: it keeps GPUs per node and out-of-service nodes (state/memory.py)."""
    return MemoryStore(Limits.from_grid(grid))


def _job(name: str, gpus: int, topology: dict[str, object] | None = None, priority: int = 0,
         preemptible: bool = False) -> JobSpec:
    return JobSpec.model_validate({
        "name": name, "tenant": "acme", "kind": "training", "gpus": {"count": gpus, "types": ["GB300"]},
        "topology": topology or {}, "priority": priority, "preemptible": preemptible,
    })


def _node_violations(grid: Grid, jobs: list[JobRecord]) -> list[str]:
    """Over-filled or out-of-service nodes, and whole-domain jobs not on whole domains."""
    problems = []
    pools = {p.id: p for s in grid.sites for p in s.pools}
    used: dict[str, np.ndarray] = {pid: np.zeros(p.nodes, dtype=np.int64) for pid, p in pools.items()}
    for job in jobs:
        if job.state is not JobState.RUNNING or job.placement is None:
            continue
        for a in job.placement.assignments:
            pool = pools[a.pool_id]
            if sum(n for _, n in a.nodes) != a.gpus:
                problems.append(f"{job.id}: nodes of {a.pool_id} do not sum to {a.gpus}")
            per_domain: dict[int, int] = {}
            for node, n in a.nodes:
                used[a.pool_id][node] += n
                if node >= pool.nodes - pool.drained_nodes:
                    problems.append(f"{job.id}: drained node {node} of {a.pool_id}")
                per_domain[node // pool.nodes_per_domain] = per_domain.get(node // pool.nodes_per_domain, 0) + n
            if job.spec.topology.mode.value == "whole_domains" and set(per_domain.values()) != {pool.domain_gpus}:
                problems.append(f"{job.id}: not whole domains of {a.pool_id}: {per_domain}")
    for pid, row in used.items():
        if (row > pools[pid].gpus_per_node).any():
            problems.append(f"{pid}: a node over-filled")
    return problems


def _running(s: Scheduler) -> list[JobRecord]:
    return s.store.running_jobs()


def test_whole_rack_jobs_fill_whole_racks_then_wait_with_the_largest_free_domain(small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=NodeLedger(small_grid), quiet=True)
    # small.yaml: sines-gb300 has one whole NVL72 rack (nodes 0-17) and a short one (18-31);
    # glomfjord-gb300 has six whole racks and a seventh partly drained.
    small = s.submit(_job("small", 8)).record
    assert small.state is JobState.RUNNING and small.placement is not None
    [a] = small.placement.assignments
    assert all(node >= 18 for node, _ in a.nodes) if a.pool_id == "sines-gb300" else all(
        node >= 108 for node, _ in a.nodes), "the small job keeps out of whole racks"
    racks = [s.submit(_job(f"rack-{i}", 72, {"mode": "whole_domains"}, preemptible=True)).record for i in range(8)]
    assert [r.state for r in racks] == [JobState.RUNNING] * 7 + [JobState.PENDING]
    assert _node_violations(small_grid, _running(s)) == []
    waiting = racks[-1]
    assert waiting.waiting is not None
    assert any("no domain with 72 free GPUs in pool" in line and "largest free" in line
               for line in waiting.waiting.summary), waiting.waiting.summary
    # A rack frees: the queue places the waiting job on exactly that rack's nodes.
    freed = racks[2]
    s.complete(freed.id)
    placed = s.get(waiting.id)
    assert placed.state is JobState.RUNNING and placed.placement is not None
    assert placed.placement.assignments[0].nodes == freed.placement.assignments[0].nodes  # type: ignore[union-attr]
    assert _node_violations(small_grid, _running(s)) == []


def test_preemption_hands_the_victims_rack_to_a_whole_domain_job(small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=NodeLedger(small_grid), quiet=True)
    racks = [s.submit(_job(f"rack-{i}", 72, {"mode": "whole_domains"}, preemptible=True)).record for i in range(7)]
    assert all(r.state is JobState.RUNNING for r in racks)
    urgent = s.submit(_job("urgent", 72, {"mode": "whole_domains"}, priority=5)).record
    assert urgent.state is JobState.RUNNING and urgent.placement is not None
    evicted = [r for r in racks if s.get(r.id).state is not JobState.RUNNING]
    assert len(evicted) == 1
    assert urgent.placement.assignments[0].nodes == evicted[0].placement.assignments[0].nodes  # type: ignore[union-attr]
    assert _node_violations(small_grid, _running(s)) == []


def _fill_and_free_two_racks(s: Scheduler) -> list[JobRecord]:
    """Every GB300 rack filled, then two freed with no queue pass (what the batch cycle is for);
    returns the waiting jobs: a plain 64-GPU job and a whole-rack job."""
    fillers = [s.submit(_job(f"fill-{i}", 72, {"mode": "whole_domains"}, preemptible=True)).record for i in range(7)]
    loose = s.submit(_job("loose", 16)).record  # the short and the partly drained racks: 56 + 24 free
    assert loose.state is JobState.RUNNING
    waiting = [s.submit(_job("plain", 64)).record, s.submit(_job("rack", 72, {"mode": "whole_domains"})).record]
    assert all(r.state is JobState.PENDING for r in waiting)
    for f in fillers[:2]:
        record = s.get(f.id)
        s.store.apply(f.id, record.version, transitions.finished(
            record, JobState.COMPLETED, EventType.COMPLETED, "completed", s.now()))
    return waiting


def test_batch_commit_gives_the_plan_nodes_whole_domain_jobs_included(small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=NodeLedger(small_grid), quiet=True)
    waiting = _fill_and_free_two_racks(s)
    outcome = s.optimize_pending(time_limit_s=2.0, workers=1)
    # The solver sees the freed racks (engine/batch_racks.py): the rack job is in the plan and
    # committed on a whole rack; the plain job takes the short racks' GPUs, not the other rack.
    assert set(outcome.result.placements) == {r.id for r in waiting}
    assert {r.id for r in outcome.committed} == {r.id for r in waiting}
    assert all(a.nodes for r in _running(s) for a in r.placement.assignments)  # type: ignore[union-attr]
    assert _node_violations(small_grid, _running(s)) == []


def test_a_planned_rack_job_whose_racks_went_meanwhile_waits_with_reasons(small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=NodeLedger(small_grid), quiet=True)
    waiting = _fill_and_free_two_racks(s)
    plan = s.plan_pending(time_limit_s=2.0, workers=1)
    assert waiting[1].id in plan.result.placements
    # Online work takes both free racks while the solver thought.
    taken = [s.submit(_job(f"online-{i}", 72, {"mode": "whole_domains"}, priority=1)).record for i in range(2)]
    assert all(r.state is JobState.RUNNING for r in taken)
    committed = s.commit_plan(plan)
    assert waiting[1].id not in {r.id for r in committed}
    rack = s.get(waiting[1].id)
    assert rack.state is JobState.PENDING and rack.placement is None  # nothing half-done
    assert rack.waiting is not None and rack.waiting.summary
    assert _node_violations(small_grid, _running(s)) == []


# --- the service edge: JobSpec.topology (proto field 13) -------------------------------------


def test_topology_round_trips_through_the_proto() -> None:
    for topology in ({}, {"mode": "whole_domains"}, {"mode": "slices", "slice_gpus": 8}):
        spec = _job("t", 144, topology)
        assert JobSpec.model_validate(spec_dict(spec_to_pb(spec))) == spec
    assert not spec_to_pb(_job("t", 8)).HasField("topology"), "no topology asked: the field stays unset"


@pytest.mark.parametrize(
    ("topology", "field"),
    [
        (pb.GpuTopology(mode=pb.TOPOLOGY_MODE_SLICES, slice_gpus=0), "spec.topology.slice_gpus"),
        (pb.GpuTopology(mode=pb.TOPOLOGY_MODE_SLICES, slice_gpus=7), "spec.topology.slice_gpus"),
        (pb.GpuTopology(mode=pb.TOPOLOGY_MODE_WHOLE_DOMAINS, slice_gpus=8), "spec.topology.slice_gpus"),
        (pb.GpuTopology(mode=9), "spec.topology.mode"),  # type: ignore[arg-type]
        (pb.GpuTopology(mode=pb.TOPOLOGY_MODE_SLICES, slice_gpus=-8), "spec.topology.slice_gpus"),
    ],
)
def test_bad_topology_is_invalid_argument_naming_the_field(
    client: Client, topology: pb.GpuTopology, field: str
) -> None:
    spec = spec_to_pb(_job("t", 144))
    spec.topology.CopyFrom(topology)
    with pytest.raises(grpc.RpcError) as exc:
        client.submit(spec)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_request_fields(exc.value)
    assert list(client.list_jobs()) == []


def test_a_size_no_domain_divides_is_rejected_with_the_domain_size(client: Client) -> None:
    reply = client.submit(_job("odd", 100, {"mode": "whole_domains"}), full=True)
    assert reply.job.state == pb.JOB_STATE_REJECTED
    messages = [r.message for r in reply.job.reasons]
    assert "100 GPUs are not whole 72-GPU domains of pool sines-gb300" in messages
    assert client.submit(_job("two-racks", 144, {"mode": "whole_domains"})).job.state == pb.JOB_STATE_RUNNING


def test_fragmentation_gauge_counts_free_gpus_in_partly_used_racks(small_grid: Grid) -> None:
    s = Scheduler(small_grid, store=NodeLedger(small_grid), quiet=True)

    def fragmented() -> dict[str, float]:
        [family] = [f for f in LedgerCollector(s).collect() if f.name == "grid_scheduler_fragmented_gpus"]
        return {sample.labels["pool"]: sample.value for sample in family.samples}

    assert set(fragmented().values()) == {0.0}
    rack = s.submit(_job("rack", 72, {"mode": "whole_domains"})).record
    assert set(fragmented().values()) == {0.0}, "a whole rack leaves no partly used rack"
    small = s.submit(_job("small", 8)).record
    [a] = small.placement.assignments  # type: ignore[union-attr]
    pool = next(p for site in small_grid.sites for p in site.pools if p.id == a.pool_id)
    # The small job went into a short or partly drained rack: what is left of it is fragmented.
    domain = a.nodes[0][0] // pool.nodes_per_domain
    in_service = [n for n in range(domain * pool.nodes_per_domain, min((domain + 1) * pool.nodes_per_domain,
                                                                         pool.nodes - pool.drained_nodes))]
    assert fragmented()[a.pool_id] == len(in_service) * pool.gpus_per_node - 8
    assert rack.state is JobState.RUNNING


@pytest.mark.parametrize("inference_placement", ["greedy", "optimal"])
def test_deployments_get_nodes_greedy_or_optimal(small_grid: Grid, inference_placement: str) -> None:
    policy = Policy.model_validate({"inference_placement": inference_placement})
    s = Scheduler(small_grid, policy, store=NodeLedger(small_grid), quiet=True)
    spec = JobSpec.model_validate({
        "name": "serve", "tenant": "acme", "kind": "inference", "gpus": {"count": 8},
        "inference": {"replicas": 3, "demand": [{"endpoint": "london"}, {"endpoint": "frankfurt"}],
                      "latency_slo_ms": 20},
    })
    record = s.submit(spec).record
    assert record.state is JobState.RUNNING and record.placement is not None
    for a in record.placement.assignments:
        assert sum(n for _, n in a.nodes) == a.gpus
    assert _node_violations(small_grid, _running(s)) == []


def test_a_waiting_rack_job_is_woken_by_a_move_that_leaves_pool_counts_alone(small_grid: Grid) -> None:
    """The queue skips a class whose last failure saw the same usage; for a whole-domain job the
    same pool counts with GPUs in other racks are not the same usage."""
    s = Scheduler(small_grid, store=NodeLedger(small_grid), quiet=True)
    cls = _new_class(s, _job("rack", 72, {"mode": "whole_domains"}))
    plain = _new_class(s, _job("plain", 72))
    before = s.usage()
    p = s.index.pool_index["glomfjord-gb300"]
    moved = [u.copy() for u in before.node_used_gpus]
    moved[p][0] = 4  # 4 GPUs in rack 0 ...
    other = [u.copy() for u in moved]
    other[p][0], other[p][18] = 0, 4  # ... or the same 4 in rack 1: the same pool counts
    used = before.pool_used_gpus.copy()
    used[p] += 4
    a = replace(before, pool_used_gpus=used, node_used_gpus=tuple(moved))
    b = replace(before, pool_used_gpus=used, node_used_gpus=tuple(other))
    assert cls.signature(a) != cls.signature(b)
    assert plain.signature(a) == plain.signature(b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(st.tuples(st.just("submit"), training_specs()),
                                st.tuples(st.just("complete"), st.integers(0, 7))), min_size=1, max_size=10))
def test_random_histories_never_double_book_a_node(small_grid: Grid, steps: list[tuple[str, object]]) -> None:
    s = Scheduler(small_grid, store=NodeLedger(small_grid), quiet=True)
    for kind, arg in steps:
        if kind == "submit":
            assert isinstance(arg, JobSpec)
            s.submit(arg)
        else:
            running = sorted(_running(s), key=lambda r: r.id)
            if running:
                s.complete(running[int(arg) % len(running)].id)  # type: ignore[call-overload]
        jobs = _running(s)
        assert _node_violations(small_grid, jobs) == []
        for job in jobs:
            assert job.placement is not None
            assert all(a.nodes for a in job.placement.assignments), "every reservation says its nodes"
            assert placement_violations(small_grid, job.spec, job.placement) == []
