"""The trust boundary, against a real `grid-scheduler serve` process with mutual TLS and an auth config.

Certificates and keys are made at test time (tests/pki.py). Principals: alice and carol submit
for acme (carol by client certificate alone), bob for globex, acme-admin administers acme, ops is
the platform admin, plan is a planner, spammer has a tiny rate.
"""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import scenario_pb2 as spb
from grid_scheduler._proto.v1 import scenario_pb2_grpc
from grid_scheduler.client import Client
from grid_scheduler.config import load_job
from grid_scheduler.model import JobState
from grid_scheduler.service.auth import RULES
from grid_scheduler.service.convert import spec_to_pb
from grid_scheduler.service.tls import ClientTls
from tests.conftest import GRIDS, JOBS
from tests.hostile import hostile_corpus_labelled, run_corpus
from tests.net import free_port
from tests.pki import Pki

BIN = Path(sys.executable).parent
HOSTILE_SEED = 9
TOKENS = {"alice": "alice-token-0123456789", "bob": "bob-token-0123456789", "ops": "ops-token-0123456789",
          "acme-admin": "acme-admin-token-0123", "plan": "plan-token-0123456789", "spammer": "spammer-token-012345"}


def auth_config(pki: Pki) -> dict[str, object]:
    return {
        "principals": {
            "alice": {"roles": [{"role": "submitter", "tenant": "acme"}]},
            "carol": {"roles": [{"role": "submitter", "tenant": "acme"}]},
            "bob": {"roles": [{"role": "submitter", "tenant": "globex"}]},
            "acme-admin": {"roles": [{"role": "tenant-admin", "tenant": "acme"}]},
            "ops": {"roles": [{"role": "platform-admin"}]},
            "plan": {"roles": [{"role": "planner"}]},
            "spammer": {"roles": [{"role": "submitter", "tenant": "acme"}],
                        "rate": {"requests_per_s": 0.001, "burst": 3}},
        },
        "tokens": [{"principal": p, "token": t} for p, t in TOKENS.items()],
        "jwt": {"jwks_file": str(pki.jwks), "issuer": "https://idp.test", "audience": "grid-scheduler"},
        "certificates": {"carol.acme.test": "carol"},
        "tenants": {"acme": {"max_priority": 100, "max_gpus": 4096},
                    "globex": {"max_priority": 10, "allow_non_preemptible": False}},
        "rate": {"requests_per_s": 1000, "burst": 1000},
    }


class Served:
    def __init__(self, address: str, pki: Pki, process: subprocess.Popen[str]) -> None:
        self.address = address
        self.pki = pki
        self.process = process
        self.anon_cert = pki.client("anonymous.test")  # signed by the CA, mapped to no principal
        self.carol_cert = pki.client("carol.acme.test")

    def client(self, principal: str | None = None, *, token: str | None = None, cert: tuple[Path, Path] | None = None,
               tls: bool = True) -> Client:
        if token is None and principal is not None:
            token = TOKENS[principal]
        cert = cert or self.anon_cert
        creds = ClientTls(self.pki.ca, cert[0], cert[1]) if tls else None
        if not tls:
            return Client(self.address, timeout_s=10, tls=None, token=token or "")
        return Client(self.address, timeout_s=10, tls=creds, token=token or "")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("auth")
    pki = Pki(directory / "pki")
    config = directory / "auth.yaml"
    config.write_text(yaml.safe_dump(auth_config(pki)))
    address = f"127.0.0.1:{free_port()}"
    # Logs to a file, never a pipe: nobody reads a pipe while the tests run, and a full one blocks the server.
    log_file = (directory / "serve.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "grid-scheduler"), "serve", "--grid", str(GRIDS / "nscale.yaml"), "--address", address,
         "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--client-ca", str(pki.ca),
         "--auth-config", str(config), "--log-json"],
        stdout=log_file, stderr=subprocess.STDOUT, text=True,
    )
    served = Served(address, pki, process)
    deadline = time.monotonic() + 60
    with served.client() as client:
        while True:
            try:
                client.check_health()  # open without a token
                break
            except grpc.RpcError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    pytest.fail(f"server did not start:\n{(directory / 'serve.log').read_text()}")
                time.sleep(0.2)
    yield served
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log_file.close()


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    code: grpc.StatusCode = info.value.code()
    return code


def details_of(error: grpc.RpcError) -> dict[str, object]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    out: dict[str, object] = {}
    assert status is not None
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo, error_details_pb2.QuotaFailure):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                out[kind.__name__] = message
    return out


