"""The CLI against a real `grid-scheduler serve` process; reflection with `buf curl`; SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grid_scheduler.client import Client
from tests.conftest import GRIDS, JOBS
from tests.net import free_port

BIN = Path(sys.executable).parent



@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], str]]:
    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [str(BIN / "grid-scheduler"), "serve", "--grid", str(GRIDS / "nscale.yaml"), "--address", address,
         "--log-json"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 30
    with Client(address, timeout_s=1) as client:
        while True:
            try:
                client.check_health()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    raise RuntimeError(f"server did not start: {process.communicate()[0]}") from None
                time.sleep(0.2)
    yield process, address
    if process.poll() is None:
        process.kill()
        process.wait()


def cli(address: str, *args: str) -> str:
    result = subprocess.run([str(BIN / "grid-scheduler"), *args, "--address", address],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tour(served: tuple[subprocess.Popen[str], str]) -> None:
    _, address = served
    assert "sines" in cli(address, "sites")
    out = cli(address, "explain", str(JOBS / "training.yaml"))
    assert "would be placed now" in out and "why not elsewhere" in out
    submitted = json.loads(cli(address, "submit", str(JOBS / "training.yaml"), "--json", "--request-id", "r1"))
    job_id = submitted["job"]["id"]
    assert submitted["job"]["state"] == "JOB_STATE_RUNNING"
    again = json.loads(cli(address, "submit", str(JOBS / "training.yaml"), "--json", "--request-id", "r1"))
    assert again["job"]["id"] == job_id and not again.get("created", False)
    inference = cli(address, "submit", str(JOBS / "inference.yaml"))
    assert "state=running" in inference and "london ->" in inference
    waits = cli(address, "submit", str(JOBS / "training-waits.yaml"))
    assert "state=pending" in waits
    refused = cli(address, "submit", str(JOBS / "inference-refused.yaml"))
    assert "state=rejected" in refused and "oslo" in refused
    assert job_id in cli(address, "jobs")
    assert "score" in cli(address, "job", job_id)
    assert "fleet" in cli(address, "capacity")
    assert "drained" in cli(address, "drain", "sines-gb300-a")
    assert "open" in cli(address, "undrain", "sines-gb300-a")
    plan = cli(address, "optimize", "--dry-run", "--time-limit", "2")
    assert "1 pending; would place" in plan and "gap" in plan
    assert "cancelled" in cli(address, "cancel", job_id)


def test_cli_errors_are_clear(served: tuple[subprocess.Popen[str], str], tmp_path: Path) -> None:
    _, address = served
    result = subprocess.run([str(BIN / "grid-scheduler"), "job", "job-missing", "--address", address],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntenant: acme\nkind: training\ngpus: {count: -1}\n")
    result = subprocess.run([str(BIN / "grid-scheduler"), "submit", str(bad), "--address", address],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "gpus.count" in result.stderr


def test_sigterm_shuts_down_gracefully(served: tuple[subprocess.Popen[str], str]) -> None:
    process, _ = served
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0
    assert "server_stopped" in output


def test_reflection_with_buf_curl(served: tuple[subprocess.Popen[str], str]) -> None:
    _, address = served
    buf = shutil.which("buf", path=str(BIN)) or "buf"
    listing = subprocess.run([buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods",
                              f"http://{address}"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "grid_scheduler.v1.PlacementService/SubmitJob" in listing.stdout
    call = subprocess.run(
        [buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "-d", '{"tier": "TIER_AI_FACTORY"}',
         f"http://{address}/grid_scheduler.v1.TopologyService/ListSites"],
        capture_output=True, text=True, timeout=60,
    )
    assert call.returncode == 0, call.stderr
    sites = [s["id"] for s in json.loads(call.stdout)["sites"]]
    assert sites == ["monarch", "sines", "glomfjord", "loughton"]


def test_policy_commands(served: tuple[subprocess.Popen[str], str], tmp_path: Path) -> None:
    _, address = served
    greener = str(GRIDS.parent / "policies" / "greener.yaml")
    assert "policy v1" in cli(address, "policy", "show")  # serve seeded the built-in policy
    cli(address, "submit", str(JOBS / "training.yaml"))
    assert "valid" in cli(address, "policy", "validate", greener)
    diff = json.loads(cli(address, "policy", "diff", greener, "--json"))
    assert diff["active_version"] == "1" and diff["jobs_considered"] == 1
    assert "totals:" in cli(address, "policy", "diff", greener)
    stale = subprocess.run([str(BIN / "grid-scheduler"), "policy", "apply", greener, "--reason", "x",
                            "--expected-version", "7", "--address", address], capture_output=True, text=True,
                           timeout=30)
    assert stale.returncode != 0 and "ABORTED" in stale.stderr + stale.stdout
    applied = json.loads(cli(address, "policy", "apply", greener, "--reason", "greener", "--expected-version", "1",
                             "--json"))
    assert applied["version"] == "2" and applied["policy"]["label"] == "greener-2026-12"
    assert "rollback to v1" in cli(address, "policy", "rollback", "1", "--reason", "undo")
    history = cli(address, "policy", "history")
    assert "greener" in history and "undo" in history
    bad = tmp_path / "bad.yaml"
    bad.write_text("weights: {carbon: -1}\n")
    refused = subprocess.run([str(BIN / "grid-scheduler"), "policy", "validate", str(bad), "--address", address],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "document.yaml.weights.carbon" in refused.stderr + refused.stdout
