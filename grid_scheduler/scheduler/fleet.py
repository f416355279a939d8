"""What each site should run, and what its agent reports: the scheduler's side of SiteAgentService.

Level-based, like a lease or a mirror: a site's desired state is computed from the ledger (the
running jobs that hold GPUs there) and the agent's own reports (jobs it runs that should not
run there any more), so a reconnecting agent is reconciled by the same computation as any other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from grid_scheduler.engine.priority import duration_hours, queue_key
from grid_scheduler.engine.topology import PoolShape, fragmented_gpus, largest_free_domain, node_free_gpus
from grid_scheduler.model import Assignment, EventType, JobRecord, JobState, Reason, ReasonCode
from grid_scheduler.model.node_names import node_indices, node_names
from grid_scheduler.scheduler import observer, replicas, transitions
from grid_scheduler.scheduler.errors import InvalidJob
from grid_scheduler.state import LedgerSnapshot, StaleRecord, UnknownJob
from grid_scheduler.state.agents import (
    AgentHealth,
    AgentReplaced,
    JobPhase,
    JobReport,
    NoAgent,
    NodeCondition,
    NodeHealth,
    SiteAgent,
)

if TYPE_CHECKING:
    from grid_scheduler.scheduler.core import Scheduler


class StopReason(StrEnum):
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"
    MOVED = "moved"
    FINISHED = "finished"
    UNKNOWN_JOB = "unknown_job"
    TIME_LIMIT = "time_limit"


@dataclass(frozen=True)
class Share:
    pool_id: str
    gpus: int
    nodes: tuple[str, ...] = ()  # names (model/node_names.py); empty when the reservation has no node detail
    node_gpus: tuple[int, ...] = ()  # GPUs on each of ``nodes``


@dataclass(frozen=True)
class Run:
    job_id: str
    tenant: str
    name: str
    kind: str
    shares: tuple[Share, ...]
    duration_hours: float
    attempt: int


@dataclass(frozen=True)
class Stop:
    job_id: str
    reason: StopReason
    message: str


@dataclass(frozen=True)
class Desired:
    site_id: str
    revision: int  # the ledger's event sequence when it was computed: grows with every job change
    run: tuple[Run, ...]
    stop: tuple[Stop, ...]


def runs_at(record: JobRecord, site_id: str) -> bool:
    return record.state is JobState.RUNNING and record.placement is not None and any(
        a.site_id == site_id for a in record.placement.assignments)


def site_node_names(s: Scheduler, agent: SiteAgent | None, pool_id: str) -> tuple[str, ...]:
    """Every node of the pool by index, named as the site's agent named it (model/node_names.py)."""
    pool = s.grid.pool_by_id[pool_id][1]
    return node_names(pool_id, pool.nodes, agent.pools.get(pool_id, ()) if agent is not None else ())


def site_node_indices(s: Scheduler, agent: SiteAgent | None, pool_id: str) -> Mapping[str, int]:
    pool = s.grid.pool_by_id[pool_id][1]
    return node_indices(pool_id, pool.nodes, agent.pools.get(pool_id, ()) if agent is not None else ())


def desired_state(s: Scheduler, site_id: str) -> Desired:
    revision = s.store.last_sequence()
    run: list[Run] = []
    wanted: set[str] = set()
    agent: SiteAgent | None = None
    agent_read = False

    def share(a: Assignment) -> Share:
        nonlocal agent, agent_read
        if not a.nodes:
            return Share(a.pool_id, a.gpus)
        if not agent_read:  # read only when some reservation here names its nodes
            agent, agent_read = s.store.site_agent(site_id), True
        names = site_node_names(s, agent, a.pool_id)
        return Share(a.pool_id, a.gpus, tuple(names[i] for i, _ in a.nodes), tuple(g for _, g in a.nodes))

    for record in s.store.running_jobs():
        if not runs_at(record, site_id):
            continue
        assert record.placement is not None
        shares = tuple(share(a) for a in record.placement.assignments if a.site_id == site_id)
        spec = record.spec
        run.append(Run(record.id, spec.tenant, spec.name, spec.kind.value, shares, duration_hours(spec),
                       record.attempts))
        wanted.add(record.id)
    stop = [
        _stop(report.job_id, s.store.get_job(report.job_id), site_id)
        for report in s.store.job_reports(site_id)
        if report.phase.is_active and report.job_id not in wanted
    ]
    return Desired(site_id, revision, tuple(run), tuple(stop))


