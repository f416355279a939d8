"""Timed changes to a grid, and the grid they make at any moment of a scenario.

Changes are of two sorts:

- *structural*, permanent once their time comes: a site or a pool is added or removed,
  GPUs are delivered into a pool (in tranches, e.g. monthly), a site's envelope is upgraded;
- *temporary* effects, active from ``at_days`` for ``duration_days`` (or to the end):
  a site failure (every node of the site unhealthy), a power-envelope cut.

The grid at time t is computed from the base grid and every change in force at t,
never by undoing an earlier delta, so overlapping effects compose (a failure that
recovers while a power cut lasts leaves the cut in force). A drain is an operator
action on a running scheduler, not a different grid; it is listed here so that a
scenario has one list of timed changes, and applied by the simulator through
``Scheduler.set_drained``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from grid_scheduler.model import Grid, Link, Pool, Site, Workload
from grid_scheduler.model.errors import violations
from grid_scheduler.model.grid import Id

DAY_S = 86_400.0
# An envelope cut to nothing still needs a positive number for the grid model: 1 kW.
MIN_ENVELOPE_MW = 0.001

Loc = tuple[str | int, ...]


class _Change(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    at_days: float = Field(ge=0, description="when the change takes effect, in days from the start")
    note: str = Field(default="", description="shown in the report")


class _Temporary(_Change):
    duration_days: float | None = Field(default=None, gt=0, description="absent: to the end of the scenario")

    @property
    def end_days(self) -> float | None:
        return None if self.duration_days is None else self.at_days + self.duration_days


class AddSite(_Change):
    kind: Literal["add_site"]
    site: Site
    links: list[Link] = Field(default_factory=list)


class AddPool(_Change):
    kind: Literal["add_pool"]
    site: Id
    pool: Pool


class RemovePool(_Change):
    kind: Literal["remove_pool"]
    pool: Id


class PoolShape(BaseModel):
    """A pool without its size: what GPU deliveries fill."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Id
    gpu_type: str
    gpus_per_node: int = Field(gt=0)
    interconnect_domain_gpus: int = Field(default=8, gt=0)
    workload: Workload = Workload.ANY


class GpuDelivery(_Change):
    """``deliveries`` tranches of ``nodes_per_delivery`` nodes, the first at ``at_days``."""

    kind: Literal["gpu_delivery"]
    site: Id
    pool: PoolShape
    nodes_per_delivery: int = Field(gt=0)
    deliveries: int = Field(default=1, ge=1, le=1000)
    every_days: float = Field(default=30.0, gt=0)

    def delivered_by(self, t_days: float) -> int:
        if t_days < self.at_days:
            return 0
        return min(self.deliveries, math.floor((t_days - self.at_days) / self.every_days + 1e-9) + 1)


class PowerUpgrade(_Change):
    """The site's envelope grows by ``add_mw`` for good (a new substation, more gensets): what a
    capacity plan buys, where a power cut is what it fears."""

    kind: Literal["power_upgrade"]
    site: Id
    add_mw: float = Field(gt=0)


class SiteFailure(_Temporary):
    """Every node of the site is unhealthy: running jobs there must move or wait."""

    kind: Literal["site_failure"]
    site: Id


class PowerCut(_Temporary):
    kind: Literal["power_cut"]
    site: Id
    lose_mw: float | None = Field(default=None, ge=0, description="the envelope falls by this much")
    envelope_mw: float | None = Field(default=None, gt=0, description="or: the envelope becomes this")

    @model_validator(mode="after")
    def _one_amount(self) -> PowerCut:
        if (self.lose_mw is None) == (self.envelope_mw is None):
            raise PydanticCustomError("power_cut", "give exactly one of lose_mw and envelope_mw")
        return self


class Drain(_Temporary):
    """Operators drain pools: running jobs stay, nothing new lands there."""

    kind: Literal["drain"]
    pools: list[Id] = Field(min_length=1)


Change = Annotated[
    AddSite | AddPool | RemovePool | GpuDelivery | PowerUpgrade | SiteFailure | PowerCut | Drain,
    Field(discriminator="kind"),
]


class ChangeProblem(Exception):
    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


@dataclass(frozen=True)
class Moment:
    """A time at which the grid or the drains change, and what happens then."""

    time_s: float
    change: int  # index into the scenario's changes
    what: str
    grid: bool  # True: the grid changes; False: a drain starts or ends


