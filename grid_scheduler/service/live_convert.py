"""LiveSnapshot (proto) <-> LiveState (model), both ways: the server writes it, the CLI reads it back.

Grid and policy travel as JSON documents of their models and specs and placements as the
placement API's messages, so the state read back is the state the server read: the same
GPUs, watts (power_kw is a double both ways) and queue order.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import scenario_pb2 as pb
from grid_scheduler.model import (
    Assignment,
    Grid,
    JobRecord,
    JobSpec,
    JobState,
    Placement,
    Policy,
    PolicyVersion,
    ScoreTerms,
    policy_sha256,
)
from grid_scheduler.model.placement import EndpointLatency
from grid_scheduler.scheduler.live import LiveState, remaining_s
from grid_scheduler.service.convert import placement_to_pb, spec_dict, spec_to_pb, timestamp

__all__ = ["live_from_pb", "live_to_pb"]


def live_to_pb(state: LiveState, anonymised_ids: frozenset[str] = frozenset()) -> pb.LiveSnapshot:
    def job(record: JobRecord) -> pb.LiveJob:
        message = pb.LiveJob(id=record.id, anonymised=record.id in anonymised_ids, spec=spec_to_pb(record.spec),
                             create_time=timestamp(record.created_at))
        if record.state is JobState.RUNNING and record.placement is not None and record.started_at is not None:
            message.placement.CopyFrom(placement_to_pb(record.placement))
            message.start_time.CopyFrom(timestamp(record.started_at))
            message.remaining_s = remaining_s(record, state.read_at)
        return message

    return pb.LiveSnapshot(
        ledger_version=state.ledger_version, event_sequence=state.event_sequence,
        read_time=timestamp(state.read_at), grid_json=state.grid.model_dump_json(),
        policy_version=state.policy.version, policy_json=state.policy.policy.model_dump_json(),
        running=[job(r) for r in state.running], pending=[job(r) for r in state.pending],
        drained_pool_ids=list(state.drained_pool_ids), anonymised_jobs=len(anonymised_ids),
    )


def _seconds(stamp: Timestamp) -> float:
    return stamp.ToNanoseconds() / 1e9


def placement_from_pb(message: ppb.Placement) -> Placement:
    s = message.score
    return Placement(
        assignments=[Assignment(site_id=a.site_id, pool_id=a.pool_id, gpu_type=a.gpu_type, gpus=a.gpus,
                                power_kw=a.power_kw, nodes=tuple((n.node_index, n.gpus) for n in a.nodes))
                     for a in message.assignments],
        score=ScoreTerms(latency=s.latency, carbon=s.carbon, energy_price=s.energy_price, packing=s.packing,
                         data_movement=s.data_movement),
        endpoint_latencies=[EndpointLatency(endpoint_id=e.endpoint_id, site_id=e.site_id, latency_ms=e.latency_ms)
                            for e in message.endpoint_latencies],
        carbon_kg_per_hour=message.carbon_kg_per_hour, energy_cost_per_hour=message.energy_cost_per_hour,
    )


def live_from_pb(message: pb.LiveSnapshot) -> LiveState:
    """The state a snapshot carries. Times stay the server's (Unix s, to the nanosecond), so a
    running job's ``remaining_s`` at ``read_at`` is the server's figure (``LiveJob.remaining_s``)."""
    read_at = _seconds(message.read_time)

    def record(job: pb.LiveJob, state: JobState) -> JobRecord:
        spec = JobSpec.model_validate(spec_dict(job.spec))
        created = _seconds(job.create_time)
        if state is JobState.PENDING:
            return JobRecord(id=job.id, spec=spec, state=state, created_at=created, updated_at=created,
                             queued_at=created)
        started = _seconds(job.start_time)
        return JobRecord(id=job.id, spec=spec, state=state, placement=placement_from_pb(job.placement),
                         created_at=created, updated_at=started, started_at=started)

    policy = Policy.model_validate_json(message.policy_json)
    entry = PolicyVersion(version=message.policy_version, policy=policy, sha256=policy_sha256(policy),
                          applied_by="", applied_at=0.0, reason="live snapshot")
    return LiveState(
        ledger_version=message.ledger_version, event_sequence=message.event_sequence, read_at=read_at,
        grid=Grid.model_validate_json(message.grid_json), policy=entry,
        running=tuple(record(j, JobState.RUNNING) for j in message.running),
        pending=tuple(record(j, JobState.PENDING) for j in message.pending),
        drained_pool_ids=tuple(message.drained_pool_ids),
    )