def _stop(job_id: str, record: JobRecord | None, site_id: str) -> Stop:
    if record is None:
        return Stop(job_id, StopReason.UNKNOWN_JOB, "the scheduler does not know this job")
    if record.state is JobState.CANCELLED:
        if record.end_reason.startswith(TIME_LIMIT):
            return Stop(job_id, StopReason.TIME_LIMIT, record.end_reason)
        return Stop(job_id, StopReason.CANCELLED, "cancelled")
    if record.state is JobState.RUNNING:
        return Stop(job_id, StopReason.MOVED, f"runs elsewhere now: {', '.join(_sites(record))}")
    summary = record.waiting.summary[0] if record.waiting and record.waiting.summary else ""
    if record.state is JobState.PENDING:
        if summary.startswith("preempted"):
            return Stop(job_id, StopReason.PREEMPTED, summary)
        return Stop(job_id, StopReason.MOVED, summary or f"back in the queue, not at {site_id}")
    return Stop(job_id, StopReason.FINISHED, record.state.value)


def _sites(record: JobRecord) -> list[str]:
    assert record.placement is not None
    return sorted({a.site_id for a in record.placement.assignments})


def apply_report(s: Scheduler, site_id: str, agent_id: str, report: JobReport) -> tuple[bool, JobReport]:
    """Apply one job report at most once: a sequence not above the last kept one is acknowledged and
    ignored. SUCCEEDED completes the job and FAILED re-queues it (an inference deployment with
    replicas elsewhere re-places just those at this site), but only while the ledger has it
    running at this site (a job moved away meanwhile is not the site's to finish)."""
    agent = s.store.site_agent(site_id)
    if agent is None:
        raise NoAgent(f"no agent registered for site {site_id}")
    if agent.agent_id != agent_id:
        raise AgentReplaced(site_id, agent.agent_id)
    last = s.store.job_report(site_id, report.job_id)
    if last is not None and report.sequence <= last.sequence:
        return False, last
    # The transition first, then the report: were the report kept first and the transition then
    # lost (a store outage), the agent's retry would be ignored and the job left running in the books.
    # Both transitions check the job's state, so applying one twice changes nothing.
    # A report about an earlier run than the ledger's (the scheduler failed that run already, for a
    # failed node, and started the job again) ends nothing: the new run is not the one that ended.
    if report.phase is JobPhase.SUCCEEDED:
        _complete(s, report.job_id, site_id, report.attempt)
    elif report.phase is JobPhase.FAILED:
        _fail_at_site(s, report.job_id, site_id, f"failed at {site_id}: {report.exit_reason or 'no reason given'}",
                      report.attempt)
    return s.store.report_job(site_id, agent_id, report)


def forget_ended_reports(s: Scheduler, before_s: float) -> int:
    """Forget the agents' reports of runs that ended (SUCCEEDED, FAILED, STOPPED) before ``before_s``
    (the retention cutoff). The desired state reads every report of a site on each call, so kept for
    ever they would grow its cost with every job the site ever ran. A report kept only guards
    against its own duplicate; one arriving after the trim finds its job ended or archived, so
    applying it changes nothing (and it is kept again until the next trim). Reports of runs still
    active are kept: the desired state tells the agent to stop those the ledger does not want."""
    forgotten = 0
    for agent in s.store.site_agents():
        ended = [r for r in s.store.job_reports(agent.site_id) if not r.phase.is_active and r.at_s < before_s]
        if ended:
            forgotten += s.store.forget_job_reports(agent.site_id, ended)
    return forgotten


