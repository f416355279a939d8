"""The authorisation table: every RPC, the permission it needs, and what its audit record names.

One entry per method of every service this server registers; a method missing here is denied
(and tests/test_auth.py walks the descriptor pool to catch it). Health and reflection are open,
so load balancers and ``grpcurl list`` work without credentials.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from grid_scheduler.service.auth.principal import Permission

# (request, response or None when refused) -> (tenant, object) for the audit record.
AuditSubject = Callable[[Any, Any], tuple[str, str]]


@dataclass(frozen=True)
class Rule:
    permission: Permission
    audit: AuditSubject | None = None  # mutating calls are audited, allowed or refused


def _job(request: Any, response: Any) -> tuple[str, str]:
    if response is not None:
        return response.job.spec.tenant, response.job.id
    return "", request.id


def _submission(request: Any, response: Any) -> tuple[str, str]:
    if response is not None:
        return response.job.spec.tenant, response.job.id
    return request.spec.tenant, f"request_id={request.request_id}" if request.request_id else ""


def _pool(request: Any, response: Any) -> tuple[str, str]:
    return "", request.pool_id


def _nodes(request: Any, response: Any) -> tuple[str, str]:
    return "", f"{request.pool_id}: {','.join(request.nodes)[:200]}"


def _optimize(request: Any, response: Any) -> tuple[str, str]:
    return "", "dry-run" if request.dry_run else "commit"


def _scenario(request: Any, response: Any) -> tuple[str, str]:
    return "", request.id


def _new_scenario(request: Any, response: Any) -> tuple[str, str]:
    if response is not None:
        return "", response.operation.id
    return "", request.path if request.WhichOneof("source") == "path" else "(yaml)"


_P = "/grid_scheduler.v1.PlacementService/"
_T = "/grid_scheduler.v1.TopologyService/"
_S = "/grid_scheduler.v1.ScenarioService/"
_A = "/grid_scheduler.v1.AuditService/"
_PO = "/grid_scheduler.v1.PolicyService/"
_AG = "/grid_scheduler.v1.SiteAgentService/"


def _policy_change(request: Any, response: Any) -> tuple[str, str]:
    if response is not None:
        return "", f"policy v{response.policy.version}"
    return "", f"policy over v{request.expected_version}" if request.HasField("expected_version") else "policy"


def _agent(request: Any, response: Any) -> tuple[str, str]:
    return "", f"site {request.site_id} agent {request.agent_id}"


def _rollback(request: Any, response: Any) -> tuple[str, str]:
    if response is not None:
        return "", f"policy v{response.policy.version} (rollback to v{request.version})"
    return "", f"policy rollback to v{request.version}"

RULES: Mapping[str, Rule] = {
    _P + "SubmitJob": Rule(Permission.SUBMIT, _submission),
    _P + "ExplainPlacement": Rule(Permission.SUBMIT),
    _P + "GetJob": Rule(Permission.READ_JOBS),
    _P + "ListJobs": Rule(Permission.READ_JOBS),
    _P + "WatchJobs": Rule(Permission.READ_JOBS),
    # The job's owner or a tenant admin; the handler asks Principal.may_manage for the job at hand.
    _P + "CancelJob": Rule(Permission.MANAGE_OWN_JOBS, _job),
    _P + "CompleteJob": Rule(Permission.MANAGE_OWN_JOBS, _job),
    _P + "OptimizePending": Rule(Permission.OPERATE, _optimize),
    _T + "ListSites": Rule(Permission.READ_TOPOLOGY),
    _T + "GetSite": Rule(Permission.READ_TOPOLOGY),
    _T + "ListEndpoints": Rule(Permission.READ_TOPOLOGY),
    _T + "GetCapacity": Rule(Permission.READ_TOPOLOGY),
    _T + "DrainPool": Rule(Permission.OPERATE, _pool),
    _T + "UndrainPool": Rule(Permission.OPERATE, _pool),
    _T + "GetFleet": Rule(Permission.READ_TOPOLOGY),
    _T + "DrainNodes": Rule(Permission.OPERATE, _nodes),
    _T + "UndrainNodes": Rule(Permission.OPERATE, _nodes),
    _S + "StartScenario": Rule(Permission.RUN_SCENARIOS, _new_scenario),
    _S + "GetScenario": Rule(Permission.RUN_SCENARIOS),
    _S + "WatchScenario": Rule(Permission.RUN_SCENARIOS),
    _S + "GetScenarioReport": Rule(Permission.RUN_SCENARIOS),
    _S + "CancelScenario": Rule(Permission.RUN_SCENARIOS, _scenario),
    _S + "DeleteScenario": Rule(Permission.RUN_SCENARIOS, _scenario),
    # Other tenants' jobs come back anonymised unless the caller may READ_JOBS them (live_scope.py).
    _S + "GetLiveSnapshot": Rule(Permission.RUN_SCENARIOS),
    _A + "ListAuditRecords": Rule(Permission.READ_AUDIT),
    # Reading and dry-running policies: platform admins and planners. Changing them: operate, audited.
    _PO + "GetPolicy": Rule(Permission.READ_POLICY),
    _PO + "ListPolicyVersions": Rule(Permission.READ_POLICY),
    _PO + "ValidatePolicy": Rule(Permission.READ_POLICY),
    _PO + "DiffPolicy": Rule(Permission.READ_POLICY),
    _PO + "ApplyPolicy": Rule(Permission.OPERATE, _policy_change),
    _PO + "RollbackPolicy": Rule(Permission.OPERATE, _rollback),
    _PO + "GetFairShare": Rule(Permission.READ_POLICY),
    # Quota usage: a tenant's own roles see its rows (the handler scopes them), planners and admins all.
    _PO + "GetQuotaUsage": Rule(Permission.READ_QUOTA),
    # Site agents, each only for the site its binding names (the handlers ask may_act_for_site).
    # Registration is audited; heartbeats and job reports are too frequent to be, and the store keeps them.
    _AG + "RegisterAgent": Rule(Permission.SITE_AGENT, _agent),
    _AG + "Heartbeat": Rule(Permission.SITE_AGENT),
    _AG + "WatchAssignments": Rule(Permission.SITE_AGENT),
    _AG + "ReportJob": Rule(Permission.SITE_AGENT),
}

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")


def is_open(method: str) -> bool:
    return method.startswith(OPEN_PREFIXES)
