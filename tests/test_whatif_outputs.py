"""The output files can be audited: the summary's figures are recomputed from jobs.csv alone,
and timeseries.csv's GPU counts and power per pool agree with jobs.csv and with each other."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

from grid_scheduler.whatif.report import JOB_COLUMNS, write_run_report
from grid_scheduler.whatif.scenario import LoadedScenario
from grid_scheduler.whatif.simulator import RunResult, simulate
from tests.whatif_scenarios import EVENTFUL_CHANGES, load, small


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path, LoadedScenario]:
    loaded = load(small(changes=EVENTFUL_CHANGES))
    result = simulate(loaded)
    out = tmp_path_factory.mktemp("report")
    write_run_report(result, loaded, out)
    return result, out, loaded


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_energy_per_site_and_gpu_hours_per_pool_recomputed_from_jobs_csv_match_the_summary_exactly(
    report: tuple[RunResult, Path, LoadedScenario],
) -> None:
    _, out, _ = report
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(out / "jobs.csv")
    assert list(rows[0]) == JOB_COLUMNS
    # As the README defines them: exact sums (math.fsum) of power_w x seconds and gpus x seconds
    # over the rows of each site / pool, one unit conversion, rounded to 6 decimals.
    joules: defaultdict[str, list[float]] = defaultdict(list)
    gpu_s: defaultdict[str, list[float]] = defaultdict(list)
    for row in rows:
        if not row["run"]:
            continue  # never placed
        seconds = float(row["end_s"]) - float(row["start_s"])
        joules[row["site"]].append(int(row["power_w"]) * seconds)
        gpu_s[row["pool"]].append(int(row["gpus"]) * seconds)
    energy = summary["energy"]["by_site"]
    assert set(joules) <= set(energy) and len(joules) >= 4
    for site, e in energy.items():
        assert e["mwh"] == round(math.fsum(joules[site]) / 3.6e9, 6), site
    all_joules = [j for js in joules.values() for j in js]
    assert summary["energy"]["total"]["mwh"] == round(math.fsum(all_joules) / 3.6e9, 6)
    pools = summary["utilisation"]["by_pool"]
    assert set(gpu_s) <= set(pools) and len(gpu_s) >= 5
    for pool, u in pools.items():
        assert u["gpu_hours_used"] == round(math.fsum(gpu_s[pool]) / 3600.0, 6), pool
    # and the runs agree with the ledger's own integral over time
    result = report[0]
    for site, e in energy.items():
        assert e["mwh"] == pytest.approx(result.recorder.site_kwh[site] / 1000.0, abs=1e-5)
    for pool, u in pools.items():
        assert u["gpu_hours_used"] == pytest.approx(result.recorder.gpu_s[pool] / 3600.0, abs=1e-5)
    used = summary["utilisation"]["fleet"]["gpu_hours_used"]
    assert used == round(math.fsum(g for gs in gpu_s.values() for g in gs) / 3600.0, 6)


def test_jobs_csv_has_a_row_per_run_part_with_how_each_run_ended(
    report: tuple[RunResult, Path, LoadedScenario],
) -> None:
    result, out, _ = report
    rows = _rows(out / "jobs.csv")
    assert {r["job_id"] for r in rows} == {j.job_id for j in result.jobs}
    ended = {r["ended"] for r in rows if r["run"]}
    assert {"completed", "displaced", "preempted", "running"} <= ended
    changes = {f"changes[{c.change}] at day {c.time_s / 86400:g}: {c.what}": c.time_s for c in result.changes}
    for row in rows:
        if row["ended"] == "displaced":  # the change that took its capacity, as changes.csv names it
            assert changes[row["ended_by"]] == float(row["end_s"])
        elif row["ended"] == "preempted":
            assert row["ended_by"] in {r["job_id"] for r in rows}
        elif row["ended"] == "running":
            assert float(row["end_s"]) == result.horizon_s
    # a multi-site deployment: one row per site, the GPUs of each, the latency each endpoint was served at
    by_run: defaultdict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["run"]:
            by_run[(row["job_id"], row["run"])].append(row)
    spread = [parts for parts in by_run.values() if parts[0]["kind"] == "inference" and len(parts) > 1]
    assert spread
    for parts in spread:
        job = next(j for j in result.jobs if j.job_id == parts[0]["job_id"])
        run = job.runs[int(parts[0]["run"]) - 1]
        assert [(p["site"], p["pool"], int(p["gpus"])) for p in parts] == [
            (a.site_id, a.pool_id, a.gpus) for a in run.assignments]
        assert sum(int(p["gpus"]) for p in parts) == job.spec.total_gpus
        assert parts[0]["latency_ms"] == " ".join(f"{e}={ms:g}" for e, ms in run.latency_ms.items())
        assert parts[0]["demand_endpoints"] and parts[0]["latency_slo_ms"]


def test_timeseries_gpus_and_power_per_site_and_pool_agree_with_jobs_csv(
    report: tuple[RunResult, Path, LoadedScenario],
) -> None:
    result, out, loaded = report
    series: defaultdict[tuple[str, str], dict[float, float]] = defaultdict(dict)
    for row in _rows(out / "timeseries.csv"):
        series[(row["metric"], row["key"])][float(row["time_hours"])] = float(row["value"])
    runs = [r for r in _rows(out / "jobs.csv") if r["run"]]
    meta = result.recorder.pool_meta
    for hours in (12.0, 36.0, 60.0, 84.0):
        t = hours * 3600.0
        grid = loaded.timeline.grid_at(t)
        live = [r for r in runs if float(r["start_s"]) <= t and (float(r["end_s"]) > t or r["ended"] == "running")]
        site_gpus: defaultdict[str, float] = defaultdict(float)
        site_mw: defaultdict[str, float] = defaultdict(float)
        for pool, (site, _, _) in meta.items():
            if hours not in series[("gpus_used_pool", pool)]:
                continue  # not in the grid then
            used = series[("gpus_used_pool", pool)][hours]
            assert used == sum(int(r["gpus"]) for r in live if r["pool"] == pool), (pool, hours)
            watts = sum(int(r["power_w"]) for r in live if r["pool"] == pool)
            assert series[("power_mw_pool", pool)][hours] == pytest.approx(watts / 1e6, abs=1e-12)
            site_gpus[site] += used
            site_mw[site] += series[("power_mw_pool", pool)][hours]
            free, held = series[("gpus_free_pool", pool)][hours], series[("gpus_drained_idle_pool", pool)][hours]
            assert used + free + held == grid.pool_by_id[pool][1].healthy_gpus
            drained = pool in ("london-b200", "frankfurt-h100") and 12.0 <= hours < 36.0  # EVENTFUL_CHANGES[2]
            assert (free == 0) if drained else (held == 0)
        for site, gpus in site_gpus.items():
            assert series[("gpus_used_site", site)][hours] == gpus
            assert series[("power_mw", site)][hours] == pytest.approx(site_mw[site], abs=1e-9)
