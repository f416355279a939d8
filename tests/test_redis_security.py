"""The Redis trust boundary: passwords, ACL users and TLS, and a password that never leaks.

Real redis-servers started here: one with ``requirepass`` and an ACL user limited to
``ACL_COMMANDS`` on keys ``~gs:*`` (the README's example), one TLS-only with mutual TLS
(certificates made here). The store works through them in-process and through a real
``grid-scheduler serve``; a wrong password fails with a clear message; and no password
appears in any error text, traceback, ``repr``, log line or the serve process's output.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import grpc
import pytest
import structlog

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler.client import Client
from grid_scheduler.model import AuditRecord, Grid, JobSpec, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import start_server
from grid_scheduler.state import Limits, StoreAccessDenied, StoreUnavailable, open_store
from grid_scheduler.state.factory import batch_commit_store, batch_lease
from grid_scheduler.state.lease import LeaseKeeper
from grid_scheduler.state.redis_conn import ACL_COMMANDS
from grid_scheduler.state.redis_store import RedisStore
from grid_scheduler.state.store_url import check_url, redact, redact_text
from tests.conftest import GRIDS, ROOT
from tests.net import free_port
from tests.redis_fixture import RedisServer, TlsFiles, make_tls

BIN = Path(sys.executable).parent
USER = "gs-scheduler"
# Passwords with characters a URL must percent-encode: the raw and the encoded forms must both stay hidden.
PASSWORD = "Pw-7f3a9c1e/s@cr?t#"
ADMIN_PASSWORD = "Adm-42d9e0b7-secret"
WRONG_PASSWORD = "Wrong-9b1c55aa-pw"
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), ADMIN_PASSWORD, WRONG_PASSWORD)
SPEC = JobSpec.model_validate({"name": "t", "tenant": "acme", "kind": "training", "gpus": {"count": 8}})


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a password leaked: {text[:2000]}"


def user_url(server: RedisServer, password: str = PASSWORD, user: str = USER, query: str = "") -> str:
    scheme = "rediss" if server.tls else "redis"
    if server.tls and not query:
        query = server.tls.client_query()
    return f"{scheme}://{user}:{quote(password, safe='')}@127.0.0.1:{server.port}/0" + (f"?{query}" if query else "")


def add_acl_user(server: RedisServer, user: str = USER, commands: tuple[str, ...] = ACL_COMMANDS) -> None:
    """The README's ACL user: only the store's commands, only keys under gs:."""
    with server.admin() as admin:
        admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{PASSWORD}", "~gs:*", "resetchannels",
                              "-@all", *(f"+{c}" for c in commands))


# redis-py's optional connection set-up, which it sends on newer Redis and carries on without when
# refused: not a command the store needs (Redis 7.0 does not know them, so nothing is logged there).
OPTIONAL_HANDSHAKE = ("client|setinfo", "client|maint_notifications")


def acl_denials(server: RedisServer) -> list[dict[str, Any]]:
    """What Redis refused since the last ACL LOG RESET (every refusal is logged there)."""
    with server.admin() as admin:
        entries: list[dict[str, Any]] = admin.acl_log()  # type: ignore[assignment]
    return [e for e in entries if str(e.get("object")) not in OPTIONAL_HANDSHAKE]


def full_text(error: BaseException) -> str:
    """The message, the whole chain and the traceback, as a log line with exc_info would render them."""
    return "".join(traceback.format_exception(error)) + repr(error)


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-acl"), password=ADMIN_PASSWORD).start()
    add_acl_user(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), password=ADMIN_PASSWORD, tls=tls_files).start()
    add_acl_user(server)
    yield server
    server.stop()


@pytest.fixture(params=["plain", "tls"])
def secured(request: pytest.FixtureRequest) -> RedisServer:
    """Each secured server in turn: password + ACL user, and the same over mutual TLS."""
    server: RedisServer = request.getfixturevalue("acl_server" if request.param == "plain" else "tls_server")
    with server.admin() as admin:
        admin.execute_command("ACL", "LOG", "RESET")
    return server


# --- the URL helper, no server -------------------------------------------------------------


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://gs:pw@127.0.0.1:6379/0", "redis://gs:***@127.0.0.1:6379/0"),
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://pw@h/0", "redis://***@h/0"),  # userinfo without ':' may be a bare password
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("rediss://gs:p%40w@h:6380/0?ssl_ca_certs=/ca.pem&ssl_password=kp", "rediss://gs:***@h:6380/0?ssl_ca_certs=/ca.pem&ssl_password=***"),
    ("redis://h/0?password=pw", "redis://h/0?password=***"),
    ("unix://gs:pw@/run/redis.sock?db=1", "unix://gs:***@/run/redis.sock?db=1"),
    ("redis://gs:p/w?x#y@h:1/0", "redis://gs:***@h:1/0"),  # unescaped delimiters: still hidden
    ("redis://gs:p@w@h:1/0", "redis://gs:***@h:1/0"),
    ("redis:/gs:pw@h", "redis:***@h"),
])
def test_redact_keeps_the_user_and_hides_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert redact_text(f"bad: '{url}' here") == f"bad: '{shown}' here"


@pytest.mark.parametrize(("url", "message"), [
    (f"redis://{USER}:Pw-a/b-7f3a9c1e@h:1/0", "percent-encode"),  # redis-py would read 'Pw-a' as the port
    (f"redis://{USER}:Pw?q-7f3a9c1e@h:1/0", "percent-encode"),
    (f"redis://{USER}:Pw-7f3a9c1e@h:port/0", "the port is not a number"),
    (f"redis://{USER}:Pw-7f3a9c1e@h:1/0?ssl_ca_certs=/etc/hosts", "needs a rediss://"),
    (f"rediss://{USER}:Pw-7f3a9c1e@h:1/0?ssl_ca_cert=/etc/hosts", "unknown parameter 'ssl_ca_cert'"),
    (f"rediss://{USER}:Pw-7f3a9c1e@h:1/0?ssl_ca_certs=/nonexistent/ca.pem", "no such file"),
    (f"rediss://{USER}:Pw-7f3a9c1e@h:1/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
    (f"rediss://{USER}:Pw-7f3a9c1e@h:1/0?ssl_check_hostname=off", "ssl_check_hostname must be true or false"),
    (f"redis://{USER}:Pw-7f3a9c1e@h:1/0?socket_timeout=60", "unknown parameter 'socket_timeout'"),
    (f"redis://{USER}:Pw-7f3a9c1e@h:1/0?password=Pw-7f3a9c1e", "unknown parameter 'password'"),
    (f"redi://{USER}:Pw-7f3a9c1e@h:1/0", "unknown store"),
])
def test_a_bad_store_url_is_refused_without_its_password(url: str, message: str, small_grid: Grid) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        open_store(url, Limits.from_grid(small_grid), "g")
    text = full_text(caught.value)
    assert "Pw-" not in text and "7f3a9c1e" not in text
    assert f"{USER}:***@" in str(caught.value)


def test_check_url_accepts_the_documented_forms(tls_files: TlsFiles) -> None:
    check_url("redis://127.0.0.1:6379/0")
    check_url(f"redis://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:6379/0")
    check_url(f"rediss://{USER}:pw@redis.example:6380/0?{tls_files.client_query()}&ssl_cert_reqs=required")
    check_url("unix://gs:pw@/run/redis/redis.sock?db=2")


def test_the_readme_documents_the_acl_the_store_needs() -> None:
    """The README's worked example lists exactly ACL_COMMANDS (which the tests below run under)."""
    readme = (ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines() if "ACL SETUSER" in line or line.lstrip().startswith("+")]
    assert lines, "README: no ACL SETUSER example"
    documented = set(re.findall(r"\+([a-z|]+)", "\n".join(lines)))
    assert documented == set(ACL_COMMANDS)
    assert "~gs:*" in readme


