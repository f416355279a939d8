"""The reservations ledger: one Store contract, an in-memory implementation (and Redis)."""

from grid_scheduler.state.factory import open_store
from grid_scheduler.state.memory import MemoryStore
from grid_scheduler.state.store import (
    CapacityConflict,
    Committed,
    LedgerMoved,
    LedgerSnapshot,
    Limits,
    PolicyMoved,
    Probe,
    QuotaConflict,
    StalePolicy,
    StaleRecord,
    Store,
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
    Transition,
    UnknownJob,
    Update,
    Versions,
    request_key,
    to_watts,
)

__all__ = [
    "CapacityConflict", "Committed", "LedgerMoved", "LedgerSnapshot", "Limits", "MemoryStore", "PolicyMoved", "Probe",
    "QuotaConflict",
    "StalePolicy", "StaleRecord",
    "Store",
    "StoreAccessDenied", "StoreError", "StoreUnavailable", "Transition", "UnknownJob", "Update", "Versions",
    "open_store", "request_key", "to_watts",
]
