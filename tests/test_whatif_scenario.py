"""Scenario files: every example loads; a bad file is refused naming the field and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from grid_scheduler.cli import main
from grid_scheduler.config import ConfigError
from grid_scheduler.whatif.paths import OUTSIDE, FileRoots
from grid_scheduler.whatif.scenario import ScenarioError, load_scenario, load_scenario_text
from grid_scheduler.whatif.sweep import parse_param, set_path, variants
from tests.conftest import GRIDS, ROOT

SCENARIOS = ROOT / "examples" / "scenarios"

GOOD = f"""\
name: ok
grid: {GRIDS / "small.yaml"}
horizon_days: 2
changes:
  - kind: site_failure
    at_days: 1
    site: glomfjord
workload:
  generated:
    - name: train
      kind: training
      tenants: {{acme: 1}}
      arrivals_per_day: 10
      gpus: {{min: 8, max: 64}}
      duration_hours: {{min: 1, max: 4}}
"""


def problems(text: str) -> list[tuple[str, int, str]]:
    with pytest.raises(ScenarioError) as info:
        load_scenario_text(text, "bad.yaml", Path.cwd())
    return [(p.field, p.line, p.message) for p in info.value.problems]


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_scenario_loads(path: Path) -> None:
    loaded = load_scenario(path)
    assert loaded.name == path.stem
    assert loaded.scenario.horizon_days <= 180


def test_a_good_scenario_loads() -> None:
    loaded = load_scenario_text(GOOD, "ok.yaml", Path.cwd())
    assert loaded.timeline.grid_at(86_400 * 1.5).pool_by_id["glomfjord-gb300"][1].healthy_gpus == 0


@pytest.mark.parametrize(
    ("old", "new", "field", "line", "says"),
    [
        ("horizon_days: 2", "horizon_days: -2", "horizon_days", 3, "must be > 0"),
        ("horizon_days: 2", "horizon_days: soon", "horizon_days", 3, "valid number"),
        ("    site: glomfjord", "    site: atlantis", "changes[0].site", 7, "no site 'atlantis'"),
        ("  - kind: site_failure", "  - kind: meteor", "changes[0].kind", 5, "meteor"),
        ("    at_days: 1", "    at_days: 1\n    colour: red", "changes[0].colour", 7, "Extra inputs"),
        ("      arrivals_per_day: 10", "      arrivals_per_day: 0", "workload.generated[0].arrivals_per_day", 13,
         "must be > 0"),
        ("      gpus: {min: 8, max: 64}", "      gpus: {min: 64, max: 8}", "workload.generated[0].gpus", 14, "min 64"),
        ("      kind: training", "      kind: inference", "workload.generated[0]", 10, "needs endpoints"),
        ("      tenants: {acme: 1}", "      tenants: {acme: 1}\n      gpu_types: [TPU]",
         "workload.generated[0].gpu_types[0]", 13, "unknown GPU type 'TPU'"),
        ("name: ok\n", "", "name", 1, "Field required"),
    ],
)
def test_bad_fields_are_named_with_their_line(old: str, new: str, field: str, line: int, says: str) -> None:
    assert old in GOOD
    found = problems(GOOD.replace(old, new))
    assert any(f == field and n == line and says in m for f, n, m in found), found


def test_unknown_endpoint_in_an_inference_stream_points_at_the_endpoint() -> None:
    text = GOOD + """\
    - name: serve
      kind: inference
      tenants: {acme: 1}
      arrivals_per_day: 10
      endpoints: {london: 1, narnia: 2}
      latency_slo_ms: 20
      gpus: {min: 1, max: 8}
      duration_hours: {min: 1, max: 4}
