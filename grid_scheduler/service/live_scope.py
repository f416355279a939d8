"""What a caller of GetLiveSnapshot may see of the live state: other tenants' jobs as capacity only.

A planner needs every job's capacity and constraints for a simulation to be exact, but may
not read the jobs of tenants outside its READ_JOBS scope. Such a job keeps its GPUs, power,
placement, priority, preemptibility, residency, duration and times, and loses what says who
or what it is: its id, name and tenant become opaque ids, its dataset names opaque dataset
ids, its request id and owner are dropped.

Constraints stay exact by copying, never by revealing: an opaque dataset id is added to the
grid with the real dataset's size, home and residency, and an opaque tenant id to the policy
with the real tenant's rules (every ``tenant_*`` mapping). The grid and policy themselves are not secrets from
this caller (RUN_SCENARIOS goes with READ_TOPOLOGY and READ_POLICY).

Opaque ids are HMACs under a key made when the process starts, so the same job gets the same
id in every snapshot from one server process, and no id can be turned back into a name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from grid_scheduler.model import Grid, JobRecord, JobSpec, Policy
from grid_scheduler.scheduler.live import LiveState

__all__ = ["Anonymiser", "Scoped", "scope_live"]

ANON_PREFIX = "anon-"


@dataclass(frozen=True)
class Anonymiser:
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def opaque(self, kind: str, value: str, prefix: str = ANON_PREFIX) -> str:
        digest = hmac.new(self.key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
        return f"{prefix}{digest[:16]}"

    def job_id(self, job_id: str) -> str:
        return self.opaque("job", job_id)

    def tenant(self, tenant: str) -> str:
        return self.opaque("tenant", tenant, ANON_PREFIX + "tenant-")

    def dataset(self, dataset: str) -> str:
        return self.opaque("dataset", dataset, ANON_PREFIX + "ds-")


@dataclass(frozen=True)
class Scoped:
    state: LiveState
    anonymised_ids: frozenset[str]  # the opaque ids of the jobs that were anonymised


def scope_live(state: LiveState, may_read: Callable[[str], bool], anonymiser: Anonymiser) -> Scoped:
    """``state`` as a caller who may read the jobs of the tenants ``may_read`` accepts sees it."""
    tenants: set[str] = set()
    datasets: set[str] = set()
    hidden: set[str] = set()

    def scoped(record: JobRecord) -> JobRecord:
        if may_read(record.spec.tenant):
            return record
        tenants.add(record.spec.tenant)
        datasets.update(record.spec.datasets)
        job_id = anonymiser.job_id(record.id)
        hidden.add(job_id)
        return record.model_copy(update={
            "id": job_id, "request_id": "", "owner": "", "spec": _spec(record.spec, job_id, anonymiser),
            "waiting": None,  # its reasons may name its datasets
        })

    running = tuple(scoped(r) for r in state.running)
    pending = tuple(scoped(r) for r in state.pending)
    if not hidden:
        return Scoped(state, frozenset())
    grid = _grid_with_aliases(state.grid, datasets, anonymiser)
    content = _policy_with_aliases(state.policy.policy, tenants, anonymiser)
    policy = state.policy if content is state.policy.policy else state.policy.model_copy(update={"policy": content})
    return Scoped(replace(state, grid=grid, policy=policy, running=running, pending=pending), frozenset(hidden))


def _policy_with_aliases(policy: Policy, tenants: set[str], anonymiser: Anonymiser) -> Policy:
    """Every per-tenant entry of the policy (each ``tenant_*`` mapping: residency rules, and any
    such rule added later) copied under the opaque tenant id. A tenant's jobs are all anonymised
    or none (scope is per tenant), so a per-tenant budget counts the same jobs under the alias."""
    update: dict[str, object] = {}
    for name in type(policy).model_fields:
        rules = getattr(policy, name)
        if not name.startswith("tenant_") or not isinstance(rules, dict):
            continue
        aliased = {anonymiser.tenant(t): rules[t] for t in sorted(tenants) if t in rules}
        if aliased:
            update[name] = {**rules, **aliased}
    return policy.model_copy(update=update) if update else policy


def _spec(spec: JobSpec, job_id: str, anonymiser: Anonymiser) -> JobSpec:
    update: dict[str, object] = {"name": job_id, "tenant": anonymiser.tenant(spec.tenant)}
    if spec.training is not None:
        update["training"] = spec.training.model_copy(
            update={"datasets": [anonymiser.dataset(d) for d in spec.training.datasets]})
    return spec.model_copy(update=update)


def _grid_with_aliases(grid: Grid, datasets: set[str], anonymiser: Anonymiser) -> Grid:
    if not datasets:
        return grid
    aliases = [d.model_copy(update={"id": anonymiser.dataset(d.id)}) for d in grid.datasets if d.id in datasets]
    # Through validation, so the aliased grid is as checked (unique ids, known home sites) as the file.
    return Grid.model_validate({**grid.model_dump(), "datasets": [*grid.model_dump()["datasets"],
                                                                   *[a.model_dump() for a in aliases]]})
