import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from grid_scheduler._proto.v1 import placement_pb2 as _placement_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScenarioState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCENARIO_STATE_UNSPECIFIED: _ClassVar[ScenarioState]
    SCENARIO_STATE_QUEUED: _ClassVar[ScenarioState]
    SCENARIO_STATE_RUNNING: _ClassVar[ScenarioState]
    SCENARIO_STATE_SUCCEEDED: _ClassVar[ScenarioState]
    SCENARIO_STATE_FAILED: _ClassVar[ScenarioState]
    SCENARIO_STATE_CANCELLED: _ClassVar[ScenarioState]
SCENARIO_STATE_UNSPECIFIED: ScenarioState
SCENARIO_STATE_QUEUED: ScenarioState
SCENARIO_STATE_RUNNING: ScenarioState
SCENARIO_STATE_SUCCEEDED: ScenarioState
SCENARIO_STATE_FAILED: ScenarioState
SCENARIO_STATE_CANCELLED: ScenarioState

class ScenarioOperation(_message.Message):
    __slots__ = ("id", "scenario_name", "state", "done", "progress", "simulated_hours", "horizon_hours", "jobs_arrived", "jobs_total", "error", "create_time", "update_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCENARIO_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_HOURS_FIELD_NUMBER: _ClassVar[int]
    HORIZON_HOURS_FIELD_NUMBER: _ClassVar[int]
    JOBS_ARRIVED_FIELD_NUMBER: _ClassVar[int]
    JOBS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    scenario_name: str
    state: ScenarioState
    done: bool
    progress: float
    simulated_hours: float
    horizon_hours: float
    jobs_arrived: int
    jobs_total: int
    error: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., scenario_name: _Optional[str] = ..., state: _Optional[_Union[ScenarioState, str]] = ..., done: _Optional[bool] = ..., progress: _Optional[float] = ..., simulated_hours: _Optional[float] = ..., horizon_hours: _Optional[float] = ..., jobs_arrived: _Optional[int] = ..., jobs_total: _Optional[int] = ..., error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartScenarioRequest(_message.Message):
    __slots__ = ("path", "yaml", "request_id")
    PATH_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    path: str
    yaml: str
    request_id: str
    def __init__(self, path: _Optional[str] = ..., yaml: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartScenarioResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: ScenarioOperation
    def __init__(self, operation: _Optional[_Union[ScenarioOperation, _Mapping]] = ...) -> None: ...

class GetScenarioRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetScenarioResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: ScenarioOperation
    def __init__(self, operation: _Optional[_Union[ScenarioOperation, _Mapping]] = ...) -> None: ...

class WatchScenarioRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchScenarioResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: ScenarioOperation
    def __init__(self, operation: _Optional[_Union[ScenarioOperation, _Mapping]] = ...) -> None: ...

class GetScenarioReportRequest(_message.Message):
    __slots__ = ("id", "include_content")
    ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONTENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    include_content: bool
    def __init__(self, id: _Optional[str] = ..., include_content: _Optional[bool] = ...) -> None: ...

class ScenarioMetric(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class ScenarioReportFile(_message.Message):
    __slots__ = ("name", "media_type", "path", "size_bytes", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    media_type: str
    path: str
    size_bytes: int
    content: bytes
    def __init__(self, name: _Optional[str] = ..., media_type: _Optional[str] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content: _Optional[bytes] = ...) -> None: ...

class GetScenarioReportResponse(_message.Message):
    __slots__ = ("operation", "metrics", "files", "summary_json")
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    operation: ScenarioOperation
    metrics: _containers.RepeatedCompositeFieldContainer[ScenarioMetric]
    files: _containers.RepeatedCompositeFieldContainer[ScenarioReportFile]
    summary_json: str
    def __init__(self, operation: _Optional[_Union[ScenarioOperation, _Mapping]] = ..., metrics: _Optional[_Iterable[_Union[ScenarioMetric, _Mapping]]] = ..., files: _Optional[_Iterable[_Union[ScenarioReportFile, _Mapping]]] = ..., summary_json: _Optional[str] = ...) -> None: ...

class CancelScenarioRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelScenarioResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: ScenarioOperation
    def __init__(self, operation: _Optional[_Union[ScenarioOperation, _Mapping]] = ...) -> None: ...

class DeleteScenarioRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteScenarioResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLiveSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLiveSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: LiveSnapshot
    def __init__(self, snapshot: _Optional[_Union[LiveSnapshot, _Mapping]] = ...) -> None: ...

class LiveJob(_message.Message):
    __slots__ = ("id", "anonymised", "spec", "create_time", "placement", "start_time", "remaining_s")
    ID_FIELD_NUMBER: _ClassVar[int]
    ANONYMISED_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    REMAINING_S_FIELD_NUMBER: _ClassVar[int]
    id: str
    anonymised: bool
    spec: _placement_pb2.JobSpec
    create_time: _timestamp_pb2.Timestamp
    placement: _placement_pb2.Placement
    start_time: _timestamp_pb2.Timestamp
    remaining_s: float
    def __init__(self, id: _Optional[str] = ..., anonymised: _Optional[bool] = ..., spec: _Optional[_Union[_placement_pb2.JobSpec, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., placement: _Optional[_Union[_placement_pb2.Placement, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., remaining_s: _Optional[float] = ...) -> None: ...

class LiveSnapshot(_message.Message):
    __slots__ = ("ledger_version", "event_sequence", "read_time", "grid_json", "policy_version", "policy_json", "running", "pending", "drained_pool_ids", "anonymised_jobs")
    LEDGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    READ_TIME_FIELD_NUMBER: _ClassVar[int]
    GRID_JSON_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    DRAINED_POOL_IDS_FIELD_NUMBER: _ClassVar[int]
    ANONYMISED_JOBS_FIELD_NUMBER: _ClassVar[int]
    ledger_version: int
    event_sequence: int
    read_time: _timestamp_pb2.Timestamp
    grid_json: str
    policy_version: int
    policy_json: str
    running: _containers.RepeatedCompositeFieldContainer[LiveJob]
    pending: _containers.RepeatedCompositeFieldContainer[LiveJob]
    drained_pool_ids: _containers.RepeatedScalarFieldContainer[str]
    anonymised_jobs: int
    def __init__(self, ledger_version: _Optional[int] = ..., event_sequence: _Optional[int] = ..., read_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., grid_json: _Optional[str] = ..., policy_version: _Optional[int] = ..., policy_json: _Optional[str] = ..., running: _Optional[_Iterable[_Union[LiveJob, _Mapping]]] = ..., pending: _Optional[_Iterable[_Union[LiveJob, _Mapping]]] = ..., drained_pool_ids: _Optional[_Iterable[str]] = ..., anonymised_jobs: _Optional[int] = ...) -> None: ...
