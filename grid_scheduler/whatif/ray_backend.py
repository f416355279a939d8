"""A sweep backend that runs each variant as a Ray task, for sweeps that outgrow one machine.

Ray is an optional extra (``pip install 'grid-scheduler[ray]'``): it is imported when a sweep
runs on it, never when this module is imported, so the base install works without it.

On a multi-node cluster every node must see the scenario's files (grid, trace, policy) at the
same paths as the driver, and ``--reports`` is written by the worker that ran the variant: use
shared storage for both.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import TypeVar

from grid_scheduler.config import ConfigError

T = TypeVar("T")
R = TypeVar("R")

INSTALL_HINT = "pip install 'grid-scheduler[ray]'"


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from e
    return ray


class RayBackend:
    """``address``: ``auto`` (a running cluster if one is found, else a local one started here)
    or a cluster's address (``ray://host:10001``, ``host:6379``). If Ray is already initialised in
    this process, that connection is used and left open.

    ``max_retries``: how often Ray re-runs a task whose worker died; one retry covers a lost
    node without running a variant that kills its worker (out of memory) many times.
    """

    def __init__(self, address: str = "auto", max_retries: int = 1) -> None:
        self.address = address
        self.max_retries = max_retries

    def map_unordered(
        self, fn: Callable[[T], R], items: Sequence[T], lost: Callable[[T, BaseException], R] | None = None
    ) -> Iterator[R]:
        ray = import_ray()
        connected_here = not ray.is_initialized()
        if connected_here:
            self._connect(ray)
        pending: dict[object, T] = {}
        try:
            remote_fn = ray.remote(max_retries=self.max_retries)(fn)
            pending = {remote_fn.remote(item): item for item in items}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    item = pending.pop(ref)
                    try:
                        result: R = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the worker died, or fn raised
                        if lost is None:
                            raise
                        result = lost(item, e)
                    yield result
        finally:
            for ref in pending:  # the caller stopped early (or failed): free the cluster
                ray.cancel(ref, force=True)
            # ray.shutdown() in a driver that joined a running cluster only disconnects it; it stops
            # the cluster only if ray.init() started it here, which is what we want either way.
            if connected_here:
                ray.shutdown()

    def _connect(self, ray: ModuleType) -> None:
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": True}
        if self.address != "auto":
            check_reachable(self.address)
            ray.init(address=self.address, **quiet)
            return
        try:
            ray.init(address="auto", **quiet)  # raises ConnectionError when no cluster is running
        except ConnectionError:
            ray.init(include_dashboard=False, **quiet)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """ConnectionError if nothing listens at ``[ray://]host:port``: Ray itself retries a dead
    address for minutes, printing warnings, before it gives up."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConnectionError(f"expected auto, host:port or ray://host:port, not {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(f"no Ray cluster answers at {address}: {e}") from e
