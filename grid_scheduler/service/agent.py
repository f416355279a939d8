"""SiteAgentService: site agents register, heartbeat, watch their site's desired state, report jobs.

Every call names its site; the caller must be that site's agent (service/auth/principal.py
``may_act_for_site``), and after RegisterAgent the agent id it registered. The state is in the
store, so any replica serves any agent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import structlog

from grid_scheduler._proto.v1 import agent_pb2 as pb
from grid_scheduler._proto.v1 import agent_pb2_grpc as pb_grpc
from grid_scheduler.scheduler import InvalidJob, Scheduler, fleet
from grid_scheduler.service import errors
from grid_scheduler.service.auth.principal import PermissionDenied, current
from grid_scheduler.service.handlers import handled, status_of
from grid_scheduler.state.agents import AgentError, JobPhase, JobReport, NodeCondition, NodeHealth

log = structlog.get_logger("grid_scheduler.agent_service")

HEARTBEAT_INTERVAL_S = 5.0
# How often a WatchAssignments stream looks for a change, and the longest it stays silent (an
# unchanged desired state is sent again, so an agent can tell a quiet stream from a dead one).
ASSIGNMENT_POLL_S = 0.25
RESEND_S = 10.0
RECOMPUTE_S = 1.0
MAX_ID_CHARS = 128
MAX_NODES = 100_000

HEALTH_FROM_PB = {pb.NODE_HEALTH_HEALTHY: NodeHealth.HEALTHY, pb.NODE_HEALTH_FAILED: NodeHealth.FAILED,
                  pb.NODE_HEALTH_DRAINING: NodeHealth.DRAINING}
HEALTH_TO_PB = {v: k for k, v in HEALTH_FROM_PB.items()}
PHASE_FROM_PB = {pb.JOB_PHASE_STARTING: JobPhase.STARTING, pb.JOB_PHASE_RUNNING: JobPhase.RUNNING,
                 pb.JOB_PHASE_SUCCEEDED: JobPhase.SUCCEEDED, pb.JOB_PHASE_FAILED: JobPhase.FAILED,
                 pb.JOB_PHASE_STOPPED: JobPhase.STOPPED}
STOP_TO_PB: dict[fleet.StopReason, Any] = {r: pb.StopReason.Value("STOP_REASON_" + r.name) for r in fleet.StopReason}


class SiteAgentServicer(pb_grpc.SiteAgentServiceServicer):
    def __init__(self, scheduler: Scheduler, stopping: threading.Event | None = None,
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.scheduler = scheduler
        self.stopping = stopping or threading.Event()
        self.heartbeat_interval_s = heartbeat_interval_s

    # --- checks ------------------------------------------------------------------------------
    def _site(self, site_id: str, agent_id: str | None) -> str:
        """The site, after the input and the caller's scope are checked (INVALID_ARGUMENT naming the
        field, PERMISSION_DENIED for another site's agent)."""
        problems = []
        if not site_id:
            problems.append(("site_id", "required"))
        elif site_id not in self.scheduler.limits.site_index:
            problems.append(("site_id", f"unknown site {site_id[:MAX_ID_CHARS]!r}"))
        if agent_id is not None:
            if not agent_id:
                problems.append(("agent_id", "required"))
            elif len(agent_id) > MAX_ID_CHARS:
                problems.append(("agent_id", f"at most {MAX_ID_CHARS} characters"))
        if problems:
            raise InvalidJob(problems)
        principal = current()
        if not principal.may_act_for_site(site_id):
            raise PermissionDenied("SITE_NOT_ALLOWED", f"site_id: {principal.name} may not act for site {site_id}",
                                   {"field": "site_id", "principal": principal.name})
        return site_id

    def _site_pools(self, site_id: str) -> dict[str, int]:
        """Pool id -> its node count in the grid file."""
        return {p.id: p.nodes for p in self.scheduler.grid.site_by_id[site_id].pools}

    def _nodes(self, site_id: str, nodes: Sequence[pb.NodeStatus]) -> list[NodeCondition]:
        pools = self._site_pools(site_id)
        problems: list[tuple[str, str]] = []
        out = []
        if len(nodes) > MAX_NODES:
            raise InvalidJob([("nodes", f"at most {MAX_NODES} entries")])
        for i, n in enumerate(nodes):
            if n.pool_id not in pools:
                problems.append((f"nodes[{i}].pool_id", _not_a_pool(n.pool_id, site_id)))
            if not n.node or len(n.node) > MAX_ID_CHARS:
                problems.append((f"nodes[{i}].node", f"required, at most {MAX_ID_CHARS} characters"))
            if n.health not in HEALTH_FROM_PB:
                problems.append((f"nodes[{i}].health", "must be HEALTHY, FAILED or DRAINING"))
            if not problems:
                out.append(NodeCondition(n.pool_id, n.node, HEALTH_FROM_PB[n.health], n.reason[:512]))
        if problems:
            raise InvalidJob(problems)
        return out

    # --- calls -------------------------------------------------------------------------------
    @handled
    def RegisterAgent(
        self, request: pb.RegisterAgentRequest, context: grpc.ServicerContext
    ) -> pb.RegisterAgentResponse:
        site_id = self._site(request.site_id, request.agent_id)
        pools = self._site_pools(site_id)
        problems: list[tuple[str, str]] = []
        inventory: dict[str, list[str]] = {}
        for i, p in enumerate(request.pools):
            if p.pool_id not in pools:
                problems.append((f"pools[{i}].pool_id", _not_a_pool(p.pool_id, site_id)))
                continue
            if p.pool_id in inventory:
                problems.append((f"pools[{i}].pool_id", f"{p.pool_id} is listed twice"))
            names = list(p.nodes)
            if len(names) > pools[p.pool_id]:
                problems.append((f"pools[{i}].nodes", f"{len(names)} nodes; the grid declares {pools[p.pool_id]}"))
            if len(set(names)) != len(names) or any(not n or len(n) > MAX_ID_CHARS for n in names):
                problems.append((f"pools[{i}].nodes", f"names must be unique, 1 to {MAX_ID_CHARS} characters"))
            inventory[p.pool_id] = names
        if problems:
            raise InvalidJob(problems)
        agent = self.scheduler.store.register_agent(site_id, request.agent_id, inventory, self.scheduler.now())
        log.info("agent_registered", site_id=site_id, agent_id=request.agent_id, generation=agent.generation)
        fleet.apply_node_health(self.scheduler, site_id)  # a site back after a silence gets its capacity now
        return pb.RegisterAgentResponse(site_id=site_id, generation=agent.generation,
                                        heartbeat_interval_s=self.heartbeat_interval_s)

    @handled
    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        site_id = self._site(request.site_id, request.agent_id)
        if request.sequence < 0:
            raise InvalidJob([("sequence", "must be >= 0 (0: unsequenced)")])
        nodes = self._nodes(site_id, request.nodes)
        pool_ids = [pool.id for pool in self.scheduler.grid.site_by_id[site_id].pools]
        now = self.scheduler.now()
        try:
            # One store call (one round trip on Redis): the write, the previous heartbeat's time, the
            # drains and the revision the reply carries. Every few seconds from every agent.
            beat = self.scheduler.store.agent_beat(site_id, request.agent_id, nodes, now, pool_ids,
                                                   request.sequence)
        except AgentError as e:
            context.abort_with_status(errors.failed_precondition("agent", str(e)))
        # A retried or overtaken heartbeat (its sequence not above the last applied) changes nothing.
        timeout = self.scheduler.heartbeat_timeout_s
        silent = beat.applied and timeout is not None and now - beat.previous_heartbeat_at_s > timeout
        if beat.changed:
            log.info("node_health_changed", site_id=site_id,
                     unhealthy=[f"{n.pool_id}/{n.node}:{n.health.value}" for n in beat.nodes])
        if beat.changed or silent:  # a silent site heard from again gets its capacity back now
            fleet.apply_node_health(self.scheduler, site_id)
        return pb.HeartbeatResponse(
            acknowledged=[node_pb(n) for n in beat.nodes],
            operator_drained=[pb.NodeStatus(pool_id=pool_id, node=node, health=pb.NODE_HEALTH_DRAINING,
                                            reason="drained by an operator")
                              for pool_id in pool_ids for node in beat.drained[pool_id]],
            assignments_revision=beat.revision,
            applied=beat.applied,
        )

    @handled
    def ReportJob(self, request: pb.ReportJobRequest, context: grpc.ServicerContext) -> pb.ReportJobResponse:
        site_id = self._site(request.site_id, request.agent_id)
        problems = []
        if not request.job_id or len(request.job_id) > MAX_ID_CHARS:
            problems.append(("job_id", f"required, at most {MAX_ID_CHARS} characters"))
        if request.phase not in PHASE_FROM_PB:
            problems.append(("phase", "must be STARTING, RUNNING, SUCCEEDED, FAILED or STOPPED"))
        if request.sequence < 1:
            problems.append(("sequence", "must be >= 1"))
        if request.HasField("attempt") and request.attempt < 0:
            problems.append(("attempt", "must be >= 0"))
        if problems:
            raise InvalidJob(problems)
        report = JobReport(request.job_id, PHASE_FROM_PB[request.phase], request.sequence,
                           request.exit_reason[:512], self.scheduler.now(),
                           request.attempt if request.HasField("attempt") else None)
        try:
            applied, kept = fleet.apply_report(self.scheduler, site_id, request.agent_id, report)
        except AgentError as e:
            context.abort_with_status(errors.failed_precondition("agent", str(e)))
        return pb.ReportJobResponse(applied=applied, last_sequence=kept.sequence)

    @handled
    def WatchAssignments(
        self, request: pb.WatchAssignmentsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchAssignmentsResponse]:
        site_id = self._site(request.site_id, request.agent_id)
        agent = self.scheduler.store.site_agent(site_id)
        if agent is None or agent.agent_id != request.agent_id:
            context.abort_with_status(errors.failed_precondition(
                "agent", f"{request.agent_id} is not site {site_id}'s agent; register first"))
        return self._assignments(site_id, request.agent_id, context)

    def _assignments(
        self, site_id: str, agent_id: str, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchAssignmentsResponse]:
        last: tuple[tuple[fleet.Run, ...], tuple[fleet.Stop, ...]] | None = None
        sent_at = computed_at = 0.0
        computed_sequence = -1
        desired: fleet.Desired | None = None
        while context.is_active() and not self.stopping.is_set():
            try:
                agent = self.scheduler.store.site_agent(site_id)
                if agent is None or agent.agent_id != agent_id:
                    # A newer agent took the site: this stream must not tell anyone what to run.
                    context.abort_with_status(errors.failed_precondition(
                        "agent", f"site {site_id}'s agent is now {agent.agent_id if agent else 'none'}"))
                # Recomputed (a scan of the running jobs) when a job changed, and at least every
                # RECOMPUTE_S for the agent's own reports, which are not job events.
                sequence = self.scheduler.store.last_sequence()
                if desired is None or sequence != computed_sequence or time.monotonic() - computed_at >= RECOMPUTE_S:
                    desired = fleet.desired_state(self.scheduler, site_id)
                    computed_sequence, computed_at = sequence, time.monotonic()
            except Exception as exc:
                status = status_of(exc)
                if status is None:
                    raise
                context.abort_with_status(status)
            assert desired is not None  # abort_with_status raises
            now = time.monotonic()
            if (desired.run, desired.stop) != last or now - sent_at >= RESEND_S:
                last, sent_at = (desired.run, desired.stop), now
                yield assignments_pb(desired)
            self.stopping.wait(ASSIGNMENT_POLL_S)


def _not_a_pool(pool_id: str, site_id: str) -> str:
    return f"{pool_id[:MAX_ID_CHARS]!r} is not a pool of site {site_id}"


def node_pb(n: NodeCondition) -> pb.NodeStatus:
    return pb.NodeStatus(pool_id=n.pool_id, node=n.node, health=HEALTH_TO_PB[n.health], reason=n.reason)


def assignments_pb(d: fleet.Desired) -> pb.WatchAssignmentsResponse:
    return pb.WatchAssignmentsResponse(
        site_id=d.site_id, revision=d.revision,
        run=[pb.StartJob(job_id=r.job_id, tenant=r.tenant, name=r.name, kind=r.kind, duration_hours=r.duration_hours,
                         attempt=r.attempt,
                         shares=[pb.JobShare(pool_id=s.pool_id, gpus=s.gpus, nodes=list(s.nodes),
                                             node_gpus=list(s.node_gpus)) for s in r.shares])
             for r in d.run],
        stop=[pb.StopJob(job_id=s.job_id, reason=STOP_TO_PB[s.reason], message=s.message) for s in d.stop],
    )