def test_every_command_the_lua_scripts_call_is_in_the_acl() -> None:
    """A script that starts calling a new command must add it to ACL_COMMANDS (and the README)."""
    state = ROOT / "grid_scheduler" / "state"
    called = {c.lower() for path in state.glob("*.py")
              for c in re.findall(r"redis\.call\('([A-Za-z]+)'", path.read_text())}
    assert called, "no redis.call found: the scan is broken"
    assert called - set(ACL_COMMANDS) == set()


# --- in-process: a Scheduler on the secured servers ------------------------------------------


def test_the_scheduler_works_as_the_acl_user(secured: RedisServer, small_grid: Grid) -> None:
    """Every command path of the store and the lease, as a user limited to ACL_COMMANDS: Redis denies nothing."""
    url = user_url(secured)
    name = f"acl-{uuid4().hex[:8]}"
    store = RedisStore(Limits.from_grid(small_grid), url, name)
    assert_no_secret(repr(store))
    try:
        assert store.claim_grid("sha-1") == "sha-1"
        store.replace_grid("sha-1")
        scheduler = Scheduler(small_grid, store=store)
        placed = scheduler.submit(SPEC, request_id="r-1").record
        assert placed.state is JobState.RUNNING, placed
        assert scheduler.submit(SPEC, request_id="r-1").created is False
        assert store.reservation(placed.id)
        pool = store.reservation(placed.id)[0].pool_id
        assert scheduler.set_drained(pool, True) and scheduler.set_drained(pool, False)
        assert scheduler.cancel(placed.id).state is JobState.CANCELLED
        done = scheduler.submit(SPEC).record
        assert scheduler.complete(done.id).state is JobState.COMPLETED
        assert store.list_jobs(frozenset(), "", 10) and store.pending_jobs() == []
        assert store.events_after(0, 0.1) and store.first_sequence() == 1 and store.last_sequence() >= 4
        assert store.snapshot().version >= 1
        assert scheduler.archive_finished(retention_s=0) == 2
        audit = store.append_audit([AuditRecord(time=1.0, principal="p", method="/m", outcome="OK")] * 2)
        assert [r.sequence for r in store.audit_after(0, 10)] == [r.sequence for r in audit]
        # The batch lease, fenced commits and renewals.
        lease = batch_lease(store, ttl_s=30)
        assert lease is not None
        assert_no_secret(repr(lease))
        with batch_commit_store(store, lease) as fenced:
            assert fenced is not None
            scheduler.submit(SPEC)
            assert scheduler.optimize_pending(time_limit_s=1, commit_to=fenced) is not None
        token = lease.acquire()
        assert token is not None and lease.check(token) and lease.holder() is not None
        LeaseKeeper(lease, token).stop()
        assert lease.renew(token) and lease.release(token)
        lease.close()
        # After a Redis restart the script cache is empty: the store loads its scripts again (SCRIPT LOAD).
        with secured.admin() as admin:
            admin.script_flush()
        assert scheduler.submit(SPEC).record.state is JobState.RUNNING
        assert store.healthy()
    finally:
        store.close()
    assert acl_denials(secured) == []


