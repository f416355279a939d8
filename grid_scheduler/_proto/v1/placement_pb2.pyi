import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_TRAINING: _ClassVar[JobKind]
    JOB_KIND_INFERENCE: _ClassVar[JobKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_COMPLETED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_REJECTED: _ClassVar[JobState]

class JobView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_VIEW_UNSPECIFIED: _ClassVar[JobView]
    JOB_VIEW_BASIC: _ClassVar[JobView]
    JOB_VIEW_FULL: _ClassVar[JobView]

class TopologyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOPOLOGY_MODE_UNSPECIFIED: _ClassVar[TopologyMode]
    TOPOLOGY_MODE_NONE: _ClassVar[TopologyMode]
    TOPOLOGY_MODE_WHOLE_DOMAINS: _ClassVar[TopologyMode]
    TOPOLOGY_MODE_SLICES: _ClassVar[TopologyMode]

class ReasonCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_CODE_UNSPECIFIED: _ClassVar[ReasonCode]
    REASON_CODE_RESIDENCY: _ClassVar[ReasonCode]
    REASON_CODE_CAPACITY: _ClassVar[ReasonCode]
    REASON_CODE_POWER: _ClassVar[ReasonCode]
    REASON_CODE_LATENCY: _ClassVar[ReasonCode]
    REASON_CODE_GPU_TYPE: _ClassVar[ReasonCode]
    REASON_CODE_HEALTH: _ClassVar[ReasonCode]
    REASON_CODE_QUOTA: _ClassVar[ReasonCode]
    REASON_CODE_POLICY: _ClassVar[ReasonCode]
    REASON_CODE_WORKLOAD: _ClassVar[ReasonCode]
    REASON_CODE_SCORE: _ClassVar[ReasonCode]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_SUBMITTED: _ClassVar[EventType]
    EVENT_TYPE_PLACED: _ClassVar[EventType]
    EVENT_TYPE_PENDING: _ClassVar[EventType]
    EVENT_TYPE_CANCELLED: _ClassVar[EventType]
    EVENT_TYPE_COMPLETED: _ClassVar[EventType]
    EVENT_TYPE_REJECTED: _ClassVar[EventType]
    EVENT_TYPE_PREEMPTED: _ClassVar[EventType]
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_TRAINING: JobKind
JOB_KIND_INFERENCE: JobKind
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_COMPLETED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_REJECTED: JobState
JOB_VIEW_UNSPECIFIED: JobView
JOB_VIEW_BASIC: JobView
JOB_VIEW_FULL: JobView
TOPOLOGY_MODE_UNSPECIFIED: TopologyMode
TOPOLOGY_MODE_NONE: TopologyMode
TOPOLOGY_MODE_WHOLE_DOMAINS: TopologyMode
TOPOLOGY_MODE_SLICES: TopologyMode
REASON_CODE_UNSPECIFIED: ReasonCode
REASON_CODE_RESIDENCY: ReasonCode
REASON_CODE_CAPACITY: ReasonCode
REASON_CODE_POWER: ReasonCode
REASON_CODE_LATENCY: ReasonCode
REASON_CODE_GPU_TYPE: ReasonCode
REASON_CODE_HEALTH: ReasonCode
REASON_CODE_QUOTA: ReasonCode
REASON_CODE_POLICY: ReasonCode
REASON_CODE_WORKLOAD: ReasonCode
REASON_CODE_SCORE: ReasonCode
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_SUBMITTED: EventType
EVENT_TYPE_PLACED: EventType
EVENT_TYPE_PENDING: EventType
EVENT_TYPE_CANCELLED: EventType
EVENT_TYPE_COMPLETED: EventType
EVENT_TYPE_REJECTED: EventType
EVENT_TYPE_PREEMPTED: EventType

class GpuRequest(_message.Message):
    __slots__ = ("count", "types", "min_memory_gib")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMORY_GIB_FIELD_NUMBER: _ClassVar[int]
    count: int
    types: _containers.RepeatedScalarFieldContainer[str]
    min_memory_gib: float
    def __init__(self, count: _Optional[int] = ..., types: _Optional[_Iterable[str]] = ..., min_memory_gib: _Optional[float] = ...) -> None: ...

class ResidencyRule(_message.Message):
    __slots__ = ("allowed", "denied")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    DENIED_FIELD_NUMBER: _ClassVar[int]
    allowed: _containers.RepeatedScalarFieldContainer[str]
    denied: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, allowed: _Optional[_Iterable[str]] = ..., denied: _Optional[_Iterable[str]] = ...) -> None: ...

