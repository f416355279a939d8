"""Hostile input against a real server on loopback (issue 9): no INTERNAL or UNKNOWN, still
SERVING afterwards, and nothing created or reserved by a request the server refused.

The corpus (tests/hostile.py) covers every RPC of PlacementService, TopologyService and
ScenarioService with random and structured damage; run it against another server (TLS,
auth metadata) with ``run_corpus(channel, hostile_corpus(seed), metadata=...)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grid_scheduler.model import Grid, JobState
from grid_scheduler.scheduler import Scheduler
from grid_scheduler.service.server import RunningServer, start_server
from tests.hostile import METHODS, hostile_corpus, hostile_corpus_labelled, run_corpus

SEED = 9


@pytest.fixture
def quiet_server(small_grid: Grid) -> Iterator[tuple[Scheduler, RunningServer]]:
    # No background passes (pending retries, batch cycle, archiving): the ledger moves only
    # when a request moves it, so a change across a refused request is that request's doing.
    scheduler = Scheduler(small_grid)
    running = start_server(scheduler, "127.0.0.1:0", max_workers=4, pending_retry_s=None,
                           batch_interval_s=None, retention_s=None, run_limit_interval_s=None)
    yield scheduler, running
    running.stop(grace_s=0.5)


def test_the_corpus_is_deterministic_and_covers_every_rpc() -> None:
    first, second = hostile_corpus(SEED), hostile_corpus(SEED)
    assert first == second
    assert len(first) >= 300
    assert {method for method, _ in first} == set(METHODS)
    assert len(METHODS) == 37  # + GetLiveSnapshot, GetFairShare, GetQuotaUsage, agent and node RPCs


def test_hostile_corpus_gets_no_internal_or_unknown(quiet_server: tuple[Scheduler, RunningServer]) -> None:
    scheduler, running = quiet_server
    store = scheduler.store

    def observe() -> object:
        jobs = tuple((r.id, r.state, r.version) for r in store.list_jobs(frozenset(), "", 1_000_000))
        snap = store.snapshot()
        return jobs, snap.version, snap.pool_used_gpus.tolist(), snap.site_used_w.tolist(), snap.pool_drained.tolist()

    corpus = hostile_corpus_labelled(SEED)
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(f"127.0.0.1:{running.port}", options=options) as channel:
        outcomes = run_corpus(channel, corpus, observe=observe)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)

    counts = Counter(o.code.name for o in outcomes)
    print("hostile corpus:", len(outcomes), "requests;", dict(sorted(counts.items())))
    broken = [o for o in outcomes if o.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)]
    assert not broken, [(o.method, o.label, o.code.name, o.details[:120]) for o in broken[:20]]
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    changed_by_refused = [o for o in outcomes if o.refused and o.changed]
    assert not changed_by_refused, [(o.method, o.label, o.code.name) for o in changed_by_refused[:20]]
    # RESOURCE_EXHAUSTED only for messages over the receive limit, never for an error status
    # that outgrew the metadata limit; every status the server sent is well under 8 KiB.
    exhausted = [o for o in outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED and o.label != "over-4MiB"]
    assert not exhausted, [(o.method, o.label, o.details[:120]) for o in exhausted[:20]]
    assert max(o.status_bytes for o in outcomes) < 8 * 1024
    oversized = [o for o in outcomes if o.label == "over-4MiB"]
    assert oversized and {o.code for o in oversized} <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
    # The corpus is mostly refusals, and every one of them came back with a meaningful code.
    assert counts["INVALID_ARGUMENT"] > len(outcomes) // 2
    # The ledger is consistent afterwards: what running jobs hold is what the pools count as used.
    running_jobs = store.list_jobs(frozenset({JobState.RUNNING}), "", 1_000_000)
    held = sum(a.gpus for r in running_jobs for a in store.reservation(r.id))
    assert held == int(store.snapshot().pool_used_gpus.sum())
