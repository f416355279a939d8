"""Malformed bytes and oversized echoes (issue 9): unparseable requests and overlong ids are
INVALID_ARGUMENT, and no error status outgrows gRPC's metadata limit, whatever the request held."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler._proto.v1 import scenario_pb2 as spb
from grid_scheduler._proto.v1 import topology_pb2 as tpb
from grid_scheduler.service import errors
from grid_scheduler.service.server import RunningServer

# A field tag with wire type 7, which does not exist: no protobuf message parses it.
BAD_BYTES = b"\x0f\x01\x02"

UNARY = [
    "/grid_scheduler.v1.PlacementService/SubmitJob",
    "/grid_scheduler.v1.PlacementService/GetJob",
    "/grid_scheduler.v1.PlacementService/ListJobs",
    "/grid_scheduler.v1.TopologyService/DrainPool",
    "/grid_scheduler.v1.ScenarioService/GetScenario",
    "/grid_scheduler.v1.ScenarioService/StartScenario",
    "/grpc.health.v1.Health/Check",
]
STREAMING = [
    "/grid_scheduler.v1.PlacementService/WatchJobs",
    "/grid_scheduler.v1.ScenarioService/WatchScenario",
    "/grpc.health.v1.Health/Watch",
]


@pytest.fixture
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


def details(error: grpc.RpcError) -> tuple[list[tuple[str, str]], list[str]]:
    """(field violations, ErrorInfo reasons) of a refused call."""
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()}: {error.details()}"
    fields: list[tuple[str, str]] = []
    reasons: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend((v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
    return fields, reasons


@pytest.mark.parametrize("method", UNARY)
def test_unparseable_unary_request_is_invalid_argument(channel: grpc.Channel, method: str) -> None:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as exc:
        call(BAD_BYTES, timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    fields, reasons = details(exc.value)
    assert [f for f, _ in fields] == ["request"]
    assert reasons == ["MALFORMED_REQUEST"]


@pytest.mark.parametrize("method", STREAMING)
def test_unparseable_streaming_request_is_invalid_argument(channel: grpc.Channel, method: str) -> None:
    call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as exc:
        list(call(BAD_BYTES, timeout=10))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
    assert details(exc.value)[1] == ["MALFORMED_REQUEST"]


def test_unparseable_reflection_request_is_invalid_argument(channel: grpc.Channel) -> None:
    # Reflection's one method streams both ways: every request message goes through the wrapper.
    call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                 request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as exc:
        list(call(iter([BAD_BYTES]), timeout=10))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()


def test_invalid_utf8_in_a_string_field_is_invalid_argument(channel: grpc.Channel) -> None:
    # GetJobRequest.id (field 1, length-delimited) holding bytes that are not UTF-8.
    call = channel.unary_unary("/grid_scheduler.v1.PlacementService/GetJob",
                               request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as exc:
        call(b"\x0a\x02\xff\xfe", timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


HUGE = "j" * 1_000_000

LONG_IDS = [
    ("/grid_scheduler.v1.PlacementService/GetJob", pb.GetJobRequest(id=HUGE), "id"),
    ("/grid_scheduler.v1.PlacementService/CancelJob", pb.CancelJobRequest(id=HUGE), "id"),
    ("/grid_scheduler.v1.PlacementService/CompleteJob", pb.CompleteJobRequest(id=HUGE), "id"),
    ("/grid_scheduler.v1.PlacementService/ListJobs", pb.ListJobsRequest(page_token=HUGE), "page_token"),
    ("/grid_scheduler.v1.PlacementService/SubmitJob", pb.SubmitJobRequest(request_id=HUGE), "request_id"),
    ("/grid_scheduler.v1.TopologyService/GetSite", tpb.GetSiteRequest(id=HUGE), "id"),
    ("/grid_scheduler.v1.TopologyService/DrainPool", tpb.DrainPoolRequest(pool_id=HUGE), "pool_id"),
    ("/grid_scheduler.v1.TopologyService/UndrainPool", tpb.UndrainPoolRequest(pool_id=HUGE), "pool_id"),
    ("/grid_scheduler.v1.ScenarioService/GetScenario", spb.GetScenarioRequest(id=HUGE), "id"),
    ("/grid_scheduler.v1.ScenarioService/CancelScenario", spb.CancelScenarioRequest(id=HUGE), "id"),
    ("/grid_scheduler.v1.ScenarioService/DeleteScenario", spb.DeleteScenarioRequest(id=HUGE), "id"),
    ("/grid_scheduler.v1.ScenarioService/StartScenario", spb.StartScenarioRequest(yaml="x", request_id=HUGE),
     "request_id"),
]


@pytest.mark.parametrize(("method", "request_message", "field"), LONG_IDS, ids=[m.rsplit("/", 1)[1] + "." + f
                                                                                for m, _, f in LONG_IDS])
def test_an_overlong_id_is_invalid_argument_naming_it(
    channel: grpc.Channel, method: str, request_message: object, field: str
) -> None:
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as exc:
        call(request_message.SerializeToString(), timeout=10)  # type: ignore[attr-defined]
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.value.code(), (exc.value.details() or "")[:200])
    fields, _ = details(exc.value)
    assert [f for f, _ in fields] == [field]
    assert len(exc.value.details() or "") <= errors.MAX_MESSAGE_BYTES


def test_an_overlong_watch_job_id_is_invalid_argument(channel: grpc.Channel) -> None:
    call = channel.unary_stream("/grid_scheduler.v1.PlacementService/WatchJobs",
                                request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as exc:
        list(call(pb.WatchJobsRequest(job_id=HUGE).SerializeToString(), timeout=10))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details(exc.value)[0]] == ["job_id"]


def test_an_id_at_the_limit_is_read_and_not_found(channel: grpc.Channel) -> None:
    call = channel.unary_unary("/grid_scheduler.v1.PlacementService/GetJob",
                               request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as exc:
        call(pb.GetJobRequest(id="\U0001f600" * errors.MAX_ID_CHARS).SerializeToString(), timeout=10)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert len((exc.value.details() or "").encode()) <= errors.MAX_MESSAGE_BYTES


def test_twenty_thousand_violations_stay_under_the_metadata_limit() -> None:
    violations = [(f"inference.demand[{i}].endpoint", f"unknown endpoint {'x' * 100!r}") for i in range(20_000)]
    status = errors.invalid_argument(violations)
    message = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    assert message.code == code_pb2.INVALID_ARGUMENT
    assert message.ByteSize() < 8 * 1024
    assert len(message.message.encode()) <= errors.MAX_MESSAGE_BYTES
    assert message.message.endswith("more")
    bad = error_details_pb2.BadRequest()
    message.details[0].Unpack(bad)
    assert len(bad.field_violations) <= errors.MAX_VIOLATIONS + 1
    assert bad.field_violations[0].field == "inference.demand[0].endpoint"
    assert bad.field_violations[-1].description == f"... and {20_000 - len(bad.field_violations) + 1} more"


def test_every_part_of_a_status_is_clipped() -> None:
    huge = "\u00e9" * 500_000  # two bytes each in UTF-8
    statuses = [
        errors.invalid_argument([(huge, huge)] * 3),
        errors.not_found("job", huge),
        errors.already_exists("job", huge, huge),
        errors.failed_precondition(huge, huge),
        errors.unavailable(huge),
        errors.resource_exhausted("R", huge, huge, {"k": huge}),
        errors.out_of_range("R", huge, huge, {"k": huge}),
    ]
    for status in statuses:
        message = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
        assert message.ByteSize() < 8 * 1024, status.code
        assert len(message.message.encode()) <= errors.MAX_MESSAGE_BYTES


def test_a_lone_violation_keeps_a_long_description() -> None:
    # Scenario files refused with every problem and its line: one violation may say ~1 KiB.
    text = "; ".join(f"line {i}: must be > 0" for i in range(40))
    status = errors.invalid_argument([("yaml", text)])
    message = status_pb2.Status.FromString(dict(status.trailing_metadata)["grpc-status-details-bin"])
    bad = error_details_pb2.BadRequest()
    message.details[0].Unpack(bad)
    assert bad.field_violations[0].description == text


def test_clip_keeps_short_text_and_marks_cut_text() -> None:
    assert errors.clip("abc", 10) == "abc"
    cut = errors.clip("a" * 100, 40)
    assert len(cut.encode()) <= 40 and cut.startswith("a") and "+" in cut
    emoji = errors.clip("\U0001f600" * 100, 41)
    assert len(emoji.encode()) <= 41
