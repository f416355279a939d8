"""The auth config (``serve --auth-config FILE.yaml``): principals, credentials, tenant limits, rates.

```yaml
principals:                       # name -> roles; a role with tenant scope names its tenant
  alice:    {roles: [{role: submitter, tenant: acme}]}
  acme-ops: {roles: [{role: tenant-admin, tenant: acme}]}
  root:     {roles: [{role: platform-admin}], rate: {requests_per_s: 500, burst: 1000}}
tokens:                           # static bearer tokens, for development: the token or its sha256
  - {principal: alice, token: dev-alice-token}
  - {principal: root, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}
jwt:                              # signed JWTs, verified against a JWKS file
  jwks_file: jwks.json            # relative to this file
  issuer: https://idp.example.com
  audience: grid-scheduler
  principal_claim: sub            # the claim that names the principal
certificates:                     # mutual TLS: client certificate CN or SAN -> principal
  alice.acme.example: alice
tenants:                          # limits on every job of a tenant, whoever submits it
  acme: {max_priority: 100, max_gpus: 4096, allow_non_preemptible: false}
tenant_defaults: {max_priority: 50}
rate: {requests_per_s: 50, burst: 100}   # per principal, unless the principal sets its own
```
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from grid_scheduler.config import ConfigError, parse, read_yaml
from grid_scheduler.model.grid import Id
from grid_scheduler.service.auth.principal import TENANT_ROLES, Binding, Principal, Role, TenantLimits

Name = Annotated[str, Field(min_length=1, max_length=128)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class RoleBindingConfig(_Strict):
    role: Role
    tenant: Id | None = None
    site: Id | None = None

    @model_validator(mode="after")
    def _scope(self) -> RoleBindingConfig:
        if self.role in TENANT_ROLES and not self.tenant:
            raise ValueError(f"role {self.role.value} needs a tenant")
        if self.role not in TENANT_ROLES and self.tenant:
            raise ValueError(f"role {self.role.value} is not scoped to a tenant")
        if self.role is Role.SITE_AGENT and not self.site:
            raise ValueError("role site-agent needs a site")
        return self


class RateConfig(_Strict):
    requests_per_s: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)


class PrincipalConfig(_Strict):
    roles: list[RoleBindingConfig] = Field(min_length=1)
    rate: RateConfig | None = None


class StaticTokenConfig(_Strict):
    principal: Name
    token: Annotated[str, Field(min_length=16)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    @model_validator(mode="after")
    def _one(self) -> StaticTokenConfig:
        if (self.token is None) == (self.sha256 is None):
            raise ValueError("give exactly one of token and sha256")
        return self

    @property
    def digest(self) -> str:
        return self.sha256 or hashlib.sha256((self.token or "").encode()).hexdigest()


class JwtConfig(_Strict):
    jwks_file: Path
    issuer: Name
    audience: Name
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"], min_length=1)
    principal_claim: Name = "sub"
    leeway_s: float = Field(default=30.0, ge=0, le=300)


class TenantLimitsConfig(_Strict):
    max_priority: int = Field(default=1000, ge=0, le=1000)
    max_gpus: int | None = Field(default=None, gt=0)
    allow_non_preemptible: bool = True

    def limits(self) -> TenantLimits:
        return TenantLimits(self.max_priority, self.max_gpus, self.allow_non_preemptible)


class AuthConfig(_Strict):
    principals: dict[Name, PrincipalConfig] = Field(min_length=1)
    tokens: list[StaticTokenConfig] = Field(default_factory=list)
    jwt: JwtConfig | None = None
    certificates: dict[Name, Name] = Field(default_factory=dict)
    tenants: dict[Id, TenantLimitsConfig] = Field(default_factory=dict)
    tenant_defaults: TenantLimitsConfig = Field(default_factory=TenantLimitsConfig)
    rate: RateConfig = Field(default_factory=RateConfig)

    @model_validator(mode="after")
    def _known_principals(self) -> AuthConfig:
        for i, t in enumerate(self.tokens):
            if t.principal not in self.principals:
                raise ValueError(f"tokens[{i}].principal: no principal {t.principal!r}")
        for name in self.certificates.values():
            if name not in self.principals:
                raise ValueError(f"certificates: no principal {name!r}")
        return self

    def principal(self, name: str) -> Principal | None:
        return self.runtime_principals.get(name)

    @cached_property
    def runtime_principals(self) -> dict[str, Principal]:
        limits = {t: c.limits() for t, c in self.tenants.items()}
        defaults = self.tenant_defaults.limits()
        return {
            name: Principal(name, tuple(Binding(b.role, b.tenant or "", b.site or "") for b in c.roles), limits,
                            defaults)
            for name, c in self.principals.items()
        }

    def rate_for(self, name: str) -> RateConfig:
        config = self.principals.get(name)
        return config.rate if config is not None and config.rate is not None else self.rate


def load_auth_config(path: str | Path) -> AuthConfig:
    """Read and validate an auth config; relative paths in it (the JWKS file) are relative to it."""
    path = Path(path)
    data: Any = read_yaml(path)
    config = parse(AuthConfig, data, str(path))
    if config.jwt is not None and not config.jwt.jwks_file.is_absolute():
        jwt = config.jwt.model_copy(update={"jwks_file": path.parent / config.jwt.jwks_file})
        config = config.model_copy(update={"jwt": jwt})
    if config.jwt is not None and not config.jwt.jwks_file.is_file():
        raise ConfigError(f"{path}: jwt.jwks_file: no file {config.jwt.jwks_file}")
    return config
