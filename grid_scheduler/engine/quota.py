"""Quotas: the one rule for how many GPUs a tenant may hold in a resource group (Kueue's model).

Every path asks this module: the online decision (a per-pool cap in ``compute_checks``), the
queue pass (it calls the same decision), the explanation (REASON_CODE_QUOTA with numbers) and
the ledger's commit (both stores re-check the compiled limits against live usage, Redis inside
the commit script), so no two paths can disagree and racing replicas never overshoot.

The rule, per resource group, for a tenant ``t`` of a cohort (a tenant in no cohort listed is
unlimited; a listed tenant is unlimited in the groups it does not list):

- ``nominal``: what ``t`` is entitled to; ``lendable = lending_limit`` (default: all of nominal);
  ``guaranteed = nominal - lendable`` is kept for ``t`` alone.
- ``cap = nominal + borrowing_limit`` (no borrowing limit: no cap but the cohort's).
- The cohort's shared pool is the sum of its members' lendable GPUs; a member draws on it for
  every GPU beyond its guaranteed part: ``sum(max(0, used - guaranteed)) <= sum(lendable)``.

So a tenant under its nominal quota can always get back to it once the borrowers release (or
are preempted: reclaim), and nobody exceeds ``nominal + borrowing_limit``.

Usage is counted in GPUs per tenant per pool (the ledger's unit); a pool counts in the first
resource group whose selector matches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from grid_scheduler.engine.index import GridIndex, IntArray
from grid_scheduler.model import Grid, Policy, Quotas

__all__ = ["UNLIMITED", "Limit", "QuotaRow", "QuotaRules", "QuotaState", "compile_rules", "quota_table", "rules_for"]

# Stands for "no limit" where a number must travel (Lua, NumPy): far above any grid's GPUs.
UNLIMITED = 2**40


@dataclass(frozen=True)
class Limit:
    """One tenant's quota in one group, compiled."""

    tenant: str
    group: int
    cohort: str
    nominal: int
    guaranteed: int  # nominal - lendable: never lent
    cap: int  # nominal + borrowing limit; UNLIMITED without a borrowing limit


@dataclass(frozen=True)
class QuotaState:
    """The numbers behind an admission: what an explanation shows."""

    group: str
    used: int
    nominal: int
    borrowable: int  # more GPUs the tenant may take beyond its nominal quota right now
    headroom: int  # more GPUs the tenant may take now, in total


