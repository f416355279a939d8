"""`grid-scheduler whatif run | compare | sweep` write their CSV, PNG and HTML."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grid_scheduler.cli import main
from tests.whatif_scenarios import EVENTFUL_CHANGES, small

BIN = Path(sys.executable).parent


def _write(path: Path, **overrides: object) -> Path:
    path.write_text(yaml.safe_dump(small(**overrides), sort_keys=False))
    return path


def test_whatif_run_writes_csv_png_and_a_self_contained_html(tmp_path: Path) -> None:
    scenario = _write(tmp_path / "s.yaml", changes=EVENTFUL_CHANGES)
    out = tmp_path / "report"
    # The installed command, as a planner runs it: progress bar on stderr, summary on stdout.
    done = subprocess.run([str(BIN / "grid-scheduler"), "whatif", "run", str(scenario), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "report:" in done.stdout and "residency violations" in done.stdout
    assert "small-test" in done.stderr and "100%" in done.stderr  # the progress bar
    names = {p.name for p in out.iterdir()}
    assert {"summary.json", "metrics.csv", "timeseries.csv", "jobs.csv", "changes.csv", "report.html"} <= names
    pngs = [p for p in out.iterdir() if p.suffix == ".png"]
    assert len(pngs) >= 5 and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["residency"]["violations"] == 0
    with (out / "metrics.csv").open() as f:
        metrics = {row["metric"]: row["value"] for row in csv.DictReader(f)}
    assert float(metrics["jobs.arrived"]) == summary["jobs"]["arrived"]
    assert "utilisation.by_site.glomfjord.utilisation" in metrics
    assert "queue_delay_hours.by_kind.training.p95" in metrics
    with (out / "jobs.csv").open() as f:  # a row per part of each run; every job at least one
        assert len({row["job_id"] for row in csv.DictReader(f)}) == summary["jobs"]["arrived"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "src=\"http" not in html and "<link" not in html  # nothing fetched from elsewhere
    assert "Timed changes" in html and "site glomfjord fails for 1 days" in html


def test_two_runs_with_the_same_seed_write_identical_files(tmp_path: Path) -> None:
    # Separate processes with different hash seeds: nothing may depend on set order or the clock.
    scenario = _write(tmp_path / "s.yaml", changes=EVENTFUL_CHANGES)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out, hash_seed in zip(outs, ("1", "2"), strict=True):
        done = subprocess.run([str(BIN / "grid-scheduler"), "whatif", "run", str(scenario), "--out", str(out),
                               "--quiet"], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert done.returncode == 0, done.stderr
    a, b = outs
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {"jobs.csv", "timeseries.csv", "changes.csv", "metrics.csv", "summary.json", "report.html"} <= set(names)
    for name in names:
        if name == "perf.json":  # the run's wall time, and nothing else
            continue
        left, right = (a / name).read_bytes(), (b / name).read_bytes()
        if name == "report.html":  # the page states the wall time once
            wall = re.compile(rb"[0-9.]+ s wall time")
            assert len(wall.findall(left)) == 1
            left, right = wall.sub(b"", left), wall.sub(b"", right)
        assert left == right, f"{name} differs between two runs with the same seed"


def test_whatif_compare_and_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a.yaml", horizon_days=2)
    b = _write(tmp_path / "b.yaml", horizon_days=2,
               changes=[{"kind": "site_failure", "at_days": 0.5, "duration_days": 1, "site": "glomfjord"}])
    out = tmp_path / "cmp"
    assert main(["whatif", "compare", str(a), str(b), "--out", str(out), "--quiet"]) == 0
    assert (out / "small-test" / "report.html").exists() and (out / "small-test-2" / "report.html").exists()
    with (out / "comparison.csv").open() as f:
        rows = {row["metric"]: row for row in csv.DictReader(f)}
    displaced = rows["disruption.displaced_jobs"]
    assert float(displaced["small-test"]) == 0 and float(displaced["delta small-test-2"]) > 0
    html = (out / "compare.html").read_text()
    assert "small-test vs small-test-2" in html and html.count("data:image/png;base64,") == 4

    out = tmp_path / "sweep"
    assert main(["whatif", "sweep", str(a), "--param", "seed=1,2", "--param", "horizon_days=1,2",
                 "--out", str(out), "--workers", "2", "--quiet"]) == 0
    with (out / "sweep.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(r["seed"], r["horizon_days"]) for r in table] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert all(r["residency violations"] == "0" for r in table)
    assert (out / "sweep.html").exists() and (out / "sweep_metrics.csv").exists()
    assert "4 variants" in capsys.readouterr().out


def test_sweep_on_ray_without_ray_installed_says_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as in a bare install
    out = tmp_path / "sweep"
    assert main(["whatif", "sweep", str(_write(tmp_path / "a.yaml", horizon_days=1)), "--param", "seed=1,2",
                 "--out", str(out), "--ray", "auto", "--quiet"]) == 2
    assert "pip install 'grid-scheduler[ray]'" in capsys.readouterr().err
    assert not out.exists()