def _fail_at_site(s: Scheduler, job_id: str, site_id: str, why: str, attempt: int | None) -> None:
    """A run that failed at one site: an inference deployment re-places just its replicas there
    (scheduler/replicas.py), keeping those at other sites; anything else is re-queued."""
    record = s.store.get_job(job_id)
    outcome = replicas.Outcome.REQUEUE
    if record is not None and record.spec.inference is not None:
        outcome = replicas.replace_replicas(s, record, lambda a: a.site_id == site_id, why, attempt)
    if outcome is replicas.Outcome.REQUEUE:
        requeue_failed(s, job_id, site_id, why, attempt=attempt)
    elif outcome is replicas.Outcome.REPLACED:
        s.place_pending()  # the shares it left at the site are free for the queue


def _complete(s: Scheduler, job_id: str, site_id: str, attempt: int | None = None) -> None:
    with s.lock:
        record, fresh = s.store.known_job(job_id), False
        while True:
            if record is None or not runs_at(record, site_id) or (attempt is not None and record.attempts != attempt):
                if fresh:
                    return
                record, fresh = s.store.get_job(job_id), True  # what this replica knew may be behind
                continue
            try:
                observer.apply(s.observer, s.store, job_id, record.version, transitions.finished(
                    record, JobState.COMPLETED, EventType.COMPLETED, f"succeeded at {site_id}", s.now()),
                    follow=s.follow)
            except StaleRecord as stale:
                record, fresh = _current(s, job_id, stale)
                continue
            except UnknownJob:
                return
            break
        s.log.info("job_finished", job_id=job_id, state=JobState.COMPLETED.value, site_id=site_id)
        s.place_pending()


def requeue_failed(s: Scheduler, job_id: str, site_id: str, why: str, retry_queue: bool = True,
                   attempt: int | None = None) -> JobRecord | None:
    """Send a job that failed at ``site_id`` back to the queue (training restarts from its checkpoint),
    then run the queue pass at once, so an inference job's replicas are re-placed now. None when the
    job does not run at the site (moved or finished meanwhile), or, with ``attempt``, when its run
    now is not that one."""
    with s.lock:
        record, fresh = s.store.known_job(job_id), False
        while True:
            if record is None or not runs_at(record, site_id) or (attempt is not None and record.attempts != attempt):
                if fresh:
                    return None
                record, fresh = s.store.get_job(job_id), True  # what this replica knew may be behind
                continue
            try:
                queued = observer.apply(s.observer, s.store, job_id, record.version, transitions.failed_requeued(
                    record, why, s.now(), policy_version=s.policy_version), follow=s.follow)
            except StaleRecord as stale:
                record, fresh = _current(s, job_id, stale)
                continue
            except UnknownJob:
                return None
            break
        s.log.warning("job_failed", job_id=job_id, site_id=site_id, why=why, attempts=queued.attempts)
        if retry_queue:
            s.place_pending()
        return s.store.get_job(job_id)


def _current(s: Scheduler, job_id: str, stale: StaleRecord) -> tuple[JobRecord | None, bool]:
    """The job as the store holds it after a refusal: the refusal's copy when it brought one, else a read."""
    return (stale.current if stale.current is not None else s.store.get_job(job_id)), True


def site_lost_why(site_id: str, detail: str) -> str:
    return f"site {site_id} lost: {detail}"


@dataclass(frozen=True)
class SiteLoss:
    """What a lost site's transition did to the jobs that ran there."""

    replaced: tuple[str, ...]  # inference deployments that run on, only their replicas there re-placed
    requeued: tuple[str, ...]  # back in the queue with one more attempt

    @property
    def job_ids(self) -> list[str]:
        return [*self.replaced, *self.requeued]


