"""What a job submitter asks for: a training job or an inference deployment."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError, ValidationError

from grid_scheduler.model import preference
from grid_scheduler.model.grid import Grid, Id, ResidencyRule
from grid_scheduler.model.preference import Preference

# Bounds on what one job may ask for. Each is far past any real job on the largest grid we
# model (nscale: ~150k GPUs in one factory), and low enough that a hostile or mistaken spec
# is refused as INVALID_ARGUMENT, naming its field, before the engine sizes arrays by it.
MAX_GPUS = 200_000  # GPUs per training job, or per inference replica
MAX_REPLICAS = 1_000  # replicas of one inference deployment
MAX_GPU_TYPES = 64  # entries in gpus.types
MAX_DEMAND = 1_000  # entries in inference.demand
MAX_DATASETS = 256  # entries in training.datasets
MAX_NAME_CHARS = 128  # a GPU type, endpoint or dataset name (unknown names are reported by name)
MAX_MEMORY_GIB = 1_000_000.0
MAX_DURATION_HOURS = 100_000.0  # ~11 years
MAX_DEMAND_WEIGHT = 1_000_000.0  # weights are shares: only their ratios matter
# A microsecond (light in fibre covers 0.2 m): no real SLO is tighter, and a denormal one
# (5e-324) would overflow the latency / SLO ratio in scoring.
MIN_LATENCY_SLO_MS = 0.001
MAX_LATENCY_SLO_MS = 10_000.0

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]


class JobKind(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"


class GpuRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    count: int = Field(gt=0, le=MAX_GPUS, description="GPUs per job (training) or per replica (inference)")
    types: list[Name] = Field(default_factory=list, max_length=MAX_GPU_TYPES, description="empty = any type")
    min_memory_gib: float = Field(default=0.0, ge=0, le=MAX_MEMORY_GIB)


class TopologyMode(StrEnum):
    """How a job's GPUs must sit in a pool's interconnect domains (an NVL72 rack is one domain)."""

    NONE = "none"  # anywhere in the pool
    WHOLE_DOMAINS = "whole_domains"  # whole domains only: the GPUs are a multiple of the pool's domain size
    SLICES = "slices"  # slices of slice_gpus GPUs, each inside one domain


class GpuTopology(BaseModel):
    """The shape a job's GPUs take inside a pool (engine/topology.py places them so)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    mode: TopologyMode = TopologyMode.NONE
    slice_gpus: int = Field(
        default=0, ge=0, le=MAX_GPUS, validate_default=True, description="GPUs per slice; slices mode only"
    )

    @field_validator("slice_gpus")
    @classmethod
    def _slice_matches_mode(cls, slice_gpus: int, info: ValidationInfo) -> int:
        mode = info.data.get("mode")
        if mode is TopologyMode.SLICES and slice_gpus == 0:
            raise PydanticCustomError("slice_gpus", "slices mode needs slice_gpus > 0")
        if mode is not TopologyMode.SLICES and slice_gpus:
            raise PydanticCustomError("slice_gpus", "slice_gpus is for slices mode only")
        return slice_gpus


class Demand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    endpoint: Name
    weight: float = Field(default=1.0, gt=0, le=MAX_DEMAND_WEIGHT, description="share of the deployment's traffic")


class InferenceSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    replicas: int = Field(gt=0, le=MAX_REPLICAS)
    demand: list[Demand] = Field(min_length=1, max_length=MAX_DEMAND)
    latency_slo_ms: float = Field(ge=MIN_LATENCY_SLO_MS, le=MAX_LATENCY_SLO_MS)


class TrainingSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    duration_hours: float = Field(default=1.0, gt=0, le=MAX_DURATION_HOURS)
    datasets: list[Name] = Field(default_factory=list, max_length=MAX_DATASETS)


class JobSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: Annotated[str, Field(min_length=1, max_length=256)]
    tenant: Id
    kind: JobKind
    gpus: GpuRequest
    gang: bool = Field(default=True, description="all GPUs in one pool (one interconnect fabric)")
    priority: int = Field(default=0, ge=0, le=1000)
    preemptible: bool = False
    residency: ResidencyRule = Field(default_factory=ResidencyRule)
    training: TrainingSpec | None = None
    inference: InferenceSpec | None = None
    placement_preference: Preference = Field(
        default_factory=list,
        description="ordered sites to try first and overflow to (model/preference.py); empty: the tenant's, if any",
    )
    topology: GpuTopology = Field(
        default_factory=GpuTopology,
        description="whole interconnect domains, or slices that each stay in one domain (per replica for inference)",
    )
    max_run_hours: float | None = Field(
        default=None, gt=0, le=MAX_DURATION_HOURS,
        description="the longest it may run; past it the scheduler stops it (None: the tenant's policy limit)",
    )

    @model_validator(mode="after")
    def _section_matches_kind(self) -> JobSpec:
        if self.kind is JobKind.INFERENCE and self.inference is None:
            raise PydanticCustomError("missing", "an inference job needs an inference section")
        if self.kind is JobKind.TRAINING and self.inference is not None:
            raise PydanticCustomError("extra", "a training job has no inference section")
        if self.kind is JobKind.INFERENCE and self.training is not None:
            raise PydanticCustomError("extra", "an inference job has no training section")
        n = self.topology.slice_gpus
        if n and self.gpus.count % n:
            message = "slice_gpus {n} does not divide gpus.count {c}"
            raise ValidationError.from_exception_data("JobSpec", [{
                "type": PydanticCustomError("topology", message, {"n": n, "c": self.gpus.count}),
                "loc": ("topology", "slice_gpus"), "input": n,
            }])
        return self

    @property
    def total_gpus(self) -> int:
        replicas = self.inference.replicas if self.inference else 1
        return self.gpus.count * replicas

    @property
    def datasets(self) -> list[str]:
        return self.training.datasets if self.training else []


def violations_against_grid(spec: JobSpec, grid: Grid) -> list[tuple[str, str]]:
    """(field path, problem) for every name in ``spec`` the grid does not know.

    These are client errors, not reasons to wait: no change of capacity makes an
    unknown GPU type or endpoint valid.
    """
    problems: list[tuple[str, str]] = []
    for i, name in enumerate(spec.gpus.types):
        if name not in grid.gpu_type_by_name:
            known = ", ".join(sorted(grid.gpu_type_by_name))
            problems.append((f"gpus.types[{i}]", f"unknown GPU type {name!r} (known: {known})"))
    if spec.inference is not None:
        seen: set[str] = set()
        for i, demand in enumerate(spec.inference.demand):
            if demand.endpoint not in grid.endpoint_by_id:
                problems.append((f"inference.demand[{i}].endpoint", f"unknown endpoint {demand.endpoint!r}"))
            if demand.endpoint in seen:
                problems.append((f"inference.demand[{i}].endpoint", f"endpoint {demand.endpoint!r} listed twice"))
            seen.add(demand.endpoint)
    for i, dataset in enumerate(spec.datasets):
        if dataset not in grid.dataset_by_id:
            problems.append((f"training.datasets[{i}]", f"unknown dataset {dataset!r}"))
    problems.extend(preference.violations_against_grid(spec.placement_preference, grid, "placement_preference"))
    return problems
