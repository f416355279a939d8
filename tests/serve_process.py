"""``grid-scheduler serve`` as a process of its own on a loopback port: start, wait for SERVING, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from grid_scheduler.client import Client

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
SERVING = 1  # grpc.health.v1 HealthCheckResponse.SERVING


class ServeProcess:
    """One server process; its output goes to ``log_path`` (shown when it fails to start)."""

    def __init__(self, command: Sequence[str], address: str, log_path: Path, cwd: Path | None = None) -> None:
        self.address = address
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, cwd=cwd)

    def log(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""

    def wait_serving(self) -> ServeProcess:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with Client(self.address, timeout_s=1.0) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.log()}")
                try:
                    if client.check_health() == SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not SERVING on {self.address}:\n{self.log()}")
                time.sleep(0.1)

    def terminate(self) -> int:
        """SIGTERM (a graceful shutdown) and the exit code; killed if it does not stop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