@dataclass(frozen=True)
class DrainStep:
    time_s: float
    change: int
    pools: tuple[str, ...]
    drained: bool


def describe(change: Change) -> str:
    match change:
        case AddSite():
            return f"add site {change.site.id}"
        case AddPool():
            return f"add pool {change.pool.id} ({change.pool.total_gpus:,} {change.pool.gpu_type}) at {change.site}"
        case RemovePool():
            return f"remove pool {change.pool}"
        case GpuDelivery():
            gpus = change.nodes_per_delivery * change.pool.gpus_per_node
            return (f"{change.deliveries} deliveries of {gpus:,} {change.pool.gpu_type} into {change.pool.id} "
                    f"at {change.site}, every {change.every_days:g} days")
        case PowerUpgrade():
            return f"site {change.site} envelope +{change.add_mw:g} MW"
        case SiteFailure():
            return f"site {change.site} fails" + _for(change)
        case PowerCut():
            amount = (f"loses {change.lose_mw:g} MW" if change.lose_mw is not None
                      else f"capped at {change.envelope_mw:g} MW")
            return f"site {change.site} {amount}" + _for(change)
        case Drain():
            return f"drain {', '.join(change.pools)}" + _for(change)
    raise AssertionError(change)


def _for(change: _Temporary) -> str:
    return f" for {change.duration_days:g} days" if change.duration_days is not None else " to the end"


class Timeline:
    """The base grid and the scenario's changes: the grid at any time, and when it changes."""

    def __init__(self, base: Grid, changes: list[Change], horizon_s: float) -> None:
        self.base = base
        self.changes = changes
        self.horizon_s = horizon_s
        self._base_data = base.model_dump(mode="json")
        self._cache: dict[tuple[int, ...], Grid] = {}

    # --- when ------------------------------------------------------------------
    def moments(self) -> list[Moment]:
        out: list[Moment] = []
        for i, change in enumerate(self.changes):
            grid = not isinstance(change, Drain)
            times: list[tuple[float, str]] = []
            if isinstance(change, GpuDelivery):
                gpus = change.nodes_per_delivery * change.pool.gpus_per_node
                what = f"+{gpus:,} {change.pool.gpu_type} into {change.pool.id}"
                times = [(change.at_days + k * change.every_days, f"delivery {k + 1}/{change.deliveries}: {what}")
                         for k in range(change.deliveries)]
            else:
                times = [(change.at_days, describe(change))]
                if isinstance(change, _Temporary) and change.end_days is not None:
                    ends = "recovers" if isinstance(change, SiteFailure) else "ends"
                    times.append((change.end_days, f"{describe(change)}: {ends}"))
            for days, what in times:
                if days * DAY_S <= self.horizon_s:
                    out.append(Moment(days * DAY_S, i, what, grid))
        return sorted(out, key=lambda m: (m.time_s, m.change))

    def steps(self) -> list[tuple[Moment, tuple[int, ...]]]:
        """Every grid moment after the start, with the key of the grid *just after it*.

        Changes that fall at one instant are applied one at a time, in scenario order, so each
        running job is re-committed against the grid as it is after each change, and a job
        that no longer fits is displaced by the change that took its capacity (not by another
        change that happens to share its instant).
        """
        key = list(self.in_force(0.0))
        out: list[tuple[Moment, tuple[int, ...]]] = []
        for moment in self.moments():
            if not moment.grid or moment.time_s <= 0.0:
                continue  # drains are not grids; changes at t=0 are the starting grid
            key[moment.change] = self.in_force(moment.time_s)[moment.change]
            out.append((moment, tuple(key)))
        return out

    def drain_steps(self) -> list[DrainStep]:
        steps: list[DrainStep] = []
        for i, change in enumerate(self.changes):
            if isinstance(change, Drain):
                steps.append(DrainStep(change.at_days * DAY_S, i, tuple(change.pools), True))
                if change.end_days is not None:
                    steps.append(DrainStep(change.end_days * DAY_S, i, tuple(change.pools), False))
        return sorted((s for s in steps if s.time_s <= self.horizon_s), key=lambda s: (s.time_s, s.change))

    # --- what ------------------------------------------------------------------
    def in_force(self, t_s: float) -> tuple[int, ...]:
        """A key for the grid at ``t_s``: per change, how far it has gone (0 = not yet / over)."""
        t_days = t_s / DAY_S + 1e-12
        key: list[int] = []
        for change in self.changes:
            if isinstance(change, GpuDelivery):
                key.append(change.delivered_by(t_days))
            elif isinstance(change, Drain):
                key.append(0)
            elif isinstance(change, _Temporary):
                end = change.end_days
                key.append(int(change.at_days <= t_days and (end is None or t_days < end)))
            else:
                key.append(int(change.at_days <= t_days))
        return tuple(key)

    def grid_at(self, t_s: float) -> Grid:
        return self.grid_for(self.in_force(t_s))

    def grid_for(self, key: tuple[int, ...], blame: int | None = None) -> Grid:
        """The grid with each change gone as far as ``key`` says (see ``in_force``); ``blame`` is
        the change an invalid grid is reported against (default: the latest in force)."""
        grid = self._cache.get(key)
        if grid is None:
            grid = self._cache[key] = self._build(key, blame)
        return grid

    def _build(self, key: tuple[int, ...], blame: int | None = None) -> Grid:
        if not any(key):
            return self.base
        data: dict[str, Any] = copy.deepcopy(self._base_data)
        order = sorted(range(len(self.changes)), key=lambda i: (self.changes[i].at_days, i))
        temporary = [i for i in order if isinstance(self.changes[i], SiteFailure | PowerCut)]
        for i in order:
            if key[i] and i not in temporary:
                _apply_structural(data, self.changes[i], key[i], i)
        for i in temporary:
            if key[i]:
                _apply_effect(data, self.changes[i], i)
        last = blame if blame is not None else max((i for i in order if key[i]), key=lambda i: self.changes[i].at_days)
        try:
            return Grid.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{path}: {message}" for path, message in violations(e))
            raise ChangeProblem(("changes", last), f"the grid it makes is invalid: {problems}") from None

    def validate(self) -> None:
        """Build every grid the scenario passes through, and check every drain's pools exist then."""
        for moment in self.moments():
            if moment.grid:
                self.grid_at(moment.time_s)
        for moment, key in self.steps():  # and the grids between changes that share an instant
            self.grid_for(key, moment.change)
        for step in self.drain_steps():
            if step.drained:
                pools = self.grid_at(step.time_s).pool_by_id
                for j, pool in enumerate(step.pools):
                    if pool not in pools:
                        raise ChangeProblem(("changes", step.change, "pools", j),
                                            f"no pool {pool!r} in the grid at day {step.time_s / DAY_S:g}")


