"""Prometheus metrics (``serve --metrics-address HOST:PORT``): what this process did, and the fleet's state.

Two kinds, kept apart on purpose:

- **Counters and histograms** of what *this process* did (submissions it answered, its engine
  decisions and commits, lost races, evictions, batch cycles), fed by the scheduler's
  ``Observer`` hooks. With several replicas, ``sum`` them across instances.
- **Gauges of fleet state** (GPUs, power, the queue) read from the ledger at scrape time by
  ``LedgerCollector``, never kept in memory: every replica on one Redis reports the same
  numbers, and they can never drift from the ledger. Aggregate them with ``max``, not ``sum``.

Names follow Prometheus conventions: the ``grid_scheduler_`` prefix, base units (seconds,
watts), ``_total`` on counters. Labels are bounded by the grid file and by enums (site, pool,
GPU type, job kind, outcome, reason code, solver status); never a job id or tenant. The queue's
``priority`` label is the job's tier (its priority value), as few as the tiers a platform uses.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from grid_scheduler.engine.capacity import pool_statuses
from grid_scheduler.model import EventType, JobRecord, JobState
from grid_scheduler.scheduler import OptimizeOutcome, Scheduler
from grid_scheduler.state import StoreError, Transition

__all__ = ["LedgerCollector", "MetricsServer", "SchedulerMetrics", "parse_address", "start_metrics_server"]

PREFIX = "grid_scheduler"
# Engine decisions take tens of microseconds (online) to a second (CP-SAT inference); commits
# are a dict update (memory) or a Lua script round trip (Redis).
DECISION_BUCKETS_S = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
COMMIT_BUCKETS_S = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# The batch cycle's solver runs up to its time limit (server.BATCH_TIME_LIMIT_S, 5 s).
SOLVE_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Store refusals, by the exception's class, as one label value each.
# ledger_moved: an optimistic commit (decided on the replica's copy, no read first) refused because
# the ledger moved past that copy, mostly by other replicas' commits; decided again on the fresh one.
CONFLICT_LABELS = {"CapacityConflict": "capacity", "StaleRecord": "stale_record", "UnknownJob": "unknown_job",
                   "LedgerMoved": "ledger_moved"}
OUTCOMES = {JobState.RUNNING: "placed", JobState.PENDING: "pending", JobState.REJECTED: "rejected"}


class SchedulerMetrics:
    """The scheduler's ``Observer``: counters and histograms of what this process did."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.submissions = PromCounter(
            f"{PREFIX}_submissions", "Job submissions answered, by job kind and outcome "
            "(placed, pending, rejected; duplicate: a retried request id, answered with the first job).",
            ["kind", "outcome"], registry=registry)
        self.decision_seconds = Histogram(
            f"{PREFIX}_decision_duration_seconds", "Engine decisions (a snapshot in, a placement or reasons out).",
            buckets=DECISION_BUCKETS_S, registry=registry)
        self.commit_seconds = Histogram(
            f"{PREFIX}_commit_duration_seconds", "Commits to the ledger (each atomic), refused ones included.",
            buckets=COMMIT_BUCKETS_S, registry=registry)
        self.conflicts = PromCounter(
            f"{PREFIX}_commit_conflicts", "Commits refused because another decision got there first "
            "(capacity taken, a record changed, a job gone); the scheduler decides again or waits.",
            ["conflict"], registry=registry)
        self.preemptions = PromCounter(
            f"{PREFIX}_preemptions", "Jobs evicted to make room for a higher tier (sent back to the queue).",
            registry=registry)
        self.batch_cycles = PromCounter(
            f"{PREFIX}_batch_cycles", "Batch optimiser solves (the periodic cycle and OptimizePending), "
            "by CP-SAT status.", ["status"], registry=registry)
        self.batch_solve_seconds = Histogram(
            f"{PREFIX}_batch_solve_duration_seconds", "CP-SAT solve time of a batch solve.",
            buckets=SOLVE_BUCKETS_S, registry=registry)
        self.batch_gap = Gauge(
            f"{PREFIX}_batch_gap_ratio", "Relative gap |bound - objective| / max(1, |objective|) of the last "
            "batch solve (0: proven optimal).", registry=registry)
        self.batch_committed = PromCounter(
            f"{PREFIX}_batch_committed_jobs", "Waiting jobs started by a batch plan.", registry=registry)
        for outcome in (*OUTCOMES.values(), "duplicate"):  # every series exists from the start, at 0
            for kind in ("training", "inference"):
                self.submissions.labels(kind=kind, outcome=outcome)
        for label in CONFLICT_LABELS.values():
            self.conflicts.labels(conflict=label)

    # --- scheduler.observer.Observer ---------------------------------------------------
    def decided(self, seconds: float) -> None:
        self.decision_seconds.observe(seconds)

    def committed(self, seconds: float, transitions: Sequence[Transition], conflict: str | None) -> None:
        self.commit_seconds.observe(seconds)
        if conflict is not None:
            self.conflicts.labels(conflict=CONFLICT_LABELS.get(conflict, "other")).inc()
            return
        evicted = sum(1 for t in transitions if t.event is EventType.PREEMPTED)
        if evicted:
            self.preemptions.inc(evicted)

    def submitted(self, record: JobRecord, created: bool) -> None:
        outcome = OUTCOMES.get(record.state, record.state.value) if created else "duplicate"
        self.submissions.labels(kind=record.spec.kind.value, outcome=outcome).inc()

    def optimized(self, outcome: OptimizeOutcome) -> None:
        result = outcome.result
        self.batch_cycles.labels(status=result.status).inc()
        self.batch_solve_seconds.observe(result.solve_time_s)
        self.batch_gap.set(result.gap)
        self.batch_committed.inc(len(outcome.committed))