def test_a_command_outside_the_acl_is_refused_clearly(acl_server: RedisServer, small_grid: Grid) -> None:
    """The negative control: the ACL is enforced, and the refusal says which command and where to look."""
    add_acl_user(acl_server, "gs-no-xadd", tuple(c for c in ACL_COMMANDS if c != "xadd"))
    store = RedisStore(Limits.from_grid(small_grid), user_url(acl_server, user="gs-no-xadd"), f"acl-{uuid4().hex[:8]}")
    try:
        with pytest.raises(StoreAccessDenied, match="denied a command to this user") as caught:
            Scheduler(small_grid, store=store).submit(SPEC)
        assert "gs-no-xadd:***@" in str(caught.value)
        assert_no_secret(full_text(caught.value))
        denied = {(str(entry["username"]), str(entry["object"])) for entry in acl_denials(acl_server)}
        assert ("gs-no-xadd", "xadd") in denied, denied
    finally:
        store.close()


def test_a_wrong_password_fails_cleanly(secured: RedisServer, small_grid: Grid) -> None:
    with pytest.raises(StoreAccessDenied, match="refused the user and password") as caught:
        open_store(user_url(secured, WRONG_PASSWORD), Limits.from_grid(small_grid), "wrong", "sha")
    assert f"{USER}:***@127.0.0.1:{secured.port}" in str(caught.value)
    assert_no_secret(full_text(caught.value))


