"""Loading grid, policy and job files (YAML) into validated models."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from grid_scheduler.model import Grid, JobSpec, Policy
from grid_scheduler.model.errors import describe
from grid_scheduler.model.policy import policy_violations_against_grid

M = TypeVar("M", bound=BaseModel)

# The example grids, jobs, scenarios and trace are package data (the repo's examples/ is a link
# here), so `serve` without --grid and `whatif run` on a shipped scenario work from a wheel. A wheel
# installs as files, and scenarios name their grid and trace by relative paths, so a real directory.
EXAMPLES_DIR = Path(str(resources.files("grid_scheduler") / "examples"))
DEFAULT_GRID = EXAMPLES_DIR / "grids" / "nscale.yaml"


class ConfigError(ValueError):
    """A file that cannot be used, with every bad field named."""


def read_yaml(path: Path) -> Any:
    try:
        with path.open() as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e


def parse(model: type[M], data: Any, source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid {model.__name__.lower()}:\n{describe(e)}") from e


def load_grid(path: Path | str = DEFAULT_GRID) -> Grid:
    path = Path(path)
    return parse(Grid, read_yaml(path), str(path))


def load_policy(path: Path | str | None, grid: Grid | None = None) -> Policy:
    """The policy file (None: the built-in policy); with ``grid``, also refuse names it does not know."""
    if path is None:
        return Policy()
    path = Path(path)
    policy = parse(Policy, read_yaml(path) or {}, str(path))
    problems = policy_violations_against_grid(policy, grid) if grid is not None else []
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(f"{field}: {message}" for field, message in problems))
    return policy


def load_job(path: Path | str) -> JobSpec:
    path = Path(path)
    return parse(JobSpec, read_yaml(path), str(path))