class Demand(_message.Message):
    __slots__ = ("endpoint", "weight")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    weight: float
    def __init__(self, endpoint: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class TrainingSpec(_message.Message):
    __slots__ = ("duration_hours", "datasets")
    DURATION_HOURS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    duration_hours: float
    datasets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, duration_hours: _Optional[float] = ..., datasets: _Optional[_Iterable[str]] = ...) -> None: ...

class InferenceSpec(_message.Message):
    __slots__ = ("replicas", "demand", "latency_slo_ms")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    DEMAND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SLO_MS_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    demand: _containers.RepeatedCompositeFieldContainer[Demand]
    latency_slo_ms: float
    def __init__(self, replicas: _Optional[int] = ..., demand: _Optional[_Iterable[_Union[Demand, _Mapping]]] = ..., latency_slo_ms: _Optional[float] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "tenant", "kind", "gpus", "gang", "priority", "preemptible", "residency", "training", "inference", "placement_preference", "max_run_hours", "topology")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GANG_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIBLE_FIELD_NUMBER: _ClassVar[int]
    RESIDENCY_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_RUN_HOURS_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant: str
    kind: JobKind
    gpus: GpuRequest
    gang: bool
    priority: int
    preemptible: bool
    residency: ResidencyRule
    training: TrainingSpec
    inference: InferenceSpec
    placement_preference: _containers.RepeatedScalarFieldContainer[str]
    max_run_hours: float
    topology: GpuTopology
    def __init__(self, name: _Optional[str] = ..., tenant: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., gpus: _Optional[_Union[GpuRequest, _Mapping]] = ..., gang: _Optional[bool] = ..., priority: _Optional[int] = ..., preemptible: _Optional[bool] = ..., residency: _Optional[_Union[ResidencyRule, _Mapping]] = ..., training: _Optional[_Union[TrainingSpec, _Mapping]] = ..., inference: _Optional[_Union[InferenceSpec, _Mapping]] = ..., placement_preference: _Optional[_Iterable[str]] = ..., max_run_hours: _Optional[float] = ..., topology: _Optional[_Union[GpuTopology, _Mapping]] = ...) -> None: ...

