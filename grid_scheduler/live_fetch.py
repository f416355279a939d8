"""Fetching a live server's state for a what-if run (``whatif run SCENARIO --from ADDRESS``).

The gRPC half of a live start: whatif/ speaks no gRPC, so the CLI fetches the snapshot here
and hands whatif/ the model (``whatif.live.LiveStart``).
"""

from __future__ import annotations

from grid_scheduler.client import Client
from grid_scheduler.service.live_convert import live_from_pb
from grid_scheduler.whatif.live import LiveStart

__all__ = ["fetch_live"]


def fetch_live(client: Client, address: str) -> LiveStart:
    """One consistent snapshot of the server ``client`` talks to (ScenarioService.GetLiveSnapshot)."""
    snapshot = client.live_snapshot()
    return LiveStart(address, live_from_pb(snapshot), snapshot.anonymised_jobs)

