"""Audit records of mutating calls: into the structured log at once, and into the ledger's audit
stream (every replica sees them) by a writer thread, in batches.

The store write is off the call's path: a submission on Redis would otherwise pay a round trip
for its own audit record. The log line is written before the call returns, so it is the trail
of last resort when the store is unreachable or the process dies with records still queued.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import structlog

from grid_scheduler.model import AuditRecord
from grid_scheduler.state import Store, StoreError

log = structlog.get_logger("grid_scheduler.audit")

MAX_FIELD = 256  # an audit record never carries more than this of any client-given string
MAX_QUEUED = 100_000  # beyond this, records reach the log only (and a warning says so)
BATCH = 500  # records per store write
RETRY_S = 1.0  # after a failed store write
# After the first record of a batch, the writer waits this long for more before writing. Without
# it the writer waits on the queue and every call's put wakes it (a thread switch per call on the
# SubmitJob path, and one store write per record); asleep, it is not woken, and at 500 calls/s a
# store write carries ~25 records.
LINGER_S = 0.05


class Auditor:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue(MAX_QUEUED)
        self._writer = threading.Thread(target=self._write, name="audit-writer", daemon=True)
        self._writer.start()

    def record(self, principal: str, tenant: str, method: str, obj: str, outcome: str, detail: str = "") -> None:
        entry = AuditRecord(
            time=self.clock(), principal=principal[:MAX_FIELD], tenant=tenant[:MAX_FIELD], method=method,
            object=obj[:MAX_FIELD], outcome=outcome, detail=detail[:MAX_FIELD],
        )
        log.info("audit", principal=entry.principal, tenant=entry.tenant, method=method, object=entry.object,
                 outcome=outcome, detail=entry.detail or None)
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            log.warning("audit_queue_full", method=method, object=entry.object)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every record queued so far is in the store (or ``timeout_s`` passes)."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self, timeout_s: float = 5.0) -> None:
        self.flush(timeout_s)
        self._queue.put(None)

    def _write(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            batch = [first]
            time.sleep(LINGER_S)
            while len(batch) < BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # seen again after this batch
                    self._queue.task_done()
                    break
                batch.append(more)
            while True:
                try:
                    self.store.append_audit(batch)
                    break
                except StoreError as e:
                    # Kept in order and retried: the records are already in the log.
                    log.warning("audit_not_stored", error=str(e), records=len(batch))
                    time.sleep(RETRY_S)
                except Exception:
                    log.exception("audit_write_failed", records=len(batch))
                    break
            for _ in batch:
                self._queue.task_done()