def job(tenant: str = "", priority: int = 10, gpus: int = 8, preemptible: bool = True, name: str = "t") -> ppb.JobSpec:
    spec = spec_to_pb(load_job(JOBS / "training.yaml"))
    spec.tenant = tenant
    spec.name = name
    spec.priority = priority
    spec.gpus.count = gpus
    spec.preemptible = preemptible
    return spec


# --- transport ---------------------------------------------------------------------------------

def test_plaintext_to_a_tls_server_fails(served: Served) -> None:
    with served.client("ops", tls=False) as client:
        assert code_of(lambda: client.sites()) == grpc.StatusCode.UNAVAILABLE


def test_a_client_without_a_certificate_is_refused(served: Served) -> None:
    with Client(served.address, timeout_s=5, tls=ClientTls(served.pki.ca), token=TOKENS["ops"]) as client:
        assert code_of(lambda: client.sites()) == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(served: Served) -> None:
    with served.client("ops", cert=served.pki.client("rogue", ca_signed=False)) as client:
        assert code_of(lambda: client.sites()) == grpc.StatusCode.UNAVAILABLE


# --- identity ----------------------------------------------------------------------------------

def test_no_credentials_bad_tokens_and_bad_jwts_are_unauthenticated(served: Served) -> None:
    pki = served.pki
    bad = {
        "no token, unmapped certificate": None,
        "unknown static token": "not-a-token-of-this-server",
        "expired JWT": pki.token("alice", expires_in_s=-3600),
        "wrong audience": pki.token("alice", audience="someone-else"),
        "wrong issuer": pki.token("alice", issuer="https://evil.test"),
        "foreign signing key": pki.token("alice", foreign_key=True),
        "malformed JWT": "a.b.c",
        "JWT for an unknown principal": pki.token("mallory"),
    }
    for why, token in bad.items():
        with served.client(token=token or "") as client:
            assert code_of(lambda c=client: c.sites()) == grpc.StatusCode.UNAUTHENTICATED, why
            assert code_of(lambda c=client: c.submit(job("acme"))) == grpc.StatusCode.UNAUTHENTICATED, why
    with served.client(token="") as client:
        assert client.check_health() == 1  # SERVING: health stays open


def test_a_valid_jwt_and_a_mapped_client_certificate_name_their_principals(served: Served) -> None:
    with served.client(token=served.pki.token("alice")) as client:
        reply = client.submit(job(), request_id="jwt-1")
        assert reply.job.spec.tenant == "acme"  # filled from alice's scope
    with served.client(cert=served.carol_cert) as client:  # no token: the certificate names carol
        assert client.submit(job(), request_id="cert-1").job.spec.tenant == "acme"


# --- roles ---------------------------------------------------------------------------------------

def test_a_submitter_cannot_drain_optimise_or_run_scenarios(served: Served) -> None:
    with served.client("alice") as client:
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: client.drain("sines-gb300-b")) == denied
        assert code_of(lambda: client.undrain("sines-gb300-b")) == denied
        assert code_of(lambda: client.optimize(dry_run=True)) == denied
        assert code_of(lambda: client.audit_records()) == denied
        scenarios = scenario_pb2_grpc.ScenarioServiceStub(client.channel)  # type: ignore[no-untyped-call]
        assert code_of(lambda: scenarios.StartScenario(spb.StartScenarioRequest(path="baseline.yaml"),
                                                       timeout=10)) == denied
        assert client.capacity().fleet.total_gpus > 0  # reading capacity is allowed
    with served.client("plan") as client:
        assert client.capacity().fleet.total_gpus > 0
        assert code_of(lambda: client.submit(job("acme"))) == grpc.StatusCode.PERMISSION_DENIED
    with served.client("ops") as client:
        assert client.drain("sines-gb300-b").drained
        assert not client.undrain("sines-gb300-b").drained


# --- tenant isolation --------------------------------------------------------------------------

