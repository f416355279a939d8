"""What the engine decides: assignments, the score broken into terms, and reasons."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ReasonCode(StrEnum):
    RESIDENCY = "residency"
    CAPACITY = "capacity"
    POWER = "power"
    LATENCY = "latency"
    GPU_TYPE = "gpu_type"
    HEALTH = "health"
    QUOTA = "quota"
    POLICY = "policy"
    WORKLOAD = "workload"
    # Feasible, but another site scored better.
    SCORE = "score"


class Reason(BaseModel):
    """One reason a site (or one of its pools) was not chosen, with its numbers."""

    model_config = ConfigDict(frozen=True)

    code: ReasonCode
    site_id: str
    pool_id: str = ""
    endpoint_id: str = ""
    message: str
    required: float = 0.0
    available: float = 0.0
    unit: str = ""
    # QUOTA only: the tenant's usage, nominal quota and what it may still borrow in the group, in ``unit``.
    used: float = 0.0
    nominal: float = 0.0
    borrowable: float = 0.0


class Assignment(BaseModel):
    model_config = ConfigDict(frozen=True)

    site_id: str
    pool_id: str
    gpu_type: str
    gpus: int = Field(gt=0)
    power_kw: float = Field(ge=0, description="facility power: board power x PUE")
    # The nodes the GPUs sit on, as (node index in the pool, GPUs on it), sorted by node index,
    # summing to ``gpus`` (model.grid.Pool numbers nodes and domains). Empty: a reservation made
    # without node detail, counted at pool level only.
    nodes: tuple[tuple[int, int], ...] = ()


class ScoreTerms(BaseModel):
    """Weighted cost terms; lower is better. Each is the policy weight times a term in [0, 1]."""

    model_config = ConfigDict(frozen=True)

    latency: float = 0.0
    carbon: float = 0.0
    energy_price: float = 0.0
    packing: float = 0.0
    data_movement: float = 0.0

    @property
    def total(self) -> float:
        return self.latency + self.carbon + self.energy_price + self.packing + self.data_movement


class EndpointLatency(BaseModel):
    model_config = ConfigDict(frozen=True)

    endpoint_id: str
    site_id: str
    latency_ms: float


class Placement(BaseModel):
    model_config = ConfigDict(frozen=True)

    assignments: list[Assignment]
    score: ScoreTerms
    endpoint_latencies: list[EndpointLatency] = Field(default_factory=list)
    carbon_kg_per_hour: float = 0.0
    energy_cost_per_hour: float = 0.0

    @property
    def power_kw(self) -> float:
        return sum(a.power_kw for a in self.assignments)

    @property
    def gpus(self) -> int:
        return sum(a.gpus for a in self.assignments)

    @property
    def site_ids(self) -> list[str]:
        return sorted({a.site_id for a in self.assignments})