def requeue_site(s: Scheduler, site_id: str, why: str) -> SiteLoss:
    """The transition for a lost site, live (``apply_node_health``) and in the what-if simulator
    (a ``site_failure`` change), one code path for both. An inference deployment with replicas at
    other sites re-places only those at the lost site, never onto it (scheduler/replicas.py), and
    keeps its run; every other job running there, and a deployment with no placement keeping every
    endpoint within its SLO, fails with ``why`` and goes back to the queue through
    ``requeue_failed`` (one more attempt, its priority and submit time kept). The caller runs the
    queue pass once after, which re-places re-queued inference at once."""
    replaced: list[str] = []
    requeued: list[str] = []
    # In queue order (engine/priority.py): a re-placement takes capacity at once, so a low tier
    # handled first could take the room a higher tier's replicas need within its SLO.
    for record in sorted((r for r in s.store.running_jobs() if runs_at(r, site_id)), key=queue_key):
        outcome = replicas.Outcome.REQUEUE
        if record.spec.inference is not None:
            outcome = replicas.replace_replicas(s, record, lambda a: a.site_id == site_id, why, avoid_site=site_id)
        if outcome is replicas.Outcome.REPLACED:
            replaced.append(record.id)
        elif outcome is replicas.Outcome.REQUEUE and requeue_failed(s, record.id, site_id, why, retry_queue=False):
            requeued.append(record.id)
    return SiteLoss(tuple(replaced), tuple(requeued))


# --- node health drives capacity ---------------------------------------------------------------

@dataclass(frozen=True)
class PoolHealth:
    pool_id: str
    gpus_per_node: int
    healthy_gpus: int  # the grid file's (its drained_nodes excluded)
    failed: tuple[NodeCondition, ...]  # reported by the site's agent
    draining: tuple[NodeCondition, ...]  # reported by the site's agent
    drained: tuple[str, ...]  # by an operator (DrainNodes)
    index: Mapping[str, int]  # node name -> index in the pool (model/node_names.py)
    grid_drained_from: int  # the first of the nodes the grid file drains (they are the last ones)

    def _counted(self, names: frozenset[str]) -> int:
        """Nodes among ``names`` not already out in the grid file (whose GPUs healthy_gpus excludes)."""
        return sum(1 for n in names if self.index.get(n, -1) < self.grid_drained_from)

    @property
    def out_indices(self) -> list[int]:
        """The out nodes the ledger can name (a name outside the mapping counts at pool level only)."""
        return sorted(self.index[n] for n in self.out_nodes if n in self.index)

    @property
    def failed_indices(self) -> dict[int, NodeCondition]:
        return {self.index[n.node]: n for n in self.failed if n.node in self.index}

    @property
    def out_nodes(self) -> frozenset[str]:
        return frozenset(n.node for n in self.failed + self.draining) | frozenset(self.drained)

    @property
    def down_gpus(self) -> int:
        """GPUs new work may not take: every failed or drained node's."""
        return min(self.healthy_gpus, self._counted(self.out_nodes) * self.gpus_per_node)

    @property
    def failed_gpus(self) -> int:
        """GPUs gone with failed nodes: running work beyond the rest must go."""
        return min(self.healthy_gpus, self._counted(frozenset(n.node for n in self.failed)) * self.gpus_per_node)


def pool_health(s: Scheduler, site_id: str) -> list[PoolHealth]:
    agent = s.store.site_agent(site_id)
    nodes = agent.nodes if agent is not None else ()
    out = []
    for pool in s.grid.site_by_id[site_id].pools:
        mine = [n for n in nodes if n.pool_id == pool.id]
        out.append(PoolHealth(
            pool.id, pool.gpus_per_node, pool.healthy_gpus,
            tuple(n for n in mine if n.health is NodeHealth.FAILED),
            tuple(n for n in mine if n.health is NodeHealth.DRAINING),
            s.store.drained_nodes(pool.id),
            site_node_indices(s, agent, pool.id),
            pool.nodes - pool.drained_nodes,
        ))
    return out