"""
    assert problems(text) == [("workload.generated[1].endpoints.narnia", 20, "unknown endpoint 'narnia'")]


def test_yaml_syntax_errors_and_missing_files_have_lines_too() -> None:
    assert problems("name: x\nhorizon_days: [1,\n")[0][:2] == ("(document)", 3)
    found = problems(GOOD.replace(str(GRIDS / "small.yaml"), "no/such/grid.yaml"))
    assert found[0][:2] == ("grid", 2) and "No such file" in found[0][2]
    found = problems(GOOD.replace("  generated:", "  trace: {path: nowhere.csv, rules: [{name: r, kind: training, "
                                  "tenants: {a: 1}}]}\n  generated:"))
    assert found[0][:2] == ("workload.trace.path", 9) and "cannot read trace" in found[0][2]


def test_a_change_that_makes_an_invalid_grid_names_the_change() -> None:
    text = GOOD.replace("    site: glomfjord", "    site: glomfjord\n  - kind: add_pool\n    at_days: 0.5\n"
                        "    site: sines\n    pool: {id: sines-gb300, gpu_type: GB300, nodes: 1, gpus_per_node: 4}")
    found = problems(text)
    assert found[0][0] == "changes[1]" and found[0][1] == 8 and "duplicate pool id 'sines-gb300'" in found[0][2]


def test_cli_refuses_a_bad_file_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("    site: glomfjord", "    site: atlantis"))
    out = tmp_path / "out"
    assert main(["whatif", "run", str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "line 7: changes[0].site: no site 'atlantis'" in err
    assert not out.exists()
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    assert main(["whatif", "compare", str(good), str(bad), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    assert main(["whatif", "sweep", str(good), "--param", "changes[3].at_days=1,2", "--out", str(out), "--quiet"]) == 2
    assert "no item [3]" in capsys.readouterr().err
    assert main(["whatif", "sweep", str(good), "--param", "horizon_days=1,-1", "--out", str(out), "--quiet"]) == 2
    assert "horizon_days: must be > 0" in capsys.readouterr().err
    assert not out.exists()


def test_sweep_params_parse_and_set() -> None:
    p = parse_param("changes[1].lose_mw=0, 250,500")
    assert p.parts == ("changes", 1, "lose_mw") and p.values == (0, 250, 500)
    assert parse_param("policy.tenant_residency.eu-health.allowed[0]=EU,EEA").values == ("EU", "EEA")
    data = {"changes": [{}, {"lose_mw": 1}]}
    set_path(data, p.parts, 250, p.path)
    assert data == {"changes": [{}, {"lose_mw": 250}]}
    for bad in ("nothing", "a=", "=1", "a..b=1"):
        with pytest.raises(ConfigError):
            parse_param(bad)
    loaded = load_scenario_text(GOOD, "ok.yaml", Path.cwd())
    items = variants(loaded, [parse_param("seed=1,2"), parse_param("changes[0].at_days=0.5,1")], None)
    assert [v.params for v in items] == [{"seed": 1, "changes[0].at_days": 0.5}, {"seed": 1, "changes[0].at_days": 1},
                                         {"seed": 2, "changes[0].at_days": 0.5}, {"seed": 2, "changes[0].at_days": 1}]


def test_loaders_are_unconfined_unless_given_folders(tmp_path: Path) -> None:
    # The CLI names any local file (GOOD's grid is an absolute path); a server passes FileRoots
    # and the same loader refuses it, as a problem of the field, in one message for any target.
    assert load_scenario_text(GOOD, "ok.yaml", tmp_path).grid.name
    roots = FileRoots.confined(tmp_path)
    found = []
    for grid in (str(GRIDS / "small.yaml"), "/no/such/grid.yaml", "../outside.yaml"):
        with pytest.raises(ScenarioError) as info:
            load_scenario_text(GOOD.replace(str(GRIDS / "small.yaml"), grid), "ok.yaml", tmp_path, roots)
        found.append([(p.field, p.line, p.message) for p in info.value.problems])
    assert found == [[("grid", 2, OUTSIDE)]] * 3
    (tmp_path / "small.yaml").symlink_to(GRIDS / "small.yaml")  # a link the server's owner made: inside
    inside = FileRoots.confined(tmp_path, GRIDS)
    assert load_scenario_text(GOOD.replace(str(GRIDS / "small.yaml"), "small.yaml"), "ok.yaml", tmp_path, inside)
