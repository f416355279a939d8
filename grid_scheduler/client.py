"""A typed Python client for the grid-scheduler gRPC API (used by the CLI and the examples)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grid_scheduler._proto.v1 import (
    agent_pb2_grpc,
    audit_pb2_grpc,
    placement_pb2_grpc,
    policy_pb2_grpc,
    scenario_pb2_grpc,
    topology_pb2_grpc,
)
from grid_scheduler._proto.v1 import audit_pb2 as apb
from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import policy_pb2 as pol
from grid_scheduler._proto.v1 import scenario_pb2 as spb
from grid_scheduler._proto.v1 import topology_pb2 as tpb
from grid_scheduler.model import JobSpec, JobState, Tier
from grid_scheduler.service.convert import STATE_TO_PB, TIER_TO_PB, spec_to_pb
from grid_scheduler.service.tls import ENV_TOKEN, ClientTls

DEFAULT_ADDRESS = "127.0.0.1:50051"


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization: Bearer <token>`` to every call (over TLS or, for development, plaintext)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        # grpc hands interceptors its own namedtuple of call details.
        return details._replace(metadata=[*(details.metadata or ()), self._header])

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)


class Client:
    """``tls`` and ``token`` default to the environment (GRID_SCHEDULER_TLS_CA / _CERT / _KEY /
    _SERVER_NAME, GRID_SCHEDULER_TOKEN); with neither set, the channel is plaintext and anonymous."""

    def __init__(
        self, address: str = DEFAULT_ADDRESS, timeout_s: float = 30.0, tls: ClientTls | None = None,
        token: str | None = None, max_receive_bytes: int | None = None,
    ) -> None:
        """``max_receive_bytes``: the largest response accepted (gRPC's default, 4 MiB, when None);
        a live snapshot of tens of thousands of jobs needs more."""
        tls = tls if tls is not None else ClientTls.from_env()
        token = token if token is not None else os.environ.get(ENV_TOKEN) or None
        options: list[tuple[str, str | int]] = []
        if max_receive_bytes is not None:
            options.append(("grpc.max_receive_message_length", max_receive_bytes))
        if tls is not None:
            channel = grpc.secure_channel(address, tls.credentials(), options=[*tls.options(), *options])
        else:
            channel = grpc.insecure_channel(address, options=options)
        self._raw_channel = channel
        self.channel = grpc.intercept_channel(channel, _Bearer(token)) if token else channel
        self.timeout_s = timeout_s
        self.placement = placement_pb2_grpc.PlacementServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.topology = topology_pb2_grpc.TopologyServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.policies = policy_pb2_grpc.PolicyServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.scenarios = scenario_pb2_grpc.ScenarioServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.agents = agent_pb2_grpc.SiteAgentServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def close(self) -> None:
        self._raw_channel.close()

    # --- what-if -----------------------------------------------------------------
    def live_snapshot(self) -> spb.LiveSnapshot:
        """The live state a what-if run starts from: one consistent read (ScenarioService.GetLiveSnapshot)."""
        response: spb.GetLiveSnapshotResponse = self.scenarios.GetLiveSnapshot(spb.GetLiveSnapshotRequest(),
                                                                               timeout=self.timeout_s)
        return response.snapshot

    # --- jobs ------------------------------------------------------------------
    def submit(self, spec: JobSpec | ppb.JobSpec, request_id: str = "", full: bool = False) -> ppb.SubmitJobResponse:
        view = ppb.JOB_VIEW_FULL if full else ppb.JOB_VIEW_BASIC
        request = ppb.SubmitJobRequest(spec=_pb_spec(spec), request_id=request_id, view=view)
        response: ppb.SubmitJobResponse = self.placement.SubmitJob(request, timeout=self.timeout_s)
        return response

    def explain(self, spec: JobSpec | ppb.JobSpec) -> ppb.ExplainPlacementResponse:
        request = ppb.ExplainPlacementRequest(spec=_pb_spec(spec))
        response: ppb.ExplainPlacementResponse = self.placement.ExplainPlacement(request, timeout=self.timeout_s)
        return response

    def get_job(self, job_id: str, full: bool = False) -> ppb.Job:
        view = ppb.JOB_VIEW_FULL if full else ppb.JOB_VIEW_BASIC
        response = self.placement.GetJob(ppb.GetJobRequest(id=job_id, view=view), timeout=self.timeout_s)
        job: ppb.Job = response.job
        return job

    def list_jobs_page(
        self, page_size: int = 0, page_token: str = "", states: tuple[JobState, ...] = ()
    ) -> ppb.ListJobsResponse:
        request = ppb.ListJobsRequest(
            page_size=page_size, page_token=page_token, states=[STATE_TO_PB[s] for s in states]
        )
        response: ppb.ListJobsResponse = self.placement.ListJobs(request, timeout=self.timeout_s)
        return response

    def list_jobs(self, states: tuple[JobState, ...] = (), page_size: int = 0) -> Iterator[ppb.Job]:
        """Every job, page by page."""
        token = ""
        while True:
            page = self.list_jobs_page(page_size, token, states)
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return

    def cancel(self, job_id: str) -> ppb.Job:
        job: ppb.Job = self.placement.CancelJob(ppb.CancelJobRequest(id=job_id), timeout=self.timeout_s).job
        return job

    def complete(self, job_id: str) -> ppb.Job:
        job: ppb.Job = self.placement.CompleteJob(ppb.CompleteJobRequest(id=job_id), timeout=self.timeout_s).job
        return job

    def watch(
        self, job_id: str = "", after_sequence: int = 0, from_start: bool = False, timeout_s: float | None = None
    ) -> Iterator[ppb.WatchJobsResponse]:
        """A stream of job events; cancel it with ``.cancel()`` on the returned iterator."""
        request = ppb.WatchJobsRequest(job_id=job_id, after_sequence=after_sequence, from_start=from_start)
        stream: Iterator[ppb.WatchJobsResponse] = self.placement.WatchJobs(request, timeout=timeout_s)
        return stream

    def optimize(self, dry_run: bool = False, time_limit_s: float = 0.0) -> ppb.OptimizePendingResponse:
        """Run a batch cycle now; the call's deadline leaves room for the solver's time limit."""
        request = ppb.OptimizePendingRequest(dry_run=dry_run, time_limit_s=time_limit_s)
        response: ppb.OptimizePendingResponse = self.placement.OptimizePending(
            request, timeout=self.timeout_s + (time_limit_s or 5.0)
        )
        return response

    # --- grid ------------------------------------------------------------------
    def sites(self, tier: Tier | None = None, jurisdiction: str = "") -> list[tpb.Site]:
        tier_pb = TIER_TO_PB[tier] if tier else tpb.TIER_UNSPECIFIED
        request = tpb.ListSitesRequest(tier=tier_pb, jurisdiction=jurisdiction)
        return list(self.topology.ListSites(request, timeout=self.timeout_s).sites)

    def endpoints(self) -> list[tpb.Endpoint]:
        return list(self.topology.ListEndpoints(tpb.ListEndpointsRequest(), timeout=self.timeout_s).endpoints)

    def capacity(self) -> tpb.GetCapacityResponse:
        response: tpb.GetCapacityResponse = self.topology.GetCapacity(tpb.GetCapacityRequest(), timeout=self.timeout_s)
        return response

    def drain(self, pool_id: str) -> tpb.Pool:
        pool: tpb.Pool = self.topology.DrainPool(tpb.DrainPoolRequest(pool_id=pool_id), timeout=self.timeout_s).pool
        return pool

    def undrain(self, pool_id: str) -> tpb.Pool:
        request = tpb.UndrainPoolRequest(pool_id=pool_id)
        pool: tpb.Pool = self.topology.UndrainPool(request, timeout=self.timeout_s).pool
        return pool

    def fleet(self) -> list[tpb.FleetSite]:
        return list(self.topology.GetFleet(tpb.GetFleetRequest(), timeout=self.timeout_s).sites)

    def drain_nodes(
        self, pool_id: str, nodes: list[str], drained: bool = True
    ) -> tpb.DrainNodesResponse | tpb.UndrainNodesResponse:
        if drained:
            response: tpb.DrainNodesResponse = self.topology.DrainNodes(
                tpb.DrainNodesRequest(pool_id=pool_id, nodes=nodes), timeout=self.timeout_s)
            return response
        undone: tpb.UndrainNodesResponse = self.topology.UndrainNodes(
            tpb.UndrainNodesRequest(pool_id=pool_id, nodes=nodes), timeout=self.timeout_s)
        return undone

    # --- audit ---------------------------------------------------------------------
    def audit_records(
        self, after_sequence: int = 0, page_size: int = 0, tenant: str = ""
    ) -> apb.ListAuditRecordsResponse:
        request = apb.ListAuditRecordsRequest(after_sequence=after_sequence, page_size=page_size, tenant=tenant)
        response: apb.ListAuditRecordsResponse = self.audit.ListAuditRecords(request, timeout=self.timeout_s)
        return response

    # --- policy ----------------------------------------------------------------------
    # A policy document is YAML text (as `serve --policy` reads) or a pol.Policy message.
    def get_policy(self, version: int = 0) -> pol.PolicyVersion:
        """The active policy (``version`` 0) or one version of the history."""
        reply: pol.GetPolicyResponse = self.policies.GetPolicy(pol.GetPolicyRequest(version=version),
                                                               timeout=self.timeout_s)
        return reply.policy

    def policy_versions(self, page_size: int = 0) -> Iterator[pol.PolicyVersion]:
        """The history, newest first (paged under the hood)."""
        token = ""
        while True:
            page: pol.ListPolicyVersionsResponse = self.policies.ListPolicyVersions(
                pol.ListPolicyVersionsRequest(page_size=page_size, page_token=token), timeout=self.timeout_s)
            yield from page.versions
            token = page.next_page_token
            if not token:
                return

    def validate_policy(self, document: str | pol.Policy) -> pol.PolicyVersion:
        reply: pol.ValidatePolicyResponse = self.policies.ValidatePolicy(
            pol.ValidatePolicyRequest(document=_document(document)), timeout=self.timeout_s)
        return reply.policy

    def diff_policy(
        self, document: str | pol.Policy, last_finished: int = 0, max_jobs: int = 0
    ) -> pol.DiffPolicyResponse:
        request = pol.DiffPolicyRequest(document=_document(document), last_finished=last_finished, max_jobs=max_jobs)
        reply: pol.DiffPolicyResponse = self.policies.DiffPolicy(request, timeout=self.timeout_s)
        return reply

    def apply_policy(
        self, document: str | pol.Policy, reason: str, expected_version: int | None = None
    ) -> pol.PolicyVersion:
        request = pol.ApplyPolicyRequest(document=_document(document), reason=reason)
        if expected_version is not None:
            request.expected_version = expected_version
        reply: pol.ApplyPolicyResponse = self.policies.ApplyPolicy(request, timeout=self.timeout_s)
        return reply.policy

    def rollback_policy(self, version: int, reason: str, expected_version: int | None = None) -> pol.PolicyVersion:
        request = pol.RollbackPolicyRequest(version=version, reason=reason)
        if expected_version is not None:
            request.expected_version = expected_version
        reply: pol.RollbackPolicyResponse = self.policies.RollbackPolicy(request, timeout=self.timeout_s)
        return reply.policy

    def fair_share(self) -> pol.GetFairShareResponse:
        """Per tenant with work: share, entitlement, borrowed GPUs, waiting GPU-hours."""
        reply: pol.GetFairShareResponse = self.policies.GetFairShare(pol.GetFairShareRequest(), timeout=self.timeout_s)
        return reply

    def quota_usage(self, tenant: str = "") -> pol.GetQuotaUsageResponse:
        reply: pol.GetQuotaUsageResponse = self.policies.GetQuotaUsage(
            pol.GetQuotaUsageRequest(tenant=tenant), timeout=self.timeout_s)
        return reply

    def check_health(self, service: str = "") -> int:
        response = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        status: int = response.status
        return status


def _pb_spec(spec: JobSpec | ppb.JobSpec) -> ppb.JobSpec:
    return spec_to_pb(spec) if isinstance(spec, JobSpec) else spec


def _document(document: str | pol.Policy) -> pol.PolicyDocument:
    return pol.PolicyDocument(yaml=document) if isinstance(document, str) else pol.PolicyDocument(policy=document)