class SiteHealth(StrEnum):
    NO_AGENT = "no_agent"  # never registered: capacity from the grid file, as before agents
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # silent past the heartbeat timeout: no new work
    LOST = "lost"  # silent past the timeout and the grace period: its running jobs were re-queued


def site_health(s: Scheduler, agent: SiteAgent | AgentHealth | None, now_s: float) -> SiteHealth:
    if agent is None:
        return SiteHealth.NO_AGENT
    timeout = s.heartbeat_timeout_s
    silent_s = now_s - agent.heartbeat_at_s
    if timeout is None or silent_s <= timeout:
        return SiteHealth.HEALTHY
    return SiteHealth.LOST if silent_s > timeout + s.site_grace_s else SiteHealth.UNHEALTHY


def silent_since(agent: SiteAgent) -> str:
    return "last heartbeat " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(agent.heartbeat_at_s))


def apply_node_health(s: Scheduler, site_id: str) -> list[str]:
    """Make the ledger's capacity follow the site's health and its nodes', and fail what no longer fits.

    Every failed or drained node is out of service in the ledger at once (``set_nodes_out``, by the
    node's index) and its GPUs leave the pool's capacity; a site whose agent is silent past the
    heartbeat timeout has none for new work. The jobs failed for a failed node are exactly those
    whose reservation holds GPUs on it. A reservation without node detail cannot be placed on a
    node, so for those the ledger falls back to a guess: the ones whose GPUs no longer fit in the
    pool's capacity without the failed nodes, lowest priority first (then the newest, then by id).
    Drained and draining nodes take no new work but keep what runs; so does a silent site until its
    grace period ends, when every job running there is re-queued. Idempotent: a node already out
    holds no job any more, so the same health again fails nothing. Returns the ids of the jobs failed
    (with a deployment that lost a replica and had it re-placed, scheduler/replicas.py)."""
    failed_jobs: list[str] = []
    with s.lock:
        agent = s.store.site_agent(site_id)
        health = site_health(s, agent, s.now())
        pools = pool_health(s, site_id)
        changed = False
        for ph in pools:
            down = ph.healthy_gpus if health in (SiteHealth.UNHEALTHY, SiteHealth.LOST) else ph.down_gpus
            changed |= s.store.set_pool_down(ph.pool_id, down)
            changed |= s.store.set_nodes_out(ph.pool_id, ph.out_indices)
        if health is SiteHealth.LOST:
            assert agent is not None
            failed_jobs = requeue_site(s, site_id, site_lost_why(site_id, silent_since(agent))).job_ids
        elif health is SiteHealth.HEALTHY:
            failed_jobs = _fail_on_failed_nodes(s, site_id, pools)
        if changed or failed_jobs:
            # Capacity moved (a node or site back, an undrain) or jobs wait again: the queue's turn,
            # by the same path a pool undrain takes; an inference job's replicas are re-placed now.
            s.place_pending()
    return failed_jobs


def _fail_on_failed_nodes(s: Scheduler, site_id: str, pools: list[PoolHealth]) -> list[str]:
    failing = [ph for ph in pools if ph.failed]
    if not failing:
        return []  # the common case, every second for every site: no ledger read
    # One snapshot read says whether there is anything to do: a job on a failed node (its node's
    # used GPUs), or more GPUs held than the pool has left (reservations without node detail).
    snap = s.store.snapshot()
    work = []
    for ph in failing:
        p = s.limits.pool_index[ph.pool_id]
        on_failed = bool(snap.node_used_gpus) and any(snap.node_used_gpus[p][i] > 0 for i in ph.failed_indices)
        over = int(snap.pool_used_gpus[p]) > ph.healthy_gpus - ph.failed_gpus
        if on_failed or over:
            work.append(ph)
    if not work:
        return []
    running = [r for r in s.store.running_jobs() if runs_at(r, site_id)]
    failed_jobs: list[str] = []
    for ph in work:
        failed_jobs += _fail_jobs_on_nodes(s, site_id, ph, running, failed_jobs)
        failed_jobs += _fail_beyond_room(s, site_id, ph, running, failed_jobs)
    return failed_jobs


