"""The plan file: a base scenario, demand growth, candidate expansions with costs, and targets.

Loading is all-or-nothing and, like a scenario, names the field and line of every problem
(``candidates[1].change.site``). A candidate's ``change`` is a timed change of the scenario
format *without* ``at_days``: the planner chooses when. Candidates are checked against the
base scenario's grid by building every grid the scenario makes with all of them in force at
their earliest dates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from grid_scheduler.config import ConfigError
from grid_scheduler.model import JobKind, ResidencyRule
from grid_scheduler.model.grid import Id
from grid_scheduler.whatif.changes import (
    DAY_S,
    AddPool,
    AddSite,
    Change,
    ChangeProblem,
    GpuDelivery,
    PowerUpgrade,
    Timeline,
)
from grid_scheduler.whatif.locate import compose
from grid_scheduler.whatif.scenario import (
    LoadedScenario,
    Problem,
    ScenarioError,
    _problem,
    _pydantic_problems,
    load_scenario,
)
from grid_scheduler.whatif.workload import Scaling

Loc = tuple[str | int, ...]
Expansion = AddSite | AddPool | GpuDelivery | PowerUpgrade
EXPANSION_KINDS = ("gpu_delivery", "add_pool", "add_site", "power_upgrade")
_CHANGE: TypeAdapter[Change] = TypeAdapter(Change)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Candidate(_Frozen):
    id: Id
    cost_musd: float = Field(ge=0, description="capital cost, $M")
    lead_time_days: float = Field(default=0.0, ge=0, description="earliest in service, days from the start")
    change: dict[str, Any] = Field(description="a timed change without at_days: " + ", ".join(EXPANSION_KINDS))
    requires: list[Id] = Field(default_factory=list,
                               description="candidates that must be in service first (the site a pool goes into)")
    note: str = ""

    @model_validator(mode="after")
    def _expansion(self) -> Candidate:
        kind = self.change.get("kind")
        if kind not in EXPANSION_KINDS:
            raise PydanticCustomError("candidate", "change.kind must be one of {k}", {"k": ", ".join(EXPANSION_KINDS)})
        if "at_days" in self.change:
            raise PydanticCustomError("candidate", "change.at_days is chosen by the planner: give lead_time_days")
        return self

    def at(self, at_days: float) -> Expansion:
        change = _CHANGE.validate_python({**self.change, "at_days": at_days})
        assert isinstance(change, AddSite | AddPool | GpuDelivery | PowerUpgrade)
        return change


class Growth(_Frozen):
    """Demand growth: matching arrivals are repeated ``factor`` times over the whole horizon."""

    factor: float = Field(gt=0, le=1000)
    kind: JobKind | None = None
    tenants: list[str] = Field(default_factory=list)
    endpoints: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    residency: ResidencyRule | None = None


class _Filter(_Frozen):
    """Which jobs a target is about; empty lists match every job."""

    job_kind: JobKind | None = None
    tenants: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list, description="trace rule or stream names")
    from_days: float = Field(default=0.0, ge=0, description="judge only jobs arriving from this day on")


class SloTarget(_Filter):
    """Share of wanted inference demand-hours served within the SLO, over ``endpoints`` (all if empty)."""

    kind: Literal["slo_attainment"]
    min: float = Field(gt=0, le=1)
    endpoints: list[str] = Field(default_factory=list)


class QueueDelayTarget(_Filter):
    """p95 of the time from arrival to first start; a job never started counts its whole wait."""

    kind: Literal["queue_delay_p95"]
    max_hours: float = Field(gt=0)


class ResidencyTarget(_Filter):
    """Share of GPU-hours wanted by jobs bound to ``jurisdiction`` that were served in it."""

    kind: Literal["residency_coverage"]
    jurisdiction: str = Field(min_length=1)
    min: float = Field(gt=0, le=1)


Target = Annotated[SloTarget | QueueDelayTarget | ResidencyTarget, Field(discriminator="kind")]


class SolverSettings(_Frozen):
    time_limit_s: float = Field(default=10.0, gt=0, le=600)
    utilisation_cap: float = Field(default=0.85, gt=0, le=1, description="usable share of capacity in the model")
    max_rounds: int = Field(default=3, ge=1, le=10, description="solve+replay rounds searching the cap")
    tighten: float = Field(default=0.85, gt=0, lt=1, description="cap multiplier per extra round")


class Plan(_Frozen):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    scenario: str = Field(min_length=1, description="base scenario file, relative to the plan file")
    horizon_days: float | None = Field(default=None, gt=0, le=3650, description="absent: the scenario's")
    period_days: float = Field(gt=0, description="the model's time step; candidates start at period starts")
    growth: list[Growth] = Field(default_factory=list)
    candidates: list[Candidate] = Field(default_factory=list)
    targets: list[Target] = Field(min_length=1)
    solver: SolverSettings = Field(default_factory=SolverSettings)
    greedy_max_steps: int | None = Field(default=None, ge=0, description="absent: one per candidate")

    @model_validator(mode="after")
    def _unique_ids(self) -> Plan:
        dup = next((n for n, c in Counter(c.id for c in self.candidates).items() if c > 1), None)
        if dup is not None:
            raise PydanticCustomError("candidates", "candidate ids must be unique: {n} is used twice", {"n": dup})
        return self

    def earliest_day(self, candidate: Candidate, seen: frozenset[str] = frozenset()) -> float:
        """Its lead time, or later if a candidate it requires comes later (inf for a cycle)."""
        if candidate.id in seen:
            return float("inf")
        by_id = {c.id: c for c in self.candidates}
        later = [self.earliest_day(by_id[r], seen | {candidate.id}) for r in candidate.requires if r in by_id]
        return max([candidate.lead_time_days, *later])


@dataclass(frozen=True)
class LoadedPlan:
    plan: Plan
    base: LoadedScenario  # the scenario with the plan's horizon and growth applied
    source: str

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def horizon_days(self) -> float:
        return self.base.scenario.horizon_days

    @property
    def periods(self) -> int:
        return max(1, int(-(-self.horizon_days // self.plan.period_days)))

    def period_start_days(self, p: int) -> float:
        return p * self.plan.period_days

    def earliest_day(self, candidate: Candidate) -> float:
        return self.plan.earliest_day(candidate)

    def earliest_period(self, candidate: Candidate) -> int:
        """The first period that starts on or after the candidate's earliest day (``periods`` if none)."""
        day = self.earliest_day(candidate)
        return self.periods if day == float("inf") else int(-(-day // self.plan.period_days))


class PlanError(ScenarioError):
    """A plan that cannot be run, with the field and line of every problem."""


def load_plan(path: Path | str) -> LoadedPlan:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from e
    source = str(path)
    try:
        root = compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise PlanError(source, [Problem("(document)", line, f"not valid YAML: {e.problem or e}")]) from None
    if not isinstance(data, dict):
        raise PlanError(source, [Problem("(document)", 1, "a plan is a mapping (name:, scenario:, targets: ...)")])
    try:
        plan = Plan.model_validate(data)
    except ValidationError as e:
        raise PlanError(source, [_problem(root, *p) for p in _pydantic_problems(e)]) from None
    problems: list[tuple[Loc, str]] = []
    for i, candidate in enumerate(plan.candidates):
        try:
            candidate.at(candidate.lead_time_days)
        except ValidationError as e:
            problems += [(("candidates", i, "change", *loc), msg) for loc, msg in _pydantic_problems(e)]
    if problems:
        raise PlanError(source, [_problem(root, loc, m) for loc, m in problems])
    try:
        base = load_scenario(path.resolve().parent / plan.scenario)
    except ConfigError as e:
        raise PlanError(source, [_problem(root, ("scenario",), str(e))]) from None
    base = _with_plan(base, plan)
    problems = _references(plan, base)
    if problems:
        raise PlanError(source, [_problem(root, loc, m) for loc, m in problems])
    return LoadedPlan(plan, base, source)


def _with_plan(base: LoadedScenario, plan: Plan) -> LoadedScenario:
    """The base scenario with the plan's horizon and its growth appended to the workload's scaling."""
    scenario = base.scenario
    scale = [*scenario.workload.scale]
    for g in plan.growth:
        scale.append(scale_type(g))
    workload = scenario.workload.model_copy(update={"scale": scale})
    horizon = plan.horizon_days if plan.horizon_days is not None else scenario.horizon_days
    scenario = scenario.model_copy(update={"workload": workload, "horizon_days": horizon})
    timeline = Timeline(base.grid, scenario.changes, scenario.horizon_s)
    return LoadedScenario(scenario, base.grid, base.policy, timeline, base.source, base.base_dir, base.data, base.files)


def scale_type(g: Growth) -> Scaling:
    return Scaling(factor=g.factor, residency=g.residency, kind=g.kind, tenants=g.tenants,
                   endpoints=g.endpoints, sources=g.sources)


def _references(plan: Plan, base: LoadedScenario) -> list[tuple[Loc, str]]:
    grid = base.grid
    problems: list[tuple[Loc, str]] = []
    workload = base.scenario.workload
    sources = {r.name for r in workload.trace.rules} if workload.trace else set()
    sources |= {s.name for s in workload.generated}
    endpoints = set(grid.endpoint_by_id)
    site_ids = {s.id for s in grid.sites} | {
        c.change["site"]["id"] for c in plan.candidates if c.change.get("kind") == "add_site"
        and isinstance(c.change.get("site"), dict)}
    tags = {t for s in grid.sites for t in s.tags}
    for c in plan.candidates:
        change = c.at(0)
        if isinstance(change, AddSite):
            tags |= change.site.tags
    for i, g in enumerate(plan.growth):
        problems += [(("growth", i, "endpoints", j), f"unknown endpoint {e!r}")
                     for j, e in enumerate(g.endpoints) if e not in endpoints]
        problems += [(("growth", i, "sources", j), f"no trace rule or stream named {s!r}")
                     for j, s in enumerate(g.sources) if s not in sources]
    for i, t in enumerate(plan.targets):
        problems += [(("targets", i, "sources", j), f"no trace rule or stream named {s!r}")
                     for j, s in enumerate(t.sources) if s not in sources]
        if isinstance(t, SloTarget):
            problems += [(("targets", i, "endpoints", j), f"unknown endpoint {e!r}")
                         for j, e in enumerate(t.endpoints) if e not in endpoints]
        if isinstance(t, ResidencyTarget) and t.jurisdiction not in tags:
            problems.append((("targets", i, "jurisdiction"),
                             f"no site, existing or candidate, carries {t.jurisdiction!r}"))
    ids = {c.id for c in plan.candidates}
    for i, c in enumerate(plan.candidates):
        problems += [(("candidates", i, "requires", j), f"no candidate {r!r}" if r != c.id else "requires itself")
                     for j, r in enumerate(c.requires) if r not in ids or r == c.id]
        if c.requires and plan.earliest_day(c) == float("inf"):
            problems.append((("candidates", i, "requires"), "a cycle of requirements"))
    for i, c in enumerate(plan.candidates):
        site = c.change.get("site")
        if c.change["kind"] != "add_site" and isinstance(site, str) and site not in site_ids:
            problems.append((("candidates", i, "change", "site"), f"no site {site!r} in the grid or the candidates"))
    if problems:
        return problems
    # Every candidate at its earliest date, on top of the scenario's changes: the grids must be valid.
    n = len(base.scenario.changes)
    everything: list[Change] = [*base.scenario.changes, *(c.at(plan.earliest_day(c)) for c in plan.candidates)]
    try:
        Timeline(base.grid, everything, base.scenario.horizon_days * DAY_S).validate()
    except ChangeProblem as e:
        if len(e.loc) >= 2 and isinstance(e.loc[1], int) and e.loc[1] >= n:
            problems.append((("candidates", e.loc[1] - n, "change", *e.loc[2:]), e.message))
        else:
            problems.append((("scenario",), f"with the candidates: {e.message}"))
    return problems
