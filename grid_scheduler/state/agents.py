"""Site agents in the ledger: who speaks for each site, its last heartbeat, its nodes' health,
and the last report applied per job.

Kept in the store (not in a replica's memory), so any replica can serve any agent and a
restarted replica knows when each site was last heard from. The memory and Redis stores get
this state from the mixins here and in ``agents_redis.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol


class NodeHealth(StrEnum):
    HEALTHY = "healthy"
    FAILED = "failed"
    DRAINING = "draining"


class JobPhase(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def is_active(self) -> bool:
        """The agent has (or is bringing up) the job at its site."""
        return self in (JobPhase.STARTING, JobPhase.RUNNING)


@dataclass(frozen=True)
class NodeCondition:
    """One node that is not healthy (healthy nodes are not listed anywhere)."""

    pool_id: str
    node: str
    health: NodeHealth
    reason: str = ""


@dataclass(frozen=True)
class SiteAgent:
    site_id: str
    agent_id: str
    generation: int
    registered_at_s: float
    heartbeat_at_s: float
    pools: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # pool id -> node names
    nodes: tuple[NodeCondition, ...] = ()  # the nodes not healthy, sorted by (pool, node)
    heartbeat_sequence: int = 0  # the last sequenced heartbeat applied (0: none since registering)

    def to_json(self) -> str:
        return json.dumps({
            "site_id": self.site_id, "agent_id": self.agent_id, "generation": self.generation,
            "registered_at_s": self.registered_at_s, "heartbeat_at_s": self.heartbeat_at_s,
            "pools": {p: list(n) for p, n in self.pools.items()},
            "nodes": nodes_to_json(self.nodes), "heartbeat_sequence": self.heartbeat_sequence,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SiteAgent:
        d = json.loads(text)
        return cls(d["site_id"], d["agent_id"], int(d["generation"]), float(d["registered_at_s"]),
                   float(d["heartbeat_at_s"]), {p: tuple(n) for p, n in d["pools"].items()},
                   nodes_from_json(d["nodes"]), int(d.get("heartbeat_sequence", 0)))


def nodes_to_json(nodes: Sequence[NodeCondition]) -> list[list[str]]:
    return [[n.pool_id, n.node, n.health.value, n.reason] for n in nodes]


def nodes_from_json(rows: Sequence[Sequence[str]]) -> tuple[NodeCondition, ...]:
    return tuple(NodeCondition(r[0], r[1], NodeHealth(r[2]), r[3]) for r in rows)


def canonical_nodes(nodes: Sequence[NodeCondition]) -> tuple[NodeCondition, ...]:
    """Unhealthy nodes only, one entry per node (the last wins), in (pool, node) order: two
    heartbeats that say the same thing compare equal."""
    by_key = {(n.pool_id, n.node): n for n in nodes}
    return tuple(by_key[k] for k in sorted(by_key) if by_key[k].health is not NodeHealth.HEALTHY)


@dataclass(frozen=True)
class JobReport:
    job_id: str
    phase: JobPhase
    sequence: int
    exit_reason: str = ""
    at_s: float = 0.0
    attempt: int | None = None  # the run (StartJob.attempt) it is about; None: not said

    def to_json(self) -> str:
        return json.dumps([self.job_id, self.phase.value, self.sequence, self.exit_reason, self.at_s, self.attempt])

    @classmethod
    def from_json(cls, text: str) -> JobReport:
        job_id, phase, sequence, reason, at_s, *rest = json.loads(text)
        attempt = rest[0] if rest else None
        return cls(job_id, JobPhase(phase), int(sequence), reason, float(at_s),
                   int(attempt) if attempt is not None else None)


@dataclass(frozen=True)
class Beat:
    """What a heartbeat wrote and what its reply needs, from one store call (one round trip on Redis)."""

    previous_heartbeat_at_s: float  # the site's last heartbeat before this one
    nodes: tuple[NodeCondition, ...]  # the site's unhealthy nodes now (canonical)
    changed: bool  # whether any node's health changed
    drained: Mapping[str, tuple[str, ...]]  # pool -> nodes an operator drained, for the pools asked
    revision: int  # the ledger's event sequence (``last_sequence``)
    # False: a retried or overtaken heartbeat (sequence not above the last applied); nothing was
    # written and ``nodes`` are the ones kept.
    applied: bool = True


@dataclass(frozen=True)
class AgentHealth:
    """A site agent without its node inventory: what the site monitor judges a site by."""

    site_id: str
    agent_id: str
    generation: int
    heartbeat_at_s: float
    nodes: tuple[NodeCondition, ...]  # the nodes not healthy, sorted by (pool, node)


@dataclass(frozen=True)
class FleetHealth:
    """Every registered site's agent health and its pools' operator drains, read at once."""

    agents: tuple[AgentHealth, ...]  # in site id order
    drained: Mapping[str, tuple[str, ...]]  # pool -> drained nodes, for every pool of those sites


class AgentError(Exception):
    """The caller is not the site's agent now; nothing was written."""