@dataclass(frozen=True)
class QuotaRules:
    groups: tuple[str, ...]
    pool_group: IntArray  # group of each pool, -1: in no group (unlimited)
    limits: Mapping[tuple[str, int], Limit]  # (tenant, group)
    members: Mapping[tuple[str, int], tuple[Limit, ...]]  # (cohort, group) -> its members' limits
    lendable: Mapping[tuple[str, int], int]  # (cohort, group) -> GPUs its members lend

    @property
    def empty(self) -> bool:
        return not self.limits

    def limited(self, tenant: str) -> bool:
        return any(t == tenant for t, _ in self.limits)

    def group_pools(self, group: int) -> IntArray:
        return np.flatnonzero(self.pool_group == group)

    def used(self, tenant_pool_gpus: Mapping[str, IntArray], tenant: str, group: int) -> int:
        row = tenant_pool_gpus.get(tenant)
        return 0 if row is None else int(row[self.pool_group == group].sum())

    def state(self, tenant_pool_gpus: Mapping[str, IntArray], tenant: str, group: int) -> QuotaState | None:
        """None when ``tenant`` is unlimited in ``group``."""
        limit = self.limits.get((tenant, group))
        if limit is None:
            return None
        key = (limit.cohort, group)
        mask = self.pool_group == group
        pool_used = 0
        mine = 0
        for m in self.members[key]:
            row = tenant_pool_gpus.get(m.tenant)
            u = 0 if row is None else int(row[mask].sum())
            pool_used += max(0, u - m.guaranteed)
            if m.tenant == tenant:
                mine = u
        shared_free = max(0, self.lendable[key] - pool_used)
        headroom = max(0, min(limit.cap - mine, max(0, limit.guaranteed - mine) + shared_free))
        borrowable = max(0, min(limit.cap, mine + headroom) - max(limit.nominal, mine))
        return QuotaState(self.groups[group], mine, limit.nominal, borrowable, headroom)

    def pool_headroom(self, tenant_pool_gpus: Mapping[str, IntArray], tenant: str) -> IntArray | None:
        """GPUs ``tenant`` may still add in each pool's group (UNLIMITED outside its quotas), or
        None when the tenant has no quota at all (the common case costs nothing)."""
        if not self.limited(tenant):
            return None
        out = np.full(len(self.pool_group), UNLIMITED, dtype=np.int64)
        for (t, g), _ in self.limits.items():
            if t == tenant:
                state = self.state(tenant_pool_gpus, tenant, g)
                assert state is not None
                out[self.pool_group == g] = state.headroom
        return out

    def over(self, tenant_pool_gpus: Mapping[str, IntArray], tenant: str, adds: Iterable[tuple[int, int]]) -> str:
        """Why adding ``adds`` ((pool, GPUs) pairs) for ``tenant`` breaks its quota; '' when it fits."""
        per_group: dict[int, int] = {}
        for pool, gpus in adds:
            g = int(self.pool_group[pool])
            if g >= 0 and (tenant, g) in self.limits:
                per_group[g] = per_group.get(g, 0) + gpus
        for g, gpus in per_group.items():
            state = self.state(tenant_pool_gpus, tenant, g)
            assert state is not None
            if gpus > state.headroom:
                return (f"quota {self.groups[g]}: tenant {tenant} uses {state.used} of nominal {state.nominal} GPUs, "
                        f"{gpus} more exceed its headroom {state.headroom}")
        return ""

    def violation(
        self, before: Mapping[str, IntArray], after: Mapping[str, IntArray], tenants: Iterable[str]
    ) -> str:
        """The ledger's commit check: for each tenant whose usage in a group grew, its cap holds and
        its cohort's shared pool did not grow past what the cohort lends. '' when the commit may go."""
        for tenant in sorted(set(tenants)):
            for (t, g), limit in self.limits.items():
                if t != tenant or self.used(after, tenant, g) <= self.used(before, tenant, g):
                    continue
                mine = self.used(after, tenant, g)
                if mine > limit.cap:
                    return f"quota {self.groups[g]}: tenant {tenant} would hold {mine} > {limit.cap} GPUs"
                key = (limit.cohort, g)
                shared_before = sum(max(0, self.used(before, m.tenant, g) - m.guaranteed) for m in self.members[key])
                shared_after = sum(max(0, self.used(after, m.tenant, g) - m.guaranteed) for m in self.members[key])
                if shared_after > max(self.lendable[key], shared_before):
                    return (f"quota {self.groups[g]}: cohort {limit.cohort} would borrow {shared_after} > "
                            f"{self.lendable[key]} GPUs it lends")
        return ""

    def may_reclaim(
        self, tenant_pool_gpus: Mapping[str, IntArray], reclaimer: str, need_gpus: int, victim: str,
        victim_pools: Iterable[int],
    ) -> bool:
        """Reclaim (Kueue's ``reclaimWithinCohort: Any``): ``reclaimer`` may evict a preemptible job of
        ``victim``, whatever its priority, when both share a cohort in a group the victim's job
        uses, the victim borrows there (holds more than its nominal quota) and the reclaimer,
        with ``need_gpus`` more, would still be within its own nominal quota there."""
        if victim == reclaimer:
            return False
        for g in {int(self.pool_group[p]) for p in victim_pools}:
            mine = self.limits.get((reclaimer, g))
            theirs = self.limits.get((victim, g))
            if g < 0 or mine is None or theirs is None or mine.cohort != theirs.cohort:
                continue
            if (self.used(tenant_pool_gpus, victim, g) > theirs.nominal
                    and self.used(tenant_pool_gpus, reclaimer, g) + need_gpus <= mine.nominal):
                return True
        return False

    def protects(
        self, tenant_pool_gpus: Mapping[str, IntArray], preemptor: str, need_gpus: int, victim: str,
        victim_pools: Iterable[int],
    ) -> bool:
        """Kueue's ``borrowWithinCohort: Never``: a job that would make its tenant borrow may not
        evict, even from a lower tier, the job of a cohort peer that holds no more than its nominal
        quota in a group the victim's job uses. Otherwise a tenant reclaiming what it lent would
        be evicted again at once by the borrower's higher-priority work, back and forth."""
        if victim == preemptor:
            return False
        for g in {int(self.pool_group[p]) for p in victim_pools}:
            mine = self.limits.get((preemptor, g))
            theirs = self.limits.get((victim, g))
            if g < 0 or mine is None or theirs is None or mine.cohort != theirs.cohort:
                continue
            if (self.used(tenant_pool_gpus, victim, g) <= theirs.nominal
                    and self.used(tenant_pool_gpus, preemptor, g) + need_gpus > mine.nominal):
                return True
        return False

    def checks_for(self, tenant: str, groups: Iterable[int], pool_ids: tuple[str, ...]) -> list[dict[str, object]]:
        """The limits a commit of ``tenant`` into ``groups`` must re-check, as the Redis script reads them."""
        out: list[dict[str, object]] = []
        for g in sorted(set(groups)):
            limit = self.limits.get((tenant, g))
            if limit is None:
                continue
            key = (limit.cohort, g)
            out.append({
                "t": tenant, "g": self.groups[g], "cap": limit.cap, "lend": self.lendable[key],
                "pools": [pool_ids[p] for p in self.group_pools(g)],
                "members": [[m.tenant, m.guaranteed] for m in self.members[key]],
            })
        return out


