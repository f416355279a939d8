#!/usr/bin/env bash
# Install smoke test (issue 8): README command 1's bare install, in a fresh temporary venv (never
# .venv), then the server on a free loopback port with the example grid, and every service driven
# once through the CLI (plus ScenarioService, which the CLI does not call, with a short Python
# snippet). Any failing step prints its output and exits non-zero; the server is killed on exit.
#
#   bash scripts/smoke_install.sh
#
# Every step runs under `timeout`. Needs python3 >= 3.11 and the package registries.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gs-smoke.XXXXXX")"
VENV="$WORK/venv"
SERVER_PID=""
START=$SECONDS

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- server log (last 40 lines) ---"
    tail -n 40 "$WORK/server.log"
  fi
  rm -rf "$WORK"
  echo "smoke_install: $([ "$rc" -eq 0 ] && echo passed || echo "FAILED (exit $rc)") in $((SECONDS - START)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step SECONDS CMD...: run CMD under timeout; its output goes to $OUT; on failure show it and stop.
OUT=""
step() {
  local limit=$1 rc=0
  shift
  OUT="$(timeout "$limit" "$@" 2>&1)" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ", timed out after ${limit} s")): ${*#"$VENV/bin/"}"
    echo "$OUT"
    exit 1
  fi
  echo "ok  $(printf '%4d' $((SECONDS - START))) s  ${*#"$VENV/bin/"}"
}

# fail MESSAGE: a check on a command's output failed; show the output.
fail() { echo "FAILED: $1"; echo "$OUT"; exit 1; }

# --- README command 1, the install part: a bare `pip install -e .`, no extra -------------------
step 120 python3 -m venv "$VENV"
step 900 "$VENV/bin/pip" install -e .
step 60 "$VENV/bin/pip" check
step 30 "$VENV/bin/pip" freeze
echo "    resolved: $(echo "$OUT" | grep -iE '^(ortools|protobuf|grpcio)==' | tr '\n' ' ')"

PY="$VENV/bin/python"
GS="$VENV/bin/grid-scheduler"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ADDRESS="127.0.0.1:$PORT"
export ADDRESS

# --- the server: README command 1's `serve`, on a free loopback port -----------------------------
# TMPDIR: ScenarioService writes its reports under the temp dir; keep them in $WORK.
TMPDIR="$WORK" timeout 1200 "$GS" serve --address "$ADDRESS" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# Wait for the health service to say SERVING (status 1), at most 60 s.
for i in $(seq 120); do
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "FAILED: the server exited while starting"; exit 1; }
  if timeout 10 "$PY" -c '
import os, sys
from grid_scheduler.client import Client
with Client(os.environ["ADDRESS"], timeout_s=2.0) as c:
    sys.exit(0 if c.check_health() == 1 else 1)' >/dev/null 2>&1; then
    break
  fi
  [ "$i" -eq 120 ] && { echo "FAILED: the server was not SERVING on $ADDRESS after 60 s"; exit 1; }
  sleep 0.5
done
echo "ok  $(printf '%4d' $((SECONDS - START))) s  grid-scheduler serve --address $ADDRESS (health: SERVING)"

A=(--address "$ADDRESS")
job_id() { echo "$OUT" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["job"]["id"])'; }
state() { echo "$OUT" | "$PY" -c 'import json, sys; d = json.load(sys.stdin); print(d.get("job", d)["state"])'; }

# --- TopologyService ---------------------------------------------------------------------------
step 60 "$GS" sites "${A[@]}"
step 60 "$GS" capacity "${A[@]}"

# --- PlacementService --------------------------------------------------------------------------
step 60 "$GS" explain examples/jobs/training.yaml "${A[@]}"
step 60 "$GS" submit examples/jobs/training.yaml --request-id smoke-1 --json "${A[@]}"
JOB="$(job_id)"
[ "$(state)" = "JOB_STATE_RUNNING" ] || fail "training.yaml should be RUNNING"
step 60 "$GS" submit examples/jobs/training.yaml --request-id smoke-1 --json "${A[@]}"
[ "$(job_id)" = "$JOB" ] || fail "a second submit with the same --request-id gave a new job (first: $JOB)"
step 60 "$GS" submit examples/jobs/training-waits.yaml "${A[@]}"   # PENDING: something for optimize
step 60 "$GS" submit examples/jobs/inference.yaml --json "${A[@]}"
INFERENCE="$(job_id)"
step 60 "$GS" jobs "${A[@]}"
echo "$OUT" | grep -q "$JOB" || fail "jobs does not list $JOB"
step 60 "$GS" job "$JOB" --full "${A[@]}"
step 120 "$GS" optimize --dry-run --time-limit 2 "${A[@]}"
step 120 "$GS" optimize --time-limit 2 "${A[@]}"
step 60 "$GS" drain sines-gb300-b "${A[@]}"
step 60 "$GS" undrain sines-gb300-b "${A[@]}"
step 60 "$GS" complete "$INFERENCE" "${A[@]}"
step 60 "$GS" cancel "$JOB" --json "${A[@]}"
[ "$(state)" = "JOB_STATE_CANCELLED" ] || fail "cancel did not leave $JOB CANCELLED"

# --- ScenarioService (no CLI command calls it): the quickest example scenario, on the server ---
step 300 "$PY" - <<'EOF'
import os
import time

import grpc

from grid_scheduler._proto.v1 import scenario_pb2 as pb
from grid_scheduler._proto.v1 import scenario_pb2_grpc as pb_grpc

with grpc.insecure_channel(os.environ["ADDRESS"]) as channel:
    stub = pb_grpc.ScenarioServiceStub(channel)
    op = stub.StartScenario(pb.StartScenarioRequest(path="norway-eea-not-eu.yaml"), timeout=30).operation
    deadline = time.monotonic() + 240
    while not op.done and time.monotonic() < deadline:
        time.sleep(0.5)
        op = stub.GetScenario(pb.GetScenarioRequest(id=op.id), timeout=30).operation
    assert op.state == pb.SCENARIO_STATE_SUCCEEDED, f"{op.id}: {pb.ScenarioState.Name(op.state)} {op.error}"
    report = stub.GetScenarioReport(pb.GetScenarioReportRequest(id=op.id), timeout=30)
    assert report.metrics and report.summary_json, "empty report"
    print(f"{op.id} succeeded: {len(report.metrics)} metrics, {len(report.files)} files")
EOF

# --- what-if from the CLI: the quickest example scenario (14 simulated days, a few seconds) ------
step 300 "$GS" whatif run examples/scenarios/norway-eea-not-eu.yaml --quiet --out "$WORK/whatif"
[ -s "$WORK/whatif/report.html" ] || fail "whatif run wrote no report.html"

# --- whatif sweep --ray in the bare install (no [ray] extra): refused, naming the extra ---------
rc=0
OUT="$(timeout 60 "$GS" whatif sweep examples/scenarios/norway-eea-not-eu.yaml --param seed=1,2 \
  --out "$WORK/sweep" --ray auto --quiet 2>&1)" || rc=$?
{ [ "$rc" -eq 2 ] && echo "$OUT" | grep -qF "pip install 'grid-scheduler[ray]'"; } \
  || fail "whatif sweep --ray without ray installed: expected exit 2 naming the extra, got exit $rc"
[ ! -e "$WORK/sweep" ] || fail "whatif sweep --ray without ray wrote to --out"
echo "ok  $(printf '%4d' $((SECONDS - START))) s  grid-scheduler whatif sweep --ray auto (no ray: refused, names the extra)"

kill -0 "$SERVER_PID" 2>/dev/null || { echo "FAILED: the server died during the smoke test"; exit 1; }
