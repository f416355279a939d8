"""The reference site agent (``grid-scheduler agent``): the site side of SiteAgentService.

It registers for one site, heartbeats its nodes' health, holds the WatchAssignments stream and
makes the site match it: a job in ``run`` that it does not run is started, a job in ``stop`` is
stopped, a running job whose shares here changed (a replica re-placed) keeps running with its new
GPUs (``--update``), and every transition is reported with a per-job sequence. Two ways to run a job:

- ``--start``/``--stop`` command templates (``{job_id} {gpus} {nodes} {pools} {name} {tenant}
  {attempt}``): the start command lives as long as the job (``sbatch --wait``, ``srun``,
  ``kubectl wait``): exit 0 is SUCCEEDED, anything else FAILED with its exit code;
- ``--simulate``: each job "runs" for its duration divided by ``--speedup``, and nodes fail at
  ``--fail-rate`` per node-hour (seeded), failing the job that holds GPUs on that node (the
  desired state names each share's nodes; a share without names: the pool's oldest job).

Nodes are named as the scheduler numbers them (model/node_names.py): ``--simulate`` registers
``<pool_id>-00000``, ``<pool_id>-00001``, ... for every node of each pool, so node i of the
ledger is the i-th name. Heartbeats carry a growing sequence, so a retried or overtaken one
changes nothing at the scheduler.

What it runs, and each job's last sequence, is kept in ``--state-file``, so a restarted agent
reports what it still runs and the scheduler tells it what moved meanwhile (reconciliation).
"""

from __future__ import annotations

import json
import os
import random
import shlex
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog

from grid_scheduler._proto.v1 import agent_pb2 as pb
from grid_scheduler.client import Client
from grid_scheduler.model.node_names import node_names

log = structlog.get_logger("grid_scheduler.site_agent")

RECONNECT_S = 1.0


@dataclass
class Running:
    job_id: str
    pools: dict[str, int]  # pool id -> GPUs
    started_at_s: float
    ends_at_s: float | None = None  # simulated end
    nodes: frozenset[tuple[str, str]] = frozenset()  # (pool, node) it holds GPUs on, when named
    process: subprocess.Popen[bytes] | None = None
    kind: str = ""  # "training" or "inference" (StartJob.kind); "" when a state file of an older agent lacked it


@dataclass
class AgentConfig:
    site_id: str
    agent_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}")
    heartbeat_s: float = 5.0
    start: str = ""
    stop: str = ""
    simulate: bool = False
    speedup: float = 1.0
    fail_rate_per_node_hour: float = 0.0
    seed: int = 0
    state_file: Path | None = None
    update: str = ""  # command when a running job's shares here change (same fields as start)


def _shares(job: pb.StartJob) -> tuple[dict[str, int], frozenset[tuple[str, str]]]:
    """GPUs per pool and the (pool, node) pairs a StartJob gives this site."""
    pools: dict[str, int] = {}
    for share in job.shares:
        pools[share.pool_id] = pools.get(share.pool_id, 0) + share.gpus
    return pools, frozenset((s.pool_id, n) for s in job.shares for n in s.nodes)


