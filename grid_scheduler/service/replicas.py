"""``serve --processes N``: N full scheduler replicas on one address, and the parent that supervises them.

One server process decides every call under the GIL, so more clients cannot buy more throughput
from it (benchmarks/README.md, "Concurrent clients"). N processes on one shared Redis ledger can:
each is a whole replica (its own Scheduler, store connection and background loops, exactly as
N separately started servers), and the kernel spreads incoming connections over them because each
binds the port with SO_REUSEPORT.

Children are *spawned* (a fresh interpreter), never forked: gRPC forbids forking a process whose
server or channels already run threads. The parent serves nothing; it only watches:

- SIGTERM or SIGINT to the parent stops every child gracefully (each drains its calls as a single
  server does) and the parent exits 0 when all of them did.
- A child that dies on its own is reported, the others are stopped, and the parent exits non-zero.
  The whole group is restarted by whatever started it (systemd, Kubernetes): restarting one child
  here would hide a crash loop from it, and nothing is lost, since the ledger lives in Redis.
- A child whose parent vanished (SIGKILL) stops by itself rather than serve unsupervised.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing import connection, get_context, parent_process
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog

log = structlog.get_logger("grid_scheduler.replicas")

# How long the parent waits for a child to finish its graceful stop before it kills it: the
# server's own grace (serve_forever's 5 s), then the store and metrics closing.
STOP_TIMEOUT_S = 20.0
# Exit codes of a child told to stop. A signal that reaches a child while its interpreter shuts
# down (its handlers are gone by then) ends it by the signal itself: SIGINT from a terminal goes
# to the whole process group, and the parent's SIGTERM follows it.
STOPPED_EXIT_CODES = frozenset({0, -signal.SIGTERM, -signal.SIGINT})
# How often the parent looks at its children besides being woken by one's exit or a signal.
SUPERVISE_POLL_S = 0.5


class PortTaken(OSError):
    """The address is already served by another process (one that is not this group's)."""


def check_port_free(address: str) -> None:
    """Raise PortTaken when something already listens on ``address`` (``HOST:PORT``).

    The replicas bind with SO_REUSEPORT, under which a second server of the same user on the same
    port would *share* the port, silently taking half the connections. So before any child binds,
    the parent binds every address the host resolves to without SO_REUSEPORT, which fails for a
    listener of any kind (with or without SO_REUSEPORT, of any user).
    """
    host, port = _split(address)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise OSError(f"cannot resolve {address!r}: {e}") from e
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise PortTaken(errno.EADDRINUSE, f"{address} is already in use by another process") from e
                raise


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r}: expected HOST:PORT")
    if int(port) == 0:
        # Port 0 would give each replica a different free port: no longer one address.
        raise ValueError(f"{address!r}: several processes need a fixed port, not 0")
    return host.strip("[]"), int(port)


def exit_with_parent() -> None:
    """In a spawned child: SIGTERM ourselves (a graceful stop) when the parent process is gone."""
    parent = parent_process()
    if parent is None:
        return

    def watch() -> None:
        connection.wait([parent.sentinel])
        log.warning("replica_parent_gone", pid=os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def supervise(target: Callable[[int], None], processes: int) -> int:
    """Run ``target(i)`` for i in 0..processes-1, each in a spawned process; the exit code.

    ``target`` must be picklable (a module-level function, or a functools.partial of one) and
    should end its process with the replica's exit code (sys.exit). Blocks until SIGTERM or
    SIGINT (then stops every child gracefully) or until a child exits on its own (then stops the
    others and returns 1).
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("replicas_stopping", signal=signal.Signals(signum).name)
        stop.set()

    # Before any child starts: a signal during start-up still stops every child started so far.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    ctx = get_context("spawn")
    children: list[BaseProcess] = []
    try:
        for i in range(processes):
            if stop.is_set():
                break
            child = ctx.Process(target=target, args=(i,), name=f"replica-{i}")
            child.start()
            children.append(child)
        log.info("replicas_started", processes=len(children), pids=[c.pid for c in children])
        died = _wait(children, stop)
        return _stop_all(children, died)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait(children: list[BaseProcess], stop: threading.Event) -> BaseProcess | None:
    """Until ``stop`` or a child's exit; the child that exited on its own, if one did."""
    while not stop.is_set():
        # A signal handler runs between these waits (it cannot interrupt one), hence the timeout.
        connection.wait([c.sentinel for c in children], timeout=SUPERVISE_POLL_S)
        for child in children:
            if child.exitcode is not None and not stop.is_set():
                log.error("replica_exited", replica=child.name, pid=child.pid, exit_code=child.exitcode,
                          then="stopping the other replicas; restart the whole `serve` to recover")
                return child
    return None


def _stop_all(children: list[BaseProcess], died: BaseProcess | None) -> int:
    for child in children:
        if child.exitcode is None:
            child.terminate()  # SIGTERM: the child's serve_forever stops it gracefully
    failed = died is not None
    for child in children:
        child.join(STOP_TIMEOUT_S)
        if child.exitcode is None:
            log.error("replica_killed", replica=child.name, pid=child.pid, why=f"not stopped in {STOP_TIMEOUT_S:g} s")
            child.kill()
            child.join()
            failed = True
        elif child.exitcode not in STOPPED_EXIT_CODES and child is not died:
            log.error("replica_failed", replica=child.name, pid=child.pid, exit_code=child.exitcode)
            failed = True
    log.info("replicas_stopped", processes=len(children))
    return 1 if failed else 0
