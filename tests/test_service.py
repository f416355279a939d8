"""The gRPC service end to end: a real server on a loopback port, the real client."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.client import Client
from grid_scheduler.model import JobSpec, JobState
from grid_scheduler.service.convert import spec_to_pb


def training(count: int, allowed: list[str], types: list[str] | None = None, name: str = "t") -> JobSpec:
    return JobSpec.model_validate(
        {"name": name, "tenant": "acme", "kind": "training", "gpus": {"count": count, "types": types or ["GB300"]},
         "residency": {"allowed": allowed}}
    )


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


def free_gpus(client: Client, pool_id: str) -> int:
    for site in client.sites():
        for pool in site.pools:
            if pool.id == pool_id:
                return pool.free_gpus
    raise KeyError(pool_id)


def test_health_and_sites(client: Client) -> None:
    assert client.check_health() == health_pb2.HealthCheckResponse.SERVING
    sites = client.sites()
    assert [s.id for s in sites] == ["sines", "glomfjord", "london-hub", "frankfurt-hub", "manchester-edge"]
    glomfjord = sites[1]
    assert list(glomfjord.jurisdictions) == ["EEA", "NO"]
    assert glomfjord.pools[0].drained_gpus == 32 and glomfjord.pools[0].free_gpus == 480
    eu = client.sites(jurisdiction="EU")
    assert {s.id for s in eu} == {"sines", "frankfurt-hub"}


def test_capacity_rolls_up(client: Client) -> None:
    client.submit(training(64, ["EU"]))
    cap = client.capacity()
    assert cap.fleet.total_gpus == 1280
    assert cap.fleet.used_gpus == 64
    assert cap.fleet.drained_gpus == 32
    by_type = {r.key: r for r in cap.by_gpu_type}
    assert by_type["GB300"].total_gpus == 640 and by_type["GB300"].used_gpus == 64
    by_tag = {r.key: r for r in cap.by_jurisdiction}
    assert by_tag["EU"].total_gpus == 128 + 256 + 128  # Sines + Frankfurt; not Norway
    assert by_tag["EEA"].total_gpus == by_tag["EU"].total_gpus + 512
    assert by_tag["EU"].power_used_mw == pytest.approx(64 * 1.4 * 1.25 / 1000)
    assert {r.key for r in cap.by_tier} == {"ai_factory", "regional_hub", "edge"}


def test_submit_places_with_score_and_reasons(client: Client) -> None:
    response = client.submit(training(64, ["EU"]), full=True)
    job = response.job
    assert response.created and job.state == pb.JOB_STATE_RUNNING
    (assignment,) = job.placement.assignments
    assert (assignment.site_id, assignment.pool_id, assignment.gpus) == ("sines", "sines-gb300", 64)
    assert assignment.power_kw == pytest.approx(64 * 1.4 * 1.25)
    score = job.placement.score
    assert score.total == pytest.approx(score.carbon + score.energy_price + score.packing + score.latency
                                        + score.data_movement)
    # Every site not chosen has at least one reason, as structured fields.
    assert {r.site_id for r in job.reasons} == {"glomfjord", "london-hub", "frankfurt-hub", "manchester-edge"}
    norway = [r for r in job.reasons if r.site_id == "glomfjord"]
    assert norway[0].code == pb.REASON_CODE_RESIDENCY and "NO" in norway[0].message


def test_explain_reserves_nothing(client: Client) -> None:
    before = free_gpus(client, "sines-gb300")
    response = client.explain(training(64, ["EU"]))
    assert response.placeable and response.placement.assignments[0].pool_id == "sines-gb300"
    assert free_gpus(client, "sines-gb300") == before
    assert list(client.list_jobs()) == []


def test_pending_job_is_placed_when_capacity_frees(client: Client) -> None:
    first = client.submit(training(400, ["EEA"], name="first")).job
    assert first.state == pb.JOB_STATE_RUNNING and first.placement.assignments[0].site_id == "glomfjord"
    # 480 healthy GB300 at Glomfjord, 128 at Sines: 200 fit nowhere now.
    waiting = client.submit(training(200, ["EEA"], name="second")).job
    assert waiting.state == pb.JOB_STATE_PENDING
    assert waiting.waiting.site_counts["capacity"] == 2
    assert any("80 free GB300 < 200" in line for line in waiting.waiting.summary)
    full = client.get_job(waiting.id, full=True)
    assert {r.code for r in full.reasons} >= {pb.REASON_CODE_CAPACITY}
    client.cancel(first.id)
    placed = client.get_job(waiting.id)
    assert placed.state == pb.JOB_STATE_RUNNING
    assert placed.placement.assignments[0].gpus == 200


def test_completion_frees_capacity_for_the_queue(client: Client) -> None:
    first = client.submit(training(128, ["EU"])).job
    second = client.submit(training(128, ["EU"])).job
    assert second.state == pb.JOB_STATE_PENDING
    done = client.complete(first.id)
    assert done.state == pb.JOB_STATE_COMPLETED
    assert client.get_job(second.id).state == pb.JOB_STATE_RUNNING


def test_job_that_can_never_fit_is_rejected_not_queued(client: Client) -> None:
    job = client.submit(training(1000, ["EEA"])).job
    assert job.state == pb.JOB_STATE_REJECTED
    assert job.waiting.summary


def test_drain_keeps_running_jobs_and_blocks_new_ones(client: Client) -> None:
    running = client.submit(training(32, ["UK"], ["B200"])).job
    assert running.placement.assignments[0].pool_id == "london-b200"
    pool = client.drain("london-b200")
    assert pool.drained and pool.used_gpus == 32 and pool.free_gpus == 0
    assert client.get_job(running.id).state == pb.JOB_STATE_RUNNING
    waiting = client.submit(training(16, ["UK"], ["B200"])).job
    assert waiting.state == pb.JOB_STATE_PENDING
    assert waiting.waiting.site_counts["health"] == 1
    client.undrain("london-b200")
    assert client.get_job(waiting.id).state == pb.JOB_STATE_RUNNING


def test_resubmission_with_request_id_is_idempotent(client: Client) -> None:
    first = client.submit(training(64, ["EU"]), request_id="req-42")
    again = client.submit(training(64, ["EU"]), request_id="req-42")
    assert first.created and not again.created
    assert again.job.id == first.job.id
    assert free_gpus(client, "sines-gb300") == 128 - 64
    assert len(list(client.list_jobs())) == 1


def test_concurrent_resubmission_creates_one_job(client: Client) -> None:
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(client.submit(training(8, ["EU"]), "same").job.id))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert free_gpus(client, "sines-gb300") == 128 - 8


def test_list_jobs_pages(client: Client) -> None:
    ids = [client.submit(training(1, ["EU"], name=f"j{i}")).job.id for i in range(7)]
    pages, token = [], ""
    while True:
        page = client.list_jobs_page(page_size=3, page_token=token)
        pages.append([j.id for j in page.jobs])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == sorted(ids)
    running = list(client.list_jobs(states=(JobState.RUNNING,)))
    assert len(running) == 7
    assert list(client.list_jobs(states=(JobState.CANCELLED,))) == []


def test_watch_streams_events(client: Client) -> None:
    stream = client.watch(timeout_s=10)
    events: list[Any] = []

    def read() -> None:
        for event in stream:
            events.append(event)
            if len(events) == 3:
                break

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.3)  # the stream starts at "now": let it subscribe before anything happens
    job = client.submit(training(128, ["EU"])).job
    waiting = client.submit(training(128, ["EU"])).job
    client.cancel(job.id)
    reader.join(timeout=10)
    stream.cancel()  # type: ignore[attr-defined]
    kinds = [(e.job_id, e.type) for e in events]
    assert kinds == [(job.id, pb.EVENT_TYPE_PLACED), (waiting.id, pb.EVENT_TYPE_PENDING),
                     (job.id, pb.EVENT_TYPE_CANCELLED)]
    # Replay from the start, filtered to one job: its whole history, in order.
    replay = client.watch(job_id=waiting.id, from_start=True, timeout_s=10)
    seen = []
    for event in replay:
        seen.append(event.type)
        if len(seen) == 2:
            break
    replay.cancel()  # type: ignore[attr-defined]
    assert seen == [pb.EVENT_TYPE_PENDING, pb.EVENT_TYPE_PLACED]
    assert events[0].sequence < events[1].sequence < events[2].sequence


def raw_spec(**fields: Any) -> pb.JobSpec:
    spec = spec_to_pb(training(8, ["EU"]))
    for key, value in fields.items():
        target: Any = spec
        *path, last = key.split("__")
        for part in path:
            target = getattr(target, part)
        if isinstance(value, list):
            del getattr(target, last)[:]
            getattr(target, last).extend(value)
        else:
            setattr(target, last, value)
    return spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (raw_spec(gpus__count=-4), "spec.gpus.count"),
        (raw_spec(gpus__types=["TPUv9"]), "spec.gpus.types[0]"),
        (raw_spec(residency__allowed=[""]), "spec.residency.allowed[0]"),
        (raw_spec(tenant=""), "spec.tenant"),
        (raw_spec(kind=0), "spec.kind"),
        (raw_spec(name=""), "spec.name"),
    ],
)
def test_bad_requests_name_the_field(client: Client, spec: pb.JobSpec, field: str) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        client.submit(spec)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_request_fields(exc.value)
    assert list(client.list_jobs()) == []
    assert free_gpus(client, "sines-gb300") == 128


def test_bad_inference_requests(client: Client) -> None:
    spec = JobSpec.model_validate(
        {"name": "i", "tenant": "acme", "kind": "inference", "gpus": {"count": 8},
         "inference": {"replicas": 1, "demand": [{"endpoint": "london"}], "latency_slo_ms": 10}}
    )
    unknown = spec_to_pb(spec)
    unknown.inference.demand[0].endpoint = "tokyo"
    with pytest.raises(grpc.RpcError) as exc:
        client.submit(unknown)
    assert bad_request_fields(exc.value) == ["spec.inference.demand[0].endpoint"]
    zero_slo = spec_to_pb(spec)
    zero_slo.inference.latency_slo_ms = 0
    with pytest.raises(grpc.RpcError) as exc:
        client.explain(zero_slo)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(exc.value) == ["spec.inference.latency_slo_ms"]
    with pytest.raises(grpc.RpcError) as exc:
        client.placement.SubmitJob(pb.SubmitJobRequest())
    assert bad_request_fields(exc.value) == ["spec"]


def test_not_found_and_wrong_state(client: Client) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        client.get_job("job-nope")
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as exc:
        client.drain("pool-nope")
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    job = client.submit(training(8, ["EU"])).job
    cancelled = client.cancel(job.id)
    # A retried cancel is not an error: the cancelled job comes back unchanged.
    assert client.cancel(job.id) == cancelled
    with pytest.raises(grpc.RpcError) as exc:
        client.complete(job.id)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    done = client.submit(training(8, ["EU"])).job
    client.complete(done.id)
    with pytest.raises(grpc.RpcError) as exc:
        client.cancel(done.id)  # a completed job cannot become cancelled
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as exc:
        client.list_jobs_page(page_token="%%%")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_server_fits_the_solver_inside_the_callers_deadline(
    scheduler: object, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # time_limit_s asks for 60 s of solving; the caller allows 5 s. The server must cut the solver's
    # limit to fit (0.6 x the time remaining) and answer OK, not run past the deadline. This queue
    # solves to optimality in far less than either, so the limit the handler passes is recorded:
    # the test fails if the handler ignores the deadline, however quick the solve.
    from grid_scheduler.scheduler import Scheduler

    assert isinstance(scheduler, Scheduler)
    limits: list[float] = []
    solve = scheduler.optimize_pending

    def recording(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dry_run"):  # the handler's call, not the server's batch cycle
            limits.append(kwargs["time_limit_s"])
        return solve(*args, **kwargs)

    monkeypatch.setattr(scheduler, "optimize_pending", recording)
    client.drain("sines-gb300")
    for i in range(3):
        client.submit(training(32, ["EU"], name=f"d{i}"))
    scheduler.store.set_drained("sines-gb300", False)
    plan = client.placement.OptimizePending(pb.OptimizePendingRequest(dry_run=True, time_limit_s=60), timeout=5.0)
    # 0.6 x the time remaining; gRPC's deadline can arrive a few ms above 5 s, so only bound it by the deadline.
    assert len(limits) == 1 and 0 < limits[0] < 5.0
    assert len(plan.placements) == 3 and plan.solve_time_s < 5.0


def test_optimize_with_nothing_placeable(client: Client) -> None:
    client.drain("sines-gb300")
    queued = [client.submit(training(32, ["EU"], name=f"q{i}")).job for i in range(3)]
    assert all(j.state == pb.JOB_STATE_PENDING for j in queued)
    plan = client.optimize(dry_run=True, time_limit_s=2)
    assert plan.dry_run and plan.pending_before == 3 and len(plan.placements) == 0
    assert set(plan.unplaced_job_ids) == {j.id for j in queued}
    assert plan.solver_status and plan.gap == 0.0  # nothing can be placed: the bound is the objective


def test_optimize_reports_the_gap_and_commits(scheduler: object, client: Client) -> None:
    from grid_scheduler.scheduler import Scheduler

    assert isinstance(scheduler, Scheduler)
    client.drain("sines-gb300")
    queued = [client.submit(training(32, ["EU"], name=f"q{i}")).job for i in range(3)]
    # Open the pool behind the scheduler's back (no retry), so only the batch cycle places them.
    scheduler.store.set_drained("sines-gb300", False)
    plan = client.optimize(dry_run=True, time_limit_s=2)
    assert len(plan.placements) == 3 and not any(p.committed for p in plan.placements)
    assert all(client.get_job(j.id).state == pb.JOB_STATE_PENDING for j in queued)
    done = client.optimize(time_limit_s=2)
    assert not done.dry_run and all(p.committed for p in done.placements)
    assert done.solver_status == "OPTIMAL" and done.gap == 0.0 and done.gap == max(t.gap for t in done.tiers)
    assert [(t.jobs, t.placed) for t in done.tiers] == [(3, 3)]
    assert all(client.get_job(j.id).state == pb.JOB_STATE_RUNNING for j in queued)
    with pytest.raises(grpc.RpcError) as exc:
        client.optimize(time_limit_s=-1)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_preemption_evicts_the_cheapest_lower_priority_jobs(client: Client) -> None:
    def spec(count: int, priority: int, preemptible: bool) -> JobSpec:
        return JobSpec.model_validate(
            {"name": f"p{priority}", "tenant": "acme", "kind": "training", "preemptible": preemptible,
             "priority": priority, "gpus": {"count": count, "types": ["GB300"]}, "residency": {"allowed": ["EU"]}}
        )

    keep = client.submit(spec(64, 1, False)).job  # not preemptible
    victim = client.submit(spec(64, 1, True)).job
    assert keep.state == victim.state == pb.JOB_STATE_RUNNING
    # Equal priority never preempts.
    assert client.submit(spec(64, 1, False)).job.state == pb.JOB_STATE_PENDING
    urgent = client.submit(spec(64, 9, False)).job
    assert urgent.state == pb.JOB_STATE_RUNNING
    evicted = client.get_job(victim.id)
    assert evicted.state == pb.JOB_STATE_PENDING
    assert evicted.waiting.summary == [f"preempted by {urgent.id}"]
    assert client.get_job(keep.id).state == pb.JOB_STATE_RUNNING
    # Nothing is evicted when eviction would not make room.
    too_big = client.submit(spec(128, 9, False)).job
    assert too_big.state == pb.JOB_STATE_PENDING
    assert client.get_job(keep.id).state == pb.JOB_STATE_RUNNING
    assert client.get_job(urgent.id).state == pb.JOB_STATE_RUNNING