class LedgerCollector(Collector):
    """Fleet state read from the ledger at each scrape: GPUs, facility power, the queue.

    A scrape while the store is down yields none of these (and ``grid_scheduler_ledger_up`` 0)
    rather than stale numbers.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_ledger_up", "1 when the ledger could be read for this scrape.")
        try:
            families = self._read()
        except StoreError:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families

    def _read(self) -> list[Metric]:
        s = self.scheduler
        usage = s.usage()
        pending = s.store.pending_jobs()
        gpus = GaugeMetricFamily(
            f"{PREFIX}_gpus", "GPUs per pool by state: used (reserved by jobs), free (new work can take them now), "
            "drained (nodes the grid marks drained, or the whole pool while an operator drained it).",
            labels=["site", "pool", "gpu_type", "state"])
        for p, status in enumerate(pool_statuses(s.index, usage)):
            gpu_type = s.index.pool_gpu_type[p]
            for state, value in (("used", status.used_gpus), ("free", status.free_gpus),
                                 ("drained", status.drained_gpus)):
                gpus.add_metric([status.site_id, status.pool_id, gpu_type, state], float(value))
        power = GaugeMetricFamily(
            f"{PREFIX}_site_power_watts", "Facility power reserved per site (GPUs x board power x PUE).",
            labels=["site"])
        envelope = GaugeMetricFamily(
            f"{PREFIX}_site_power_envelope_watts", "Facility power envelope per site.", labels=["site"])
        for i, site_id in enumerate(s.index.site_ids):
            power.add_metric([site_id], float(usage.site_used_kw[i]) * 1000.0)
            envelope.add_metric([site_id], float(s.index.site_envelope_kw[i]) * 1000.0)
        queue = GaugeMetricFamily(
            f"{PREFIX}_queue_jobs", "Waiting jobs by priority tier and main wait reason (the reason code that "
            "rules out the most sites; 'unassessed' for a job sent back by preemption and not yet re-decided).",
            labels=["priority", "reason"])
        for (priority, reason), n in sorted(Counter((r.spec.priority, wait_reason(r)) for r in pending).items()):
            queue.add_metric([str(priority), reason], float(n))
        fragmented = GaugeMetricFamily(
            f"{PREFIX}_fragmented_gpus", "Free GPUs in partly used interconnect domains per pool: capacity a "
            "whole-domain job cannot use (reported only when the ledger keeps per-node usage).",
            labels=["site", "pool", "gpu_type"])
        nodes = usage.nodes(s.index)
        if nodes is not None:
            for p, value in enumerate(nodes.pool_fragmented_gpus):
                site_id = s.index.site_ids[int(s.index.pool_site[p])]
                fragmented.add_metric([site_id, s.index.pool_ids[p], s.index.pool_gpu_type[p]], float(value))
        return [gpus, power, envelope, queue, fragmented]


def wait_reason(record: JobRecord) -> str:
    """The reason code that rules out the most sites (ties: by name); 'unassessed' when no site
    was judged yet (a preempted job keeps only "preempted by ..." until a queue pass decides again)."""
    counts = record.waiting.site_counts if record.waiting is not None else {}
    if not counts:
        return "unassessed"
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


@dataclass
class MetricsServer:
    """The /metrics HTTP endpoint and what it reports; ``stop`` closes the endpoint."""

    registry: CollectorRegistry
    metrics: SchedulerMetrics
    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    def report_open_streams(self, open_streams: Callable[[], int]) -> None:
        """Report ``open_streams()`` (the server's open response streams) at every scrape."""
        gauge = Gauge(f"{PREFIX}_open_streams", "Open response streams (WatchJobs, WatchScenario, reflection), "
                      "each holding a worker thread; serve --max-streams caps them.", registry=self.registry)
        gauge.set_function(lambda: float(open_streams()))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts; ValueError naming what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{address!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


def start_metrics_server(address: str, scheduler: Scheduler) -> MetricsServer:
    """Serve /metrics on ``address`` (port 0: any free port) and make the scheduler report to it."""
    host, port = parse_address(address)
    # A *_created sample per series would double the page; Prometheus does not read them from text.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    metrics = SchedulerMetrics(registry)
    registry.register(LedgerCollector(scheduler))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    scheduler.observer = metrics
    return MetricsServer(registry, metrics, httpd, thread)