def test_an_unknown_user_and_no_password_fail_cleanly(acl_server: RedisServer, small_grid: Grid) -> None:
    for url in (user_url(acl_server, user="nobody"), f"redis://127.0.0.1:{acl_server.port}/0"):
        store = RedisStore(Limits.from_grid(small_grid), url, "wrong")
        with pytest.raises(StoreAccessDenied) as caught:
            store.snapshot()
        assert not store.healthy()
        assert_no_secret(full_text(caught.value))
        store.close()


def test_rotated_credentials_give_unavailable_without_the_password(
    acl_server: RedisServer, small_grid: Grid
) -> None:
    """The ACL user's password changes under a running server: calls fail UNAVAILABLE naming the redacted
    URL, nothing logged carries the password, and the server recovers once the password is back."""
    add_acl_user(acl_server)
    old_config = structlog.get_config()  # debug too (another test may have configured warnings only)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
                        cache_logger_on_first_use=False)
    store = RedisStore(Limits.from_grid(small_grid), user_url(acl_server), f"rot-{uuid4().hex[:8]}")
    running = start_server(Scheduler(small_grid, store=store), "127.0.0.1:0", max_workers=4, health_poll_s=0.1,
                           pending_retry_s=0.2, batch_interval_s=None)
    try:
        with structlog.testing.capture_logs() as logs, Client(f"127.0.0.1:{running.port}", timeout_s=10) as client:
            assert client.submit(SPEC).job.state
            with acl_server.admin() as admin:
                admin.execute_command("ACL", "SETUSER", USER, "resetpass", f">{WRONG_PASSWORD}")
                admin.execute_command("CLIENT", "KILL", "USER", USER)
            with pytest.raises(grpc.RpcError) as caught:
                client.submit(SPEC)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            details = caught.value.details() or ""
            # The client learns only that the ledger is unavailable; the detail (redacted) goes to the log.
            assert "ledger is unavailable" in details and USER not in details and "127.0.0.1" not in details
            assert_no_secret(details)
            deadline = time.monotonic() + 30

            def logged() -> bool:  # the health probe noticed, and the retry loop logged its (redacted) error
                return any(e.get("event") == "dependency_unavailable" for e in logs) and any(
                    "***@" in str(e.get("error", "")) for e in logs)

            while not logged() and time.monotonic() < deadline:
                time.sleep(0.05)
            add_acl_user(acl_server)  # the password is back
            while True:
                try:
                    client.submit(SPEC)
                    break
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
                    time.sleep(0.1)
        assert logged(), logs
        assert_no_secret(json.dumps(logs, default=repr))
    finally:
        running.stop(grace_s=0.5)
        store.close()
        structlog.configure(**old_config)


# --- TLS ---------------------------------------------------------------------------------------


def test_a_plaintext_client_is_refused_by_the_tls_server(tls_server: RedisServer, small_grid: Grid) -> None:
    refused = {
        "plaintext": f"redis://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{tls_server.port}/0",
        "no client certificate": user_url(tls_server, query=f"ssl_ca_certs={tls_server.tls.ca}"),  # type: ignore[union-attr]
        "server not verified (system CAs)": user_url(tls_server, query=(
            f"ssl_certfile={tls_server.tls.client_cert}&ssl_keyfile={tls_server.tls.client_key}")),  # type: ignore[union-attr]
    }
    for why, url in refused.items():
        store = RedisStore(Limits.from_grid(small_grid), url, f"tls-{uuid4().hex[:8]}")
        with pytest.raises(StoreUnavailable, match="is unavailable") as caught:
            store.snapshot()
        assert not isinstance(caught.value, StoreAccessDenied), why  # refused before any password was sent
        assert_no_secret(full_text(caught.value))
        store.close()
    with tls_server.admin() as admin:
        assert admin.dbsize() >= 0  # the server is still up for the right client


