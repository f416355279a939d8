"""AuditService: the trail of mutating calls, scoped to the tenants the caller may audit."""

from __future__ import annotations

import grpc

from grid_scheduler._proto.v1 import audit_pb2 as pb
from grid_scheduler._proto.v1 import audit_pb2_grpc as pb_grpc
from grid_scheduler.model import AuditRecord
from grid_scheduler.scheduler import InvalidJob
from grid_scheduler.service.auth import Permission, current
from grid_scheduler.service.handlers import handled
from grid_scheduler.state import Store

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Records read per store call while filtering to the caller's tenants.
SCAN_BATCH = 1000


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @handled
    def ListAuditRecords(
        self, request: pb.ListAuditRecordsRequest, context: grpc.ServicerContext
    ) -> pb.ListAuditRecordsResponse:
        if request.page_size < 0:
            raise InvalidJob([("page_size", "must be >= 0")])
        if request.after_sequence < 0:
            raise InvalidJob([("after_sequence", "must be >= 0")])
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        scope = current().tenants(Permission.READ_AUDIT)
        if request.tenant and scope is not None and request.tenant not in scope:
            scope = frozenset()  # asking for a tenant out of scope shows nothing, as for an unknown tenant
        elif request.tenant:
            scope = frozenset({request.tenant})
        out: list[AuditRecord] = []
        last = request.after_sequence
        while len(out) < size:
            batch = self.store.audit_after(last, SCAN_BATCH)
            for record in batch:
                if scope is None or record.tenant in scope:
                    out.append(record)
                    if len(out) == size:
                        break
                last = record.sequence
            if len(batch) < SCAN_BATCH:
                break
        if out:
            last = out[-1].sequence
        return pb.ListAuditRecordsResponse(records=[_to_pb(r) for r in out], last_sequence=last)


def _to_pb(r: AuditRecord) -> pb.AuditRecord:
    return pb.AuditRecord(sequence=r.sequence, time=r.time, principal=r.principal, tenant=r.tenant, method=r.method,
                          object=r.object, outcome=r.outcome, detail=r.detail)