class SiteAgent:
    def __init__(self, client: Client, config: AgentConfig) -> None:
        self.client = client
        self.config = config
        self.lock = threading.Lock()
        self.running: dict[str, Running] = {}
        self.sequence: dict[str, int] = {}
        self.failed_nodes: dict[tuple[str, str], str] = {}  # (pool, node) -> reason
        self.pools: dict[str, list[str]] = {}
        self.heartbeat_sequence = 0
        self.attempts: dict[str, int] = {}  # job id -> the run it started (StartJob.attempt), said in reports
        self.random = random.Random(config.seed)
        self.stopping = threading.Event()
        self._load()

    # --- state file ----------------------------------------------------------------------------
    def _load(self) -> None:
        path = self.config.state_file
        if path is None or not path.exists():
            return
        data = json.loads(path.read_text())
        self.sequence = {k: int(v) for k, v in data.get("sequence", {}).items()}
        self.attempts = {k: int(v) for k, v in data.get("attempts", {}).items()}
        nodes, kinds = data.get("nodes", {}), data.get("kinds", {})
        for job_id, pools in data.get("running", {}).items():
            self.running[job_id] = Running(job_id, {p: int(n) for p, n in pools.items()}, time.time(),
                                           nodes=frozenset((p, n) for p, n in nodes.get(job_id, ())),
                                           kind=kinds.get(job_id, ""))

    def _save(self) -> None:
        path = self.config.state_file
        if path is None:
            return
        # Each run's kind and attempt too: after a restart, a failed node under a deployment then
        # loses only its replicas (no FAILED for the whole job), and a run the scheduler restarted
        # meanwhile under a newer attempt is told apart from the one this agent had.
        running = sorted(self.running.items())
        data = {"sequence": self.sequence, "running": {j: r.pools for j, r in running},
                "nodes": {j: sorted(r.nodes) for j, r in running if r.nodes},
                "kinds": {j: r.kind for j, r in running if r.kind},
                "attempts": {j: self.attempts[j] for j, _ in running if j in self.attempts}}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        tmp.replace(path)  # atomic: a kill -9 leaves the old state or the new one

    # --- protocol ------------------------------------------------------------------------------
    def register(self) -> None:
        site = next((s for s in self.client.sites() if s.id == self.config.site_id), None)
        if site is None:
            raise SystemExit(f"error: the scheduler has no site {self.config.site_id}")
        self.pools = {p.id: list(node_names(p.id, p.nodes)) for p in site.pools}
        self.client.agents.RegisterAgent(pb.RegisterAgentRequest(
            site_id=self.config.site_id, agent_id=self.config.agent_id,
            pools=[pb.PoolNodes(pool_id=p, nodes=n) for p, n in self.pools.items()],
        ), timeout=self.client.timeout_s)
        log.info("agent_registered", site_id=self.config.site_id, agent_id=self.config.agent_id)
        # Reconciliation: say what still runs here; the stream then tells what moved meanwhile.
        with self.lock:
            for job_id in sorted(self.running):
                self._report(job_id, pb.JOB_PHASE_RUNNING)

    def _report(self, job_id: str, phase: int, reason: str = "") -> None:
        self.sequence[job_id] = self.sequence.get(job_id, 0) + 1
        self._save()
        try:
            request = pb.ReportJobRequest(
                site_id=self.config.site_id, agent_id=self.config.agent_id, job_id=job_id, phase=phase,  # type: ignore[arg-type]
                sequence=self.sequence[job_id], exit_reason=reason,
            )
            if job_id in self.attempts:  # a late FAILED for a run the scheduler already restarted ends nothing
                request.attempt = self.attempts[job_id]
            self.client.agents.ReportJob(request, timeout=self.client.timeout_s)
        except grpc.RpcError as e:
            log.warning("report_failed", job_id=job_id, code=e.code().name)

    def heartbeat(self) -> None:
        with self.lock:
            self._heartbeat()

    def _heartbeat(self) -> None:
        nodes = [pb.NodeStatus(pool_id=p, node=n, health=pb.NODE_HEALTH_FAILED, reason=r)
                 for (p, n), r in sorted(self.failed_nodes.items())]
        self.heartbeat_sequence += 1  # a retry or a late delivery of an older one is then ignored
        self.client.agents.Heartbeat(pb.HeartbeatRequest(
            site_id=self.config.site_id, agent_id=self.config.agent_id, nodes=nodes,
            sequence=self.heartbeat_sequence), timeout=self.client.timeout_s)

    def apply(self, desired: pb.WatchAssignmentsResponse) -> None:
        with self.lock:
            for stop in desired.stop:
                if stop.job_id in self.running or self.sequence.get(stop.job_id):
                    self._stop(stop.job_id, pb.StopReason.Name(stop.reason))
            for job in desired.run:
                run = self.running.get(job.job_id)
                if run is not None and not run.kind:
                    run.kind = job.kind  # a run loaded from an older agent's state file
                if run is None:
                    self._start(job)
                elif job.attempt != self.attempts.get(job.job_id, job.attempt):
                    # The scheduler restarted the job (a stop this agent missed, then placed here
                    # again): the old run goes, quietly, since its reports name the old attempt.
                    self._stop(job.job_id, "restarted by the scheduler")
                    self._start(job)
                elif _shares(job) != (run.pools, run.nodes):
                    self._reshape(run, job)

    def _start(self, job: pb.StartJob) -> None:
        pools, nodes = _shares(job)
        now = time.time()
        self.attempts[job.job_id] = job.attempt
        run = Running(job.job_id, pools, now, nodes=nodes, kind=job.kind)
        self._report(job.job_id, pb.JOB_PHASE_STARTING)
        if self.config.simulate:
            hours = job.duration_hours or 1.0
            run.ends_at_s = now + hours * 3600.0 / self.config.speedup
        elif self.config.start:
            run.process = subprocess.Popen(shlex.split(self._fill(self.config.start, job)))
        self.running[job.job_id] = run
        self._report(job.job_id, pb.JOB_PHASE_RUNNING)
        log.info("job_started", job_id=job.job_id, pools=pools)

    def _reshape(self, run: Running, job: pb.StartJob) -> None:
        """A running job whose shares here changed (a lost replica re-placed in the same pool or
        moved here from another site): it keeps running on its attempt, with the new GPUs."""
        run.pools, run.nodes = _shares(job)
        self._save()
        if self.config.update and not self.config.simulate:
            subprocess.run(shlex.split(self._fill(self.config.update, job)), check=False, timeout=60)
        log.info("job_resized", job_id=job.job_id, pools=run.pools)

    def _fill(self, template: str, job: pb.StartJob) -> str:
        nodes = ",".join(n for s in job.shares for n in s.nodes)
        return template.format(job_id=job.job_id, gpus=sum(s.gpus for s in job.shares), nodes=nodes,
                               pools=",".join(s.pool_id for s in job.shares), name=job.name, tenant=job.tenant,
                               attempt=job.attempt)

    def _stop(self, job_id: str, why: str) -> None:
        run = self.running.pop(job_id, None)
        if run is not None and run.process is not None and run.process.poll() is None:
            if self.config.stop:
                subprocess.run(shlex.split(self.config.stop.format(job_id=job_id)), check=False, timeout=60)
            else:
                run.process.terminate()
        if run is not None or self.sequence.get(job_id):
            self._report(job_id, pb.JOB_PHASE_STOPPED, why)
            log.info("job_stopped", job_id=job_id, why=why)

    def tick(self, dt_s: float) -> None:
        """Jobs that ended, and (simulated) node failures over the last ``dt_s``."""
        with self.lock:
            now = time.time()
            for job_id, run in list(self.running.items()):
                code = run.process.poll() if run.process is not None else None
                if (run.ends_at_s is not None and now >= run.ends_at_s) or code == 0:
                    del self.running[job_id]
                    self._report(job_id, pb.JOB_PHASE_SUCCEEDED)
                elif code is not None:
                    del self.running[job_id]
                    self._report(job_id, pb.JOB_PHASE_FAILED, f"exit code {code}")
            if self.config.simulate and self.config.fail_rate_per_node_hour > 0:
                node_hours = dt_s * self.config.speedup / 3600.0
                failed: list[tuple[str, str]] = []
                known = len(self.failed_nodes)
                for pool_id, nodes in self.pools.items():
                    for node in nodes:
                        if (pool_id, node) in self.failed_nodes:
                            continue
                        if self.random.random() < self.config.fail_rate_per_node_hour * node_hours:
                            failed += self._fail_node(pool_id, node)
                if len(self.failed_nodes) > known:
                    # Node health first, then the jobs it killed: the scheduler has taken the nodes
                    # out of capacity before it re-queues the jobs, so none lands on them again.
                    try:
                        self._heartbeat()
                    except grpc.RpcError as e:
                        log.warning("heartbeat_failed", code=e.code().name)
                    for job_id, why in failed:
                        self._report(job_id, pb.JOB_PHASE_FAILED, why)

    def _fail_node(self, pool_id: str, node: str) -> list[tuple[str, str]]:
        reason = "XID 79: GPU has fallen off the bus (simulated)"
        self.failed_nodes[(pool_id, node)] = reason
        log.warning("node_failed", pool_id=pool_id, node=node)
        # The job on that node; where the scheduler named no nodes, the pool's oldest job stands in.
        in_pool = [r for r in self.running.values() if pool_id in r.pools]
        on_node = [r for r in in_pool if (pool_id, node) in r.nodes]
        named = any(p == pool_id for r in in_pool for p, _ in r.nodes)
        victim = min(on_node or ([] if named else in_pool), key=lambda r: r.started_at_s, default=None)
        if victim is None:
            return []
        if victim.kind == "inference" and victim.nodes - {(pool_id, node)}:
            # Only the replicas on that node died; the deployment runs on on its other nodes. No
            # FAILED report (it would move every replica here): the node's health in the heartbeat
            # makes the scheduler re-place exactly those replicas (scheduler/replicas.py).
            victim.nodes = victim.nodes - {(pool_id, node)}
            return []
        del self.running[victim.job_id]
        return [(victim.job_id, f"node {node} failed: {reason}")]

    # --- loops ---------------------------------------------------------------------------------
    def run(self) -> None:
        self.register()
        threading.Thread(target=self._watch, name="watch", daemon=True).start()
        last = time.monotonic()
        while not self.stopping.wait(self.config.heartbeat_s):
            now = time.monotonic()
            self.tick(now - last)
            last = now
            try:
                self.heartbeat()
            except grpc.RpcError as e:
                log.warning("heartbeat_failed", code=e.code().name)
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    self._register_quietly()

    def _register_quietly(self) -> None:
        try:
            self.register()
        except grpc.RpcError as e:
            log.warning("register_failed", code=e.code().name)

    def _watch(self) -> None:
        request = pb.WatchAssignmentsRequest(site_id=self.config.site_id, agent_id=self.config.agent_id)
        while not self.stopping.is_set():
            try:
                for desired in self.client.agents.WatchAssignments(request):
                    self.apply(desired)
            except grpc.RpcError as e:
                log.warning("watch_ended", code=e.code().name)
            self.stopping.wait(RECONNECT_S)
