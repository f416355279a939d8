from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_HEALTH_UNSPECIFIED: _ClassVar[NodeHealth]
    NODE_HEALTH_HEALTHY: _ClassVar[NodeHealth]
    NODE_HEALTH_FAILED: _ClassVar[NodeHealth]
    NODE_HEALTH_DRAINING: _ClassVar[NodeHealth]

class JobPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_PHASE_UNSPECIFIED: _ClassVar[JobPhase]
    JOB_PHASE_STARTING: _ClassVar[JobPhase]
    JOB_PHASE_RUNNING: _ClassVar[JobPhase]
    JOB_PHASE_SUCCEEDED: _ClassVar[JobPhase]
    JOB_PHASE_FAILED: _ClassVar[JobPhase]
    JOB_PHASE_STOPPED: _ClassVar[JobPhase]

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_REASON_CANCELLED: _ClassVar[StopReason]
    STOP_REASON_PREEMPTED: _ClassVar[StopReason]
    STOP_REASON_MOVED: _ClassVar[StopReason]
    STOP_REASON_FINISHED: _ClassVar[StopReason]
    STOP_REASON_UNKNOWN_JOB: _ClassVar[StopReason]
    STOP_REASON_TIME_LIMIT: _ClassVar[StopReason]
NODE_HEALTH_UNSPECIFIED: NodeHealth
NODE_HEALTH_HEALTHY: NodeHealth
NODE_HEALTH_FAILED: NodeHealth
NODE_HEALTH_DRAINING: NodeHealth
JOB_PHASE_UNSPECIFIED: JobPhase
JOB_PHASE_STARTING: JobPhase
JOB_PHASE_RUNNING: JobPhase
JOB_PHASE_SUCCEEDED: JobPhase
JOB_PHASE_FAILED: JobPhase
JOB_PHASE_STOPPED: JobPhase
STOP_REASON_UNSPECIFIED: StopReason
STOP_REASON_CANCELLED: StopReason
STOP_REASON_PREEMPTED: StopReason
STOP_REASON_MOVED: StopReason
STOP_REASON_FINISHED: StopReason
STOP_REASON_UNKNOWN_JOB: StopReason
STOP_REASON_TIME_LIMIT: StopReason

class PoolNodes(_message.Message):
    __slots__ = ("pool_id", "nodes")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pool_id: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("pool_id", "node", "health", "reason")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    node: str
    health: NodeHealth
    reason: str
    def __init__(self, pool_id: _Optional[str] = ..., node: _Optional[str] = ..., health: _Optional[_Union[NodeHealth, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RegisterAgentRequest(_message.Message):
    __slots__ = ("site_id", "agent_id", "pools")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    agent_id: str
    pools: _containers.RepeatedCompositeFieldContainer[PoolNodes]
    def __init__(self, site_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., pools: _Optional[_Iterable[_Union[PoolNodes, _Mapping]]] = ...) -> None: ...

class RegisterAgentResponse(_message.Message):
    __slots__ = ("site_id", "generation", "heartbeat_interval_s")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    generation: int
    heartbeat_interval_s: float
    def __init__(self, site_id: _Optional[str] = ..., generation: _Optional[int] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("site_id", "agent_id", "nodes", "sequence")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    agent_id: str
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    sequence: int
    def __init__(self, site_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., sequence: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("acknowledged", "operator_drained", "assignments_revision", "applied")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_DRAINED_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_REVISION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    operator_drained: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    assignments_revision: int
    applied: bool
    def __init__(self, acknowledged: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., operator_drained: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., assignments_revision: _Optional[int] = ..., applied: _Optional[bool] = ...) -> None: ...

class WatchAssignmentsRequest(_message.Message):
    __slots__ = ("site_id", "agent_id")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    agent_id: str
    def __init__(self, site_id: _Optional[str] = ..., agent_id: _Optional[str] = ...) -> None: ...

class JobShare(_message.Message):
    __slots__ = ("pool_id", "gpus", "nodes", "node_gpus")
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    NODE_GPUS_FIELD_NUMBER: _ClassVar[int]
    pool_id: str
    gpus: int
    nodes: _containers.RepeatedScalarFieldContainer[str]
    node_gpus: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, pool_id: _Optional[str] = ..., gpus: _Optional[int] = ..., nodes: _Optional[_Iterable[str]] = ..., node_gpus: _Optional[_Iterable[int]] = ...) -> None: ...

class StartJob(_message.Message):
    __slots__ = ("job_id", "tenant", "name", "kind", "shares", "duration_hours", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    DURATION_HOURS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    name: str
    kind: str
    shares: _containers.RepeatedCompositeFieldContainer[JobShare]
    duration_hours: float
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[str] = ..., shares: _Optional[_Iterable[_Union[JobShare, _Mapping]]] = ..., duration_hours: _Optional[float] = ..., attempt: _Optional[int] = ...) -> None: ...

class StopJob(_message.Message):
    __slots__ = ("job_id", "reason", "message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: StopReason
    message: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[_Union[StopReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class WatchAssignmentsResponse(_message.Message):
    __slots__ = ("site_id", "revision", "run", "stop")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    revision: int
    run: _containers.RepeatedCompositeFieldContainer[StartJob]
    stop: _containers.RepeatedCompositeFieldContainer[StopJob]
    def __init__(self, site_id: _Optional[str] = ..., revision: _Optional[int] = ..., run: _Optional[_Iterable[_Union[StartJob, _Mapping]]] = ..., stop: _Optional[_Iterable[_Union[StopJob, _Mapping]]] = ...) -> None: ...

class ReportJobRequest(_message.Message):
    __slots__ = ("site_id", "agent_id", "job_id", "phase", "sequence", "exit_reason", "attempt")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EXIT_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    agent_id: str
    job_id: str
    phase: JobPhase
    sequence: int
    exit_reason: str
    attempt: int
    def __init__(self, site_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., job_id: _Optional[str] = ..., phase: _Optional[_Union[JobPhase, str]] = ..., sequence: _Optional[int] = ..., exit_reason: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class ReportJobResponse(_message.Message):
    __slots__ = ("applied", "last_sequence")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    last_sequence: int
    def __init__(self, applied: _Optional[bool] = ..., last_sequence: _Optional[int] = ...) -> None: ...
