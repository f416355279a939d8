"""Grid and job files: what is refused, and the path it names."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from grid_scheduler.config import ConfigError, load_grid, load_job
from grid_scheduler.model import Grid, JobSpec
from grid_scheduler.model.job import violations_against_grid
from tests.conftest import GRIDS, JOBS


@pytest.fixture(scope="module")
def raw_small() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((GRIDS / "small.yaml").read_text())
    return data


def refused(raw: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as exc:
        load_grid(path)
    return str(exc.value)


def test_example_files_load(nscale_grid: Grid, small_grid: Grid) -> None:
    assert len(nscale_grid.sites) >= 18
    for job_file in JOBS.glob("*.yaml"):
        spec = load_job(job_file)
        assert violations_against_grid(spec, nscale_grid) == [], job_file


def test_bad_field_is_named_with_its_path(raw_small: dict[str, Any], tmp_path: Path) -> None:
    raw = copy.deepcopy(raw_small)
    raw["sites"][3]["pools"][0]["gpus_per_node"] = 0
    assert "sites[3].pools[0].gpus_per_node: must be > 0" in refused(raw, tmp_path)


def test_norway_cannot_be_tagged_eu(raw_small: dict[str, Any], tmp_path: Path) -> None:
    raw = copy.deepcopy(raw_small)
    raw["sites"][1]["jurisdictions"] = ["EU"]
    message = refused(raw, tmp_path)
    assert "sites[1]" in message and "EU does not apply to a site in NO" in message


def test_unquoted_norway_gets_a_hint(tmp_path: Path, raw_small: dict[str, Any]) -> None:
    text = yaml.safe_dump(raw_small).replace("country: 'NO'", "country: NO")
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"sites\[1\].location.country: .*quote country codes"):
        load_grid(path)


def test_link_faster_than_light_is_refused(raw_small: dict[str, Any], tmp_path: Path) -> None:
    raw = copy.deepcopy(raw_small)
    raw["links"][6]["latency_ms"] = 2  # London-Sines is 1,658 km: at least 8.3 ms
    assert "links[6].latency_ms: 2.0 ms is faster than light in fibre" in refused(raw, tmp_path)


def test_unknown_references_are_refused(raw_small: dict[str, Any], tmp_path: Path) -> None:
    raw = copy.deepcopy(raw_small)
    raw["sites"][0]["pools"][0]["gpu_type"] = "TPU"
    raw["links"][0]["b"] = "atlantis"
    raw["datasets"][0]["home_site"] = "nowhere"
    message = refused(raw, tmp_path)
    assert "sites[0].pools[0].gpu_type: unknown GPU type 'TPU'" in message
    assert "links[0].b: unknown site or endpoint 'atlantis'" in message
    assert "datasets[0].home_site: unknown site 'nowhere'" in message


def test_duplicate_pool_ids_are_refused(raw_small: dict[str, Any], tmp_path: Path) -> None:
    raw = copy.deepcopy(raw_small)
    raw["sites"][1]["pools"][0]["id"] = "sines-gb300"
    assert "sites[1].pools[0].id: duplicate pool id 'sines-gb300'" in refused(raw, tmp_path)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_grid(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_grid(bad)


def test_job_spec_rules() -> None:
    base = {"name": "j", "tenant": "acme", "kind": "inference", "gpus": {"count": 8}}
    with pytest.raises(ValueError, match="inference section"):
        JobSpec.model_validate(base)
    with pytest.raises(ValueError, match="latency_slo_ms"):
        JobSpec.model_validate({**base, "inference": {"replicas": 1, "demand": [{"endpoint": "x"}],
                                                      "latency_slo_ms": 0}})


def test_job_names_checked_against_the_grid(small_grid: Grid) -> None:
    spec = JobSpec.model_validate(
        {"name": "j", "tenant": "acme", "kind": "inference", "gpus": {"count": 8, "types": ["TPU"]},
         "inference": {"replicas": 1, "demand": [{"endpoint": "tokyo"}], "latency_slo_ms": 10}}
    )
    fields = [f for f, _ in violations_against_grid(spec, small_grid)]
    assert fields == ["gpus.types[0]", "inference.demand[0].endpoint"]
