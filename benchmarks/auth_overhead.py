"""What the trust boundary costs: SubmitJob in plaintext vs over TLS vs TLS + JWT (+ client certificates).

Four servers in this process on 127.0.0.1, each with its own scheduler and in-memory ledger
on the example grid, get the same job stream, interleaved call by call so that machine noise
falls on every configuration alike:

- ``plaintext``: no TLS, no ``--auth-config`` (every caller is the anonymous platform admin);
- ``TLS``: server TLS, no auth config;
- ``TLS + JWT``: server TLS, an auth config, every call carries an RS256 JWT that the server
  verifies against a JWKS file (signature, issuer, audience, expiry) and checks against the
  method table, the tenant scope, the tenant's limits and the principal's rate;
- ``mTLS + JWT``: the same, and the client presents a certificate signed by the client CA.

Also a health Check per configuration (open: it skips auth), so what TLS costs and what auth
costs can be told apart. Live jobs are kept under ``--window`` by cancelling the oldest (untimed).

    .venv/bin/python benchmarks/auth_overhead.py            # 2,000 submissions per configuration
    .venv/bin/python benchmarks/auth_overhead.py --quick    # 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.pki makes the certificates and the signing key

from online_placement import STATE_FROM_PB, Series, Window, cancel_quietly, timed, warm  # noqa: E402
from report import machine as report_machine  # noqa: E402
from report import write as write_report  # noqa: E402

from grid_scheduler.client import Client  # noqa: E402
from grid_scheduler.config import DEFAULT_GRID, load_grid  # noqa: E402
from grid_scheduler.logging import configure  # noqa: E402
from grid_scheduler.model import JobState  # noqa: E402
from grid_scheduler.scheduler import Scheduler  # noqa: E402
from grid_scheduler.service.auth import AuthConfig  # noqa: E402
from grid_scheduler.service.convert import spec_to_pb  # noqa: E402
from grid_scheduler.service.server import RunningServer, start_server  # noqa: E402
from grid_scheduler.service.tls import ClientTls, ServerTls  # noqa: E402
from grid_scheduler.synthetic import job_stream  # noqa: E402
from tests.pki import Pki  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "auth_overhead.json"


def auth_config(pki: Pki) -> AuthConfig:
    return AuthConfig.model_validate({
        "principals": {"bench": {"roles": [{"role": "platform-admin"}]}},
        "jwt": {"jwks_file": str(pki.jwks), "issuer": "https://idp.test", "audience": "grid-scheduler"},
        "rate": {"requests_per_s": 1e9, "burst": 1_000_000_000},
    })


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    calls = 200 if args.quick else args.calls
    configure("warning")
    started, load_at_start = time.perf_counter(), os.getloadavg()
    grid = load_grid(DEFAULT_GRID)
    jobs = job_stream(grid, calls, seed=args.seed)
    specs = [spec_to_pb(s) for s in jobs]
    pki = Pki(Path(tempfile.mkdtemp(prefix="auth-bench-")))
    server_tls = ServerTls(pki.server_cert, pki.server_key)
    mutual = ServerTls(pki.server_cert, pki.server_key, pki.ca)
    cert = pki.client("bench.client")
    token = pki.token("bench", expires_in_s=24 * 3600)
    configs: list[tuple[str, ServerTls | None, AuthConfig | None, ClientTls | None, str]] = [
        ("plaintext", None, None, None, ""),
        ("TLS", server_tls, None, ClientTls(pki.ca), ""),
        ("TLS + JWT", server_tls, auth_config(pki), ClientTls(pki.ca), token),
        ("mTLS + JWT", mutual, auth_config(pki), ClientTls(pki.ca, cert[0], cert[1]), token),
    ]
    servers: list[RunningServer] = []
    clients: list[Client] = []
    windows: list[Window] = []
    submit_series: list[Series] = []
    health_series: list[Series] = []
    try:
        for name, tls, auth, client_tls, bearer in configs:
            scheduler = Scheduler(grid)
            warm(scheduler, jobs, settle=True)  # as serve does (grid_scheduler/gc_tuning.py)
            server = start_server(scheduler, "127.0.0.1:0", tls=tls, auth=auth, pending_retry_s=None,
                                  batch_interval_s=None, retention_s=None)
            servers.append(server)
            client = Client(f"127.0.0.1:{server.port}", tls=client_tls, token=bearer)
            clients.append(client)
            for _ in range(50):  # handshake done, threads warm
                client.check_health()
                client.sites()
            windows.append(Window(args.window))
            submit_series.append(Series(f"SubmitJob ({name})"))
            health_series.append(Series(f"Health Check ({name}, no auth)"))
        for n, spec in enumerate(specs):
            order = range(len(configs)) if n % 2 else reversed(range(len(configs)))
            for i in order:
                client = clients[i]
                response = timed(submit_series[i], lambda: client.submit(spec, request_id=f"req-{n}"))  # noqa: B023
                timed(health_series[i], client.check_health)
                state = STATE_FROM_PB.get(response.job.state, JobState.REJECTED)
                for job_id in windows[i].add(response.job.id, state):
                    cancel_quietly(client.cancel, job_id)
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop(1.0)
    rows = [s.row() for pair in zip(submit_series, health_series, strict=True) for s in pair]
    base = submit_series[0].row()
    overhead = []
    for series in submit_series[1:]:
        row = series.row()
        overhead.append({
            "config": series.name,
            "p50_ratio": round(row["p50_us"] / base["p50_us"], 3),
            "p99_ratio": round(row["p99_us"] / base["p99_us"], 3),
            "throughput_ratio": round(row["calls_per_s"] / base["calls_per_s"], 3),
            "p50_added_us": round(row["p50_us"] - base["p50_us"], 1),
        })
    print(f"SubmitJob on {DEFAULT_GRID.name}, {calls} submissions per configuration, interleaved; "
          f"client and servers in this process on 127.0.0.1\n")
    print("| path | calls | p50 µs | p99 µs | mean µs | calls/s |")
    print("|---|--:|--:|--:|--:|--:|")
    for row in rows:
        print(f"| {row['path']} | {row['calls']} | {row['p50_us']:,.0f} | {row['p99_us']:,.0f} "
              f"| {row['mean_us']:,.0f} | {row['calls_per_s']:,.0f} |")
    print("\n| SubmitJob vs plaintext | p50 x | p99 x | calls/s x | p50 added µs |")
    print("|---|--:|--:|--:|--:|")
    for o in overhead:
        print(f"| {o['config']} | {o['p50_ratio']:.2f} | {o['p99_ratio']:.2f} | {o['throughput_ratio']:.2f} "
              f"| {o['p50_added_us']:,.0f} |")
    report: dict[str, Any] = {
        "benchmark": "auth_overhead",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**report_machine(load_at_start),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "grpcio": grpc.__version__},
        "config": {"calls": calls, "window": args.window, "seed": args.seed},
        "rows": rows,
        "overhead": overhead,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(args.out, report, load_at_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
