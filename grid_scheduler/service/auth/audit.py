"""Audit records of mutating calls: into the ledger's audit stream (every replica sees them) and the log."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from grid_scheduler.model import AuditRecord
from grid_scheduler.state import Store, StoreError

log = structlog.get_logger("grid_scheduler.audit")

MAX_FIELD = 256  # an audit record never carries more than this of any client-given string


class Auditor:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def record(self, principal: str, tenant: str, method: str, obj: str, outcome: str, detail: str = "") -> None:
        entry = AuditRecord(
            time=self.clock(), principal=principal[:MAX_FIELD], tenant=tenant[:MAX_FIELD], method=method,
            object=obj[:MAX_FIELD], outcome=outcome, detail=detail[:MAX_FIELD],
        )
        # The log line is written whatever happens to the store: it is the trail of last resort.
        log.info("audit", principal=entry.principal, tenant=entry.tenant, method=method, object=entry.object,
                 outcome=outcome, detail=entry.detail or None)
        try:
            self.store.append_audit(entry)
        except StoreError as e:
            log.warning("audit_not_stored", error=str(e), method=method, object=entry.object)
