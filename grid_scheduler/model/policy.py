"""Placement policy: objective weights and hard rules, loaded from a YAML file."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from grid_scheduler.model import preference
from grid_scheduler.model.grid import Grid, Id, ResidencyRule
from grid_scheduler.model.preference import Preference


class Weights(BaseModel):
    """Weights on the cost terms (each term is normalised to [0, 1] before weighting)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    latency: float = Field(default=1.0, ge=0)
    carbon: float = Field(default=0.5, ge=0)
    energy_price: float = Field(default=0.5, ge=0)
    packing: float = Field(default=0.3, ge=0)
    data_movement: float = Field(default=1.0, ge=0)
    # Leaving a whole free interconnect domain partly used (engine/topology.py); added to the
    # packing term. Small: it breaks ties between pools, it does not outweigh carbon or price.
    fragmentation: float = Field(default=0.1, ge=0)


class FairShare(BaseModel):
    """Fair share between tenants within a priority tier (``engine/fairshare.py`` applies it).

    A tenant's share is its dominant share of the fleet: the larger of its fraction of the
    fleet's healthy GPUs and of its facility power envelope (dominant-resource fairness over
    the two resources a grid runs out of). Tenants are compared on share / weight."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(default=False, description="off: queue order is tier, then submission order")
    weights: dict[str, float] = Field(
        default_factory=dict, description="tenant -> weight (> 0); a tenant not listed weighs default_weight"
    )
    default_weight: float = Field(default=1.0, gt=0)

    @field_validator("weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        bad = sorted(t for t, w in weights.items() if not w > 0)
        if bad:
            raise ValueError(f"weights must be > 0 (tenants {', '.join(bad)})")
        return weights

    def weight(self, tenant: str) -> float:
        return self.weights.get(tenant, self.default_weight)


class ResourceGroup(BaseModel):
    """Pools the platform team counts together, e.g. "GB300 in EU". Each list narrows the group
    (empty: any); a pool counts in the FIRST group of the list that matches it, so groups never
    overlap and a GPU is never charged twice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Id
    gpu_types: tuple[str, ...] = ()
    jurisdictions: tuple[str, ...] = Field(default=(), description="the site carries at least one of these tags")
    tiers: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()


class TenantQuota(BaseModel):
    """One tenant's quota in one resource group, in GPUs (Kueue's ClusterQueue flavor quota)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nominal_gpus: int = Field(ge=0)
    # None: may borrow whatever the cohort lends.
    borrowing_limit_gpus: int | None = Field(default=None, ge=0)
    # None: all of the nominal quota is lendable.
    lending_limit_gpus: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _lending_within_nominal(self) -> TenantQuota:
        if self.lending_limit_gpus is not None and self.lending_limit_gpus > self.nominal_gpus:
            raise ValueError("lending_limit_gpus cannot exceed nominal_gpus")
        return self


class Cohort(BaseModel):
    """Tenants that lend each other their unused nominal quota: tenant -> resource group -> quota."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Id
    tenants: dict[Id, dict[Id, TenantQuota]] = Field(default_factory=dict)


class Quotas(BaseModel):
    """Tenants and groups not listed are unlimited (quotas are opt-in per tenant and group)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    resource_groups: tuple[ResourceGroup, ...] = ()
    cohorts: tuple[Cohort, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Quotas:
        names = [g.name for g in self.resource_groups]
        if len(set(names)) != len(names):
            raise ValueError("resource_groups: names must be unique")
        seen: dict[str, str] = {}
        for cohort in self.cohorts:
            for tenant, groups in cohort.tenants.items():
                if tenant in seen:
                    raise ValueError(f"cohorts: tenant {tenant} is in both {seen[tenant]} and {cohort.name}")
                seen[tenant] = cohort.name
                for group in groups:
                    if group not in names:
                        raise ValueError(f"cohorts.{cohort.name}.tenants.{tenant}: unknown resource group {group}")
        return self


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
    fair_share: FairShare = Field(default_factory=FairShare)
    quotas: Quotas = Field(default_factory=Quotas, description="per tenant GPU quotas in cohorts (Kueue's model)")
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
    # Without quotas the hash is what it was before quotas existed, so stored histories still match.
    exclude = {"quotas"} if not policy.quotas.cohorts and not policy.quotas.resource_groups else None
    return hashlib.sha256(policy.model_dump_json(exclude=exclude).encode()).hexdigest()


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
