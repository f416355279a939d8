"""Certificates and signing keys made at test time (the ``cryptography`` package): a CA, a server
certificate for 127.0.0.1, client certificates, and a JWT signing key with its JWKS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://idp.test"
AUDIENCE = "grid-scheduler"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(
    subject_cn: str, key: Any, issuer: x509.Name | None, issuer_key: Any, ca: bool,
    sans: list[x509.GeneralName] | None = None, days: int = 1,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    directory: Path

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._ca_key = _key()
        self._ca = _cert("grid-scheduler test CA", self._ca_key, None, self._ca_key, ca=True)
        self.ca = self._write("ca.pem", self._ca.public_bytes(serialization.Encoding.PEM))
        server_key = _key()
        server = _cert("127.0.0.1", server_key, self._ca.subject, self._ca_key, ca=False, sans=[
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
        self.server_cert = self._write("server.pem", server.public_bytes(serialization.Encoding.PEM))
        self.server_key = self._write("server.key", _pem_key(server_key))
        self._jwt_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._jwt_key.public_key()))
        self.jwks = self._write("jwks.json", json.dumps({"keys": [{**jwk, "kid": self.kid, "use": "sig",
                                                                   "alg": "RS256"}]}).encode())

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path

    def client(self, cn: str, ca_signed: bool = True) -> tuple[Path, Path]:
        """A client certificate and key for ``cn`` (signed by another CA when ``ca_signed`` is False)."""
        key = _key()
        if ca_signed:
            cert = _cert(cn, key, self._ca.subject, self._ca_key, ca=False, sans=[x509.DNSName(cn)])
        else:
            cert = _cert(cn, key, None, key, ca=False)
        return (self._write(f"{cn}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{cn}.key", _pem_key(key)))

    def token(self, sub: str, *, audience: str = AUDIENCE, issuer: str = ISSUER, expires_in_s: float = 600,
              foreign_key: bool = False) -> str:
        """A JWT for ``sub``; ``foreign_key`` signs it with a key the server does not know (same kid)."""
        now = int(time.time())
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if foreign_key else self._jwt_key
        claims = {"sub": sub, "iss": issuer, "aud": audience, "iat": now, "exp": now + int(expires_in_s)}
        return jwt.encode(claims, _pem_key(key), algorithm="RS256", headers={"kid": self.kid})