def test_a_tenant_cannot_see_or_touch_another_tenants_jobs(served: Served) -> None:
    with served.client("alice") as alice:
        mine = alice.submit(job(name="secret-acme-job"), request_id="iso-1").job
    with served.client("bob") as bob:
        not_found = grpc.StatusCode.NOT_FOUND
        for call in (lambda: bob.get_job(mine.id), lambda: bob.cancel(mine.id), lambda: bob.complete(mine.id),
                     lambda: next(iter(bob.watch(mine.id, timeout_s=5)))):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == not_found
            # No existence oracle: the same words as for a job that never existed.
            assert info.value.details() == f"job {mine.id!r} not found"
        with pytest.raises(grpc.RpcError) as missing:
            bob.get_job("job-does-not-exist")
        assert missing.value.details() == "job 'job-does-not-exist' not found"
        assert all(j.spec.tenant == "globex" for j in bob.list_jobs())
        assert mine.id not in {j.id for j in bob.list_jobs()}
        # Replayed history: bob's watch from the start never shows acme's events.
        bob_job = bob.submit(job(preemptible=True), request_id="iso-bob").job
        seen = []
        for event in bob.watch(from_start=True, timeout_s=3):
            seen.append(event.job_id)
            if event.job_id == bob_job.id:
                break
        assert mine.id not in seen and bob_job.id in seen
        # Submitting for another tenant, and reusing its request id, are refused.
        assert code_of(lambda: bob.submit(job("acme"), request_id="iso-1")) == grpc.StatusCode.PERMISSION_DENIED
    with served.client("ops") as ops:
        assert mine.id in {j.id for j in ops.list_jobs()}
        assert ops.get_job(mine.id).state == ppb.JOB_STATE_RUNNING  # bob's cancel did nothing


def test_a_submitter_manages_only_its_own_jobs_a_tenant_admin_all_of_its_tenant(served: Served) -> None:
    with served.client("alice") as alice:
        job_id = alice.submit(job(name="alices"), request_id="own-1").job.id
    with served.client(cert=served.carol_cert) as carol:
        assert carol.get_job(job_id).id == job_id  # same tenant: readable
        assert code_of(lambda: carol.cancel(job_id)) == grpc.StatusCode.PERMISSION_DENIED
    with served.client("acme-admin") as admin:
        assert admin.cancel(job_id).state == ppb.JOB_STATE_CANCELLED


# --- limits --------------------------------------------------------------------------------------

def test_tenant_limits_refuse_with_the_limit_in_the_details(served: Served) -> None:
    cases = [("alice", job(priority=101), "PRIORITY_LIMIT", "100"),
             ("alice", job(gpus=8192), "GPU_LIMIT", "4096"),
             ("bob", job(priority=5, preemptible=False), "PREEMPTIBLE_REQUIRED", "true")]
    for principal, spec, reason, limit in cases:
        with served.client(principal) as client:
            before = len(list(client.list_jobs()))
            with pytest.raises(grpc.RpcError) as info:
                client.submit(spec)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            error_info = details_of(info.value)["ErrorInfo"]
            assert error_info.reason == reason  # type: ignore[attr-defined]
            assert error_info.metadata["limit"] == limit  # type: ignore[attr-defined]
            assert len(list(client.list_jobs())) == before  # nothing created


def test_a_principal_over_its_rate_gets_resource_exhausted_with_retry_info(served: Served) -> None:
    with served.client("spammer") as client:
        for _ in range(3):  # the burst
            client.sites()
        with pytest.raises(grpc.RpcError) as info:
            client.sites()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = details_of(info.value)["RetryInfo"]
        assert retry.retry_delay.seconds > 0  # type: ignore[attr-defined]
    with served.client("alice") as client:
        client.sites()  # the limit is per principal


# --- audit ---------------------------------------------------------------------------------------

