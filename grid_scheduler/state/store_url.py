"""Store URLs: checked before use, and shown only redacted.

The store URL is the one place a Redis password lives (``--store`` or ``GRID_SCHEDULER_STORE``).
``redact`` is the one way it reaches a message, a log line or a ``repr``. No Redis import here:
the embedded store's error messages use it too.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlsplit

__all__ = ["TLS_PARAMS", "URL_PARAMS", "check_url", "redact", "redact_text"]

# Query parameters a store URL may carry (redis-py's names). Anything else is refused: redis-py
# would pass it on as a keyword argument (failing only at the first connection, or silently
# overriding the timeouts above).
TLS_PARAMS = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_cert_reqs",
              "ssl_check_hostname")
URL_PARAMS = ("db", *TLS_PARAMS)
_FILE_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_BOOLEANS = ("0", "1", "true", "false", "yes", "no")  # redis-py reads any other word as true ("off" too)
_CERT_REQS = ("none", "optional", "required")
# A query parameter whose value is a secret (redis-py reads ``password`` from the query too).
_SECRET_PARAM = re.compile(r"pass|secret|token|auth", re.IGNORECASE)
# A URL inside free text (an argparse message): scheme, then up to whitespace or a quote; also a
# mistyped one (``redis:/user:pw@host``) as long as it has an '@'.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?://|[^\s'\"]*@)[^\s'\"]*")

def redact(url: str) -> str:
    """``url`` with its password (and any secret query parameter) replaced by ``***``.

    ``redis://user:pw@host:6379/0`` -> ``redis://user:***@host:6379/0``. Conservative on a
    malformed URL: everything up to the *last* ``@`` is user information (redis-py takes the
    last ``@`` of the host part, which is never later), so a password with a stray ``/``, ``?``
    or ``@`` in it is still hidden; userinfo without a ``:`` may be a bare password, so it
    is hidden whole.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    userinfo, at, tail = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        shown = f"{user}:***@" if colon and not re.search(r"[/?#]", user) else ("@" if not userinfo else "***@")
    else:
        shown, tail = "", rest
    base, q, query = tail.partition("?")
    if q:
        params = [
            f"{k}=***" if _SECRET_PARAM.search(k) and v else (f"{k}={v}" if eq else k)
            for k, eq, v in (p.partition("=") for p in query.split("&"))
        ]
        tail = base + "?" + "&".join(params)
    return f"{scheme}{sep}{shown}{tail}"


def redact_text(text: str) -> str:
    """Every URL in ``text`` redacted (for messages that may quote a command line)."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


def check_url(url: str) -> None:
    """Refuse a store URL redis-py would misread or fail on later; messages name only ``redact(url)``.

    Accepts ``redis://[[user]:password@]host[:port][/db]``, the same with ``rediss://`` (TLS) and
    ``unix://[[user]:password@]/path/to/socket[?db=N]``; query parameters: ``db`` and, with
    ``rediss://``, the TLS options in ``TLS_PARAMS``.
    """
    safe = redact(url)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or not url.startswith(parts.scheme + "://"):
        raise ValueError(f"{safe}: use redis://, rediss:// (TLS) or unix://")
    # '@' ends the user and password and appears nowhere else, or the host is a piece of the password.
    if "@" in parts.path + parts.query + parts.fragment:
        raise ValueError(f"{safe}: percent-encode '/', '?', '#' and '@' in the user, the password and "
                         "query values (%2F, %3F, %23, %40)")
    try:
        parts.port  # noqa: B018  (a ValueError for a port that is not a number)
    except ValueError:
        raise ValueError(f"{safe}: the port is not a number") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"{safe}: no host")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in URL_PARAMS:
            raise ValueError(f"{safe}: unknown parameter {name!r} (known: {', '.join(URL_PARAMS)})")
        if name in TLS_PARAMS and parts.scheme != "rediss":
            raise ValueError(f"{safe}: {name} needs a rediss:// (TLS) URL")
        if name in _FILE_PARAMS and not os.path.isfile(value):
            raise ValueError(f"{safe}: {name}: no such file {value!r}")
        if name == "ssl_ca_path" and not os.path.isdir(value):
            raise ValueError(f"{safe}: ssl_ca_path: no such directory {value!r}")
        if name == "ssl_cert_reqs" and value not in _CERT_REQS:
            raise ValueError(f"{safe}: ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
        if name == "ssl_check_hostname" and value.lower() not in _BOOLEANS:
            raise ValueError(f"{safe}: ssl_check_hostname must be true or false")
        if name == "db" and not value.isdigit():
            raise ValueError(f"{safe}: db must be a number")


