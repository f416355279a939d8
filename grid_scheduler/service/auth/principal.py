"""Who is calling and what they may do: roles, permissions and the tenant scope rule.

This is the one module that says which tenants a caller may act for. The interceptor
(``interceptor.py``) checks a call's permission from the method table (``table.py``); the
handlers then ask the caller's ``Principal`` which tenants and jobs that permission reaches,
and never decide it themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum

from grid_scheduler.model import JobRecord, JobSpec


class Role(StrEnum):
    SUBMITTER = "submitter"  # its tenant's jobs; cancels and completes only the jobs it submitted
    TENANT_ADMIN = "tenant-admin"  # the same for every job of its tenant, and the tenant's audit trail
    PLATFORM_ADMIN = "platform-admin"  # every tenant; drains, the batch optimiser, audit
    PLANNER = "planner"  # what-if scenarios, read-only capacity
    SITE_AGENT = "site-agent"  # one site: the site agent API (SiteAgentService) for it; read-only topology


class Permission(StrEnum):
    SUBMIT = "submit"  # submit and explain jobs
    READ_JOBS = "read_jobs"  # get, list, watch jobs
    MANAGE_OWN_JOBS = "manage_own_jobs"  # cancel or complete jobs the caller submitted
    MANAGE_JOBS = "manage_jobs"  # cancel or complete any job in scope
    READ_TOPOLOGY = "read_topology"  # sites, endpoints, capacity
    OPERATE = "operate"  # drain and undrain pools, run the batch optimiser
    RUN_SCENARIOS = "run_scenarios"  # what-if runs and their reports
    READ_AUDIT = "read_audit"
    READ_POLICY = "read_policy"  # the placement policy, its history, validation and dry-run diffs
    READ_QUOTA = "read_quota"  # quota usage against quota (tenant roles: their own tenant's rows)
    SITE_AGENT = "site_agent"


# Tenant-scoped roles reach only their binding's tenant; the others are not about tenants.
TENANT_ROLES = frozenset({Role.SUBMITTER, Role.TENANT_ADMIN})

GRANTS: Mapping[Role, frozenset[Permission]] = {
    Role.SUBMITTER: frozenset({Permission.SUBMIT, Permission.READ_JOBS, Permission.MANAGE_OWN_JOBS,
                               Permission.READ_TOPOLOGY, Permission.READ_QUOTA}),
    Role.TENANT_ADMIN: frozenset({Permission.SUBMIT, Permission.READ_JOBS, Permission.MANAGE_OWN_JOBS,
                                  Permission.MANAGE_JOBS, Permission.READ_TOPOLOGY, Permission.READ_AUDIT,
                                  Permission.READ_QUOTA}),
    Role.PLATFORM_ADMIN: frozenset(Permission),
    Role.PLANNER: frozenset({Permission.RUN_SCENARIOS, Permission.READ_TOPOLOGY, Permission.READ_POLICY,
                             Permission.READ_QUOTA}),
    Role.SITE_AGENT: frozenset({Permission.READ_TOPOLOGY, Permission.SITE_AGENT}),
}


class PermissionDenied(Exception):
    """The caller is known but may not do this. ``reason`` is the ErrorInfo reason; ``metadata`` its numbers."""

    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.metadata = dict(metadata or {})


@dataclass(frozen=True)
class Binding:
    role: Role
    tenant: str = ""  # submitter, tenant-admin
    site: str = ""  # site-agent


@dataclass(frozen=True)
class TenantLimits:
    """What one tenant's jobs may ask for, whoever submits them."""

    max_priority: int = 1000
    max_gpus: int | None = None  # per job (all replicas together)
    allow_non_preemptible: bool = True

    def check(self, spec: JobSpec) -> None:
        """PermissionDenied naming the limit and the value asked for, at the first one exceeded."""
        if spec.priority > self.max_priority:
            raise PermissionDenied(
                "PRIORITY_LIMIT",
                f"spec.priority: {spec.priority} is above tenant {spec.tenant}'s limit of {self.max_priority}",
                {"field": "spec.priority", "limit": str(self.max_priority), "requested": str(spec.priority)},
            )
        if self.max_gpus is not None and spec.total_gpus > self.max_gpus:
            raise PermissionDenied(
                "GPU_LIMIT",
                f"spec.gpus: {spec.total_gpus} GPUs is above tenant {spec.tenant}'s limit of {self.max_gpus} per job",
                {"field": "spec.gpus.count", "limit": str(self.max_gpus), "requested": str(spec.total_gpus)},
            )
        if not spec.preemptible and not self.allow_non_preemptible:
            raise PermissionDenied(
                "PREEMPTIBLE_REQUIRED",
                f"spec.preemptible: tenant {spec.tenant}'s jobs must be preemptible",
                {"field": "spec.preemptible", "limit": "true", "requested": "false"},
            )