def _why(ph: PoolHealth, nodes: list[NodeCondition]) -> str:
    return f"node failed in {ph.pool_id}: " + ", ".join(
        f"{n.node}" + (f" ({n.reason})" if n.reason else "") for n in nodes)


def _fail_jobs_on_nodes(
    s: Scheduler, site_id: str, ph: PoolHealth, running: list[JobRecord], done: list[str]
) -> list[str]:
    """Exactly the jobs whose reservation in the pool holds GPUs on one of its failed nodes. An
    inference deployment re-places only the replicas on those nodes (scheduler/replicas.py), its
    others, in this pool too, staying where they are; the rest, and a deployment that cannot keep
    every endpoint within its SLO so (or had every replica there), are re-queued."""
    failed_at = ph.failed_indices
    failed_nodes = {ph.pool_id: frozenset(failed_at)}

    out: list[str] = []
    for record in running:
        assert record.placement is not None
        hit = sorted({i for a in record.placement.assignments if a.pool_id == ph.pool_id
                      for i, _ in a.nodes if i in failed_at})
        if not hit or record.id in done:
            continue
        why = _why(ph, [failed_at[i] for i in hit])
        outcome = replicas.replace_replicas(s, record, lambda a: False, why, failed_nodes=failed_nodes) \
            if record.spec.inference is not None else replicas.Outcome.REQUEUE
        if outcome is replicas.Outcome.REPLACED or (
                outcome is replicas.Outcome.REQUEUE and requeue_failed(s, record.id, site_id, why, retry_queue=False)):
            out.append(record.id)
    return out


def _fail_beyond_room(
    s: Scheduler, site_id: str, ph: PoolHealth, running: list[JobRecord], done: list[str]
) -> list[str]:
    """Reservations without node detail: a guess, lowest priority first, until what stays fits in the
    pool without its failed nodes (never more than the lost GPUs need)."""
    room = ph.healthy_gpus - ph.failed_gpus
    used = int(s.store.snapshot().pool_used_gpus[s.limits.pool_index[ph.pool_id]])
    if used <= room:
        return []

    def in_pool(r: JobRecord) -> list[Assignment]:
        assert r.placement is not None
        return [a for a in r.placement.assignments if a.pool_id == ph.pool_id]

    holders = sorted((r for r in running if r.id not in done and in_pool(r) and not any(a.nodes for a in in_pool(r))),
                     key=lambda r: (r.spec.priority, -r.created_at, r.id))
    out: list[str] = []
    for record in holders:
        if used <= room:
            break
        if requeue_failed(s, record.id, site_id, _why(ph, list(ph.failed)), retry_queue=False) is not None:
            used -= sum(a.gpus for a in in_pool(record))
            out.append(record.id)
    return out


def check_sites(s: Scheduler) -> dict[str, SiteHealth]:
    """One full pass of the site monitor (each step is idempotent): every site an agent registered
    for gets the capacity its health allows, and a lost site's jobs are re-queued. The server's
    monitor (site_monitor.SiteMonitor) does the same, touching only the sites that need it."""
    out = {}
    for agent in s.store.site_agents():
        apply_node_health(s, agent.site_id)
        out[agent.site_id] = site_health(s, agent, s.now())
    return out

MAX_NODE_NAME = 128