def _site(data: dict[str, Any], site_id: str, loc: Loc) -> dict[str, Any]:
    for site in data["sites"]:
        if site["id"] == site_id:
            found: dict[str, Any] = site
            return found
    raise ChangeProblem(loc, f"no site {site_id!r} in the grid at that time")


def _apply_structural(data: dict[str, Any], change: Change, amount: int, i: int) -> None:
    match change:
        case AddSite():
            data["sites"].append(change.site.model_dump(mode="json"))
            data["links"].extend(link.model_dump(mode="json") for link in change.links)
        case AddPool():
            _site(data, change.site, ("changes", i, "site"))["pools"].append(change.pool.model_dump(mode="json"))
        case RemovePool():
            for site in data["sites"]:
                kept = [p for p in site["pools"] if p["id"] != change.pool]
                if len(kept) < len(site["pools"]):
                    site["pools"] = kept
                    return
            raise ChangeProblem(("changes", i, "pool"), f"no pool {change.pool!r} in the grid at that time")
        case GpuDelivery():
            site = _site(data, change.site, ("changes", i, "site"))
            nodes = amount * change.nodes_per_delivery
            for pool in site["pools"]:
                if pool["id"] == change.pool.id:
                    pool["nodes"] += nodes
                    return
            site["pools"].append({**change.pool.model_dump(mode="json"), "nodes": nodes})
        case PowerUpgrade():
            _site(data, change.site, ("changes", i, "site"))["power_envelope_mw"] += change.add_mw


def _apply_effect(data: dict[str, Any], change: Change, i: int) -> None:
    site = _site(data, getattr(change, "site", ""), ("changes", i, "site"))
    if isinstance(change, SiteFailure):
        for pool in site["pools"]:
            pool["drained_nodes"] = pool["nodes"]
    elif isinstance(change, PowerCut):
        if change.envelope_mw is not None:
            site["power_envelope_mw"] = change.envelope_mw
        else:
            assert change.lose_mw is not None
            site["power_envelope_mw"] = max(site["power_envelope_mw"] - change.lose_mw, MIN_ENVELOPE_MW)