UNLIMITED = TenantLimits()


@dataclass(frozen=True)
class Principal:
    name: str
    bindings: tuple[Binding, ...]
    # Limits of every tenant, and of tenants not listed; shared by all principals of a config.
    limits: Mapping[str, TenantLimits] = field(default_factory=dict)
    default_limits: TenantLimits = UNLIMITED

    def allows(self, permission: Permission) -> bool:
        return any(permission in GRANTS[b.role] for b in self.bindings)

    def tenants(self, permission: Permission) -> frozenset[str] | None:
        """The tenants ``permission`` reaches: None for every tenant, else a set (maybe empty)."""
        out: set[str] = set()
        for b in self.bindings:
            if permission not in GRANTS[b.role]:
                continue
            if b.role not in TENANT_ROLES:
                return None
            out.add(b.tenant)
        return frozenset(out)

    def may_read(self, tenant: str, permission: Permission = Permission.READ_JOBS) -> bool:
        scope = self.tenants(permission)
        return scope is None or tenant in scope

    def may_act_for_site(self, site_id: str) -> bool:
        """A site agent acts only for the site its binding names; a platform admin for every site."""
        for b in self.bindings:
            if Permission.SITE_AGENT not in GRANTS[b.role]:
                continue
            if b.role is not Role.SITE_AGENT or b.site == site_id:
                return True
        return False

    def may_manage(self, record: JobRecord) -> bool:
        """Cancel or complete ``record``: any job in MANAGE_JOBS scope, or one's own in MANAGE_OWN_JOBS scope."""
        if self.may_read(record.spec.tenant, Permission.MANAGE_JOBS):
            return True
        return record.owner == self.name and self.may_read(record.spec.tenant, Permission.MANAGE_OWN_JOBS)

    def submit_tenant(self, requested: str) -> str:
        """The tenant a submission is for: the one named, if in scope, or the caller's only tenant."""
        scope = self.tenants(Permission.SUBMIT)
        if requested:
            if scope is not None and requested not in scope:
                raise PermissionDenied(
                    "TENANT_NOT_ALLOWED", f"spec.tenant: {self.name} may not submit for tenant {requested[:64]!r}",
                    {"field": "spec.tenant", "principal": self.name},
                )
            return requested
        if scope is not None and len(scope) == 1:
            return next(iter(scope))
        return ""  # left to validation: spec.tenant is required

    def admit(self, spec: JobSpec) -> None:
        """The tenant's limits (priority, size, preemptibility) for a job this caller submits."""
        self.limits.get(spec.tenant, self.default_limits).check(spec)


ANONYMOUS = Principal("anonymous", (Binding(Role.PLATFORM_ADMIN),))

_current: ContextVar[Principal | None] = ContextVar("grid_scheduler_principal", default=None)


def current() -> Principal:
    """The principal of the call being served (set by the auth interceptor for every call)."""
    principal = _current.get()
    if principal is None:
        # A servicer reached without the interceptor: refuse rather than grant.
        raise PermissionDenied("NO_PRINCIPAL", "no authenticated principal for this call")
    return principal


def bind(principal: Principal) -> object:
    """Make ``principal`` the current one; returns the token for ``unbind``."""
    return _current.set(principal)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