def drain_nodes(s: Scheduler, site_id: str, pool_id: str, nodes: list[str], drained: bool) -> None:
    """An operator's node drain or undrain, then capacity follows (``apply_node_health``).
    InvalidJob naming ``nodes[i]`` for a name that is empty, too long, or not in the inventory the
    site's agent registered for the pool; nothing is changed then."""
    pool = s.grid.pool_by_id[pool_id][1]
    agent = s.store.site_agent(site_id)
    inventory = set(agent.pools.get(pool_id, ())) if agent is not None else set()
    problems: list[tuple[str, str]] = []
    if not nodes:
        problems.append(("nodes", "at least one node"))
    for i, node in enumerate(nodes):
        if not node or len(node) > MAX_NODE_NAME:
            problems.append((f"nodes[{i}]", f"1 to {MAX_NODE_NAME} characters"))
        elif inventory and node not in inventory:
            problems.append((f"nodes[{i}]", f"{node!r} is not a node of {pool_id} (its agent's inventory)"))
    if drained and len(set(s.store.drained_nodes(pool_id)) | set(nodes)) > pool.nodes:
        problems.append(("nodes", f"{pool_id} has {pool.nodes} nodes"))
    if problems:
        raise InvalidJob(problems)
    s.store.set_nodes_drained(pool_id, nodes, drained)
    s.log.info("nodes_drain", pool_id=pool_id, nodes=nodes, drained=drained)
    apply_node_health(s, site_id)


@dataclass(frozen=True)
class PoolUsage:
    """One pool's line in the fleet view: where its GPUs are, and how scattered the free ones are."""

    pool_id: str
    gpus_total: int
    gpus_used: int  # reserved by running jobs
    gpus_out: int  # out of service: failed or drained nodes, the grid file's drained ones, a silent site's all
    gpus_free: int
    nodes_used: int = 0  # nodes holding some reserved GPU (node detail only)
    fragmented_gpus: int = 0  # free GPUs in partly used domains (node detail only)
    largest_free_domain_gpus: int = 0  # (node detail only)


@dataclass(frozen=True)
class SiteView:
    """One row of the fleet view (``grid-scheduler fleet``)."""

    site_id: str
    agent: SiteAgent | None
    health: SiteHealth
    nodes_total: int
    nodes_failed: int
    nodes_draining: int  # reported draining, operator-drained, or drained in the grid file
    gpus_up: int
    gpus_down: int
    unhealthy: tuple[tuple[str, str, str, str], ...]  # (pool, node, failed|draining|drained, reason)
    pools: tuple[PoolUsage, ...] = ()

    @property
    def nodes_healthy(self) -> int:
        return self.nodes_total - self.nodes_failed - self.nodes_draining


def pool_usage(s: Scheduler, snap: LedgerSnapshot, pool_id: str, out_gpus: int, silent: bool) -> PoolUsage:
    """``pool_id``'s usage in ``snap``, ``out_gpus`` of it out of service. With node detail the free
    GPUs are those on in-service nodes (a job on a draining node holds GPUs that are also out);
    at a silent site none are free."""
    p = s.limits.pool_index[pool_id]
    pool = s.grid.pool_by_id[pool_id][1]
    used = int(snap.pool_used_gpus[p])
    if not snap.node_used_gpus or silent:
        free = 0 if silent else max(pool.total_gpus - used - out_gpus, 0)
        nodes_used = int(np.count_nonzero(snap.node_used_gpus[p])) if snap.node_used_gpus else 0
        return PoolUsage(pool_id, pool.total_gpus, used, out_gpus, free, nodes_used)
    shape = PoolShape.of(pool)
    node_used = np.asarray(snap.node_used_gpus[p], dtype=np.int64)
    node_free = node_free_gpus(shape, node_used, snap.node_out[p])
    return PoolUsage(pool_id, pool.total_gpus, used, out_gpus, int(node_free.sum()), int(np.count_nonzero(node_used)),
                     fragmented_gpus(shape, node_free, node_used), largest_free_domain(shape, node_free))


