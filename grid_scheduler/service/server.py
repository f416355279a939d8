"""The gRPC server: both services, health, reflection, request logging, graceful shutdown."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from grid_scheduler._proto.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    placement_pb2,
    placement_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    scenario_pb2,
    scenario_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
)
from grid_scheduler.scheduler import Scheduler, fleet
from grid_scheduler.scheduler.core import DEFAULT_RETENTION_S
from grid_scheduler.scheduler.site_monitor import SiteMonitor
from grid_scheduler.service import errors
from grid_scheduler.service.agent import SiteAgentServicer
from grid_scheduler.service.audit import AuditServicer
from grid_scheduler.service.auth import Auditor, AuthConfig, Authenticator, AuthInterceptor, RateLimiter
from grid_scheduler.service.handler_cache import HandlerCache
from grid_scheduler.service.health import ServiceHealth
from grid_scheduler.service.malformed import MAX_RECEIVE_MESSAGE_BYTES, MalformedRequestInterceptor
from grid_scheduler.service.placement import PlacementServicer
from grid_scheduler.service.policy import PolicyServicer
from grid_scheduler.service.scenario import ScenarioServicer
from grid_scheduler.service.tls import ServerTls
from grid_scheduler.service.topology import TopologyServicer
from grid_scheduler.state import StoreError
from grid_scheduler.state.factory import batch_commit_store, batch_lease

log = structlog.get_logger("grid_scheduler.server")

PLACEMENT_SERVICE = placement_pb2.DESCRIPTOR.services_by_name["PlacementService"].full_name
TOPOLOGY_SERVICE = topology_pb2.DESCRIPTOR.services_by_name["TopologyService"].full_name
SCENARIO_SERVICE = scenario_pb2.DESCRIPTOR.services_by_name["ScenarioService"].full_name
AUDIT_SERVICE = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["SiteAgentService"].full_name
POLICY_SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name


class LoggingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """One log line per call: method, status code, duration (debug level: it is the hot path)."""

    def __init__(self) -> None:
        self._handlers = HandlerCache()

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = details.method
        return self._handlers.wrapped(method, handler, lambda inner: _logged(method, inner))


def _logged(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    inner = handler.unary_unary

    def logged(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        try:
            return inner(request, context)
        finally:
            log.debug("rpc", method=method, code=str(context.code() or grpc.StatusCode.OK),
                      duration_ms=round((time.perf_counter() - start) * 1000, 3))

    return grpc.unary_unary_rpc_method_handler(
        logged, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class StreamLimitInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """At most ``max_streams`` response streams at once; one more gets RESOURCE_EXHAUSTED at once.

    The sync server runs every call on one thread pool, and a response stream (WatchJobs,
    WatchScenario, reflection) holds its thread for as long as it is open. ``start_server``
    sizes the pool as the unary workers plus this cap, so however many streams clients open,
    unary calls keep their workers: a stream past the cap is refused, never queued.
    Generic over every method that streams its responses; handlers that do not hold a thread
    (``experimental_non_blocking``, as grpc.health's Watch) are left alone.
    """

    def __init__(self, max_streams: int) -> None:
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        self.max_streams = max_streams
        self._lock = threading.Lock()
        self._open = 0
        self._handlers = HandlerCache()

    @property
    def open_streams(self) -> int:
        return self._open

    def _acquire(self) -> bool:
        with self._lock:
            if self._open >= self.max_streams:
                return False
            self._open += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._open -= 1

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None or not handler.response_streaming:
            return handler
        if getattr(handler.unary_stream or handler.stream_stream, "experimental_non_blocking", False):
            return handler
        method: str = details.method
        return self._handlers.wrapped(method, handler, lambda inner: self._limited(method, inner))

    def _limited(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        inner = handler.unary_stream or handler.stream_stream

        def limited(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            # A generator: this body runs on the pool thread that serves the stream, and the
            # slot is given back however the stream ends (done, error, client gone, shutdown).
            if not self._acquire():
                log.warning("stream_refused", method=method, max_streams=self.max_streams)
                context.abort_with_status(errors.resource_exhausted(
                    "TOO_MANY_STREAMS", "server:streams",
                    f"this server already serves {self.max_streams} streams, its limit (serve --max-streams); "
                    "close a stream or retry later",
                    {"max_streams": str(self.max_streams), "method": method},
                ))
            try:
                yield from inner(request, context)
            finally:
                self._release()

        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(limited, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    stopping: threading.Event
    streams: StreamLimitInterceptor
    auditor: Auditor

    @property
    def open_streams(self) -> int:
        """Response streams open now (each holds a worker thread)."""
        return self.streams.open_streams

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking calls, let those in flight finish, end the watch streams."""
        self.health.enter_graceful_shutdown()
        self.stopping.set()
        self.server.stop(grace_s).wait()
        self.auditor.close()  # the calls' audit records into the store before the store closes


# How often each service's dependencies are probed (the store: a Redis PING with a short timeout)
# and reflected in grpc.health.v1, so a load balancer stops sending work while the ledger is unreachable.
HEALTH_POLL_S = 0.5
# How often pending jobs are retried without a local trigger. With several replicas on one store,
# a commit that lost a race, or a retry cut short by a store outage, leaves a job pending that no
# local cancel or undrain would revisit.
PENDING_RETRY_S = 3.0
# How often the batch cycle solves the whole queue with CP-SAT (when anything waits), and
# its solver time limit. With several replicas only the holder of a lease runs it.
BATCH_INTERVAL_S = 30.0
BATCH_TIME_LIMIT_S = 5.0
# How often site health is judged from the agents' heartbeats (at most; a quarter of the timeout if shorter).
SITE_CHECK_S = 1.0
# How often running jobs are checked against their maximum run time.
RUN_LIMIT_CHECK_S = 10.0
# How often finished jobs past their retention are archived.
ARCHIVE_INTERVAL_S = 60.0
# Threads for unary calls, and the most response streams (watch dashboards) open at once. The
# pool holds both, so open streams never take a unary call's worker.
DEFAULT_WORKERS = 16
DEFAULT_MAX_STREAMS = 64


def start_server(
    scheduler: Scheduler,
    address: str = "127.0.0.1:50051",
    max_workers: int = DEFAULT_WORKERS,
    health_poll_s: float = HEALTH_POLL_S,
    pending_retry_s: float | None = PENDING_RETRY_S,
    batch_interval_s: float | None = BATCH_INTERVAL_S,
    retention_s: float | None = DEFAULT_RETENTION_S,
    max_streams: int = DEFAULT_MAX_STREAMS,
    tls: ServerTls | None = None,
    auth: AuthConfig | None = None,
    run_limit_interval_s: float | None = RUN_LIMIT_CHECK_S,
    reuse_port: bool = False,
) -> RunningServer:
    """Serve on ``address`` (port 0: any free port) until ``RunningServer.stop``.

    ``max_workers`` threads serve unary calls. Up to ``max_streams`` response streams
    (WatchJobs, WatchScenario) get threads of their own on top of those; one more stream is
    refused with RESOURCE_EXHAUSTED rather than left to starve the unary calls.
    ``run_limit_interval_s``: how often running jobs are checked against their maximum run time
    (None: never). ``tls`` serves TLS (mutual TLS with a client CA) instead of plaintext. ``auth`` turns on
    authentication, roles, tenant scope, tenant limits and rate limits (service/auth/); without
    it every caller is an anonymous platform admin. Mutating calls are audited either way.
    ``reuse_port`` binds with SO_REUSEPORT, for one of several replica processes sharing the port
    (service/replicas.py, which checks first that no foreign process holds it); without it a port
    already taken fails here, as it should for a single server.
    """
    stopping = threading.Event()
    streams = StreamLimitInterceptor(max_streams)
    auditor = Auditor(scheduler.store)
    access = AuthInterceptor(
        Authenticator(auth) if auth is not None else None,
        RateLimiter(auth.rate_for) if auth is not None else None,
        auditor,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers + max_streams, thread_name_prefix="grpc"),
        # Bytes that do not parse are refused first (INVALID_ARGUMENT, never grpcio's INTERNAL); then
        # the trust boundary: nothing below it runs for a caller it refused.
        interceptors=[MalformedRequestInterceptor(), access, streams, LoggingInterceptor()],
        options=[("grpc.so_reuseport", 1 if reuse_port else 0),
                 ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES)],
    )
    add_placement = placement_pb2_grpc.add_PlacementServiceServicer_to_server
    add_topology = topology_pb2_grpc.add_TopologyServiceServicer_to_server
    add_placement(PlacementServicer(scheduler, stopping), server)  # type: ignore[no-untyped-call]
    add_topology(TopologyServicer(scheduler), server)  # type: ignore[no-untyped-call]
    # What-if runs (issue 5): each in its own process, reports under the temp dir.
    scenarios = ScenarioServicer(stopping=stopping, scheduler=scheduler)
    scenario_pb2_grpc.add_ScenarioServiceServicer_to_server(scenarios, server)  # type: ignore[no-untyped-call]
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(scheduler.store), server)  # type: ignore[no-untyped-call]
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(scheduler), server)  # type: ignore[no-untyped-call]
    agent_pb2_grpc.add_SiteAgentServiceServicer_to_server(  # type: ignore[no-untyped-call]
        SiteAgentServicer(scheduler, stopping), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_health = _service_health(health_servicer, scheduler, scenarios)
    service_health.refresh()
    reflection.enable_server_reflection(
        (PLACEMENT_SERVICE, TOPOLOGY_SERVICE, SCENARIO_SERVICE, AUDIT_SERVICE, POLICY_SERVICE, AGENT_SERVICE,
         health.SERVICE_NAME,
         reflection.SERVICE_NAME), server
    )
    port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    service_health.keep_current(stopping, health_poll_s)
    if pending_retry_s:
        threading.Thread(target=_retry_pending, args=(scheduler, stopping, pending_retry_s),
                         name="pending-retry", daemon=True).start()
    if batch_interval_s:
        threading.Thread(target=_batch_cycle, args=(scheduler, stopping, batch_interval_s),
                         name="batch-cycle", daemon=True).start()
    if scheduler.heartbeat_timeout_s is not None:
        threading.Thread(target=_watch_sites, args=(scheduler, stopping), name="site-monitor", daemon=True).start()
    if run_limit_interval_s:
        threading.Thread(target=_stop_runaways, args=(scheduler, stopping, run_limit_interval_s),
                         name="run-time-limits", daemon=True).start()
    if retention_s is not None:
        threading.Thread(target=_archive_finished, args=(scheduler, stopping, retention_s),
                         name="archive", daemon=True).start()
    # A Redis store is named by its redacted URL (state/store_url.py), never with its password.
    store = getattr(scheduler.store, "safe_url", "memory")
    log.info("server_started", address=address, port=port, pid=os.getpid(), store=store,
             sites=len(scheduler.grid.sites), pools=len(scheduler.index.pool_ids), workers=max_workers,
             max_streams=max_streams,
             tls="mutual" if tls and tls.client_ca_file else "server" if tls else "off",
             auth="on" if auth is not None else "off (every caller is an anonymous platform admin)")
    return RunningServer(server, port, health_servicer, stopping, streams, auditor)


def _service_health(
    servicer: health.HealthServicer, scheduler: Scheduler, scenarios: ScenarioServicer
) -> ServiceHealth:
    # Each service by the dependencies it needs (see service/health.py); "" follows the store.
    return ServiceHealth(
        servicer,
        {"store": scheduler.store.healthy, "scenario_workers": scenarios.healthy},
        {"": ("store",), PLACEMENT_SERVICE: ("store",), TOPOLOGY_SERVICE: ("store",), AUDIT_SERVICE: ("store",),
         AGENT_SERVICE: ("store",),
         SCENARIO_SERVICE: ("scenario_workers",)},
    )


def _retry_pending(scheduler: Scheduler, stopping: threading.Event, interval_s: float) -> None:
    # Only when the ledger moved: on an unchanged ledger every pending job would get the same
    # "no" again, and the pass holds the scheduler's lock.
    seen: int | None = None
    while not stopping.wait(interval_s):
        try:
            version = scheduler.store.ledger_version()
            if version == seen:
                continue
            placed = scheduler.place_pending()
            seen = version
            if placed:
                log.info("pending_retry", placed=len(placed))
        except StoreError as e:
            log.debug("pending_retry_skipped", error=str(e))
        except Exception:
            log.exception("pending_retry_failed")


def _batch_cycle(scheduler: Scheduler, stopping: threading.Event, interval_s: float) -> None:
    lease = batch_lease(scheduler.store, ttl_s=BATCH_TIME_LIMIT_S * 4 + interval_s)
    while not stopping.wait(interval_s):
        try:
            if not scheduler.store.pending_jobs():
                continue
            with batch_commit_store(scheduler.store, lease) as store:
                if store is not None:
                    scheduler.optimize_pending(time_limit_s=BATCH_TIME_LIMIT_S, commit_to=store)
        except StoreError as e:
            log.warning("batch_cycle_skipped", error=str(e))
        except Exception:
            log.exception("batch_cycle_failed")


def _watch_sites(scheduler: Scheduler, stopping: threading.Event) -> None:
    # Every replica judges every site from the heartbeat times in the store; each step is idempotent.
    timeout_s = scheduler.heartbeat_timeout_s or 1.0
    interval_s = min(SITE_CHECK_S, timeout_s / 4)
    seen: dict[str, fleet.SiteHealth] = {}
    monitor = SiteMonitor(scheduler)
    while not stopping.wait(interval_s):
        try:
            health = monitor.check()
            for site_id, now in health.items():
                if seen.get(site_id) is not now:
                    log.info("site_health", site_id=site_id, health=now.value)
            seen = health
        except StoreError as e:
            log.debug("site_check_skipped", error=str(e))
        except Exception:
            log.exception("site_check_failed")


def _stop_runaways(scheduler: Scheduler, stopping: threading.Event, interval_s: float) -> None:
    # Jobs past their maximum run time (JobSpec.max_run_hours, policy max_run_hours) are stopped.
    while not stopping.wait(interval_s):
        try:
            stopped = fleet.stop_runaways(scheduler)
            if stopped:
                log.info("run_time_limits", stopped=len(stopped))
        except StoreError as e:
            log.debug("run_time_limits_skipped", error=str(e))
        except Exception:
            log.exception("run_time_limits_failed")


def _archive_finished(scheduler: Scheduler, stopping: threading.Event, retention_s: float) -> None:
    # Finished jobs and their request ids, and the agents' reports of runs that ended, are forgotten
    # after the retention period, so a long-running server's memory (and Redis) stays flat. Every
    # replica may run it: it is idempotent.
    while not stopping.wait(ARCHIVE_INTERVAL_S):
        try:
            archived = scheduler.archive_finished(retention_s)
            if archived:
                log.info("jobs_archived", archived=archived, retention_s=retention_s)
            forgotten = fleet.forget_ended_reports(scheduler, scheduler.now() - retention_s)
            if forgotten:
                log.info("job_reports_forgotten", forgotten=forgotten, retention_s=retention_s)
        except StoreError as e:
            log.debug("archive_skipped", error=str(e))
        except Exception:
            log.exception("archive_failed")


def serve_forever(running: RunningServer, grace_s: float = 5.0) -> None:
    """Block until SIGTERM or SIGINT, then shut down gracefully."""
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("server_stopping", signal=signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    running.stop(grace_s)
    log.info("server_stopped")
