"""PolicyService: the live, versioned placement policy; read, check, dry-run, apply, roll back.

Who may call what is in service/auth/table.py (apply and rollback need ``operate`` and are
audited); the principal applying is the one the interceptor resolved."""

from __future__ import annotations

import grpc

from grid_scheduler._proto.v1 import policy_pb2 as pb
from grid_scheduler._proto.v1 import policy_pb2_grpc as pb_grpc
from grid_scheduler.engine.fairshare import FleetCapacity, fair_shares
from grid_scheduler.model import PolicyVersion
from grid_scheduler.scheduler import InvalidJob, Scheduler
from grid_scheduler.scheduler.errors import StalePolicyVersion
from grid_scheduler.service import errors
from grid_scheduler.service.auth import Permission, current
from grid_scheduler.service.handlers import handled
from grid_scheduler.service.policy_convert import diff_to_pb, policy_from_document, version_to_pb

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
DEFAULT_MAX_JOBS = 1000
MAX_LAST_FINISHED = 100_000
MAX_REASON_CHARS = 1000
MAX_TENANT_CHARS = 128  # model.grid.Id


class PolicyServicer(pb_grpc.PolicyServiceServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    @handled
    def GetPolicy(self, request: pb.GetPolicyRequest, context: grpc.ServicerContext) -> pb.GetPolicyResponse:
        if request.version < 0:
            raise InvalidJob([("version", "must be >= 0 (0: the active version)")])
        return pb.GetPolicyResponse(policy=version_to_pb(self.scheduler.policy_entry(request.version)))

    @handled
    def ListPolicyVersions(
        self, request: pb.ListPolicyVersionsRequest, context: grpc.ServicerContext
    ) -> pb.ListPolicyVersionsResponse:
        if request.page_size < 0:
            raise InvalidJob([("page_size", "must be >= 0")])
        try:
            before = int(request.page_token) if request.page_token else 0
        except ValueError as e:
            raise InvalidJob([("page_token", "not a token this service gave out")]) from e
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page = self.scheduler.store.policy_history(before, size)
        more = len(page) == size and page[-1].version > 1
        return pb.ListPolicyVersionsResponse(
            versions=[version_to_pb(v) for v in page], next_page_token=str(page[-1].version) if more else "")

    @handled
    def ValidatePolicy(
        self, request: pb.ValidatePolicyRequest, context: grpc.ServicerContext
    ) -> pb.ValidatePolicyResponse:
        policy = policy_from_document(request.document, self.scheduler.grid)
        return pb.ValidatePolicyResponse(policy=version_to_pb(PolicyVersion.new(policy, "", 0.0, "")))

    @handled
    def DiffPolicy(self, request: pb.DiffPolicyRequest, context: grpc.ServicerContext) -> pb.DiffPolicyResponse:
        problems = []
        if not 0 <= request.last_finished <= MAX_LAST_FINISHED:
            problems.append(("last_finished", f"must be within [0, {MAX_LAST_FINISHED}]"))
        if request.max_jobs < 0:
            problems.append(("max_jobs", "must be >= 0"))
        if problems:
            raise InvalidJob(problems)
        candidate = policy_from_document(request.document, self.scheduler.grid)
        diff, active = self.scheduler.diff_policy(candidate, request.last_finished)
        return diff_to_pb(diff, active, candidate, request.max_jobs or DEFAULT_MAX_JOBS)

    @handled
    def ApplyPolicy(self, request: pb.ApplyPolicyRequest, context: grpc.ServicerContext) -> pb.ApplyPolicyResponse:
        expected = request.expected_version if request.HasField("expected_version") else None
        _check_change(request.reason, expected)
        policy = policy_from_document(request.document, self.scheduler.grid)
        try:
            entry = self.scheduler.apply_policy(policy, request.reason, current().name, expected)
        except StalePolicyVersion as stale:
            context.abort_with_status(errors.aborted("POLICY_VERSION_STALE", str(stale), {
                "expected_version": str(stale.expected), "active_version": str(stale.current)}))
        return pb.ApplyPolicyResponse(policy=version_to_pb(entry))

    @handled
    def RollbackPolicy(
        self, request: pb.RollbackPolicyRequest, context: grpc.ServicerContext
    ) -> pb.RollbackPolicyResponse:
        expected = request.expected_version if request.HasField("expected_version") else None
        _check_change(request.reason, expected)
        if request.version <= 0:
            raise InvalidJob([("version", "must be > 0: the version whose content to restore")])
        try:
            entry = self.scheduler.rollback_policy(request.version, request.reason, current().name, expected)
        except StalePolicyVersion as stale:
            context.abort_with_status(errors.aborted("POLICY_VERSION_STALE", str(stale), {
                "expected_version": str(stale.expected), "active_version": str(stale.current)}))
        return pb.RollbackPolicyResponse(policy=version_to_pb(entry))

    @handled
    def GetFairShare(self, request: pb.GetFairShareRequest, context: grpc.ServicerContext) -> pb.GetFairShareResponse:
        s = self.scheduler
        with s.lock:
            s.usage()  # adopts a policy applied on any replica
            policy, version = s.policy, s.policy_version
        shares = fair_shares(s.index, policy, s.store.running_jobs(), s.store.pending_jobs())
        fleet = FleetCapacity.of(s.index)
        return pb.GetFairShareResponse(
            tenants=[pb.FairShareTenant(
                tenant=t.tenant, weight=t.weight, share=t.share, entitlement=t.entitlement,
                borrowed_gpus=t.borrowed_gpus, waiting_gpu_hours=t.waiting_gpu_hours, gpus=t.gpus,
                power_kw=t.power_kw, running_jobs=t.running_jobs, waiting_jobs=t.waiting_jobs) for t in shares],
            enabled=policy.fair_share.enabled, policy_version=version, fleet_gpus=fleet.gpus,
            fleet_power_kw=fleet.power_kw)


    @handled
    def GetQuotaUsage(
        self, request: pb.GetQuotaUsageRequest, context: grpc.ServicerContext
    ) -> pb.GetQuotaUsageResponse:
        if len(request.tenant) > MAX_TENANT_CHARS:
            raise InvalidJob([("tenant", f"at most {MAX_TENANT_CHARS} characters")])
        version, rows = self.scheduler.quota_usage(request.tenant)
        scope = current().tenants(Permission.READ_QUOTA)
        if scope is not None:  # a tenant's roles see only their own tenants' rows
            rows = [r for r in rows if r.tenant in scope]
        return pb.GetQuotaUsageResponse(policy_version=version, usage=[
            pb.QuotaUsage(tenant=r.tenant, cohort=r.cohort, resource_group=r.group, used_gpus=r.used_gpus,
                          nominal_gpus=r.nominal_gpus, borrowing_limit_gpus=r.borrowing_limit_gpus,
                          lending_limit_gpus=r.lending_limit_gpus, borrowed_gpus=r.borrowed_gpus,
                          borrowable_gpus=r.borrowable_gpus, headroom_gpus=r.headroom_gpus)
            for r in rows])


def _check_change(reason: str, expected: int | None) -> None:
    problems = []
    if not reason.strip():
        problems.append(("reason", "required: say why (it is kept in the history and the audit trail)"))
    elif len(reason) > MAX_REASON_CHARS:
        problems.append(("reason", f"at most {MAX_REASON_CHARS} characters"))
    if expected is not None and expected < 0:
        problems.append(("expected_version", "must be >= 0"))
    if problems:
        raise InvalidJob(problems)
