"""A policy's effect on live work, before it is applied: live jobs re-decided under the candidate.

Pure: given the grid, current usage, the live jobs and two policies, it returns what would change.
It reserves nothing and reads no store, so the PolicyService dry run and what-if can share it.

Each job is re-decided *as if it were submitted now and alone*, with the rules the scheduler
applies at submission (``decide_with_policy``, and the capacity that waiting jobs of higher tiers
hold, built under each policy in queue order). A running job first gets its own GPUs and power
back (``preemption.release``), so it may stay where it is.

Only changes the *policy* causes are reported. A running job whose candidate answer differs from
where it runs is re-decided under the active policy too: if that answer is the same as the
candidate's, load moved since it was placed (it would move under either policy) and it is not a
policy move. Likewise a waiting job the candidate could place counts only if the active policy
could not. The second decision is made only for jobs whose answer changed, and jobs the change
cannot touch are not re-decided at all (a rule for other tenants, with the same holds), which is
what keeps a 10,000-job diff within seconds.

"Before" totals are where running jobs run now; "after" applies the policy's moves. Jobs are
judged one at a time, so the per-site and per-tenant deltas add up independent moves: what the
policy alone asks for. A real apply moves no running job (new decisions follow the policy).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from grid_scheduler.engine.explain import wait_info
from grid_scheduler.engine.fairshare import Holding, fair_order
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.engine.inference_opt import decide_with_policy
from grid_scheduler.engine.online import Decision
from grid_scheduler.engine.preemption import release
from grid_scheduler.engine.priority import Holds, Queued, Shadow, shadow
from grid_scheduler.model import JobSpec, Placement, Policy, ScoreTerms

__all__ = [
    "JobChange",
    "LiveJob",
    "Move",
    "PolicyDiff",
    "QueueShift",
    "SiteDelta",
    "TenantDelta",
    "TermChange",
    "Totals",
    "diff_policies",
    "holds_under",
    "policy_field_changes",
    "queue_shifts",
    "same_holds",
]

TERMS = ("latency", "carbon", "energy_price", "packing", "data_movement")
# Cost terms closer than this are the same (floating-point noise, not a policy effect).
TERM_EPSILON = 1e-9


@dataclass(frozen=True)
class LiveJob:
    """What the diff needs of a job: its spec, and for a running job the placement it holds."""

    id: str
    spec: JobSpec
    state: str  # "running", "pending", or a finished state for re-decided past submissions
    placement: Placement | None = None  # held now (running jobs only): released before re-deciding


@dataclass(frozen=True)
class TermChange:
    term: str  # a ScoreTerms field
    before: float
    after: float


@dataclass(frozen=True)
class Move:
    """A job that both policies place, in different pools."""

    job_id: str
    tenant: str
    state: str
    before: Placement
    after: Placement
    terms: tuple[TermChange, ...]  # the weighted cost terms that changed


@dataclass(frozen=True)
class JobChange:
    """A job that one policy places and the other cannot: the placement it has, and why the other
    policy leaves it waiting (the engine's summary sentences)."""

    job_id: str
    tenant: str
    state: str
    placement: Placement
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class QueueShift:
    """A waiting job whose turn in the queue pass moves (fair share reorders a tier by tenant):
    1-based positions in the order the pass tries waiting jobs, under each policy."""

    job_id: str
    tenant: str
    priority: int
    position_before: int
    position_after: int


@dataclass
class SiteDelta:
    site_id: str
    gpus_before: int = 0
    gpus_after: int = 0
    power_kw_before: float = 0.0
    power_kw_after: float = 0.0


@dataclass
class TenantDelta:
    tenant: str
    gpus_before: int = 0
    gpus_after: int = 0
    power_kw_before: float = 0.0
    power_kw_after: float = 0.0


@dataclass
class Totals:
    """Over every job placed under one policy."""

    jobs_placed: int = 0
    gpus: int = 0
    power_kw: float = 0.0
    carbon_kg_per_hour: float = 0.0
    energy_cost_per_hour: float = 0.0
    # Demand-weighted latency from each deployment's endpoints to the site serving them, averaged
    # over the deployments placed (training jobs have no endpoint).
    mean_inference_latency_ms: float = 0.0
    _latency_sum_ms: float = 0.0
    _deployments: int = 0

    def add(self, spec: JobSpec, placement: Placement) -> None:
        self.jobs_placed += 1
        self.gpus += placement.gpus
        self.power_kw += placement.power_kw
        self.carbon_kg_per_hour += placement.carbon_kg_per_hour
        self.energy_cost_per_hour += placement.energy_cost_per_hour
        if spec.inference is not None and placement.endpoint_latencies:
            weights = {d.endpoint: d.weight for d in spec.inference.demand}
            total = sum(weights.get(e.endpoint_id, 0.0) for e in placement.endpoint_latencies) or 1.0
            self._latency_sum_ms += sum(
                weights.get(e.endpoint_id, 0.0) * e.latency_ms for e in placement.endpoint_latencies) / total
            self._deployments += 1
            self.mean_inference_latency_ms = self._latency_sum_ms / self._deployments


@dataclass
class PolicyDiff:
    jobs_considered: int = 0
    unchanged: int = 0
    moved: list[Move] = field(default_factory=list)
    became_placeable: list[JobChange] = field(default_factory=list)
    became_unplaceable: list[JobChange] = field(default_factory=list)
    sites: list[SiteDelta] = field(default_factory=list)  # only sites whose GPUs or power change
    tenants: list[TenantDelta] = field(default_factory=list)  # only tenants whose GPUs or power change
    before: Totals = field(default_factory=Totals)
    after: Totals = field(default_factory=Totals)
    policy_changes: list[tuple[str, str, str]] = field(default_factory=list)  # (field path, before, after)
    # Waiting jobs whose turn moves, by their position under the candidate (``queue_shifts``).
    queue_shifts: list[QueueShift] = field(default_factory=list)


def queue_shifts(
    index: GridIndex, pending: Sequence[Queued], running: Sequence[Holding], current: Policy, candidate: Policy,
) -> list[QueueShift]:
    """The waiting jobs whose turn changes when ``candidate`` replaces ``current``: the order of the
    queue pass is ``fair_order`` under each (tiers first; inside a tier, by tenant share when fair
    share is on). Jobs are re-decided one at a time elsewhere in the diff, so this is the one place
    where a change of fair-share weights or of fair share itself shows."""
    if not pending or (not current.fair_share.enabled and not candidate.fair_share.enabled):
        return []
    before = {r.id: i for i, r in enumerate(fair_order(pending, running, index, current), start=1)}
    after = fair_order(pending, running, index, candidate)
    return [
        QueueShift(r.id, r.spec.tenant, r.spec.priority, before[r.id], i)
        for i, r in enumerate(after, start=1) if before[r.id] != i
    ]


def holds_under(index: GridIndex, queue: Sequence[JobSpec], policy: Policy,
                shadow_of: Callable[[int], Shadow | None] | None = None) -> Holds:
    """What the waiting jobs (``queue``, in queue order) hold under ``policy``. ``shadow_of(i)`` may
    give the ``i``-th job's shadow when the caller has it cached (None: compute it)."""
    holds = Holds(index)
    computed: dict[str, Shadow] = {}
    for i, spec in enumerate(queue):
        if spec.priority == 0:
            continue  # holds nothing (no lower tier)
        cached = shadow_of(i) if shadow_of is not None else None
        if cached is None:
            key = spec.model_dump_json(exclude={"name"})
            cached = computed.get(key)
            if cached is None:
                cached = computed[key] = shadow(index, spec, policy)
        holds.hold_for(spec, policy, cached)
    return holds


def same_holds(current: Policy, candidate: Policy) -> bool:
    """What a waiting job holds reads only the tenant rules of the policy (``priority.shadow``)."""
    return current.tenant_residency == candidate.tenant_residency


def diff_policies(
    index: GridIndex,
    usage: Usage,
    jobs: Sequence[LiveJob],
    current: Policy,
    candidate: Policy,
    current_holds: Holds,
    candidate_holds: Holds,
    *,
    exhaustive: bool = False,
) -> PolicyDiff:
    """Re-decide ``jobs`` under ``candidate`` on ``usage`` and report what the change of policy from
    ``current`` does. The holds are what the waiting jobs hold under each policy (``holds_under``).
    ``exhaustive`` re-decides every job, without the shortcuts for jobs the change cannot touch
    (same answer, slower: tests check the shortcuts against it)."""
    keys: dict[str, str] = {}  # job id -> its spec but for the name: what both deciders cache by
    before = _Decider(index, usage, current, current_holds, keys)
    after = _Decider(index, usage, candidate, candidate_holds, keys)
    touched = None if exhaustive else _touched_tenants(current, candidate)
    weights_only = not exhaustive and _weights_only(current, candidate)
    out = PolicyDiff(jobs_considered=len(jobs), policy_changes=policy_field_changes(current, candidate))
    sites = {sid: SiteDelta(sid) for sid in index.site_ids}
    tenants: dict[str, TenantDelta] = {}
    for job in jobs:
        tenant = tenants.setdefault(job.spec.tenant, TenantDelta(job.spec.tenant))
        # Where it is now: a running job's placement; a waiting job is nowhere; a past submission
        # (no state to compare with) is where the active policy would put it.
        was = job.placement if job.state == "running" else None
        if job.state not in ("running", "pending"):
            was = before.decide(job).placement
        if touched is not None and job.spec.tenant not in touched and current_holds.same_for(candidate_holds, job.spec):
            will = was  # nothing the job's decision reads has changed: its tenant's rule, what is held against it
        elif weights_only and job.state == "pending" and _gang(job.spec):
            # Whether a gang fits is whether any pool passes the checks, which read no weight:
            # a waiting gang waits under both (or both would place it now: not the policy's doing).
            will = was
        else:
            will = _policy_effect(before, after, job, was)
        for placement, totals, is_before in ((was, out.before, True), (will, out.after, False)):
            if placement is not None:
                _count(sites, tenant, placement, before=is_before)
                totals.add(job.spec, placement)
        if was is not None and will is not None:
            if _where(was) == _where(will):
                out.unchanged += 1
            else:
                out.moved.append(Move(job.id, job.spec.tenant, job.state, was, will,
                                      term_changes(was.score, will.score)))
        elif will is not None:
            out.became_placeable.append(JobChange(job.id, job.spec.tenant, job.state, will,
                                                  tuple(wait_info(index, before.decide(job), current).summary)))
        elif was is not None:
            out.became_unplaceable.append(JobChange(job.id, job.spec.tenant, job.state, was,
                                                    tuple(wait_info(index, after.decide(job), candidate).summary)))
        else:
            out.unchanged += 1
    out.sites = [d for d in sites.values() if _changed(d)]
    out.tenants = sorted((d for d in tenants.values() if _changed(d)), key=lambda d: d.tenant)
    return out


def _policy_effect(before: _Decider, after: _Decider, job: LiveJob, was: Placement | None) -> Placement | None:
    """Where the job would be under the candidate, counting only what the policy changes."""
    new = after.decide(job).placement
    if _same(new, was):
        return was
    if job.state in ("running", "pending") and _same(new, before.decide(job).placement):
        return was  # the active policy would do the same now: load moved, not the policy
    return new


def _weights_only(current: Policy, candidate: Policy) -> bool:
    """Whether the policies differ at most in their weights (and label): feasibility is the same."""
    ignored = {"weights": current.weights, "version": ""}
    return current.model_copy(update=ignored) == candidate.model_copy(update=ignored)


def _gang(spec: JobSpec) -> bool:
    return spec.inference is None and spec.gang


def _same(a: Placement | None, b: Placement | None) -> bool:
    if a is None or b is None:
        return a is b
    return _where(a) == _where(b)


def _touched_tenants(current: Policy, candidate: Policy) -> frozenset[str] | None:
    """The tenants whose decisions the change can touch; None for every tenant. When only tenant
    rules differ, only the tenants whose rule differs (the caller checks, job by job, that what the
    queue holds against it is the same under both)."""
    ignored = {"tenant_residency": {}, "version": ""}
    if current.model_copy(update=ignored) != candidate.model_copy(update=ignored):
        return None
    rules, other = current.tenant_residency, candidate.tenant_residency
    return frozenset(t for t in rules.keys() | other.keys() if rules.get(t) != other.get(t))


def term_changes(before: ScoreTerms, after: ScoreTerms) -> tuple[TermChange, ...]:
    return tuple(
        TermChange(t, getattr(before, t), getattr(after, t)) for t in TERMS
        if abs(getattr(before, t) - getattr(after, t)) > TERM_EPSILON
    )


def policy_field_changes(current: Policy, candidate: Policy) -> list[tuple[str, str, str]]:
    """Every field whose value differs, as (dotted path, before, after), in field order."""
    old, new = _flatten(current.model_dump(mode="json")), _flatten(candidate.model_dump(mode="json"))
    return [(k, old.get(k, ""), new.get(k, "")) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


# --- internals ---------------------------------------------------------------------------

class _Decider:
    """Decisions under one policy, with what the queue holds built under that policy too.

    Cached by what decides the answer: a pending (or past) job's spec, and a running job's spec
    with the placement it gives back. 10,000 live jobs are mostly a few hundred shapes."""

    def __init__(self, index: GridIndex, usage: Usage, policy: Policy, holds: Holds, keys: dict[str, str]) -> None:
        self.index, self.usage, self.policy, self.holds, self._keys = index, usage, policy, holds, keys
        self._cache: dict[tuple[str, tuple[tuple[str, int], ...]], Decision] = {}

    def decide(self, job: LiveJob) -> Decision:
        held = () if job.placement is None else tuple((a.pool_id, a.gpus) for a in job.placement.assignments)
        spec_key = self._keys.get(job.id)
        if spec_key is None:
            spec_key = self._keys[job.id] = job.spec.model_dump_json(exclude={"name"})
        key = (spec_key, held)
        decision = self._cache.get(key)
        if decision is None:
            usage = (self.usage if job.placement is None
                     else release(self.index, self.usage, [job.placement], [job.spec.tenant]))
            decision = decide_with_policy(self.index, self.holds.overlay(usage, job.spec), job.spec, self.policy)
            self._cache[key] = decision
        return decision


def _where(placement: Placement) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((a.pool_id, a.gpus) for a in placement.assignments))


def _count(sites: Mapping[str, SiteDelta], tenant: TenantDelta, placement: Placement, before: bool) -> None:
    for a in placement.assignments:
        site = sites[a.site_id]
        if before:
            site.gpus_before += a.gpus
            site.power_kw_before += a.power_kw
            tenant.gpus_before += a.gpus
            tenant.power_kw_before += a.power_kw
        else:
            site.gpus_after += a.gpus
            site.power_kw_after += a.power_kw
            tenant.gpus_after += a.gpus
            tenant.power_kw_after += a.power_kw


def _changed(d: SiteDelta | TenantDelta) -> bool:
    return d.gpus_before != d.gpus_after or abs(d.power_kw_before - d.power_kw_after) > 1e-6


def _flatten(value: object, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: str(value) if not isinstance(value, list) else ",".join(map(str, value))}