def test_mutating_calls_are_audited_allowed_or_refused(served: Served) -> None:
    with served.client("alice") as alice:
        job_id = alice.submit(job(name="audited"), request_id="audit-1").job.id
        with pytest.raises(grpc.RpcError):
            alice.drain("sines-gb300-a")
    with served.client("bob") as bob, pytest.raises(grpc.RpcError):
        bob.cancel(job_id)
    expected = {("alice", "SubmitJob", job_id, "OK", "acme"),
                ("alice", "DrainPool", "sines-gb300-a", "PERMISSION_DENIED", ""),
                ("bob", "CancelJob", job_id, "NOT_FOUND", "")}
    deadline = time.monotonic() + 30  # records reach the store from a writer thread, in batches
    with served.client("ops") as ops:
        while True:
            records = list(ops.audit_records(page_size=1000).records)
            seen = {(r.principal, r.method.rsplit("/", 1)[-1], r.object, r.outcome, r.tenant) for r in records}
            if expected <= seen or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert expected <= seen
    with served.client("acme-admin") as admin:  # a tenant admin sees its tenant's records only
        assert {r.tenant for r in admin.audit_records(page_size=1000).records} <= {"acme"}
    out = subprocess.run(
        [str(BIN / "grid-scheduler"), "audit", "--address", served.address, "--tls-ca", str(served.pki.ca),
         "--tls-cert", str(served.anon_cert[0]), "--tls-key", str(served.anon_cert[1]), "--token", TOKENS["ops"]],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert job_id in out and "PERMISSION_DENIED" in out


def _all_audit_after(ops: Client, after: int) -> list[object]:
    out: list[object] = []
    while True:
        page = ops.audit_records(after_sequence=after, page_size=1000)
        out += list(page.records)
        if len(page.records) < 1000:
            return out
        after = page.last_sequence


def test_each_call_on_a_method_is_judged_by_its_own_credentials_and_audited_in_order(served: Served) -> None:
    # The interceptors build their wrapped handler once per method (service/handler_cache.py):
    # callers with different credentials, interleaved on the same methods, must each be judged
    # by their own, and every mutating call audited, in the order the calls were made.
    with served.client("ops") as ops:
        start = ops.audit_records(page_size=1).last_sequence
        while True:  # the newest sequence so far (pages of 1000 from there)
            page = ops.audit_records(after_sequence=start, page_size=1000)
            if not page.records:
                break
            start = page.last_sequence
    expected: list[tuple[str, str, str, str]] = []
    with served.client("alice") as alice, served.client("bob") as bob, served.client() as nobody:
        for i in range(3):
            job_id = alice.submit(job(name=f"interleaved-{i}"), request_id=f"interleaved-{i}").job.id
            expected.append(("alice", "SubmitJob", job_id, "OK"))
            assert code_of(lambda: nobody.submit(job(name="no-token"))) is grpc.StatusCode.UNAUTHENTICATED
            assert code_of(functools.partial(bob.cancel, job_id)) is grpc.StatusCode.NOT_FOUND  # not its tenant
            expected.append(("bob", "CancelJob", job_id, "NOT_FOUND"))
            assert code_of(lambda: alice.drain("sines-gb300-a")) is grpc.StatusCode.PERMISSION_DENIED
            expected.append(("alice", "DrainPool", "sines-gb300-a", "PERMISSION_DENIED"))
            assert alice.cancel(job_id).state == ppb.JOB_STATE_CANCELLED
            expected.append(("alice", "CancelJob", job_id, "OK"))
    deadline = time.monotonic() + 30  # records reach the store from a writer thread, in batches
    with served.client("ops") as ops:
        while True:
            records = _all_audit_after(ops, start)
            seen = [(r.principal, r.method.rsplit("/", 1)[-1], r.object, r.outcome)  # type: ignore[attr-defined]
                    for r in records]
            if len(seen) >= len(expected) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert seen == expected


# --- the table -----------------------------------------------------------------------------------

def test_every_method_of_every_service_has_an_entry_in_the_authorisation_table() -> None:
    from google.protobuf import descriptor_pool

    from grid_scheduler.service import server  # registers every service's descriptors

    pool = descriptor_pool.Default()
    methods = []
    for name in (server.PLACEMENT_SERVICE, server.TOPOLOGY_SERVICE, server.SCENARIO_SERVICE, server.AUDIT_SERVICE,
                 server.POLICY_SERVICE, server.AGENT_SERVICE):
        service = pool.FindServiceByName(name)
        methods += [f"/{service.full_name}/{m.name}" for m in service.methods]
    assert len(methods) >= 20
    missing = [m for m in methods if m not in RULES]
    assert not missing, f"methods without an authorisation rule (they are denied): {missing}"
    assert not set(RULES) - set(methods), "rules for methods that do not exist"


def test_serve_refuses_plaintext_beyond_loopback_without_insecure() -> None:
    result = subprocess.run([str(BIN / "grid-scheduler"), "serve", "--address", "0.0.0.0:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--insecure" in result.stderr


# --- hostile input against TLS + auth ----------------------------------------------------------

def test_hostile_corpus_against_tls_with_auth(served: Served) -> None:
    """The corpus of tests/hostile.py as the platform admin (every path open), as a submitter and
    with a bad token: no INTERNAL or UNKNOWN, still SERVING, no job created by a refused request."""
    # Not PolicyService here: a damaged ApplyPolicy may be a valid one, and this module's server is
    # shared with the policy test (tests/test_hostile.py runs those on a server of their own).
    corpus = [e for e in hostile_corpus_labelled(HOSTILE_SEED) if ".PolicyService/" not in e[0]]
    creds = ClientTls(served.pki.ca, *served.anon_cert).credentials()
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with served.client("ops") as ops, grpc.secure_channel(served.address, creds, options=options) as channel:

        def job_ids() -> object:  # background passes may place or move jobs; only creation is a request's
            return frozenset(j.id for j in ops.list_jobs())

        # Only SubmitJob creates jobs: only its entries are observed (two listings each, over TLS).
        runs = [("ops", corpus[::3], TOKENS["ops"]), ("alice", corpus[1::6], TOKENS["alice"]),
                ("bad token", corpus[3::12], "not-a-token-of-this-server")]
        outcomes = []
        for who, entries, token in runs:
            metadata = [("authorization", f"Bearer {token}")]
            submits = [e for e in entries if e[0].endswith("/SubmitJob")]
            others = [e for e in entries if not e[0].endswith("/SubmitJob")]
            # A short deadline: OptimizePending with a hostile time limit solves within the caller's deadline.
            got = run_corpus(channel, others, metadata=metadata, timeout_s=5)
            got += run_corpus(channel, submits, metadata=metadata, timeout_s=5, observe=job_ids)
            counts = Counter(o.code.name for o in got)
            print(f"hostile corpus over mTLS as {who}: {len(got)} requests; {dict(sorted(counts.items()))}")
            outcomes += got
            if who == "bad token":  # only bytes that do not parse get past to INVALID_ARGUMENT
                assert set(counts) <= {"UNAUTHENTICATED", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OK"}
                assert counts["UNAUTHENTICATED"] > len(got) // 2
        assert ops.check_health() == 1  # SERVING
        fleet = ops.capacity().fleet
        held = sum(a.gpus for j in ops.list_jobs((JobState.RUNNING,)) for a in j.placement.assignments)
        assert fleet.used_gpus == held  # the ledger still equals what running jobs hold
    broken = [o for o in outcomes if o.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)]
    assert not broken, [(o.method, o.label, o.code.name, o.details[:120]) for o in broken[:20]]
    created = [o for o in outcomes if o.refused and o.changed]
    assert not created, [(o.method, o.label, o.code.name) for o in created[:20]]
    assert len(outcomes) >= 300


def test_policy_calls_need_their_permissions_and_apply_is_audited_with_its_principal(served: Served) -> None:
    document = "weights: {carbon: 2.0}\n"
    with served.client("alice") as alice:  # a submitter: no policy at all
        assert code_of(lambda: alice.get_policy()) is grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: alice.apply_policy(document, "mine")) is grpc.StatusCode.PERMISSION_DENIED
    with served.client("plan") as planner:  # a planner may look and dry-run, not change
        assert planner.get_policy().version == 1  # serve seeded the built-in policy as version 1
        assert planner.diff_policy(document).active_version == 1
        assert code_of(lambda: planner.apply_policy(document, "greener")) is grpc.StatusCode.PERMISSION_DENIED
    with served.client("ops") as ops:
        applied = ops.apply_policy(document, "greener", expected_version=1)
        assert (applied.version, applied.applied_by, applied.reason) == (2, "ops", "greener")
        deadline = time.monotonic() + 30  # audit records reach the store from a writer thread
        while True:
            records = ops.audit_records(0, 1000).records
            calls = [(r.principal, r.method.rsplit("/", 1)[-1], r.outcome, r.object) for r in records
                     if "PolicyService" in r.method]
            if ("ops", "ApplyPolicy", "OK", "policy v2") in calls or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert ("alice", "ApplyPolicy", "PERMISSION_DENIED", "policy") in calls
    assert ("plan", "ApplyPolicy", "PERMISSION_DENIED", "policy") in calls
    assert ("ops", "ApplyPolicy", "OK", "policy v2") in calls
    assert all(call[1] in ("ApplyPolicy", "RollbackPolicy") for call in calls)  # reads are not audited


def test_quota_usage_is_scoped_to_the_callers_tenants(served: Served) -> None:
    """A tenant's own roles read its quota rows only; planners and platform admins read every row."""
    document = yaml.safe_dump({"quotas": {
        "resource_groups": [{"name": "gb300", "gpu_types": ["GB300"]}],
        "cohorts": [{"name": "c", "tenants": {"acme": {"gb300": {"nominal_gpus": 64}},
                                              "globex": {"gb300": {"nominal_gpus": 32}}}}],
    }})
    with served.client("ops") as ops:
        ops.apply_policy(document, "quotas for acme and globex")
        assert {u.tenant for u in ops.quota_usage().usage} == {"acme", "globex"}
    with served.client("plan") as planner:
        assert {u.tenant for u in planner.quota_usage().usage} == {"acme", "globex"}
    for principal, tenant in (("alice", "acme"), ("acme-admin", "acme"), ("bob", "globex")):
        with served.client(principal) as client:
            assert {u.tenant for u in client.quota_usage().usage} == {tenant}, principal
            assert {u.tenant for u in client.quota_usage("globex" if tenant == "acme" else "acme").usage} == set()
