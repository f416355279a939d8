"""`whatif compare SCENARIO --policy A --policy B`: one scenario under several policies, per tenant side
by side; every figure of tenants.csv recomputed here from each run's jobs.csv."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from grid_scheduler.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "grid_scheduler" / "examples"
SCENARIO = EXAMPLES / "scenarios" / "tenants-contended.yaml"
DEFAULT = EXAMPLES / "policies" / "default.yaml"
FAIR = EXAMPLES / "policies" / "fairshare.yaml"


def _from_jobs_csv(path: Path, weights: dict[str, float]) -> dict[str, dict[str, float]]:
    """The per-tenant figures from jobs.csv alone (README: What-if, "Output files"): one row per part
    (site, pool) of each run; a job's delay is its first run's start - its arrival, counted once."""
    gpu_s: dict[str, list[float]] = defaultdict(list)
    delays: dict[str, list[float]] = defaultdict(list)
    jobs: dict[str, set[str]] = defaultdict(set)
    never: dict[str, int] = defaultdict(int)
    started: set[str] = set()
    with path.open() as f:
        for row in csv.DictReader(f):
            tenant, job = row["tenant"], row["job_id"]
            jobs[tenant].add(job)
            if not row["run"]:
                never[tenant] += 1
                continue
            gpu_s[tenant].append(int(row["gpus"]) * (float(row["end_s"]) - float(row["start_s"])))
            if row["run"] == "1" and job not in started:
                started.add(job)
                delays[tenant].append((float(row["start_s"]) - float(row["arrival_s"])) / 3600.0)
    hours = {t: math.fsum(gpu_s[t]) / 3600.0 for t in jobs}
    total = math.fsum(hours.values())
    weight_sum = sum(weights.get(t, 1.0) for t in jobs)
    return {t: {"gpu_hours": hours[t], "share": hours[t] / total, "entitlement": weights.get(t, 1.0) / weight_sum,
                "queue_delay_p95_h": float(np.percentile(delays[t], 95)),
                "jobs": len(jobs[t]), "never_started": never[t]} for t in jobs}


def test_compare_one_scenario_under_two_policies_per_tenant(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert main(["whatif", "compare", str(SCENARIO), "--policy", str(DEFAULT), "--policy", str(FAIR),
                 "--out", str(out), "--quiet"]) == 0
    with (out / "tenants.csv").open() as f:
        rows = list(csv.DictReader(f))
    table = {(r["tenant"], r["metric"]): r for r in rows}
    assert {t for t, _ in table} == {"hyperscale", "acme-ai", "research-lab", "eu-bank"}
    for name, weights in [("default", {}), ("fairshare", {"eu-bank": 2.0})]:
        expected = _from_jobs_csv(out / name / "jobs.csv", weights)
        for tenant, figures in expected.items():
            for metric, value in figures.items():
                assert float(table[(tenant, metric)][name]) == pytest.approx(value, rel=1e-9, abs=1e-6), (
                    name, tenant, metric)
    for tenant in ("hyperscale", "acme-ai", "research-lab", "eu-bank"):
        for metric in ("gpu_hours", "queue_delay_p95_h", "share"):
            r = table[(tenant, metric)]
            assert float(r["delta fairshare"]) == pytest.approx(float(r["fairshare"]) - float(r["default"]))
    # Fair share takes GPU-hours from the tenant that floods the queue and gives them to the others.
    assert float(table[("hyperscale", "gpu_hours")]["delta fairshare"]) < 0
    for tenant in ("acme-ai", "research-lab", "eu-bank"):
        assert float(table[(tenant, "gpu_hours")]["delta fairshare"]) > 0
    data = json.loads((out / "tenants.json").read_text())
    assert data["fairshare"]["eu-bank"]["entitlement"] == pytest.approx(0.4)
    html = (out / "compare.html").read_text()
    assert "Per tenant" in html and "default vs fairshare" in html


@pytest.mark.parametrize("argv", [
    [str(SCENARIO), "--policy", str(DEFAULT)],  # one policy: nothing to compare
    [str(SCENARIO), str(SCENARIO), "--policy", str(DEFAULT), "--policy", str(FAIR)],  # two scenarios
])
def test_compare_with_policies_needs_one_scenario_and_two_policies(tmp_path: Path, argv: list[str]) -> None:
    assert main(["whatif", "compare", *argv, "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert not (tmp_path / "x").exists()


def test_a_bad_policy_file_fails_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("fair_share: {enabled: true, weights: {acme: -1}}\n")
    assert main(["whatif", "compare", str(SCENARIO), "--policy", str(DEFAULT), "--policy", str(bad),
                 "--out", str(tmp_path / "x"), "--quiet"]) != 0
    assert not (tmp_path / "x").exists()
