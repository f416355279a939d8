import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from grid_scheduler._proto.v1 import placement_pb2 as _placement_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PolicyWeights(_message.Message):
    __slots__ = ("latency", "carbon", "energy_price", "packing", "data_movement", "fragmentation")
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    CARBON_FIELD_NUMBER: _ClassVar[int]
    ENERGY_PRICE_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    DATA_MOVEMENT_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTATION_FIELD_NUMBER: _ClassVar[int]
    latency: float
    carbon: float
    energy_price: float
    packing: float
    data_movement: float
    fragmentation: float
    def __init__(self, latency: _Optional[float] = ..., carbon: _Optional[float] = ..., energy_price: _Optional[float] = ..., packing: _Optional[float] = ..., data_movement: _Optional[float] = ..., fragmentation: _Optional[float] = ...) -> None: ...

class Policy(_message.Message):
    __slots__ = ("weights", "tenant_residency", "inference_placement", "inference_time_limit_s", "label", "tenant_placement_preference", "fair_share", "quotas", "max_run_hours")
    class TenantResidencyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _placement_pb2.ResidencyRule
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_placement_pb2.ResidencyRule, _Mapping]] = ...) -> None: ...
    class TenantPlacementPreferenceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: PlacementPreference
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[PlacementPreference, _Mapping]] = ...) -> None: ...
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TENANT_RESIDENCY_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_TIME_LIMIT_S_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TENANT_PLACEMENT_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    FAIR_SHARE_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    MAX_RUN_HOURS_FIELD_NUMBER: _ClassVar[int]
    weights: PolicyWeights
    tenant_residency: _containers.MessageMap[str, _placement_pb2.ResidencyRule]
    inference_placement: str
    inference_time_limit_s: float
    label: str
    tenant_placement_preference: _containers.MessageMap[str, PlacementPreference]
    fair_share: FairSharePolicy
    quotas: QuotaPolicy
    max_run_hours: MaxRunHoursPolicy
    def __init__(self, weights: _Optional[_Union[PolicyWeights, _Mapping]] = ..., tenant_residency: _Optional[_Mapping[str, _placement_pb2.ResidencyRule]] = ..., inference_placement: _Optional[str] = ..., inference_time_limit_s: _Optional[float] = ..., label: _Optional[str] = ..., tenant_placement_preference: _Optional[_Mapping[str, PlacementPreference]] = ..., fair_share: _Optional[_Union[FairSharePolicy, _Mapping]] = ..., quotas: _Optional[_Union[QuotaPolicy, _Mapping]] = ..., max_run_hours: _Optional[_Union[MaxRunHoursPolicy, _Mapping]] = ...) -> None: ...

class MaxRunHoursPolicy(_message.Message):
    __slots__ = ("default", "tenants")
    class TenantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    default: float
    tenants: _containers.ScalarMap[str, float]
    def __init__(self, default: _Optional[float] = ..., tenants: _Optional[_Mapping[str, float]] = ...) -> None: ...

class QuotaPolicy(_message.Message):
    __slots__ = ("resource_groups", "cohorts")
    RESOURCE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    COHORTS_FIELD_NUMBER: _ClassVar[int]
    resource_groups: _containers.RepeatedCompositeFieldContainer[QuotaResourceGroup]
    cohorts: _containers.RepeatedCompositeFieldContainer[QuotaCohort]
    def __init__(self, resource_groups: _Optional[_Iterable[_Union[QuotaResourceGroup, _Mapping]]] = ..., cohorts: _Optional[_Iterable[_Union[QuotaCohort, _Mapping]]] = ...) -> None: ...

class QuotaResourceGroup(_message.Message):
    __slots__ = ("name", "gpu_types", "jurisdictions", "tiers", "sites")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GPU_TYPES_FIELD_NUMBER: _ClassVar[int]
    JURISDICTIONS_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    name: str
    gpu_types: _containers.RepeatedScalarFieldContainer[str]
    jurisdictions: _containers.RepeatedScalarFieldContainer[str]
    tiers: _containers.RepeatedScalarFieldContainer[str]
    sites: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., gpu_types: _Optional[_Iterable[str]] = ..., jurisdictions: _Optional[_Iterable[str]] = ..., tiers: _Optional[_Iterable[str]] = ..., sites: _Optional[_Iterable[str]] = ...) -> None: ...