def fleet_view(s: Scheduler) -> list[SiteView]:
    now = s.now()
    snap = s.store.snapshot()
    out = []
    for site in s.grid.sites:
        agent = s.store.site_agent(site.id)
        health = site_health(s, agent, now)
        total = failed = draining = up = down = 0
        unhealthy: list[tuple[str, str, str, str]] = []
        pools: list[PoolUsage] = []
        silent = health in (SiteHealth.UNHEALTHY, SiteHealth.LOST)
        for ph, pool in zip(pool_health(s, site.id), site.pools, strict=True):
            total += pool.nodes
            failed_names = {n.node for n in ph.failed}
            failed += len(failed_names)
            draining += len(ph.out_nodes - failed_names) + pool.drained_nodes
            lost = ph.healthy_gpus if silent else ph.down_gpus
            down += lost + (pool.total_gpus - pool.healthy_gpus)
            up += ph.healthy_gpus - lost
            pools.append(pool_usage(s, snap, pool.id, lost + (pool.total_gpus - pool.healthy_gpus), silent))
            unhealthy += [(n.pool_id, n.node, n.health.value, n.reason) for n in ph.failed + ph.draining]
            unhealthy += [(pool.id, n, "drained", "by an operator") for n in ph.drained]
        out.append(SiteView(site.id, agent, health, total, failed, draining, up, down, tuple(unhealthy), tuple(pools)))
    return out


# --- job time --------------------------------------------------------------------------------

TIME_LIMIT = "time limit"


def run_limit_hours(s: Scheduler, record: JobRecord) -> float | None:
    """The job's own max_run_hours and its tenant's policy limit: the smaller, if either is set."""
    limits = [h for h in (record.spec.max_run_hours, s.policy.max_run_hours.for_tenant(record.spec.tenant))
              if h is not None]
    return min(limits) if limits else None


def stop_runaways(s: Scheduler) -> list[str]:
    """Stop every job that ran (this run, since its last start) past its time limit: cancelled with
    the reason kept on the job, its GPUs released, and its site's agent told (StopReason TIME_LIMIT).
    Returns the ids stopped."""
    s.usage()  # decide under the active policy version
    now = s.now()
    # Read and judge outside the scheduler lock (every running job, every few seconds, on every
    # replica): submissions wait only for the stops themselves, which re-check each job's version.
    over: list[tuple[JobRecord, float]] = []
    for record in s.store.running_jobs():
        limit = run_limit_hours(s, record)
        if limit is not None and record.started_at is not None and now - record.started_at > limit * 3600.0:
            over.append((record, limit))
    stopped: list[str] = []
    if not over:
        return stopped
    with s.lock:
        for record, limit in over:
            why = f"{TIME_LIMIT}: ran past {limit:g} h"
            try:
                observer.apply(s.observer, s.store, record.id, record.version,
                               transitions.stopped_by_scheduler(record, why, now), follow=s.follow)
            except StaleRecord:
                continue  # it changed meanwhile: judged again at the next pass
            s.log.warning("job_stopped", job_id=record.id, why=why)
            stopped.append(record.id)
        if stopped:
            s.place_pending()
    return stopped


def health_reasons(s: Scheduler, reasons: list[Reason]) -> list[Reason]:
    """HEALTH reasons at a silent site say so, naming its last heartbeat (the engine knows only
    that the pool takes no work). Reads the agents only when there is such a reason."""
    if s.heartbeat_timeout_s is None or not any(r.code is ReasonCode.HEALTH for r in reasons):
        return reasons
    now = s.now()
    silent = {a.site_id: a for a in s.store.site_agents()
              if site_health(s, a, now) in (SiteHealth.UNHEALTHY, SiteHealth.LOST)}
    if not silent:
        return reasons
    return [
        r.model_copy(update={"message": f"site {r.site_id} is {site_health(s, silent[r.site_id], now).value}: "
                                        f"{silent_since(silent[r.site_id])}; pool {r.pool_id} takes no work"})
        if r.code is ReasonCode.HEALTH and r.site_id in silent else r
        for r in reasons
    ]