def _pool_groups(grid: Grid, quotas: Quotas) -> IntArray:
    out = []
    for site in grid.sites:
        for pool in site.pools:
            group = -1
            for g, rg in enumerate(quotas.resource_groups):
                if ((not rg.gpu_types or pool.gpu_type in rg.gpu_types)
                        and (not rg.jurisdictions or bool(site.tags & set(rg.jurisdictions)))
                        and (not rg.tiers or site.tier.value in rg.tiers)
                        and (not rg.sites or site.id in rg.sites)):
                    group = g
                    break
            out.append(group)
    return np.array(out, dtype=np.int64)


def compile_rules(grid: Grid, quotas: Quotas) -> QuotaRules:
    names = tuple(g.name for g in quotas.resource_groups)
    group_of = {n: i for i, n in enumerate(names)}
    limits: dict[tuple[str, int], Limit] = {}
    members: dict[tuple[str, int], list[Limit]] = {}
    lendable: dict[tuple[str, int], int] = {}
    for cohort in quotas.cohorts:
        for tenant, groups in sorted(cohort.tenants.items()):
            for name, q in sorted(groups.items()):
                g = group_of[name]
                lend = q.nominal_gpus if q.lending_limit_gpus is None else q.lending_limit_gpus
                cap = UNLIMITED if q.borrowing_limit_gpus is None else q.nominal_gpus + q.borrowing_limit_gpus
                limit = Limit(tenant, g, cohort.name, q.nominal_gpus, q.nominal_gpus - lend, cap)
                limits[(tenant, g)] = limit
                members.setdefault((cohort.name, g), []).append(limit)
                lendable[(cohort.name, g)] = lendable.get((cohort.name, g), 0) + lend
    return QuotaRules(names, _pool_groups(grid, quotas), limits,
                      {k: tuple(v) for k, v in members.items()}, lendable)


# Compiled rules per (grid index, quotas object): a policy's quotas compile once, not per decision.
_CACHE: dict[tuple[int, int], tuple[GridIndex, Quotas, QuotaRules]] = {}


def policy_rules(index: GridIndex, policy: Policy) -> QuotaRules | None:
    """The policy's quotas compiled for this grid; None when it sets none (every path asks this)."""
    return rules_for(index, policy.quotas) if policy.quotas.cohorts else None


def rules_for(index: GridIndex, quotas: Quotas) -> QuotaRules:
    key = (id(index), id(quotas))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is index and hit[1] is quotas:
        return hit[2]
    if len(_CACHE) > 64:
        _CACHE.clear()
    rules = compile_rules(index.grid, quotas)
    _CACHE[key] = (index, quotas, rules)
    return rules


@dataclass(frozen=True)
class QuotaRow:
    """One tenant in one resource group: usage against quota (``grid-scheduler quotas``)."""

    tenant: str
    cohort: str
    group: str
    used_gpus: int
    nominal_gpus: int
    borrowing_limit_gpus: int | None
    lending_limit_gpus: int | None
    borrowed_gpus: int
    borrowable_gpus: int
    headroom_gpus: int


def quota_table(index: GridIndex, quotas: Quotas, tenant_pool_gpus: Mapping[str, IntArray],
                tenant: str = "") -> list[QuotaRow]:
    """Every (tenant, group) with a quota (only ``tenant``'s when given), in cohort, tenant, group order."""
    rules = rules_for(index, quotas)
    group_of = {n: i for i, n in enumerate(rules.groups)}
    rows = []
    for cohort in quotas.cohorts:
        for name, groups in sorted(cohort.tenants.items()):
            if tenant and name != tenant:
                continue
            for group, q in sorted(groups.items(), key=lambda kv: group_of[kv[0]]):
                state = rules.state(tenant_pool_gpus, name, group_of[group])
                assert state is not None
                rows.append(QuotaRow(name, cohort.name, group, state.used, q.nominal_gpus, q.borrowing_limit_gpus,
                                     q.lending_limit_gpus, max(0, state.used - q.nominal_gpus), state.borrowable,
                                     state.headroom))
    return rows
