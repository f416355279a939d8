"""The aggregated capacity-expansion model (CP-SAT): which candidates, in which period, at least cost.

Variables: ``start[k, q]`` (candidate k enters service at the start of period q, at most once,
never before its lead time) and ``x[c, g, p]`` (GPU-hours of demand class c served by group g
in period p, in units of ``unit_h`` GPU-hours). Constraints, per period p:

- a class is served at most its demand, only by groups it is eligible for;
- a group serves at most ``cap`` x its GPU-hours (base + candidates started by p);
- a site draws, on average over the period, at most its envelope (base + upgrades started);
- every target's classes together are served at least ``need`` x their demand, where need is
  the target's ``min`` (SLO attainment, residency coverage) or all of it (queue delay).

Objective: least capital cost; among equal costs, later starts (capital spent later).

Simplifications, stated because the replay is there to catch them: no packing (a 8,192-GPU
gang "fits" in eight 1,024-GPU holes), no queueing within a period (demand and capacity are
period totals; ``cap`` < 1 stands in for the slack queues need), no priorities or preemption
(work no target covers may be left unserved by the model, yet it takes capacity in the replay),
averaged power, and a delivery or cut mid-period counts for the period's worst moment.

Before the cost model, a **feasibility** model lets every target fall short (slack per target
and period) with every candidate free: a positive slack is a target that no plan can meet, and
the classes and sites behind it say why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from grid_scheduler.whatif.planning.aggregate import Aggregate, Group
from grid_scheduler.whatif.planning.spec import QueueDelayTarget, Target

UNITS_PER_PERIOD = 100_000  # the largest period's demand in model units: keeps coefficients small


@dataclass(frozen=True)
class Choice:
    candidate: str
    period: int


@dataclass
class Solution:
    status: str  # OPTIMAL | FEASIBLE | INFEASIBLE | UNKNOWN
    cost_musd: float | None = None
    bound_musd: float | None = None
    choices: list[Choice] = field(default_factory=list)
    served_share: dict[int, list[float]] = field(default_factory=dict)  # target -> per period
    predicted: dict[int, float] = field(default_factory=dict)  # target -> the model's value of its metric
    shortfall: dict[int, list[float]] = field(default_factory=dict)  # feasibility: target -> share short
    wall_s: float = 0.0
    cap: float = 1.0


def need_share(target: Target) -> float:
    return 1.0 if isinstance(target, QueueDelayTarget) else target.min


def judged(target: Target, p: int, period_days: float) -> bool:
    """A target is judged in the periods that start on or after its ``from_days``."""
    return p * period_days >= target.from_days - 1e-9


class PlanModel:
    """One CP-SAT model over an ``Aggregate``; ``feasibility=True`` frees candidates and adds slack."""

    def __init__(self, agg: Aggregate, targets: list[Target], cap: float, *, feasibility: bool = False) -> None:
        self.agg, self.targets, self.cap, self.feasibility = agg, targets, cap, feasibility
        peak = max((sum(c.gpu_hours[p] for c in agg.classes) for p in range(agg.periods)), default=1.0)
        self.unit_h = max(1.0, peak / UNITS_PER_PERIOD)
        self.m = cp_model.CpModel()
        self.start: dict[tuple[int, int], cp_model.IntVar] = {}
        self.x: dict[tuple[int, Group, int], cp_model.IntVar] = {}
        self.by_group: dict[tuple[Group, int], list[cp_model.IntVar]] = {}
        self.served: dict[tuple[int, int], cp_model.LinearExpr] = {}
        self.slack: dict[tuple[int, int], cp_model.IntVar] = {}
        self.demand_units: dict[tuple[int, int], int] = {}
        self._starts()
        self._requires()
        self._service()
        self._capacity()
        self._power()
        self._targets()
        self._objective()

    # --- one function per constraint family --------------------------------------------------
    def _starts(self) -> None:
        for k, e in enumerate(self.agg.effects):
            qs = range(e.earliest, self.agg.periods)
            for q in qs:
                self.start[(k, q)] = self.m.new_bool_var(f"start[{e.candidate.id},{q}]")
            if qs:
                self.m.add_at_most_one(self.start[(k, q)] for q in qs)
                if self.feasibility:  # what the best plan money can buy: everything, as early as it can be
                    self.m.add(self.start[(k, e.earliest)] == 1)

    def _requires(self) -> None:
        """A candidate is in service only while every candidate it requires is (a pool needs its site)."""
        index = {e.candidate.id: k for k, e in enumerate(self.agg.effects)}
        for k, e in enumerate(self.agg.effects):
            for dep in e.candidate.requires:
                for p in range(self.agg.periods):
                    self.m.add(self._active(k, p) <= self._active(index[dep], p))

    def _active(self, k: int, p: int) -> cp_model.LinearExprT:
        return sum((self.start[(k, q)] for q in range(self.agg.effects[k].earliest, p + 1)), start=0)

    def _service(self) -> None:
        possible = self._possible_groups()
        for c, cls in enumerate(self.agg.classes):
            for p in range(self.agg.periods):
                demand = math.ceil(cls.gpu_hours[p] / self.unit_h - 1e-9)
                self.demand_units[(c, p)] = demand
                xs = []
                for g in sorted(cls.groups & possible[p]):
                    v = self.m.new_int_var(0, demand, f"x[{c},{g},{p}]")
                    self.x[(c, g, p)] = v
                    self.by_group.setdefault((g, p), []).append(v)
                    xs.append(v)
                self.served[(c, p)] = cp_model.LinearExpr.sum(xs)
                if xs:
                    self.m.add(sum(xs) <= demand)

    def _possible_groups(self) -> list[set[Group]]:
        out: list[set[Group]] = []
        for p in range(self.agg.periods):
            groups = {g for (g, pp), n in self.agg.base_gpus.items() if pp == p and n > 0}
            for e in self.agg.effects:
                for (_, pp), by_group in e.gpus.items():
                    if pp == p:
                        groups |= set(by_group)
            out.append(groups)
        return out

    def _group_units(self, gpus: int, p: int) -> int:
        return math.floor(gpus * self.agg.period_hours[p] * self.cap / self.unit_h)

    def _capacity(self) -> None:
        agg = self.agg
        for p in range(agg.periods):
            for g in agg.groups:
                used = self.by_group.get((g, p), [])
                if not used:
                    continue
                added = [self._group_units(e.gpus[(q, p)].get(g, 0), p) * self.start[(k, q)]
                         for k, e in enumerate(agg.effects) for q in range(e.earliest, p + 1)
                         if e.gpus.get((q, p), {}).get(g, 0) > 0]
                self.m.add(sum(used) <= self._group_units(agg.base_gpus.get((g, p), 0), p) + sum(added, start=0))

    def _power(self) -> None:
        """Average MW over the period, in tenths of a kWh: GPU-hours x kW per GPU <= MW x 1000 x hours."""
        agg = self.agg
        sites = sorted({g[0] for g in agg.groups})
        for p in range(agg.periods):
            hours = agg.period_hours[p]
            for site in sites:
                terms = [round(self.unit_h * agg.group_kw_per_gpu[g] * 10) * v
                         for g in agg.groups if g[0] == site for v in self.by_group.get((g, p), [])]
                if not terms:
                    continue
                base = math.floor(agg.base_envelope_mw.get((site, p), 0.0) * 1000 * hours * 10)
                upgrades = [math.floor(e.add_mw[site] * 1000 * hours * 10) * self._active(k, p)
                            for k, e in enumerate(agg.effects) if site in e.add_mw]
                self.m.add(sum(terms) <= base + sum(upgrades, start=0))

    def _targets(self) -> None:
        for t, target in enumerate(self.targets):
            share = need_share(target)
            members = [c for c, cls in enumerate(self.agg.classes) if t in cls.targets]
            for p in range(self.agg.periods):
                if not judged(target, p, self.agg.period_days):
                    continue
                demand = sum(self.demand_units[(c, p)] for c in members)
                need = math.ceil(share * demand - 1e-9)
                if need <= 0:
                    continue
                served = cp_model.LinearExpr.sum([self.served[(c, p)] for c in members])
                if self.feasibility:
                    s = self.slack[(t, p)] = self.m.new_int_var(0, need, f"slack[{t},{p}]")
                    self.m.add(served + s >= need)
                else:
                    self.m.add(served >= need)

    def _objective(self) -> None:
        if self.feasibility:
            self.m.minimize(sum(self.slack.values(), start=0))
            return
        effects = self.agg.effects
        later = len(effects) * self.agg.periods + 1  # a thousand dollars outweighs every tie-break
        self.m.minimize(sum(
            (round(e.candidate.cost_musd * 1000) * later + (self.agg.periods - q)) * self.start[(k, q)]
            for (k, q) in self.start for e in [effects[k]]
        ))

    def _predicted(self, target: Target, served: int, demand: int) -> float:
        """The model's value of the target's metric: the served share, or for a queue-delay target
        0 h if every judged period is served in full, else a period (the rest waits for the next)."""
        share = served / demand if demand else 1.0
        if isinstance(target, QueueDelayTarget):
            return 0.0 if share >= 1.0 - 1e-9 else self.agg.period_days * 24.0
        return share

    # --- solving ---------------------------------------------------------------------------------
    def solve(self, time_limit_s: float) -> Solution:
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = time_limit_s
        solver.parameters.num_workers = 1  # with a fixed seed, repeatable unless the limit binds
        solver.parameters.random_seed = 0
        code = solver.solve(self.m)
        status = solver.status_name(code)
        out = Solution(status=status, wall_s=solver.wall_time, cap=self.cap)
        if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return out
        later = len(self.agg.effects) * self.agg.periods + 1
        if not self.feasibility:
            out.cost_musd = round(sum(self.agg.effects[k].candidate.cost_musd
                                      for (k, q), v in self.start.items() if solver.value(v)), 6)
            out.bound_musd = round(math.floor(solver.best_objective_bound / later) / 1000, 6)
            out.choices = [Choice(self.agg.effects[k].candidate.id, q)
                           for (k, q), v in sorted(self.start.items()) if solver.value(v)]
        for t in range(len(self.targets)):
            members = [c for c, cls in enumerate(self.agg.classes) if t in cls.targets]
            shares = []
            total_demand = total_served = 0
            for p in range(self.agg.periods):
                demand = sum(self.demand_units[(c, p)] for c in members)
                served = sum(solver.value(self.served[(c, p)]) for c in members)
                shares.append(served / demand if demand else 1.0)
                if judged(self.targets[t], p, self.agg.period_days):
                    total_demand, total_served = total_demand + demand, total_served + served
            out.served_share[t] = shares
            out.predicted[t] = self._predicted(self.targets[t], total_served, total_demand)
            if self.feasibility:
                out.shortfall[t] = [
                    solver.value(self.slack[(t, p)]) / max(sum(self.demand_units[(c, p)] for c in members), 1)
                    if (t, p) in self.slack else 0.0 for p in range(self.agg.periods)]
        return out
