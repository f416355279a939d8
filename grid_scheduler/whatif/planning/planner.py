"""``whatif plan``: solve, replay, compare. Every plan is judged by the same replay.

1. Aggregate the base scenario (with the plan's growth) into demand classes and capacity groups.
2. Feasibility: with every candidate at its earliest, can each target be met in the model? If
   not, stop and say which target and why (``explain.py``): no plan can meet it.
3. Choose: the least-cost plan (``model.py``); replay it through the simulator with the
   expansions as timed changes; measure the targets. If the replay misses one, re-solve with a
   tighter utilisation cap and replay again; once a replay meets them, try a looser cap (the
   model may have over-built). Bounded rounds; the chosen plan is the cheapest that met.
4. Baselines, replayed the same way: do nothing; and greedy "add where queues are longest"
   (each step adds, at its earliest date, the candidate whose groups could take the most
   waiting GPU-hours of the targets still missed in the last replay; power upgrades count
   only at sites whose peak reached 95% of the envelope) until every target is met or no
   candidate would shorten a queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from grid_scheduler.engine.index import GridIndex
from grid_scheduler.model import JobSpec
from grid_scheduler.whatif.changes import PowerUpgrade, Timeline
from grid_scheduler.whatif.metrics import HOUR_S, JobLog
from grid_scheduler.whatif.planning.aggregate import Aggregate, Group, aggregate, bound_to, job_matches
from grid_scheduler.whatif.planning.explain import explain
from grid_scheduler.whatif.planning.model import PlanModel, Solution
from grid_scheduler.whatif.planning.spec import Candidate, LoadedPlan, ResidencyTarget, SloTarget, Target
from grid_scheduler.whatif.planning.targets import Measured, measure
from grid_scheduler.whatif.scenario import LoadedScenario
from grid_scheduler.whatif.simulator import RunResult, simulate

POWER_BUSY = 0.95  # a site whose peak reached this share of its envelope is short of power


@dataclass
class Outcome:
    """One plan, replayed."""

    name: str
    expansions: list[tuple[Candidate, float]]  # candidate, in service from this day
    measured: list[Measured]
    result: RunResult
    scenario: LoadedScenario

    @property
    def cost_musd(self) -> float:
        return round(sum(c.cost_musd for c, _ in self.expansions), 6)

    @property
    def met(self) -> bool:
        return all(m.met for m in self.measured)


@dataclass
class Round:
    cap: float
    solution: Solution
    outcome: Outcome | None


@dataclass
class PlanRun:
    loaded: LoadedPlan
    agg: Aggregate
    feasibility: Solution
    infeasible: list[dict[str, object]]
    do_nothing: Outcome
    rounds: list[Round] = field(default_factory=list)
    greedy: Outcome | None = None
    greedy_steps: list[dict[str, object]] = field(default_factory=list)

    @property
    def chosen(self) -> Outcome | None:
        met = [r.outcome for r in self.rounds if r.outcome is not None and r.outcome.met]
        if met:
            return min(met, key=lambda o: o.cost_musd)
        last = [r.outcome for r in self.rounds if r.outcome is not None]
        return last[-1] if last else None

    @property
    def chosen_round(self) -> Round | None:
        chosen = self.chosen
        return next((r for r in self.rounds if r.outcome is chosen), None) if chosen else None


def with_expansions(loaded: LoadedPlan, name: str, expansions: list[tuple[Candidate, float]]) -> LoadedScenario:
    base = loaded.base
    changes = [*base.scenario.changes, *(c.at(at) for c, at in expansions)]
    scenario = base.scenario.model_copy(update={"changes": changes, "name": f"{loaded.name}-{name}"})
    timeline = Timeline(base.grid, changes, scenario.horizon_s)
    timeline.validate()
    return LoadedScenario(scenario, base.grid, base.policy, timeline, base.source, base.base_dir, base.data, base.files)


def replay(loaded: LoadedPlan, agg: Aggregate, name: str, expansions: list[tuple[Candidate, float]]) -> Outcome:
    scenario = with_expansions(loaded, name, expansions)
    result = simulate(scenario)
    index = agg.eligible.index
    measured = [measure(t, result.jobs, result.horizon_s, index, loaded) for t in loaded.plan.targets]
    return Outcome(name, expansions, measured, result, scenario)


def run_plan(loaded: LoadedPlan, say: Callable[[str], None] = lambda _: None) -> PlanRun:
    plan = loaded.plan
    agg = aggregate(loaded)
    say(f"aggregate: {len(agg.classes)} demand classes, {len(agg.groups)} capacity groups, {agg.periods} periods")
    feasibility = PlanModel(agg, plan.targets, plan.solver.utilisation_cap, feasibility=True).solve(
        plan.solver.time_limit_s)
    infeasible = explain(loaded, agg, feasibility)
    say("replaying: do nothing")
    run = PlanRun(loaded, agg, feasibility, infeasible, replay(loaded, agg, "do-nothing", []))
    if infeasible or feasibility.status not in ("OPTIMAL", "FEASIBLE"):
        return run
    _choose(loaded, agg, run, say)
    say("greedy: add where queues are longest")
    run.greedy, run.greedy_steps = greedy(loaded, agg, run.do_nothing)
    return run


def _choose(loaded: LoadedPlan, agg: Aggregate, run: PlanRun, say: Callable[[str], None]) -> None:
    """Solve and replay, searching the utilisation cap: tighter while the replay misses a target,
    looser once it meets them (a cheaper plan may meet them too); keep the cheapest that meets."""
    plan = loaded.plan
    by_id = {c.id: c for c in plan.candidates}
    cap = plan.solver.utilisation_cap
    best: Outcome | None = None
    missed_at: list[float] = []  # caps whose plan missed in the replay
    for r in range(plan.solver.max_rounds):
        solution = PlanModel(agg, plan.targets, cap).solve(plan.solver.time_limit_s)
        if solution.status not in ("OPTIMAL", "FEASIBLE") or solution.cost_musd is None:
            run.rounds.append(Round(cap, solution, None))
            break  # tighter than this, no set of candidates fits the model
        if best is not None and solution.cost_musd >= best.cost_musd:
            break  # a looser cap that buys no less is no better
        expansions = [(by_id[ch.candidate], loaded.period_start_days(ch.period)) for ch in solution.choices]
        if not expansions:
            outcome = run.do_nothing  # already replayed
        else:
            say(f"round {r + 1}: model cost ${solution.cost_musd:,.0f}M at cap {cap:.3g}; replaying")
            outcome = replay(loaded, agg, f"chosen-r{r + 1}", expansions)
        run.rounds.append(Round(cap, solution, outcome))
        if outcome.met:
            best = outcome
            looser = min(1.0, cap / plan.solver.tighten)
            if looser <= cap or any(m <= looser + 1e-9 for m in missed_at):
                break  # nothing looser left to try that has not already missed
            cap = looser
        elif best is not None:
            break  # loosened too far: the last plan that met is the answer
        else:
            missed_at.append(cap)
            cap *= plan.solver.tighten


def greedy(loaded: LoadedPlan, agg: Aggregate, start: Outcome) -> tuple[Outcome, list[dict[str, object]]]:
    plan = loaded.plan
    steps: list[dict[str, object]] = []
    current = start
    left = list(agg.effects)
    limit = plan.greedy_max_steps if plan.greedy_max_steps is not None else len(left)
    while not current.met and left and len(steps) < limit:
        missed = [t for t, m in zip(plan.targets, current.measured, strict=True) if not m.met]
        queues = _queues(loaded, agg, current, missed)
        scored = sorted(((queues.get(e.candidate.id, 0.0), e) for e in left),
                        key=lambda qe: (-qe[0], qe[1].candidate.cost_musd, qe[1].candidate.id))
        queue_gpu_h, best = scored[0]
        if queue_gpu_h <= 0:
            steps.append({"stop": "no candidate would shorten a queue of a missed target"})
            break
        added = _with_requirements(loaded, best.candidate, {c.id for c, _ in current.expansions})
        for c in added:
            left = [e for e in left if e.candidate.id != c.id]
        expansions = [*current.expansions, *((c, loaded.earliest_day(c)) for c in added)]
        current = replay(loaded, agg, f"greedy-{len(steps) + 1}", expansions)
        steps.append({"added": ", ".join(c.id for c in added), "queue_gpu_hours": round(queue_gpu_h, 3),
                      "cost_musd": current.cost_musd, "targets_met": current.met})
    final = Outcome("greedy", current.expansions, current.measured, current.result, current.scenario)
    return final, steps


def _with_requirements(loaded: LoadedPlan, candidate: Candidate, have: set[str]) -> list[Candidate]:
    """The candidate and whatever it requires that is not in the plan yet, requirements first."""
    by_id = {c.id: c for c in loaded.plan.candidates}
    out: list[Candidate] = []
    for r in candidate.requires:
        if r not in have:
            out += [c for c in _with_requirements(loaded, by_id[r], have) if c not in out]
    return [*out, candidate]


def _queues(loaded: LoadedPlan, agg: Aggregate, outcome: Outcome, missed: list[Target]) -> dict[str, float]:
    """Waiting GPU-hours, in the last replay, of missed targets' jobs that each candidate's groups could take."""
    summary_power = outcome.result.summary["power"]
    index = agg.eligible.index
    waits: list[tuple[frozenset[Group], float]] = []
    for j in outcome.result.jobs:
        wait_h = _wait_hours(j, outcome.result.horizon_s)
        if wait_h <= 0 or not any(_in_target(t, j, index, loaded) for t in missed):
            continue
        waits.append((_groups(agg, j.spec), j.spec.total_gpus * wait_h))
    out: dict[str, float] = {}
    for e in agg.effects:
        change = e.candidate.at(0)
        if isinstance(change, PowerUpgrade):
            busy = summary_power.get(change.site, {}).get("peak_over_envelope", 0.0) >= POWER_BUSY
            mine = {g for g in agg.groups if g[0] == change.site} if busy else set()
        else:
            mine = {g for by in e.gpus.values() for g in by}
        out[e.candidate.id] = sum(w for groups, w in waits if groups & mine)
    return out


def _wait_hours(j: JobLog, horizon_s: float) -> float:
    return ((j.runs[0].start_s if j.runs else horizon_s) - j.arrival_s) / HOUR_S


def _groups(agg: Aggregate, spec: JobSpec) -> frozenset[Group]:
    if spec.inference is None:
        return agg.eligible.groups_for(spec, None)
    return frozenset().union(*(agg.eligible.groups_for(spec, d.endpoint) for d in spec.inference.demand))


def _in_target(t: Target, j: JobLog, index: GridIndex, loaded: LoadedPlan) -> bool:
    if not job_matches(t, j.spec, j.source):
        return False
    if isinstance(t, SloTarget):
        inference = j.spec.inference
        return inference is not None and (not t.endpoints or any(d.endpoint in t.endpoints for d in inference.demand))
    if isinstance(t, ResidencyTarget):
        return bound_to(j.spec, t.jurisdiction, index, loaded)
    return True

