"""proto <-> model. Every request field is turned into the model's terms here, once."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler._proto.v1 import topology_pb2 as tpb
from grid_scheduler.engine.priority import expected_end
from grid_scheduler.model import (
    EventType,
    JobEvent,
    JobKind,
    JobRecord,
    JobSpec,
    JobState,
    Placement,
    Reason,
    ReasonCode,
    Tier,
    TopologyMode,
    WaitInfo,
)

KIND_TO_PB = {JobKind.TRAINING: pb.JOB_KIND_TRAINING, JobKind.INFERENCE: pb.JOB_KIND_INFERENCE}
KIND_FROM_PB = {v: k for k, v in KIND_TO_PB.items()}
STATE_TO_PB = {
    JobState.PENDING: pb.JOB_STATE_PENDING,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.COMPLETED: pb.JOB_STATE_COMPLETED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
    JobState.REJECTED: pb.JOB_STATE_REJECTED,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
TOPOLOGY_TO_PB: dict[TopologyMode, Any] = {
    TopologyMode.NONE: pb.TOPOLOGY_MODE_NONE,
    TopologyMode.WHOLE_DOMAINS: pb.TOPOLOGY_MODE_WHOLE_DOMAINS,
    TopologyMode.SLICES: pb.TOPOLOGY_MODE_SLICES,
}
TOPOLOGY_FROM_PB = {v: k.value for k, v in TOPOLOGY_TO_PB.items()} | {pb.TOPOLOGY_MODE_UNSPECIFIED: "none"}
TIER_TO_PB: dict[Tier, Any] = {
    Tier.AI_FACTORY: tpb.TIER_AI_FACTORY,
    Tier.REGIONAL_HUB: tpb.TIER_REGIONAL_HUB,
    Tier.EDGE: tpb.TIER_EDGE,
}
TIER_FROM_PB = {v: k for k, v in TIER_TO_PB.items()}
REASON_TO_PB: dict[ReasonCode, Any] = {code: pb.ReasonCode.Value("REASON_CODE_" + code.name) for code in ReasonCode}
EVENT_TO_PB: dict[EventType, Any] = {t: pb.EventType.Value("EVENT_TYPE_" + t.name) for t in EventType}


def spec_dict(message: pb.JobSpec) -> dict[str, Any]:
    """A plain dict for pydantic to validate, so that field errors carry the request's field names.

    Proto3 has no "missing" for scalars: a zero count arrives as 0 and is refused by the
    model (count must be > 0), which names the field just as a missing one would.
    """
    data: dict[str, Any] = {
        "name": message.name,
        "tenant": message.tenant,
        "kind": KIND_FROM_PB.get(message.kind, "unspecified"),
        "gpus": {
            "count": message.gpus.count,
            "types": list(message.gpus.types),
            "min_memory_gib": message.gpus.min_memory_gib,
        },
        "priority": message.priority,
        "preemptible": message.preemptible,
        "residency": {"allowed": list(message.residency.allowed), "denied": list(message.residency.denied)},
        "placement_preference": list(message.placement_preference),
    }
    if message.HasField("gang"):
        data["gang"] = message.gang
    if message.HasField("max_run_hours"):
        data["max_run_hours"] = message.max_run_hours
    if message.HasField("topology"):
        data["topology"] = {
            # An enum number this build does not know is refused by the model, naming topology.mode.
            "mode": TOPOLOGY_FROM_PB.get(message.topology.mode, f"unknown ({message.topology.mode})"),
            "slice_gpus": message.topology.slice_gpus,
        }
    if message.HasField("training"):
        data["training"] = {
            "duration_hours": message.training.duration_hours or 1.0,
            "datasets": list(message.training.datasets),
        }
    if message.HasField("inference"):
        data["inference"] = {
            "replicas": message.inference.replicas,
            "demand": [{"endpoint": d.endpoint, "weight": d.weight or 1.0} for d in message.inference.demand],
            "latency_slo_ms": message.inference.latency_slo_ms,
        }
    return data


def spec_to_pb(spec: JobSpec, out: pb.JobSpec | None = None) -> pb.JobSpec:
    """The spec as a message; into ``out`` (a field of a message being built) when given. Nested
    fields are set where they live: building each sub-message and passing it to the parent's
    constructor copies it once more."""
    message = pb.JobSpec() if out is None else out
    message.name = spec.name
    message.tenant = spec.tenant
    message.kind = KIND_TO_PB[spec.kind]
    gpus = message.gpus
    gpus.count = spec.gpus.count
    gpus.types.extend(spec.gpus.types)
    gpus.min_memory_gib = spec.gpus.min_memory_gib
    gpus.SetInParent()
    message.gang = spec.gang  # optional in the proto: present, as the constructor made it
    message.priority = spec.priority
    message.preemptible = spec.preemptible
    message.residency.allowed.extend(spec.residency.allowed)
    message.residency.denied.extend(spec.residency.denied)
    message.residency.SetInParent()
    message.placement_preference.extend(spec.placement_preference)
    if spec.max_run_hours is not None:
        message.max_run_hours = spec.max_run_hours
    if spec.topology.mode is not TopologyMode.NONE:
        message.topology.mode = TOPOLOGY_TO_PB[spec.topology.mode]
        message.topology.slice_gpus = spec.topology.slice_gpus
        message.topology.SetInParent()
    if spec.training is not None:
        message.training.duration_hours = spec.training.duration_hours
        message.training.datasets.extend(spec.training.datasets)
        message.training.SetInParent()  # present even when its fields are all zero
    if spec.inference is not None:
        inference = message.inference
        inference.replicas = spec.inference.replicas
        add_demand = inference.demand.add
        for d in spec.inference.demand:
            add_demand(endpoint=d.endpoint, weight=d.weight)
        inference.latency_slo_ms = spec.inference.latency_slo_ms
        inference.SetInParent()
    return message


def placement_to_pb(placement: Placement, out: pb.Placement | None = None) -> pb.Placement:
    """The placement as a message; into ``out`` (a field of a message being built) when given,
    which saves copying it there. Repeated fields are filled with ``add``: building each
    NodeGpus on its own and passing the list costs ~4x as much with upb (a 1,024-GPU gang
    has hundreds of nodes)."""
    message = pb.Placement() if out is None else out
    s = placement.score
    message.score.latency, message.score.carbon = s.latency, s.carbon
    message.score.energy_price, message.score.packing = s.energy_price, s.packing
    message.score.data_movement, message.score.total = s.data_movement, s.total
    for a in placement.assignments:
        assignment = message.assignments.add(site_id=a.site_id, pool_id=a.pool_id, gpu_type=a.gpu_type,
                                             gpus=a.gpus, power_kw=a.power_kw)
        add_node = assignment.nodes.add
        for n, g in a.nodes:
            add_node(node_index=n, gpus=g)
    for e in placement.endpoint_latencies:
        message.endpoint_latencies.add(endpoint_id=e.endpoint_id, site_id=e.site_id, latency_ms=e.latency_ms)
    message.power_kw = placement.power_kw
    message.carbon_kg_per_hour = placement.carbon_kg_per_hour
    message.energy_cost_per_hour = placement.energy_cost_per_hour
    return message


def reason_to_pb(reason: Reason) -> pb.Reason:
    return pb.Reason(
        code=REASON_TO_PB[reason.code], site_id=reason.site_id, pool_id=reason.pool_id,
        endpoint_id=reason.endpoint_id, message=reason.message, required=reason.required,
        available=reason.available, unit=reason.unit, used=reason.used, nominal=reason.nominal,
        borrowable=reason.borrowable,
    )


def wait_to_pb(info: WaitInfo) -> pb.WaitInfo:
    return pb.WaitInfo(site_counts=info.site_counts, summary=info.summary)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def job_to_pb(
    record: JobRecord, reasons: list[Reason] | None = None, spec: pb.JobSpec | None = None,
    estimated_start: float | None = None, out: pb.Job | None = None,
) -> pb.Job:
    """``spec``: the request's own message, when it is known to be this record's spec. ``out``: a
    field of the response being built (``response.job``), filled in place rather than built
    apart and copied into it; timestamps likewise are set where they live."""
    job = pb.Job() if out is None else out
    job.id = record.id
    job.request_id = record.request_id
    if spec is not None:
        job.spec.CopyFrom(spec)
    else:
        spec_to_pb(record.spec, job.spec)
    job.state = STATE_TO_PB[record.state]
    if reasons:
        add_reason = job.reasons.add
        for r in reasons:
            add_reason(
                code=REASON_TO_PB[r.code], site_id=r.site_id, pool_id=r.pool_id, endpoint_id=r.endpoint_id,
                message=r.message, required=r.required, available=r.available, unit=r.unit, used=r.used,
                nominal=r.nominal, borrowable=r.borrowable,
            )
    job.create_time.FromNanoseconds(int(record.created_at * 1e9))
    job.update_time.FromNanoseconds(int(record.updated_at * 1e9))
    job.owner = record.owner
    job.policy_version = record.policy_version
    job.attempts = record.attempts
    job.end_reason = record.end_reason
    if record.state is JobState.RUNNING and record.started_at is not None:
        job.start_time.FromNanoseconds(int(record.started_at * 1e9))
        job.expected_end_time.FromNanoseconds(int(expected_end(record.started_at, record.spec) * 1e9))
    if estimated_start is not None:
        job.estimated_start_time.FromNanoseconds(int(estimated_start * 1e9))
    if record.placement is not None:
        placement_to_pb(record.placement, job.placement)
    if record.waiting is not None:
        job.waiting.site_counts.update(record.waiting.site_counts)
        job.waiting.summary.extend(record.waiting.summary)
        job.waiting.SetInParent()
    return job


def event_to_pb(event: JobEvent) -> pb.WatchJobsResponse:
    return pb.WatchJobsResponse(
        sequence=event.sequence, job_id=event.job_id, type=EVENT_TO_PB[event.type],
        state=STATE_TO_PB[event.state], time=timestamp(event.time), message=event.message,
        policy_version=event.policy_version,
    )
