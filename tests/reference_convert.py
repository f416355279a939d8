"""The proto conversion of a job as it was before it filled messages in place (verbatim copy).

tests/test_convert_in_place.py holds convert.job_to_pb and convert.spec_to_pb to these, byte
for byte, on real records; the only change here is the names of the functions they call.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.engine.priority import expected_end
from grid_scheduler.model import JobRecord, JobSpec, JobState, Reason, TopologyMode
from grid_scheduler.service.convert import (
    KIND_TO_PB,
    STATE_TO_PB,
    TOPOLOGY_TO_PB,
    placement_to_pb,
    reason_to_pb,
    wait_to_pb,
)


def reference_spec_to_pb(spec: JobSpec) -> pb.JobSpec:
    message = pb.JobSpec(
        name=spec.name,
        tenant=spec.tenant,
        kind=KIND_TO_PB[spec.kind],
        gpus=pb.GpuRequest(
            count=spec.gpus.count, types=spec.gpus.types, min_memory_gib=spec.gpus.min_memory_gib
        ),
        gang=spec.gang,
        priority=spec.priority,
        preemptible=spec.preemptible,
        residency=pb.ResidencyRule(allowed=spec.residency.allowed, denied=spec.residency.denied),
        placement_preference=spec.placement_preference,
    )
    if spec.max_run_hours is not None:
        message.max_run_hours = spec.max_run_hours
    if spec.topology.mode is not TopologyMode.NONE:
        message.topology.CopyFrom(
            pb.GpuTopology(mode=TOPOLOGY_TO_PB[spec.topology.mode], slice_gpus=spec.topology.slice_gpus)
        )
    if spec.training is not None:
        message.training.CopyFrom(
            pb.TrainingSpec(duration_hours=spec.training.duration_hours, datasets=spec.training.datasets)
        )
    if spec.inference is not None:
        message.inference.CopyFrom(
            pb.InferenceSpec(
                replicas=spec.inference.replicas,
                demand=[pb.Demand(endpoint=d.endpoint, weight=d.weight) for d in spec.inference.demand],
                latency_slo_ms=spec.inference.latency_slo_ms,
            )
        )
    return message


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def reference_job_to_pb(
    record: JobRecord, reasons: list[Reason] | None = None, spec: pb.JobSpec | None = None,
    estimated_start: float | None = None,
) -> pb.Job:
    """``spec``: the request's own message, when it is known to be this record's spec."""
    job = pb.Job(
        id=record.id,
        request_id=record.request_id,
        spec=spec if spec is not None else reference_spec_to_pb(record.spec),
        state=STATE_TO_PB[record.state],
        reasons=[reason_to_pb(r) for r in reasons or []],
        create_time=_timestamp(record.created_at),
        update_time=_timestamp(record.updated_at),
        owner=record.owner,
        policy_version=record.policy_version,
        attempts=record.attempts,
        end_reason=record.end_reason,
    )
    if record.state is JobState.RUNNING and record.started_at is not None:
        job.start_time.CopyFrom(_timestamp(record.started_at))
        job.expected_end_time.CopyFrom(_timestamp(expected_end(record.started_at, record.spec)))
    if estimated_start is not None:
        job.estimated_start_time.CopyFrom(_timestamp(estimated_start))
    if record.placement is not None:
        placement_to_pb(record.placement, job.placement)
    if record.waiting is not None:
        job.waiting.CopyFrom(wait_to_pb(record.waiting))
    return job
