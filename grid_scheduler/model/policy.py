"""Placement policy: objective weights and hard rules, loaded from a YAML file."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from grid_scheduler.model import preference
from grid_scheduler.model.grid import Grid, ResidencyRule
from grid_scheduler.model.preference import Preference


class Weights(BaseModel):
    """Weights on the cost terms (each term is normalised to [0, 1] before weighting)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    latency: float = Field(default=1.0, ge=0)
    carbon: float = Field(default=0.5, ge=0)
    energy_price: float = Field(default=0.5, ge=0)
    packing: float = Field(default=0.3, ge=0)
    data_movement: float = Field(default=1.0, ge=0)


class MaxRunHours(BaseModel):
    """Run-time limits per tenant (and for every tenant not listed), in hours; None: no limit."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    default: float | None = Field(default=None, gt=0)
    tenants: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> float | None:
        return self.tenants.get(tenant, self.default)


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    version: str = "default"
    weights: Weights = Field(default_factory=Weights)
    tenant_residency: dict[str, ResidencyRule] = Field(
        default_factory=dict, description="hard rule per tenant, applied on top of each job's own rule"
    )
    tenant_placement_preference: dict[str, Preference] = Field(
        default_factory=dict,
        description="per tenant, the ordered placement preference of its jobs that give none of their own",
    )
    inference_placement: Literal["greedy", "optimal"] = Field(
        default="greedy",
        description="greedy covering (the online path), or CP-SAT facility location within inference_time_limit_s",
    )
    inference_time_limit_s: float = Field(default=1.0, gt=0, le=60)
    max_run_hours: MaxRunHours = Field(
        default_factory=lambda: MaxRunHours(),
        description="run-time limits: past them the scheduler stops a job (a job's own max_run_hours also applies)",
    )


def policy_violations_against_grid(policy: Policy, grid: Grid) -> list[tuple[str, str]]:
    """(field path, problem) for every name in ``policy`` the grid does not know."""
    problems: list[tuple[str, str]] = []
    for tenant, entries in policy.tenant_placement_preference.items():
        problems.extend(preference.violations_against_grid(entries, grid, f"tenant_placement_preference.{tenant}"))
    return problems


def policy_sha256(policy: Policy) -> str:
    """The content hash of a policy: sha256 of its canonical JSON (every field, defaults included),
    so two documents that mean the same policy hash the same whatever their YAML looked like."""
    return hashlib.sha256(policy.model_dump_json().encode()).hexdigest()


class PolicyVersion(BaseModel):
    """One entry of the policy history. The newest version is the active one: a rollback is a new
    version with an older version's content (``rollback_of`` names it), so history only grows."""

    model_config = ConfigDict(frozen=True)

    version: int = Field(default=0, ge=0, description="1, 2, ...; given by the store (0 before it is stored)")
    policy: Policy
    sha256: str
    applied_by: str
    applied_at: float
    reason: str
    rollback_of: int = 0  # the version whose content this restores; 0 when it is not a rollback

    @classmethod
    def new(
        cls, policy: Policy, applied_by: str, applied_at: float, reason: str, rollback_of: int = 0
    ) -> PolicyVersion:
        return cls(policy=policy, sha256=policy_sha256(policy), applied_by=applied_by, applied_at=applied_at,
                   reason=reason, rollback_of=rollback_of)
