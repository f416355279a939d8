"""No request, however malformed, gets INTERNAL or UNKNOWN, or takes the server down."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.client import Client
from grid_scheduler.service.server import RunningServer

SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

texts = st.one_of(st.sampled_from(["", "EU", "UK", "london", "GB300", "acme", "x" * 300]), st.text(max_size=20))
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
ints = st.integers(-(2**31), 2**31 - 1)


@st.composite
def specs(draw: st.DrawFn) -> pb.JobSpec:
    spec = pb.JobSpec(
        name=draw(texts), tenant=draw(texts), kind=draw(st.integers(-1, 5)),  # type: ignore[arg-type]
        gpus=pb.GpuRequest(count=draw(ints), types=draw(st.lists(texts, max_size=3)),
                           min_memory_gib=draw(floats)),
        priority=draw(ints), preemptible=draw(st.booleans()),
        residency=pb.ResidencyRule(allowed=draw(st.lists(texts, max_size=3)), denied=draw(st.lists(texts, max_size=2))),
    )
    if draw(st.booleans()):
        spec.gang = draw(st.booleans())
    if draw(st.booleans()):
        spec.training.CopyFrom(pb.TrainingSpec(duration_hours=draw(floats), datasets=draw(st.lists(texts, max_size=2))))
    if draw(st.booleans()):
        spec.inference.CopyFrom(pb.InferenceSpec(
            replicas=draw(ints), latency_slo_ms=draw(floats),
            demand=[pb.Demand(endpoint=draw(texts), weight=draw(floats)) for _ in range(draw(st.integers(0, 3)))],
        ))
    return spec


def code_of(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


@FUZZ
@given(spec=specs(), request_id=texts, view=st.integers(-1, 4))
def test_random_specs_never_fault(client: Client, spec: pb.JobSpec, request_id: str, view: int) -> None:
    submit = pb.SubmitJobRequest(spec=spec, request_id=request_id, view=view)  # type: ignore[arg-type]
    assert code_of(lambda: client.placement.SubmitJob(submit, timeout=10)) not in SERVER_FAULTS
    explain = pb.ExplainPlacementRequest(spec=spec)
    assert code_of(lambda: client.placement.ExplainPlacement(explain, timeout=10)) not in SERVER_FAULTS


@FUZZ
@given(payload=st.binary(max_size=200), method=st.sampled_from(
    ["SubmitJob", "ExplainPlacement", "GetJob", "ListJobs", "CancelJob", "CompleteJob"]))
def test_random_bytes_never_fault(server: RunningServer, payload: bytes, method: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.unary_unary(f"/grid_scheduler.v1.PlacementService/{method}",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        code = code_of(lambda: call(payload, timeout=10))
    # Bytes that do not parse are refused by gRPC itself (INTERNAL from the deserializer is
    # grpc's own code for that); anything that parses must not fault in our code.
    if code is grpc.StatusCode.INTERNAL:
        with pytest.raises(Exception):  # noqa: B017 - any parse error will do
            getattr(pb, f"{method}Request").FromString(payload)
    else:
        assert code not in SERVER_FAULTS


def test_server_still_serves_after_fuzzing(client: Client) -> None:
    assert client.check_health() == 1
