"""PolicyService over a real server on loopback: versions, validation, diff, apply, rollback."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from grid_scheduler._proto.v1 import policy_pb2 as pol
from grid_scheduler.client import Client
from grid_scheduler.scheduler import Scheduler
from tests.test_policy_live import CHAT

GREEN = "weights: {latency: 0, carbon: 10, energy_price: 0, packing: 0, data_movement: 0}\n"
NEAR = "weights: {latency: 10, carbon: 0, energy_price: 0, packing: 0, data_movement: 0}\n"


def error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def violations(e: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(e)  # type: ignore[arg-type]
    assert status is not None
    out = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


def test_apply_history_get_and_rollback(client: Client, scheduler: Scheduler) -> None:
    assert client.get_policy().version == 0  # nothing stored yet: the scheduler's own policy
    first = client.apply_policy(NEAR, "near users", expected_version=0)
    assert (first.version, first.reason, first.applied_by) == (1, "near users", "anonymous")
    placed = client.submit(CHAT).job
    assert [a.site_id for a in placed.placement.assignments] == ["manchester-edge"] and placed.policy_version == 1
    second = client.apply_policy(GREEN, "carbon first", expected_version=1)
    assert client.submit(CHAT).job.placement.assignments[0].site_id == "sines"
    stale = error(lambda: client.apply_policy(NEAR, "late", expected_version=1))
    assert stale.code() is grpc.StatusCode.ABORTED and "active policy is version 2" in stale.details()
    back = client.rollback_policy(1, "too far from London", expected_version=2)
    assert (back.version, back.rollback_of, back.sha256) == (3, 1, first.sha256)
    assert client.submit(CHAT).job.placement.assignments[0].site_id == "manchester-edge"
    assert [v.version for v in client.policy_versions(page_size=2)] == [3, 2, 1]  # paged under the hood
    assert client.get_policy(2).sha256 == second.sha256
    assert error(lambda: client.get_policy(9)).code() is grpc.StatusCode.NOT_FOUND
    assert scheduler.policy_version == 3


def test_apply_needs_a_reason_and_a_valid_document(client: Client) -> None:
    e = error(lambda: client.apply_policy(GREEN, "  "))
    assert e.code() is grpc.StatusCode.INVALID_ARGUMENT and "reason" in violations(e)
    assert client.get_policy().version == 0


def test_validate_names_every_bad_field(client: Client) -> None:
    bad = "weights: {carbon: -1, speed: 2}\ninference_placement: fastest\n"
    e = error(lambda: client.validate_policy(bad))
    assert e.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(e)) == {"document.yaml.weights.carbon", "document.yaml.weights.speed",
                                  "document.yaml.inference_placement"}
    message = pol.Policy(weights=pol.PolicyWeights(packing=-2), inference_placement="fastest", label="x")
    e = error(lambda: client.validate_policy(message))
    assert set(violations(e)) == {"document.policy.weights.packing", "document.policy.inference_placement"}
    assert "document.yaml" in violations(error(lambda: client.validate_policy("weights: [")))
    ok = client.validate_policy(pol.Policy(weights=pol.PolicyWeights(carbon=0.0)))
    assert ok.policy.weights.carbon == 0.0 and ok.policy.weights.latency == 1.0  # unset: the default


def test_diff_over_grpc_reports_moves_and_changes_nothing(client: Client, scheduler: Scheduler) -> None:
    client.apply_policy(NEAR, "near", expected_version=0)
    job = client.submit(CHAT).job
    version = scheduler.store.versions()
    diff = client.diff_policy(GREEN)
    assert diff.active_version == 1 and diff.jobs_considered == 1 and diff.moved_count == 1
    move = diff.moved[0]
    assert move.job_id == job.id
    assert (move.before.assignments[0].site_id, move.after.assignments[0].site_id) == ("manchester-edge", "sines")
    assert {t.term for t in move.terms} >= {"latency", "carbon"}
    assert diff.after.carbon_kg_per_hour < diff.before.carbon_kg_per_hour
    assert {d.key for d in diff.sites} == {"manchester-edge", "sines"}
    assert scheduler.store.versions() == version and client.get_job(job.id) == job
    assert client.get_policy().version == 1