class NoAgent(AgentError):
    """No agent registered for the site: register first."""


class AgentReplaced(AgentError):
    """The caller is not the site's current agent (a newer one registered)."""

    def __init__(self, site_id: str, current_agent: str) -> None:
        super().__init__(f"site {site_id}'s agent is now {current_agent}; register again")
        self.site_id = site_id
        self.current_agent = current_agent


class AgentStore(Protocol):
    """The store's part for site agents (both stores implement it)."""

    def register_agent(
        self, site_id: str, agent_id: str, pools: Mapping[str, Sequence[str]], now_s: float
    ) -> SiteAgent:
        """Make ``agent_id`` the site's agent (its generation grows by one), with its node inventory.
        Node health is kept from the previous agent until the new one's first heartbeat says otherwise."""
        ...

    def agent_heartbeat(
        self, site_id: str, agent_id: str, nodes: Sequence[NodeCondition], now_s: float, sequence: int = 0
    ) -> tuple[SiteAgent, bool]:
        """Record a heartbeat and the nodes that are not healthy; returns the agent and whether any
        node's health changed. A ``sequence`` above 0 but not above the agent's last one is ignored
        (a retried or overtaken heartbeat: nothing changes, the agent is returned as kept). NoAgent /
        AgentReplaced when the caller is not the site's agent."""
        ...

    def agent_beat(
        self, site_id: str, agent_id: str, nodes: Sequence[NodeCondition], now_s: float, pool_ids: Sequence[str],
        sequence: int = 0,
    ) -> Beat:
        """``agent_heartbeat`` (with its ``sequence`` rule) plus what the reply needs (the previous
        heartbeat time, the drains of ``pool_ids``, the event sequence) in one call. NoAgent /
        AgentReplaced as agent_heartbeat."""
        ...

    def site_agent(self, site_id: str) -> SiteAgent | None: ...

    def site_agents(self) -> list[SiteAgent]:
        """Every site an agent ever registered for, in site id order."""
        ...

    def fleet_health(self, site_pools: Mapping[str, Sequence[str]]) -> FleetHealth:
        """Every registered site's agent (without its inventory) and the operator drains of its
        pools (``site_pools``: site id -> pool ids), in one read (one or two round trips on Redis)."""
        ...

    def report_job(self, site_id: str, agent_id: str, report: JobReport) -> tuple[bool, JobReport]:
        """Keep ``report`` as the job's latest at the site if its sequence is above the last one kept
        (compare-and-set); returns whether it was kept and the report kept now."""
        ...

    def job_reports(self, site_id: str) -> list[JobReport]:
        """The latest report of every job the site's agents reported, in job id order."""
        ...

    def job_report(self, site_id: str, job_id: str) -> JobReport | None:
        """The latest report kept for one job at the site."""
        ...

    def forget_job_reports(self, site_id: str, reports: Sequence[JobReport]) -> int:
        """Forget these reports (the archive pass's trim), each only while it is still its job's
        latest: one that a newer report replaced meanwhile stays. Returns how many were forgotten."""
        ...

    def set_nodes_drained(self, pool_id: str, nodes: Sequence[str], drained: bool) -> None:
        """An operator's node drains (DrainNodes / UndrainNodes), kept per pool."""
        ...

    def drained_nodes(self, pool_id: str) -> tuple[str, ...]:
        """The nodes of the pool an operator drained, sorted."""
        ...