def test_ssl_cert_reqs_none_skips_server_verification(tls_server: RedisServer, small_grid: Grid) -> None:
    """A documented escape hatch (testing only): no CA file, ssl_cert_reqs=none, client certificate still shown."""
    tls = tls_server.tls
    assert tls is not None
    url = user_url(tls_server, query=f"ssl_cert_reqs=none&ssl_certfile={tls.client_cert}&ssl_keyfile={tls.client_key}")
    store = RedisStore(Limits.from_grid(small_grid), url, f"tls-{uuid4().hex[:8]}")
    try:
        assert store.snapshot().version == 0
    finally:
        store.close()


# --- a real `grid-scheduler serve` -------------------------------------------------------------


def serve(store_url: str, *extra: str, env_store: bool = False) -> tuple[subprocess.Popen[str], str]:
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ)
    args = [str(BIN / "grid-scheduler"), "serve", "--grid", str(GRIDS / "small.yaml"), "--address", address,
            "--log-json", "--log-level", "debug", *extra]
    if env_store:
        env["GRID_SCHEDULER_STORE"] = store_url
    else:
        args += ["--store", store_url]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return process, address


def wait_serving(process: subprocess.Popen[str], address: str) -> None:
    deadline = time.monotonic() + 30
    with Client(address, timeout_s=1) as client:
        while True:
            try:
                client.check_health()
                return
            except grpc.RpcError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    out, err = process.communicate()
                    raise RuntimeError(f"server did not start:\n{out}\n{err}") from None
                time.sleep(0.2)


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    if process.poll() is None:
        process.terminate()
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


@pytest.mark.parametrize("env_store", [False, True], ids=["--store", "GRID_SCHEDULER_STORE"])
def test_serve_as_the_acl_user_logs_no_password(secured: RedisServer, env_store: bool) -> None:
    process, address = serve(user_url(secured), env_store=env_store)
    try:
        wait_serving(process, address)
        with Client(address, timeout_s=10) as client:
            job = client.submit(SPEC, request_id=f"serve-{uuid4().hex[:8]}").job
            assert job.state == ppb.JOB_STATE_RUNNING, job
            assert client.cancel(job.id).state == ppb.JOB_STATE_CANCELLED
            client.drain("manchester-h100")
            client.undrain("manchester-h100")
            stream = client.watch(from_start=True, timeout_s=10)
            assert next(iter(stream)).sequence >= 1
            stream.cancel()  # type: ignore[attr-defined]
    finally:
        out, err = stop(process)
    assert_no_secret(out + err)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    started = [line for line in lines if line.get("event") == "server_started"]
    assert started and started[0]["store"] == redact(user_url(secured)), lines
    assert any(line.get("event") == "server_stopped" for line in lines)
    assert acl_denials(secured) == []


def test_serve_with_a_wrong_password_exits_with_a_clear_error(secured: RedisServer) -> None:
    process, _ = serve(user_url(secured, WRONG_PASSWORD))
    out, err = stop_when_exited(process)
    assert process.returncode == 2, err
    assert f"error: --store: redis at {redact(user_url(secured, WRONG_PASSWORD))} refused the user and password" in err
    assert "Traceback" not in err
    assert_no_secret(out + err)


def test_serve_usage_errors_hide_the_password(acl_server: RedisServer) -> None:
    process, _ = serve(user_url(acl_server), "--storee", user_url(acl_server, WRONG_PASSWORD))
    out, err = stop_when_exited(process)
    assert process.returncode == 2 and "unrecognized arguments" in err, err
    assert_no_secret(out + err)


def stop_when_exited(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"serve did not exit:\n{out}\n{err}") from None
