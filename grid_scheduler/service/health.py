"""grpc.health.v1 per service: each service is SERVING exactly when the dependencies it needs are up.

PlacementService, TopologyService and AuditService read and write the ledger, so they follow the store;
ScenarioService runs what-if replays in its own worker processes on an in-memory ledger, so it
follows its worker pool only and keeps serving while Redis is down. The overall status ("")
follows the store too: a load balancer that probes only "" should stop sending placement work
when the ledger is unreachable, which was the server's behaviour before statuses were per service.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import structlog
from grpc_health.v1 import health, health_pb2

__all__ = ["Dependency", "ServiceHealth"]

log = structlog.get_logger("grid_scheduler.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Dependency = Callable[[], bool]
"""A probe: True when the dependency can do its work now. Fast (it runs on every poll) and never raises."""


class ServiceHealth:
    """Probes each dependency once per poll and sets every service's status from the ones it needs.

    ``dependencies`` names the probes; ``services`` maps a health service name ("" for the
    server as a whole) to the names of the dependencies it needs.
    """

    def __init__(
        self,
        servicer: health.HealthServicer,
        dependencies: Mapping[str, Dependency],
        services: Mapping[str, Sequence[str]],
    ) -> None:
        unknown = {d for needs in services.values() for d in needs} - set(dependencies)
        if unknown:
            raise ValueError(f"services need unknown dependencies: {sorted(unknown)}")
        self.servicer = servicer
        self.dependencies = dict(dependencies)
        self.services = {name: tuple(needs) for name, needs in services.items()}
        self._up: dict[str, bool] = {}

    def refresh(self) -> dict[str, bool]:
        """Probe every dependency, set every service's status, log what changed; the probes' answers."""
        up = {name: probe() for name, probe in self.dependencies.items()}
        for name, ok in up.items():
            if name in self._up and self._up[name] != ok:
                (log.info if ok else log.warning)("dependency_available" if ok else "dependency_unavailable",
                                                  dependency=name)
        if up != self._up:
            for service, needs in self.services.items():
                status = SERVING if all(up[d] for d in needs) else NOT_SERVING
                self.servicer.set(service, status)  # ignored once graceful shutdown began
        self._up = up
        return up

    def keep_current(self, stopping: threading.Event, poll_s: float) -> threading.Thread:
        """A daemon thread that refreshes every ``poll_s`` seconds until ``stopping`` is set."""

        def loop() -> None:
            while not stopping.wait(poll_s):
                try:
                    self.refresh()
                except Exception:  # a probe that broke its promise: keep the last statuses, keep polling
                    log.exception("health_refresh_failed")

        thread = threading.Thread(target=loop, name="health", daemon=True)
        thread.start()
        return thread
