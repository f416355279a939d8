"""Placement policy: objective weights and hard rules, loaded from a YAML file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from grid_scheduler.model.grid import ResidencyRule


class Weights(BaseModel):
    """Weights on the cost terms (each term is normalised to [0, 1] before weighting)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    latency: float = Field(default=1.0, ge=0)
    carbon: float = Field(default=0.5, ge=0)
    energy_price: float = Field(default=0.5, ge=0)
    packing: float = Field(default=0.3, ge=0)
    data_movement: float = Field(default=1.0, ge=0)


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    version: str = "default"
    weights: Weights = Field(default_factory=Weights)
    tenant_residency: dict[str, ResidencyRule] = Field(
        default_factory=dict, description="hard rule per tenant, applied on top of each job's own rule"
    )
    inference_placement: Literal["greedy", "optimal"] = Field(
        default="greedy",
        description="greedy covering (the online path), or CP-SAT facility location within inference_time_limit_s",
    )
    inference_time_limit_s: float = Field(default=1.0, gt=0, le=60)