class GpuTopology(_message.Message):
    __slots__ = ("mode", "slice_gpus")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SLICE_GPUS_FIELD_NUMBER: _ClassVar[int]
    mode: TopologyMode
    slice_gpus: int
    def __init__(self, mode: _Optional[_Union[TopologyMode, str]] = ..., slice_gpus: _Optional[int] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("site_id", "pool_id", "gpu_type", "gpus", "power_kw", "nodes")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    POWER_KW_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    pool_id: str
    gpu_type: str
    gpus: int
    power_kw: float
    nodes: _containers.RepeatedCompositeFieldContainer[NodeGpus]
    def __init__(self, site_id: _Optional[str] = ..., pool_id: _Optional[str] = ..., gpu_type: _Optional[str] = ..., gpus: _Optional[int] = ..., power_kw: _Optional[float] = ..., nodes: _Optional[_Iterable[_Union[NodeGpus, _Mapping]]] = ...) -> None: ...

class NodeGpus(_message.Message):
    __slots__ = ("node_index", "gpus")
    NODE_INDEX_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    node_index: int
    gpus: int
    def __init__(self, node_index: _Optional[int] = ..., gpus: _Optional[int] = ...) -> None: ...

class ScoreTerms(_message.Message):
    __slots__ = ("latency", "carbon", "energy_price", "packing", "data_movement", "total")
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    CARBON_FIELD_NUMBER: _ClassVar[int]
    ENERGY_PRICE_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    DATA_MOVEMENT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    latency: float
    carbon: float
    energy_price: float
    packing: float
    data_movement: float
    total: float
    def __init__(self, latency: _Optional[float] = ..., carbon: _Optional[float] = ..., energy_price: _Optional[float] = ..., packing: _Optional[float] = ..., data_movement: _Optional[float] = ..., total: _Optional[float] = ...) -> None: ...

class EndpointLatency(_message.Message):
    __slots__ = ("endpoint_id", "site_id", "latency_ms")
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    endpoint_id: str
    site_id: str
    latency_ms: float
    def __init__(self, endpoint_id: _Optional[str] = ..., site_id: _Optional[str] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("assignments", "score", "endpoint_latencies", "power_kw", "carbon_kg_per_hour", "energy_cost_per_hour")
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_LATENCIES_FIELD_NUMBER: _ClassVar[int]
    POWER_KW_FIELD_NUMBER: _ClassVar[int]
    CARBON_KG_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    ENERGY_COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    score: ScoreTerms
    endpoint_latencies: _containers.RepeatedCompositeFieldContainer[EndpointLatency]
    power_kw: float
    carbon_kg_per_hour: float
    energy_cost_per_hour: float
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., score: _Optional[_Union[ScoreTerms, _Mapping]] = ..., endpoint_latencies: _Optional[_Iterable[_Union[EndpointLatency, _Mapping]]] = ..., power_kw: _Optional[float] = ..., carbon_kg_per_hour: _Optional[float] = ..., energy_cost_per_hour: _Optional[float] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("code", "site_id", "pool_id", "endpoint_id", "message", "required", "available", "unit", "used", "nominal", "borrowable")
    CODE_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_FIELD_NUMBER: _ClassVar[int]
    BORROWABLE_FIELD_NUMBER: _ClassVar[int]
    code: ReasonCode
    site_id: str
    pool_id: str
    endpoint_id: str
    message: str
    required: float
    available: float
    unit: str
    used: float
    nominal: float
    borrowable: float
    def __init__(self, code: _Optional[_Union[ReasonCode, str]] = ..., site_id: _Optional[str] = ..., pool_id: _Optional[str] = ..., endpoint_id: _Optional[str] = ..., message: _Optional[str] = ..., required: _Optional[float] = ..., available: _Optional[float] = ..., unit: _Optional[str] = ..., used: _Optional[float] = ..., nominal: _Optional[float] = ..., borrowable: _Optional[float] = ...) -> None: ...

class WaitInfo(_message.Message):
    __slots__ = ("site_counts", "summary")
    class SiteCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SITE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    site_counts: _containers.ScalarMap[str, int]
    summary: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, site_counts: _Optional[_Mapping[str, int]] = ..., summary: _Optional[_Iterable[str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "request_id", "spec", "state", "placement", "waiting", "reasons", "create_time", "update_time", "owner", "start_time", "expected_end_time", "estimated_start_time", "policy_version", "attempts", "end_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_END_TIME_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_START_TIME_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    request_id: str
    spec: JobSpec
    state: JobState
    placement: Placement
    waiting: WaitInfo
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    owner: str
    start_time: _timestamp_pb2.Timestamp
    expected_end_time: _timestamp_pb2.Timestamp
    estimated_start_time: _timestamp_pb2.Timestamp
    policy_version: int
    attempts: int
    end_reason: str
    def __init__(self, id: _Optional[str] = ..., request_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., waiting: _Optional[_Union[WaitInfo, _Mapping]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expected_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., estimated_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy_version: _Optional[int] = ..., attempts: _Optional[int] = ..., end_reason: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "request_id", "view")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    request_id: str
    view: JobView
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., request_id: _Optional[str] = ..., view: _Optional[_Union[JobView, str]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    created: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ExplainPlacementRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class ExplainPlacementResponse(_message.Message):
    __slots__ = ("placeable", "placement", "reasons", "waiting", "uncovered_endpoints", "estimated_start_time")
    PLACEABLE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    UNCOVERED_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_START_TIME_FIELD_NUMBER: _ClassVar[int]
    placeable: bool
    placement: Placement
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    waiting: WaitInfo
    uncovered_endpoints: _containers.RepeatedScalarFieldContainer[str]
    estimated_start_time: _timestamp_pb2.Timestamp
    def __init__(self, placeable: _Optional[bool] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., waiting: _Optional[_Union[WaitInfo, _Mapping]] = ..., uncovered_endpoints: _Optional[_Iterable[str]] = ..., estimated_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id", "view")
    ID_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    id: str
    view: JobView
    def __init__(self, id: _Optional[str] = ..., view: _Optional[_Union[JobView, str]] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[JobState]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[JobState, str]]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class CompleteJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CompleteJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobsRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence", "from_start")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FROM_START_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    from_start: bool
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., from_start: _Optional[bool] = ...) -> None: ...

class WatchJobsResponse(_message.Message):
    __slots__ = ("sequence", "job_id", "type", "state", "time", "message", "policy_version")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    job_id: str
    type: EventType
    state: JobState
    time: _timestamp_pb2.Timestamp
    message: str
    policy_version: int
    def __init__(self, sequence: _Optional[int] = ..., job_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., policy_version: _Optional[int] = ...) -> None: ...

class OptimizePendingRequest(_message.Message):
    __slots__ = ("dry_run", "time_limit_s")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_S_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    time_limit_s: float
    def __init__(self, dry_run: _Optional[bool] = ..., time_limit_s: _Optional[float] = ...) -> None: ...

class PlannedPlacement(_message.Message):
    __slots__ = ("job_id", "placement", "committed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    placement: Placement
    committed: bool
    def __init__(self, job_id: _Optional[str] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., committed: _Optional[bool] = ...) -> None: ...

class OptimizePendingResponse(_message.Message):
    __slots__ = ("dry_run", "pending_before", "placements", "unplaced_job_ids", "solver_status", "method", "objective", "best_bound", "gap", "solve_time_s", "greedy_objective", "weighted_gpus", "tiers", "policy_version")
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    PENDING_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    UNPLACED_JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    SOLVER_STATUS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BEST_BOUND_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    SOLVE_TIME_S_FIELD_NUMBER: _ClassVar[int]
    GREEDY_OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_GPUS_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    dry_run: bool
    pending_before: int
    placements: _containers.RepeatedCompositeFieldContainer[PlannedPlacement]
    unplaced_job_ids: _containers.RepeatedScalarFieldContainer[str]
    solver_status: str
    method: str
    objective: float
    best_bound: float
    gap: float
    solve_time_s: float
    greedy_objective: float
    weighted_gpus: int
    tiers: _containers.RepeatedCompositeFieldContainer[TierOutcome]
    policy_version: int
    def __init__(self, dry_run: _Optional[bool] = ..., pending_before: _Optional[int] = ..., placements: _Optional[_Iterable[_Union[PlannedPlacement, _Mapping]]] = ..., unplaced_job_ids: _Optional[_Iterable[str]] = ..., solver_status: _Optional[str] = ..., method: _Optional[str] = ..., objective: _Optional[float] = ..., best_bound: _Optional[float] = ..., gap: _Optional[float] = ..., solve_time_s: _Optional[float] = ..., greedy_objective: _Optional[float] = ..., weighted_gpus: _Optional[int] = ..., tiers: _Optional[_Iterable[_Union[TierOutcome, _Mapping]]] = ..., policy_version: _Optional[int] = ...) -> None: ...

class TierOutcome(_message.Message):
    __slots__ = ("priority", "jobs", "placed", "value", "greedy_value", "solver_status", "method", "objective", "best_bound", "gap", "solve_time_s")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    PLACED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    GREEDY_VALUE_FIELD_NUMBER: _ClassVar[int]
    SOLVER_STATUS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    BEST_BOUND_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    SOLVE_TIME_S_FIELD_NUMBER: _ClassVar[int]
    priority: int
    jobs: int
    placed: int
    value: int
    greedy_value: int
    solver_status: str
    method: str
    objective: float
    best_bound: float
    gap: float
    solve_time_s: float
    def __init__(self, priority: _Optional[int] = ..., jobs: _Optional[int] = ..., placed: _Optional[int] = ..., value: _Optional[int] = ..., greedy_value: _Optional[int] = ..., solver_status: _Optional[str] = ..., method: _Optional[str] = ..., objective: _Optional[float] = ..., best_bound: _Optional[float] = ..., gap: _Optional[float] = ..., solve_time_s: _Optional[float] = ...) -> None: ...
