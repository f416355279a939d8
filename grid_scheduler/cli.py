"""grid-scheduler: run the service, or talk to one.

Human tables by default; ``--json`` prints the API's messages as JSON for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf.json_format import MessageToDict

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import topology_pb2 as tpb
from grid_scheduler.cli_output import print_json, print_table
from grid_scheduler.client import DEFAULT_ADDRESS, Client
from grid_scheduler.config import DEFAULT_GRID, ConfigError, load_grid, load_job, load_policy
from grid_scheduler.model import JobState
from grid_scheduler.service.tls import ClientTls, ServerTls, is_loopback

if TYPE_CHECKING:
    from grid_scheduler.scheduler import Scheduler
    from grid_scheduler.service.metrics import MetricsServer
    from grid_scheduler.whatif.live import LiveStart

STORE_ENV = "GRID_SCHEDULER_STORE"
# A live snapshot is ~190 bytes a job (benchmarks/live_snapshot.py): 256 MiB is over a million jobs.
LIVE_SNAPSHOT_MAX_BYTES = 256 * 1024 * 1024


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _guarded(lambda: args.run(args))


def _guarded(run: Callable[[], int]) -> int:
    """``run()``'s exit code; the errors a user can act on as one line on stderr and a code."""
    try:
        result: int = run()
        return result
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:
        print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # piped into head: not an error
        sys.stderr.close()
        return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors quote the command line: a store URL in it is shown without its password."""

    def error(self, message: str) -> NoReturn:
        from grid_scheduler.state.store_url import redact_text

        super().error(redact_text(message))


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grid-scheduler", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the gRPC scheduler")
    serve.add_argument("--grid", default=str(DEFAULT_GRID), help="grid file (default: the example grid)")
    serve.add_argument("--policy", default=None, help="policy file (default: built-in weights)")
    serve.add_argument("--address", default=DEFAULT_ADDRESS)
    serve.add_argument("--workers", type=int, default=16, help="gRPC worker threads for unary calls")
    serve.add_argument(
        "--processes", type=int, default=1, metavar="N",
        help="N server processes on the one address (SO_REUSEPORT), each a full replica; needs a Redis "
             "--store. SIGTERM/SIGINT stops all; if one dies the rest are stopped and serve exits 1 (default: 1)",
    )
    serve.add_argument(
        "--max-streams", type=int, default=64,
        help="most watch streams (WatchJobs, WatchScenario) open at once, each on a thread of its own "
             "beside the workers; one more is refused with RESOURCE_EXHAUSTED (default: 64)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--log-json", action="store_true", help="JSON logs even in a terminal")
    serve.add_argument(
        "--store", default=os.environ.get(STORE_ENV) or "memory",
        help="reservations ledger: 'memory' (embedded, the default) or redis://[user:password@]host:port/db "
             "(shared, durable; rediss:// for TLS, options as URL parameters: README 'Running with Redis'). "
             f"Default: ${STORE_ENV} if set, which keeps a password out of the process list",
    )
    serve.add_argument("--replace-grid", action="store_true",
                       help="Redis: record this grid file as the ledger's grid (rolling a changed grid)")
    serve.add_argument("--retention-days", type=float, default=7.0,
                       help="finished jobs (and their request ids) are forgotten this long after they end")
    serve.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM; with --tls-key)")
    serve.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    serve.add_argument("--client-ca", default=None,
                       help="mutual TLS: every client must present a certificate signed by this CA (PEM)")
    serve.add_argument("--auth-config", default=None,
                       help="principals, credentials, roles, tenant limits and rates (YAML); without it every "
                            "caller is an anonymous platform admin")
    serve.add_argument("--insecure", action="store_true",
                       help="allow plaintext on an address other than loopback (never in production)")
    serve.add_argument("--metrics-address", default=None, metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics (default: none); with --processes N, "
                            "process i serves its own counters on PORT+i")
    serve.add_argument("--heartbeat-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="a site whose agent registered and then sent no heartbeat for this long is UNHEALTHY: "
                            "no new work goes there (0: never; sites with no agent are never judged)")
    serve.add_argument("--site-grace", type=float, default=60.0, metavar="SECONDS",
                       help="after this much longer, an UNHEALTHY site's running jobs are re-queued elsewhere")
    serve.set_defaults(run=_serve)

    def client_command(
        name: str, run: Callable[[argparse.Namespace, Client], int], help: str, parent: Any = sub
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help)
        p.add_argument("--address", default=DEFAULT_ADDRESS)
        p.add_argument("--json", action="store_true", help="print JSON")
        _add_credentials(p)
        p.set_defaults(run=lambda a: _with_client(a, run))
        return p

    p = client_command("submit", _submit, "submit a job file (YAML)")
    p.add_argument("file")
    p.add_argument("--request-id", default="", help="idempotency key: resubmitting returns the same job")
    p.add_argument("--full", action="store_true", help="reasons for every site not chosen")
    p = client_command("explain", _explain, "dry run: where a job file would go now, and why not elsewhere")
    p.add_argument("file")
    p = client_command("jobs", _jobs, "list jobs")
    p.add_argument("--state", action="append", choices=[s.value for s in JobState], default=[])
    p = client_command("job", _job, "show one job")
    p.add_argument("id")
    p.add_argument("--full", action="store_true", help="reasons for every site (a waiting job: as of now)")
    p = client_command("cancel", _cancel, "cancel a job")
    p.add_argument("id")
    p = client_command("complete", _complete, "report a running job finished")
    p.add_argument("id")
    p = client_command("watch", _watch, "stream job events")
    p.add_argument("--job", default="")
    p.add_argument("--from-start", action="store_true")
    client_command("sites", _sites, "sites, pools and power")
    client_command("capacity", _capacity, "fleet capacity by site, jurisdiction, tier and GPU type")
    p = client_command("drain", _drain, "stop new work landing in a pool")
    p.add_argument("pool")
    p = client_command("undrain", _undrain, "let new work land in a pool again")
    p.add_argument("pool")
    p = client_command("optimize", _optimize, "solve all pending jobs together (CP-SAT) and commit the plan")
    p.add_argument("--dry-run", action="store_true", help="show the plan without committing it")
    p.add_argument("--time-limit", type=float, default=5.0, help="solver time limit, seconds")
    p = client_command("audit", _audit, "who changed what: submits, cancels, drains, ... allowed or refused")
    p.add_argument("--tenant", default="", help="only this tenant's records")
    p.add_argument("--after", type=int, default=0, help="records after this sequence")
    p.add_argument("--follow", action="store_true", help="keep printing new records (Ctrl-C to stop)")
    _add_policy(sub, lambda parent, name, run, help: client_command(name, run, help, parent))
    _add_fairshare(sub, lambda parent, name, run, help: client_command(name, run, help, parent))
    from grid_scheduler.policy_cli import add_quotas_parser

    add_quotas_parser(sub, lambda parent, name, run, help: client_command(name, run, help, parent))
    _add_fleet(sub, lambda parent, name, run, help: client_command(name, run, help, parent))
    _add_whatif(sub)
    return parser


def _add_credentials(p: argparse.ArgumentParser) -> None:
    env = "environment: GRID_SCHEDULER_"
    p.add_argument("--tls-ca", default=None, help=f"TLS: the CA that signed the server's certificate ({env}TLS_CA)")
    p.add_argument("--tls-cert", default=None, help=f"mutual TLS: this client's certificate ({env}TLS_CERT)")
    p.add_argument("--tls-key", default=None, help=f"mutual TLS: its private key ({env}TLS_KEY)")
    p.add_argument("--tls-server-name", default=None,
                   help=f"check the server's certificate for this name, not the address's host ({env}TLS_SERVER_NAME)")
    p.add_argument("--token", default=None, help=f"bearer token: a JWT or a static token ({env}TOKEN)")


def _add_policy(sub: Any, register: Any) -> None:
    """``policy show | history | validate | diff | apply | rollback``; handlers in grid_scheduler/policy_cli.py."""
    from grid_scheduler.policy_cli import add_parser

    add_parser(sub, register)


def _add_fairshare(sub: Any, register: Any) -> None:
    """``fairshare``; handler in grid_scheduler/fairshare_cli.py."""
    from grid_scheduler.fairshare_cli import add_parser

    add_parser(sub, register)
def _add_fleet(sub: Any, register: Any) -> None:
    """``nodes drain | undrain``, ``fleet`` and ``agent``; handlers in grid_scheduler/fleet_cli.py."""
    from grid_scheduler.fleet_cli import add_agent_parser, add_fleet_parser, add_parser

    add_parser(sub, register)
    add_fleet_parser(sub, register)
    add_agent_parser(sub, register)


def _add_whatif(sub: Any) -> None:
    """``whatif run | compare | sweep``: capacity planning; handlers in grid_scheduler/whatif/cli.py.
    ``run --from`` fetches the live state here (whatif/ speaks no gRPC)."""
    from grid_scheduler.whatif.cli import add_parser

    add_parser(sub, _add_credentials, _fetch_live)


def _fetch_live(args: argparse.Namespace) -> LiveStart:
    from grid_scheduler.live_fetch import fetch_live

    try:
        client = Client(args.from_address, timeout_s=120.0, tls=_client_tls(args), token=args.token,
                        max_receive_bytes=LIVE_SNAPSHOT_MAX_BYTES)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    with client:
        return fetch_live(client, args.from_address)


def _serve(args: argparse.Namespace) -> int:
    from grid_scheduler.logging import configure

    configure(args.log_level, json=True if args.log_json else None)
    if args.processes < 1:
        raise ConfigError("--processes: must be >= 1")
    if args.retention_days < 0:
        raise ConfigError("--retention-days: must be >= 0")
    if args.max_streams < 1:
        raise ConfigError("--max-streams: must be >= 1")
    if args.processes > 1:
        return _serve_processes(args)
    return _serve_one(args)


def _serve_processes(args: argparse.Namespace) -> int:
    """``serve --processes N``: check what every replica would refuse once, here, then supervise N."""
    from functools import partial

    from grid_scheduler.service.auth import load_auth_config
    from grid_scheduler.service.replicas import check_port_free, supervise
    from grid_scheduler.state import Limits, StoreError, open_store
    from grid_scheduler.state.factory import SCHEMES, grid_fingerprint

    if not args.store.startswith(SCHEMES):
        raise ConfigError(
            f"--processes {args.processes} needs a shared store (--store redis://...): the in-memory ledger "
            "lives in one process, so each process would book the same GPUs in a ledger of its own")
    _server_tls(args)
    try:  # first: a port another server holds fails before anything is loaded
        check_port_free(args.address)
    except (ValueError, OSError) as e:
        raise ConfigError(f"--address: {e}") from e
    if args.auth_config:
        load_auth_config(args.auth_config)
    if args.metrics_address is not None:
        _replica_metrics_address(args.metrics_address, args.processes - 1)
    grid = load_grid(args.grid)
    try:  # the grid check (and --replace-grid) once, before N processes race to it
        open_store(args.store, Limits.from_grid(grid), grid.name, grid_fingerprint(grid), args.replace_grid).close()
    except (ValueError, StoreError) as e:
        raise ConfigError(f"--store: {e}") from e
    args.replace_grid = False  # done above; a replica only claims the grid it loaded
    return supervise(partial(_serve_replica, args), args.processes)


def _serve_replica(args: argparse.Namespace, index: int) -> None:
    """One of ``serve --processes N``'s processes (spawned: a fresh interpreter); exits with its code."""
    import structlog

    from grid_scheduler.logging import configure
    from grid_scheduler.service.replicas import exit_with_parent

    configure(args.log_level, json=True if args.log_json else None)

    def tag(logger: object, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event.setdefault("replica", index)  # on every thread's lines (context variables stay on one thread)
        return event

    structlog.configure(processors=[tag, *structlog.get_config()["processors"]])
    exit_with_parent()
    sys.exit(_guarded(lambda: _serve_one(args, index)))


def _serve_one(args: argparse.Namespace, replica: int | None = None) -> int:
    """One server process; ``replica``: its index among ``--processes`` (then it shares the port)."""
    from grid_scheduler.gc_tuning import settle_heap
    from grid_scheduler.scheduler import Scheduler
    from grid_scheduler.service.auth import load_auth_config
    from grid_scheduler.service.server import serve_forever, start_server
    from grid_scheduler.state import Limits, StoreError, open_store
    from grid_scheduler.state.factory import grid_fingerprint

    tls = _server_tls(args)  # before anything is loaded: a refused address fails at once
    auth = load_auth_config(args.auth_config) if args.auth_config else None
    grid = load_grid(args.grid)
    try:
        # Redis keys are namespaced by the grid's name: replicas of one grid share a ledger.
        store = open_store(args.store, Limits.from_grid(grid), grid.name, grid_fingerprint(grid), args.replace_grid)
    except (ValueError, StoreError) as e:  # messages name the store by its redacted URL only
        raise ConfigError(f"--store: {e}") from e
    scheduler = Scheduler(grid, load_policy(args.policy, grid), store=store)
    scheduler.heartbeat_timeout_s = args.heartbeat_timeout if args.heartbeat_timeout > 0 else None
    scheduler.site_grace_s = args.site_grace
    # The policy lives in the store, versioned: the file (or the built-in one) is only its first version.
    scheduler.seed_policy(f"seeded at start-up from {args.policy}" if args.policy else "built-in default at start-up")
    settle_heap()  # the grid, index and policy are loaded: frozen out of the collector's scans (gc_tuning.py)
    metrics_address = args.metrics_address
    if metrics_address is not None and replica is not None:
        metrics_address = _replica_metrics_address(metrics_address, replica)
    metrics = _start_metrics(metrics_address, scheduler)
    try:
        running = start_server(scheduler, args.address, args.workers, retention_s=args.retention_days * 86400.0,
                               max_streams=args.max_streams, tls=tls, auth=auth, reuse_port=replica is not None)
        if metrics is not None:
            metrics.report_open_streams(lambda: running.open_streams)
        serve_forever(running)
    finally:
        if metrics is not None:
            metrics.stop()
        store.close()
    return 0


def _replica_metrics_address(address: str, replica: int) -> str:
    """Replica ``replica``'s metrics address: PORT+replica (port 0 stays 0: any free port each).

    One endpoint per process, because each process counts only what it did (Prometheus sums the
    series over the replicas, as it would over separately started ones)."""
    from grid_scheduler.service.metrics import parse_address

    try:
        host, port = parse_address(address)
    except ValueError as e:
        raise ConfigError(f"--metrics-address: {e}") from e
    if port == 0:
        return address
    if port + replica > 65535:
        raise ConfigError(f"--metrics-address: ports {port}..{port + replica} (one a process) go past 65535")
    return f"[{host}]:{port + replica}" if ":" in host else f"{host}:{port + replica}"


def _start_metrics(address: str | None, scheduler: Scheduler) -> MetricsServer | None:
    """``serve --metrics-address``: the Prometheus endpoint (grid_scheduler/service/metrics.py), or None."""
    if address is None:
        return None
    from grid_scheduler.service.metrics import start_metrics_server

    try:
        return start_metrics_server(address, scheduler)
    except (ValueError, OSError) as e:
        raise ConfigError(f"--metrics-address: {e}") from e


def _server_tls(args: argparse.Namespace) -> ServerTls | None:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        raise ConfigError("--client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
    if not args.tls_cert:
        if not is_loopback(args.address) and not args.insecure:
            raise ConfigError(
                f"--address {args.address} is reachable from other machines: serve TLS (--tls-cert, --tls-key) "
                "or, knowingly, pass --insecure")
        return None
    tls = ServerTls(Path(args.tls_cert), Path(args.tls_key), Path(args.client_ca) if args.client_ca else None)
    try:
        tls.credentials()  # unreadable files fail here, with the flag named, not at the first call
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return tls


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    """Flags first, then the environment; None (plaintext) when neither names a TLS file."""
    env = ClientTls.from_env() or ClientTls()
    tls = ClientTls(
        Path(args.tls_ca) if args.tls_ca else env.ca_file,
        Path(args.tls_cert) if args.tls_cert else env.cert_file,
        Path(args.tls_key) if args.tls_key else env.key_file,
        args.tls_server_name or env.server_name,
    )
    return tls if (tls.ca_file or tls.cert_file or tls.key_file) else None


def _with_client(args: argparse.Namespace, run: Callable[[argparse.Namespace, Client], int]) -> int:
    try:
        client = Client(args.address, tls=_client_tls(args), token=args.token)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    with client:
        return run(args, client)





def _state(value: int) -> str:
    return ppb.JobState.Name(value).removeprefix("JOB_STATE_").lower()


def _code(value: int) -> str:
    return ppb.ReasonCode.Name(value).removeprefix("REASON_CODE_").lower()


def _when(stamp: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp.ToNanoseconds() / 1e9))


def _show_job(job: ppb.Job) -> None:
    print(f"job {job.id}  {job.spec.name}  tenant={job.spec.tenant}  state={_state(job.state)}")
    if job.HasField("expected_end_time"):
        print(f"started {_when(job.start_time)}, expected to end {_when(job.expected_end_time)}")
    if job.HasField("estimated_start_time"):
        print(f"expected to start {_when(job.estimated_start_time)} (if running jobs end as expected)")
    if job.HasField("placement"):
        _show_placement(job.placement)
    if job.HasField("waiting"):
        counts = ", ".join(f"{k}: {v} sites" for k, v in sorted(job.waiting.site_counts.items()))
        print(f"waiting: {counts}")
        for line in job.waiting.summary:
            print(f"  - {line}")
    _show_reasons(job.reasons)


def _show_placement(placement: ppb.Placement) -> None:
    print_table(
        [[a.site_id, a.pool_id, a.gpu_type, a.gpus, f"{a.power_kw / 1000:.3f}"] for a in placement.assignments],
        ["site", "pool", "gpu", "gpus", "power_mw"],
    )
    s = placement.score
    print(f"score {s.total:.4f} = latency {s.latency:.4f} + carbon {s.carbon:.4f} + energy_price "
          f"{s.energy_price:.4f} + packing {s.packing:.4f} + data_movement {s.data_movement:.4f}")
    for e in placement.endpoint_latencies:
        print(f"  {e.endpoint_id} -> {e.site_id}: {e.latency_ms:.1f} ms")
    print(f"carbon {placement.carbon_kg_per_hour:.1f} kg/h, energy cost {placement.energy_cost_per_hour:.1f} /h")


def _show_reasons(reasons: Sequence[ppb.Reason]) -> None:
    if reasons:
        print("why not elsewhere:")
        print_table([[r.site_id, r.pool_id, _code(r.code), r.message] for r in reasons],
               ["site", "pool", "reason", "detail"])


def _submit(args: argparse.Namespace, client: Client) -> int:
    response = client.submit(load_job(args.file), args.request_id, args.full)
    if args.json:
        print_json(response)
    else:
        if not response.created:
            print("(same request_id as an earlier submission: that job is returned)")
        _show_job(response.job)
    return 0


def _explain(args: argparse.Namespace, client: Client) -> int:
    response = client.explain(load_job(args.file))
    if args.json:
        print_json(response)
        return 0
    print("would be placed now (dry run, nothing reserved):" if response.placeable else "would wait:")
    if response.placeable:
        _show_placement(response.placement)
    else:
        for line in response.waiting.summary:
            print(f"  - {line}")
        if response.HasField("estimated_start_time"):
            print(f"expected to start {_when(response.estimated_start_time)} if submitted now")
    _show_reasons(response.reasons)
    return 0


def _jobs(args: argparse.Namespace, client: Client) -> int:
    states = tuple(JobState(s) for s in args.state)
    jobs = list(client.list_jobs(states))
    if args.json:
        print_json(ppb.ListJobsResponse(jobs=jobs))
        return 0
    print_table(
        [[j.id, j.spec.name, j.spec.tenant, _state(j.state), j.placement.assignments[0].site_id
          if j.placement.assignments else "-", sum(a.gpus for a in j.placement.assignments)] for j in jobs],
        ["id", "name", "tenant", "state", "site", "gpus"],
    )
    return 0


def _job(args: argparse.Namespace, client: Client) -> int:
    job = client.get_job(args.id, args.full)
    print_json(job) if args.json else _show_job(job)
    return 0


def _cancel(args: argparse.Namespace, client: Client) -> int:
    job = client.cancel(args.id)
    print_json(job) if args.json else print(f"job {job.id} {_state(job.state)}")
    return 0


def _complete(args: argparse.Namespace, client: Client) -> int:
    job = client.complete(args.id)
    print_json(job) if args.json else print(f"job {job.id} {_state(job.state)}")
    return 0


def _watch(args: argparse.Namespace, client: Client) -> int:
    for event in client.watch(args.job, from_start=args.from_start):
        if args.json:
            print(json.dumps(MessageToDict(event, preserving_proto_field_name=True)), flush=True)
        else:
            print(f"{event.sequence:>6} {event.job_id} {_state(event.state):<9} {event.message}", flush=True)
    return 0


def _sites(args: argparse.Namespace, client: Client) -> int:
    sites = client.sites()
    if args.json:
        print_json(tpb.ListSitesResponse(sites=sites))
        return 0
    from grid_scheduler.fleet_cli import health_name, heartbeat_text

    health = {f.site_id: f for f in client.fleet()}
    rows = []
    for s in sites:
        free = sum(p.free_gpus for p in s.pools)
        total = sum(p.total_gpus for p in s.pools)
        drained = sum(p.drained_gpus for p in s.pools)
        f = health.get(s.id)
        rows.append([s.id, tpb.Tier.Name(s.tier).removeprefix("TIER_").lower(), ",".join(s.jurisdictions),
                     f"{s.power_used_mw:.1f}/{s.power_envelope_mw:g}", total, free, drained,
                     " ".join(sorted({p.gpu_type for p in s.pools})),
                     health_name(f.health) if f else "-", heartbeat_text(f) if f else "-"])
    print_table(rows, ["site", "tier", "jurisdictions", "power_mw used/envelope", "gpus", "free", "drained", "types",
                       "health", "last heartbeat (UTC)"])
    return 0


def _capacity(args: argparse.Namespace, client: Client) -> int:
    cap = client.capacity()
    if args.json:
        print_json(cap)
        return 0
    for title, rows in (("fleet", [cap.fleet]), ("by tier", cap.by_tier), ("by jurisdiction", cap.by_jurisdiction),
                        ("by GPU type", cap.by_gpu_type), ("by site", cap.by_site)):
        print(f"\n{title}")
        print_table([[r.key, r.total_gpus, r.used_gpus, r.free_gpus, r.drained_gpus,
                 f"{r.power_used_mw:.1f}/{r.power_envelope_mw:g}" if r.power_envelope_mw else "-"] for r in rows],
               ["key", "gpus", "used", "free", "drained", "power_mw used/envelope"])
    return 0


def _optimize(args: argparse.Namespace, client: Client) -> int:
    response = client.optimize(args.dry_run, args.time_limit)
    if args.json:
        print_json(response)
        return 0
    verb = "would place" if response.dry_run else "placed"
    committed = sum(p.committed for p in response.placements)
    print(f"{response.pending_before} pending; {verb} {len(response.placements)}"
          + ("" if response.dry_run else f" ({committed} committed)")
          + f"; {len(response.unplaced_job_ids)} still waiting")
    print(f"solver {response.solver_status} via {response.method}: objective {response.objective:.0f}, "
          f"bound {response.best_bound:.0f}, gap {response.gap:.2%}, {response.solve_time_s:.2f} s")
    print_table([[p.job_id, ", ".join(f"{a.gpus} {a.gpu_type} in {a.pool_id}" for a in p.placement.assignments),
             "yes" if p.committed else "no"] for p in response.placements], ["job", "placement", "committed"])
    return 0


def _audit(args: argparse.Namespace, client: Client) -> int:
    after = args.after
    header = True
    while True:
        page = client.audit_records(after, 1000, args.tenant)
        for r in page.records:
            if args.json:
                print(json.dumps(MessageToDict(r, preserving_proto_field_name=True)), flush=True)
                continue
            if header:
                print(f"{'seq':>6}  {'time (UTC)':<19}  {'principal':<16} {'tenant':<12} {'call':<18} "
                      f"{'outcome':<17} object")
                header = False
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.time))
            print(f"{r.sequence:>6}  {when:<19}  {r.principal:<16} {r.tenant or '-':<12} "
                  f"{r.method.rsplit('/', 1)[-1]:<18} {r.outcome:<17} {r.object}", flush=True)
        after = page.last_sequence
        if not page.records:
            if not args.follow:
                return 0
            time.sleep(1.0)


def _drain(args: argparse.Namespace, client: Client) -> int:
    pool = client.drain(args.pool)
    print_json(pool) if args.json else print(f"pool {pool.id} drained ({pool.used_gpus} GPUs still in use)")
    return 0


def _undrain(args: argparse.Namespace, client: Client) -> int:
    pool = client.undrain(args.pool)
    print_json(pool) if args.json else print(f"pool {pool.id} open: {pool.free_gpus} GPUs free")
    return 0


if __name__ == "__main__":
    sys.exit(main())
