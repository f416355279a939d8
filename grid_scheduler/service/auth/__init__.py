"""Identity, authorisation, tenant scope, limits and audit: the server's trust boundary."""

from grid_scheduler.service.auth.audit import Auditor
from grid_scheduler.service.auth.config import AuthConfig, load_auth_config
from grid_scheduler.service.auth.identity import Authenticator, Unauthenticated
from grid_scheduler.service.auth.interceptor import AuthInterceptor
from grid_scheduler.service.auth.principal import (
    ANONYMOUS,
    Binding,
    Permission,
    PermissionDenied,
    Principal,
    Role,
    TenantLimits,
    current,
)
from grid_scheduler.service.auth.ratelimit import RateLimiter
from grid_scheduler.service.auth.table import RULES, Rule

__all__ = [
    "ANONYMOUS",
    "RULES",
    "Auditor",
    "AuthConfig",
    "AuthInterceptor",
    "Authenticator",
    "Binding",
    "Permission",
    "PermissionDenied",
    "Principal",
    "RateLimiter",
    "Role",
    "Rule",
    "TenantLimits",
    "Unauthenticated",
    "current",
    "load_auth_config",
]
