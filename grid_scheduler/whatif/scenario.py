"""The scenario file: a base grid, timed changes, a workload, a policy, a horizon, a seed.

Loading is all-or-nothing and says *where* every problem is: each error names the
field (``changes[2].site``) and the line of the file it is on, found from the YAML
node marks. Validation runs in two passes: the shape of the file (pydantic), then its
references against the grid it names (sites, pools, endpoints, GPU types, datasets,
and every grid the timed changes make along the way).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from grid_scheduler.config import ConfigError, load_grid, load_policy
from grid_scheduler.model import Grid, Policy
from grid_scheduler.model.errors import field_path
from grid_scheduler.model.policy import policy_violations_against_grid
from grid_scheduler.whatif.changes import DAY_S, Change, ChangeProblem, Timeline
from grid_scheduler.whatif.locate import compose, locate
from grid_scheduler.whatif.paths import FileRoots
from grid_scheduler.whatif.workload import WorkloadSpec, references

if TYPE_CHECKING:
    from grid_scheduler.whatif.live import LiveStart

Loc = tuple[str | int, ...]


class BatchCycle(BaseModel):
    """Run the scheduler's batch optimiser (CP-SAT over every pending job) on a fixed period.

    With one solver worker and a fixed seed CP-SAT is repeatable, unless its time limit binds
    (the limit is wall-clock time): keep it generous where runs must be identical.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    every_minutes: float = Field(gt=0)
    time_limit_s: float = Field(default=2.0, gt=0, le=600)


class Scenario(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    grid: str | None = Field(
        default=None, min_length=1,
        description="grid file, relative to the scenario file; required unless the run starts from a live server",
    )
    policy: Policy | None = Field(default=None, description="inline policy")
    policy_file: str | None = Field(default=None, min_length=1, description="or a policy file")
    seed: int = Field(default=0, ge=0)
    horizon_days: float = Field(gt=0, le=3650)
    sample_every_hours: float = Field(default=1.0, gt=0, description="time-series resolution of the report")
    requeue: Literal["resume", "restart"] = Field(
        default="resume", description="a displaced job later runs its remaining time (resume) or all of it (restart)"
    )
    changes: list[Change] = Field(default_factory=list)
    workload: WorkloadSpec
    batch: BatchCycle | None = Field(default=None, description="absent: online placement and retries only")

    @model_validator(mode="after")
    def _one_policy(self) -> Scenario:
        if self.policy is not None and self.policy_file is not None:
            raise PydanticCustomError("policy", "give policy or policy_file, not both")
        return self

    @property
    def horizon_s(self) -> float:
        return self.horizon_days * DAY_S


@dataclass(frozen=True)
class Problem:
    field: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


class ScenarioError(ConfigError):
    """A scenario that cannot be run, with the field and line of every problem."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.line, p.field))
        super().__init__(f"{source}: invalid scenario:\n" + "\n".join(f"  {p}" for p in self.problems))


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    grid: Grid
    policy: Policy
    timeline: Timeline
    source: str
    base_dir: Path
    data: Any  # the file's data, for sweeps that vary it
    files: FileRoots = FileRoots.UNCONFINED  # where its file fields were allowed to point
    live: LiveStart | None = None  # the live state it starts from (whatif run --from), if any

    @property
    def name(self) -> str:
        return self.scenario.name


def load_scenario(
    path: Path | str, files: FileRoots = FileRoots.UNCONFINED, *, live_grid: Grid | None = None
) -> LoadedScenario:
    """Load and check a scenario file. ``files`` confines the files it names (default: any file).
    ``live_grid``: check it against this grid (a live server's) instead of the one it names."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from e
    return load_scenario_text(text, str(path), path.resolve().parent, files, live_grid=live_grid)


def load_scenario_text(
    text: str, source: str, base_dir: Path, files: FileRoots = FileRoots.UNCONFINED, *, live_grid: Grid | None = None
) -> LoadedScenario:
    """A scenario from its YAML text; relative file names resolve against ``base_dir``."""
    try:
        root = compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ScenarioError(source, [Problem("(document)", line, f"not valid YAML: {e.problem or e}")]) from None
    except yaml.YAMLError as e:
        raise ScenarioError(source, [Problem("(document)", 1, f"not valid YAML: {e}")]) from None
    return load_scenario_data(data, source, base_dir, root, files=files, live_grid=live_grid)


def load_scenario_data(
    data: Any, source: str, base_dir: Path, root: yaml.Node | None = None, *, files: FileRoots = FileRoots.UNCONFINED,
    live_grid: Grid | None = None,
) -> LoadedScenario:
    """Validate ``data`` (parsed YAML); ``root`` (its YAML nodes) gives the line numbers.

    Every field that names a file (``grid``, ``policy_file``, ``workload.trace.path``) goes
    through ``files.resolve``: a confined loader refuses, as a problem of that field, a name
    outside its folders, with one message whatever the target is. With ``live_grid`` the
    scenario's ``grid`` is not read (it may be absent): everything is checked against ``live_grid``.
    """
    if not isinstance(data, dict):
        raise ScenarioError(source, [Problem("(document)", 1, "a scenario is a mapping (name:, grid:, workload: ...)")])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(source, [_problem(root, *p) for p in _pydantic_problems(e)]) from None

    problems: list[tuple[Loc, str]] = []
    if live_grid is not None:
        grid = live_grid
    elif scenario.grid is None:
        raise ScenarioError(source, [_problem(root, ("grid",), "a grid file is required (unless the run starts "
                                                               "from a live server: whatif run --from)")])
    else:
        try:
            grid = load_grid(files.resolve(scenario.grid, base_dir))
        except ConfigError as e:
            raise ScenarioError(source, [_problem(root, ("grid",), str(e))]) from None
    policy = scenario.policy or Policy()
    if scenario.policy is not None:
        problems.extend((("policy", *field.split(".")), message)
                        for field, message in policy_violations_against_grid(scenario.policy, grid))
    if scenario.policy_file is not None:
        try:
            policy = load_policy(files.resolve(scenario.policy_file, base_dir), grid)
        except ConfigError as e:
            problems.append((("policy_file",), str(e)))
    timeline = Timeline(grid, scenario.changes, scenario.horizon_s)
    try:
        timeline.validate()
    except ChangeProblem as e:
        problems.append((e.loc, e.message))
    problems += references(scenario.workload, grid, base_dir, files)
    if problems:
        raise ScenarioError(source, [_problem(root, loc, message) for loc, message in problems])
    return LoadedScenario(scenario, grid, policy, timeline, source, base_dir, data, files)


def _pydantic_problems(error: ValidationError) -> list[tuple[Loc, str]]:
    out = []
    for e in error.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "kind")
        message = e["msg"].removeprefix("Value error, ")
        if message.startswith("Input should be greater than "):
            message = "must be > " + message.removeprefix("Input should be greater than ")
        out.append((loc, message))
    return out


def _problem(root: yaml.Node | None, loc: Loc, message: str) -> Problem:
    where = locate(root, loc)
    return Problem(field_path(where.path) or "(document)", where.line, message)