class MemoryAgents:
    """AgentStore in process memory, for MemoryStore."""

    def __init__(self) -> None:
        self._agents_lock = threading.Lock()
        self._agents: dict[str, SiteAgent] = {}
        self._reports: dict[str, dict[str, JobReport]] = {}
        self._node_drains: dict[str, set[str]] = {}

    def register_agent(
        self, site_id: str, agent_id: str, pools: Mapping[str, Sequence[str]], now_s: float
    ) -> SiteAgent:
        with self._agents_lock:
            old = self._agents.get(site_id)
            agent = SiteAgent(site_id, agent_id, (old.generation if old else 0) + 1, now_s, now_s,
                              {p: tuple(n) for p, n in sorted(pools.items())}, old.nodes if old else ())
            self._agents[site_id] = agent
            return agent

    def _current(self, site_id: str, agent_id: str) -> SiteAgent:
        agent = self._agents.get(site_id)
        if agent is None:
            raise NoAgent(f"no agent registered for site {site_id}")
        if agent.agent_id != agent_id:
            raise AgentReplaced(site_id, agent.agent_id)
        return agent

    def agent_heartbeat(
        self, site_id: str, agent_id: str, nodes: Sequence[NodeCondition], now_s: float, sequence: int = 0
    ) -> tuple[SiteAgent, bool]:
        unhealthy = canonical_nodes(nodes)
        with self._agents_lock:
            agent = self._current(site_id, agent_id)
            if 0 < sequence <= agent.heartbeat_sequence:
                return agent, False
            changed = agent.nodes != unhealthy
            agent = self._agents[site_id] = replace(
                agent, heartbeat_at_s=now_s, nodes=unhealthy,
                heartbeat_sequence=sequence if sequence > 0 else agent.heartbeat_sequence)
            return agent, changed

    def agent_beat(
        self, site_id: str, agent_id: str, nodes: Sequence[NodeCondition], now_s: float, pool_ids: Sequence[str],
        sequence: int = 0,
    ) -> Beat:
        unhealthy = canonical_nodes(nodes)
        with self._agents_lock:
            agent = self._current(site_id, agent_id)
            drained = {p: tuple(sorted(self._node_drains.get(p, ()))) for p in pool_ids}
            if 0 < sequence <= agent.heartbeat_sequence:
                return Beat(agent.heartbeat_at_s, agent.nodes, False, drained, self.last_sequence(), applied=False)
            changed = agent.nodes != unhealthy
            self._agents[site_id] = replace(
                agent, heartbeat_at_s=now_s, nodes=unhealthy,
                heartbeat_sequence=sequence if sequence > 0 else agent.heartbeat_sequence)
        return Beat(agent.heartbeat_at_s, unhealthy, changed, drained, self.last_sequence())

    def last_sequence(self) -> int:  # MemoryStore's (the ledger's event sequence)
        raise NotImplementedError

    def site_agent(self, site_id: str) -> SiteAgent | None:
        with self._agents_lock:
            return self._agents.get(site_id)

    def fleet_health(self, site_pools: Mapping[str, Sequence[str]]) -> FleetHealth:
        with self._agents_lock:
            agents = tuple(AgentHealth(a.site_id, a.agent_id, a.generation, a.heartbeat_at_s, a.nodes)
                           for a in (self._agents[s] for s in sorted(self._agents)))
            drained = {p: tuple(sorted(self._node_drains.get(p, ())))
                       for a in agents for p in site_pools.get(a.site_id, ())}
        return FleetHealth(agents, drained)

    def site_agents(self) -> list[SiteAgent]:
        with self._agents_lock:
            return [self._agents[s] for s in sorted(self._agents)]

    def report_job(self, site_id: str, agent_id: str, report: JobReport) -> tuple[bool, JobReport]:
        with self._agents_lock:
            self._current(site_id, agent_id)
            reports = self._reports.setdefault(site_id, {})
            last = reports.get(report.job_id)
            if last is not None and report.sequence <= last.sequence:
                return False, last
            reports[report.job_id] = report
            return True, report

    def job_reports(self, site_id: str) -> list[JobReport]:
        with self._agents_lock:
            reports = self._reports.get(site_id, {})
            return [reports[j] for j in sorted(reports)]

    def job_report(self, site_id: str, job_id: str) -> JobReport | None:
        with self._agents_lock:
            return self._reports.get(site_id, {}).get(job_id)

    def forget_job_reports(self, site_id: str, reports: Sequence[JobReport]) -> int:
        forgotten = 0
        with self._agents_lock:
            kept = self._reports.get(site_id, {})
            for report in reports:
                last = kept.get(report.job_id)
                if last is not None and last.sequence == report.sequence:
                    del kept[report.job_id]
                    forgotten += 1
        return forgotten

    def set_nodes_drained(self, pool_id: str, nodes: Sequence[str], drained: bool) -> None:
        with self._agents_lock:
            drains = self._node_drains.setdefault(pool_id, set())
            if drained:
                drains.update(nodes)
            else:
                drains.difference_update(nodes)

    def drained_nodes(self, pool_id: str) -> tuple[str, ...]:
        with self._agents_lock:
            return tuple(sorted(self._node_drains.get(pool_id, ())))