class QuotaCohort(_message.Message):
    __slots__ = ("name", "tenants")
    class TenantsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: QuotaTenantQuotas
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[QuotaTenantQuotas, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenants: _containers.MessageMap[str, QuotaTenantQuotas]
    def __init__(self, name: _Optional[str] = ..., tenants: _Optional[_Mapping[str, QuotaTenantQuotas]] = ...) -> None: ...

class QuotaTenantQuotas(_message.Message):
    __slots__ = ("groups",)
    class GroupsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: QuotaLimits
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[QuotaLimits, _Mapping]] = ...) -> None: ...
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.MessageMap[str, QuotaLimits]
    def __init__(self, groups: _Optional[_Mapping[str, QuotaLimits]] = ...) -> None: ...

class QuotaLimits(_message.Message):
    __slots__ = ("nominal_gpus", "borrowing_limit_gpus", "lending_limit_gpus")
    NOMINAL_GPUS_FIELD_NUMBER: _ClassVar[int]
    BORROWING_LIMIT_GPUS_FIELD_NUMBER: _ClassVar[int]
    LENDING_LIMIT_GPUS_FIELD_NUMBER: _ClassVar[int]
    nominal_gpus: int
    borrowing_limit_gpus: int
    lending_limit_gpus: int
    def __init__(self, nominal_gpus: _Optional[int] = ..., borrowing_limit_gpus: _Optional[int] = ..., lending_limit_gpus: _Optional[int] = ...) -> None: ...

class FairSharePolicy(_message.Message):
    __slots__ = ("enabled", "weights", "default_weight")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    weights: _containers.ScalarMap[str, float]
    default_weight: float
    def __init__(self, enabled: _Optional[bool] = ..., weights: _Optional[_Mapping[str, float]] = ..., default_weight: _Optional[float] = ...) -> None: ...

class PlacementPreference(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entries: _Optional[_Iterable[str]] = ...) -> None: ...

class PolicyDocument(_message.Message):
    __slots__ = ("yaml", "policy")
    YAML_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    yaml: str
    policy: Policy
    def __init__(self, yaml: _Optional[str] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ...) -> None: ...

class PolicyVersion(_message.Message):
    __slots__ = ("version", "policy", "sha256", "applied_by", "apply_time", "reason", "rollback_of", "yaml")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    APPLIED_BY_FIELD_NUMBER: _ClassVar[int]
    APPLY_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_OF_FIELD_NUMBER: _ClassVar[int]
    YAML_FIELD_NUMBER: _ClassVar[int]
    version: int
    policy: Policy
    sha256: str
    applied_by: str
    apply_time: _timestamp_pb2.Timestamp
    reason: str
    rollback_of: int
    yaml: str
    def __init__(self, version: _Optional[int] = ..., policy: _Optional[_Union[Policy, _Mapping]] = ..., sha256: _Optional[str] = ..., applied_by: _Optional[str] = ..., apply_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., rollback_of: _Optional[int] = ..., yaml: _Optional[str] = ...) -> None: ...

class GetPolicyRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class GetPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyVersion
    def __init__(self, policy: _Optional[_Union[PolicyVersion, _Mapping]] = ...) -> None: ...

class ListPolicyVersionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPolicyVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[PolicyVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[PolicyVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ValidatePolicyRequest(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: PolicyDocument
    def __init__(self, document: _Optional[_Union[PolicyDocument, _Mapping]] = ...) -> None: ...

class ValidatePolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyVersion
    def __init__(self, policy: _Optional[_Union[PolicyVersion, _Mapping]] = ...) -> None: ...

class DiffPolicyRequest(_message.Message):
    __slots__ = ("document", "last_finished", "max_jobs")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    LAST_FINISHED_FIELD_NUMBER: _ClassVar[int]
    MAX_JOBS_FIELD_NUMBER: _ClassVar[int]
    document: PolicyDocument
    last_finished: int
    max_jobs: int
    def __init__(self, document: _Optional[_Union[PolicyDocument, _Mapping]] = ..., last_finished: _Optional[int] = ..., max_jobs: _Optional[int] = ...) -> None: ...

class CostTermChange(_message.Message):
    __slots__ = ("term", "before", "after")
    TERM_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    term: str
    before: float
    after: float
    def __init__(self, term: _Optional[str] = ..., before: _Optional[float] = ..., after: _Optional[float] = ...) -> None: ...

class JobMove(_message.Message):
    __slots__ = ("job_id", "tenant", "state", "before", "after", "terms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    state: _placement_pb2.JobState
    before: _placement_pb2.Placement
    after: _placement_pb2.Placement
    terms: _containers.RepeatedCompositeFieldContainer[CostTermChange]
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ..., state: _Optional[_Union[_placement_pb2.JobState, str]] = ..., before: _Optional[_Union[_placement_pb2.Placement, _Mapping]] = ..., after: _Optional[_Union[_placement_pb2.Placement, _Mapping]] = ..., terms: _Optional[_Iterable[_Union[CostTermChange, _Mapping]]] = ...) -> None: ...

class JobPlacementChange(_message.Message):
    __slots__ = ("job_id", "tenant", "state", "placement", "reasons")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    state: _placement_pb2.JobState
    placement: _placement_pb2.Placement
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ..., state: _Optional[_Union[_placement_pb2.JobState, str]] = ..., placement: _Optional[_Union[_placement_pb2.Placement, _Mapping]] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class GpuPowerDelta(_message.Message):
    __slots__ = ("key", "gpus_before", "gpus_after", "power_kw_before", "power_kw_after")
    KEY_FIELD_NUMBER: _ClassVar[int]
    GPUS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    GPUS_AFTER_FIELD_NUMBER: _ClassVar[int]
    POWER_KW_BEFORE_FIELD_NUMBER: _ClassVar[int]
    POWER_KW_AFTER_FIELD_NUMBER: _ClassVar[int]
    key: str
    gpus_before: int
    gpus_after: int
    power_kw_before: float
    power_kw_after: float
    def __init__(self, key: _Optional[str] = ..., gpus_before: _Optional[int] = ..., gpus_after: _Optional[int] = ..., power_kw_before: _Optional[float] = ..., power_kw_after: _Optional[float] = ...) -> None: ...

class PolicyTotals(_message.Message):
    __slots__ = ("jobs_placed", "gpus", "power_kw", "carbon_kg_per_hour", "energy_cost_per_hour", "mean_inference_latency_ms")
    JOBS_PLACED_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    POWER_KW_FIELD_NUMBER: _ClassVar[int]
    CARBON_KG_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    ENERGY_COST_PER_HOUR_FIELD_NUMBER: _ClassVar[int]
    MEAN_INFERENCE_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    jobs_placed: int
    gpus: int
    power_kw: float
    carbon_kg_per_hour: float
    energy_cost_per_hour: float
    mean_inference_latency_ms: float
    def __init__(self, jobs_placed: _Optional[int] = ..., gpus: _Optional[int] = ..., power_kw: _Optional[float] = ..., carbon_kg_per_hour: _Optional[float] = ..., energy_cost_per_hour: _Optional[float] = ..., mean_inference_latency_ms: _Optional[float] = ...) -> None: ...

class PolicyFieldChange(_message.Message):
    __slots__ = ("field", "before", "after")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    field: str
    before: str
    after: str
    def __init__(self, field: _Optional[str] = ..., before: _Optional[str] = ..., after: _Optional[str] = ...) -> None: ...

class DiffPolicyResponse(_message.Message):
    __slots__ = ("active_version", "candidate_sha256", "policy_changes", "jobs_considered", "unchanged", "moved_count", "became_placeable_count", "became_unplaceable_count", "moved", "became_placeable", "became_unplaceable", "sites", "tenants", "before", "after", "queue_shift_count", "queue_shifts")
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SHA256_FIELD_NUMBER: _ClassVar[int]
    POLICY_CHANGES_FIELD_NUMBER: _ClassVar[int]
    JOBS_CONSIDERED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    MOVED_COUNT_FIELD_NUMBER: _ClassVar[int]
    BECAME_PLACEABLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BECAME_UNPLACEABLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    BECAME_PLACEABLE_FIELD_NUMBER: _ClassVar[int]
    BECAME_UNPLACEABLE_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SHIFT_COUNT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SHIFTS_FIELD_NUMBER: _ClassVar[int]
    active_version: int
    candidate_sha256: str
    policy_changes: _containers.RepeatedCompositeFieldContainer[PolicyFieldChange]
    jobs_considered: int
    unchanged: int
    moved_count: int
    became_placeable_count: int
    became_unplaceable_count: int
    moved: _containers.RepeatedCompositeFieldContainer[JobMove]
    became_placeable: _containers.RepeatedCompositeFieldContainer[JobPlacementChange]
    became_unplaceable: _containers.RepeatedCompositeFieldContainer[JobPlacementChange]
    sites: _containers.RepeatedCompositeFieldContainer[GpuPowerDelta]
    tenants: _containers.RepeatedCompositeFieldContainer[GpuPowerDelta]
    before: PolicyTotals
    after: PolicyTotals
    queue_shift_count: int
    queue_shifts: _containers.RepeatedCompositeFieldContainer[QueueShift]
    def __init__(self, active_version: _Optional[int] = ..., candidate_sha256: _Optional[str] = ..., policy_changes: _Optional[_Iterable[_Union[PolicyFieldChange, _Mapping]]] = ..., jobs_considered: _Optional[int] = ..., unchanged: _Optional[int] = ..., moved_count: _Optional[int] = ..., became_placeable_count: _Optional[int] = ..., became_unplaceable_count: _Optional[int] = ..., moved: _Optional[_Iterable[_Union[JobMove, _Mapping]]] = ..., became_placeable: _Optional[_Iterable[_Union[JobPlacementChange, _Mapping]]] = ..., became_unplaceable: _Optional[_Iterable[_Union[JobPlacementChange, _Mapping]]] = ..., sites: _Optional[_Iterable[_Union[GpuPowerDelta, _Mapping]]] = ..., tenants: _Optional[_Iterable[_Union[GpuPowerDelta, _Mapping]]] = ..., before: _Optional[_Union[PolicyTotals, _Mapping]] = ..., after: _Optional[_Union[PolicyTotals, _Mapping]] = ..., queue_shift_count: _Optional[int] = ..., queue_shifts: _Optional[_Iterable[_Union[QueueShift, _Mapping]]] = ...) -> None: ...

class QueueShift(_message.Message):
    __slots__ = ("job_id", "tenant", "priority", "position_before", "position_after")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    POSITION_BEFORE_FIELD_NUMBER: _ClassVar[int]
    POSITION_AFTER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant: str
    priority: int
    position_before: int
    position_after: int
    def __init__(self, job_id: _Optional[str] = ..., tenant: _Optional[str] = ..., priority: _Optional[int] = ..., position_before: _Optional[int] = ..., position_after: _Optional[int] = ...) -> None: ...

class ApplyPolicyRequest(_message.Message):
    __slots__ = ("document", "expected_version", "reason")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    document: PolicyDocument
    expected_version: int
    reason: str
    def __init__(self, document: _Optional[_Union[PolicyDocument, _Mapping]] = ..., expected_version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ApplyPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyVersion
    def __init__(self, policy: _Optional[_Union[PolicyVersion, _Mapping]] = ...) -> None: ...

class RollbackPolicyRequest(_message.Message):
    __slots__ = ("version", "reason", "expected_version")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    reason: str
    expected_version: int
    def __init__(self, version: _Optional[int] = ..., reason: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class RollbackPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: PolicyVersion
    def __init__(self, policy: _Optional[_Union[PolicyVersion, _Mapping]] = ...) -> None: ...

class GetFairShareRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FairShareTenant(_message.Message):
    __slots__ = ("tenant", "weight", "share", "entitlement", "borrowed_gpus", "waiting_gpu_hours", "gpus", "power_kw", "running_jobs", "waiting_jobs")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    ENTITLEMENT_FIELD_NUMBER: _ClassVar[int]
    BORROWED_GPUS_FIELD_NUMBER: _ClassVar[int]
    WAITING_GPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    POWER_KW_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    WAITING_JOBS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    weight: float
    share: float
    entitlement: float
    borrowed_gpus: int
    waiting_gpu_hours: float
    gpus: int
    power_kw: float
    running_jobs: int
    waiting_jobs: int
    def __init__(self, tenant: _Optional[str] = ..., weight: _Optional[float] = ..., share: _Optional[float] = ..., entitlement: _Optional[float] = ..., borrowed_gpus: _Optional[int] = ..., waiting_gpu_hours: _Optional[float] = ..., gpus: _Optional[int] = ..., power_kw: _Optional[float] = ..., running_jobs: _Optional[int] = ..., waiting_jobs: _Optional[int] = ...) -> None: ...

class GetFairShareResponse(_message.Message):
    __slots__ = ("tenants", "enabled", "policy_version", "fleet_gpus", "fleet_power_kw")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    FLEET_GPUS_FIELD_NUMBER: _ClassVar[int]
    FLEET_POWER_KW_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[FairShareTenant]
    enabled: bool
    policy_version: int
    fleet_gpus: int
    fleet_power_kw: float
    def __init__(self, tenants: _Optional[_Iterable[_Union[FairShareTenant, _Mapping]]] = ..., enabled: _Optional[bool] = ..., policy_version: _Optional[int] = ..., fleet_gpus: _Optional[int] = ..., fleet_power_kw: _Optional[float] = ...) -> None: ...

class GetQuotaUsageRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class QuotaUsage(_message.Message):
    __slots__ = ("tenant", "cohort", "resource_group", "used_gpus", "nominal_gpus", "borrowing_limit_gpus", "lending_limit_gpus", "borrowed_gpus", "borrowable_gpus", "headroom_gpus")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    COHORT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_GROUP_FIELD_NUMBER: _ClassVar[int]
    USED_GPUS_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_GPUS_FIELD_NUMBER: _ClassVar[int]
    BORROWING_LIMIT_GPUS_FIELD_NUMBER: _ClassVar[int]
    LENDING_LIMIT_GPUS_FIELD_NUMBER: _ClassVar[int]
    BORROWED_GPUS_FIELD_NUMBER: _ClassVar[int]
    BORROWABLE_GPUS_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_GPUS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    cohort: str
    resource_group: str
    used_gpus: int
    nominal_gpus: int
    borrowing_limit_gpus: int
    lending_limit_gpus: int
    borrowed_gpus: int
    borrowable_gpus: int
    headroom_gpus: int
    def __init__(self, tenant: _Optional[str] = ..., cohort: _Optional[str] = ..., resource_group: _Optional[str] = ..., used_gpus: _Optional[int] = ..., nominal_gpus: _Optional[int] = ..., borrowing_limit_gpus: _Optional[int] = ..., lending_limit_gpus: _Optional[int] = ..., borrowed_gpus: _Optional[int] = ..., borrowable_gpus: _Optional[int] = ..., headroom_gpus: _Optional[int] = ...) -> None: ...

class GetQuotaUsageResponse(_message.Message):
    __slots__ = ("policy_version", "usage")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    usage: _containers.RepeatedCompositeFieldContainer[QuotaUsage]
    def __init__(self, policy_version: _Optional[int] = ..., usage: _Optional[_Iterable[_Union[QuotaUsage, _Mapping]]] = ...) -> None: ...
