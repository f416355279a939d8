"""TLS for the server and its clients: server certificates, mutual TLS, and where listening in plaintext is safe."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

# Environment variables the CLI and the Python client read when no flag or argument is given.
ENV_CA = "GRID_SCHEDULER_TLS_CA"
ENV_CERT = "GRID_SCHEDULER_TLS_CERT"
ENV_KEY = "GRID_SCHEDULER_TLS_KEY"
ENV_SERVER_NAME = "GRID_SCHEDULER_TLS_SERVER_NAME"
ENV_TOKEN = "GRID_SCHEDULER_TOKEN"


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path}: {e.strerror}") from None


@dataclass(frozen=True)
class ServerTls:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # given: every client must present a certificate signed by it

    def credentials(self) -> grpc.ServerCredentials:
        pair = (_read(self.key_file, "--tls-key"), _read(self.cert_file, "--tls-cert"))
        if self.client_ca_file is None:
            return grpc.ssl_server_credentials([pair])
        ca = _read(self.client_ca_file, "--client-ca")
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)


@dataclass(frozen=True)
class ClientTls:
    ca_file: Path | None = None  # None: the system's roots
    cert_file: Path | None = None  # with key_file: a client certificate, for mutual TLS
    key_file: Path | None = None
    server_name: str = ""  # the name to check the server's certificate against, if not the address's host

    @classmethod
    def from_env(cls) -> ClientTls | None:
        """From GRID_SCHEDULER_TLS_* (None when none is set: plaintext)."""
        ca, cert, key = os.environ.get(ENV_CA), os.environ.get(ENV_CERT), os.environ.get(ENV_KEY)
        if not (ca or cert or key):
            return None
        return cls(Path(ca) if ca else None, Path(cert) if cert else None, Path(key) if key else None,
                   os.environ.get(ENV_SERVER_NAME, ""))

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("--tls-cert and --tls-key go together")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "--tls-ca") if self.ca_file else None,
            private_key=_read(self.key_file, "--tls-key") if self.key_file else None,
            certificate_chain=_read(self.cert_file, "--tls-cert") if self.cert_file else None,
        )

    def options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` listens only on this machine (127.0.0.0/8, ::1, localhost)."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or 0.0.0.0 / [::] (every interface)
