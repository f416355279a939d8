"""`whatif sweep --ray`: each variant a Ray task on a real local Ray (2 CPUs, started once here).

Same seeds, same files as the local process pool (the wall time aside); a failed variant, or a
worker that dies, is a row with its error while the others complete.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from grid_scheduler.cli import main
from grid_scheduler.whatif.ray_backend import RayBackend
from tests.whatif_scenarios import small

try:
    import ray
except ImportError:
    # CI installs the dev extra, which has ray: there a missing ray is a failure, not a skip.
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        raise
    pytest.skip("ray is not installed: pip install 'grid-scheduler[ray]'", allow_module_level=True)

BIN = Path(sys.executable).parent
# The wall time is the one thing allowed to differ: sweep.csv's wall_s column, the same cell in the
# HTML table (the cell before the empty error cell, "-", at the end of each row).
HTML_WALL = re.compile(r"<td>[0-9.,]+</td>(<td>-</td></tr>)")


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    context = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
                       log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield str(context.address_info["address"])
    finally:
        ray.shutdown()


def _scenario(tmp_path: Path) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(small(horizon_days=1), sort_keys=False))
    return path


def _sweep(scenario: Path, out: Path, *extra: str) -> int:
    return main(["whatif", "sweep", str(scenario), "--param", "seed=1,2", "--param", "horizon_days=1,2",
                 "--out", str(out), "--quiet", *extra])


def _without_wall_time(out: Path) -> dict[str, str]:
    files = {p.name: p.read_text() for p in sorted(out.iterdir())}
    with (out / "sweep.csv").open() as f:
        rows = list(csv.reader(f))
    wall = rows[0].index("wall_s")
    assert all(re.fullmatch(r"[0-9.]+", row[wall]) for row in rows[1:])
    files["sweep.csv"] = "\n".join(",".join(c for i, c in enumerate(row) if i != wall) for row in rows)
    html, n = HTML_WALL.subn(r"\1", files["sweep.html"])
    assert n == len(rows) - 1
    files["sweep.html"] = html
    return files


def test_ray_sweep_writes_the_same_files_as_the_process_pool(ray_address: str, tmp_path: Path) -> None:
    scenario = _scenario(tmp_path)
    assert _sweep(scenario, tmp_path / "ray", "--ray", "auto") == 0
    assert ray.is_initialized()  # it joined this module's Ray and left it running
    assert _sweep(scenario, tmp_path / "pool", "--workers", "2") == 0
    on_ray, in_pool = _without_wall_time(tmp_path / "ray"), _without_wall_time(tmp_path / "pool")
    assert sorted(on_ray) == ["sweep.csv", "sweep.html", "sweep.json", "sweep_metrics.csv"]
    for name in on_ray:
        assert on_ray[name] == in_pool[name], f"{name} differs between Ray and the process pool"
    rows = json.loads(on_ray["sweep.json"])
    assert [r["params"] for r in rows] == [{"seed": s, "horizon_days": d} for s in (1, 2) for d in (1, 2)]
    assert all(r["error"] is None and r["summary"]["jobs"]["arrived"] > 0 for r in rows)
    # Different seeds, different workloads: the comparison above is not between empty tables.
    assert rows[0]["summary"]["jobs"] != rows[2]["summary"]["jobs"]


def test_a_failing_variant_is_a_row_with_its_error_and_the_others_complete(
    ray_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = _scenario(tmp_path)
    errors = {}
    for backend, args in (("ray", ["--ray", "auto"]), ("pool", ["--workers", "2"])):
        out = tmp_path / backend
        # A file where variant 01's report directory goes: its run succeeds, writing its report fails.
        (out / "variants").mkdir(parents=True)
        (out / "variants" / "01-seed=1,horizon_days=2").write_text("in the way")
        assert _sweep(scenario, out, "--reports", *args) == 1
        with (out / "sweep.csv").open() as f:
            table = list(csv.DictReader(f))
        assert [bool(r["error"]) for r in table] == [False, True, False, False]
        assert table[1]["wall_s"] == "" and table[1]["placed"] == ""
        assert all(r["placed"] for r in table[::2])
        rows = json.loads((out / "sweep.json").read_text())
        assert rows[1]["summary"] is None and rows[1]["error"] == table[1]["error"]
        assert "01-seed=1,horizon_days=2" not in (out / "sweep_metrics.csv").read_text()
        assert "1 of 4 variants failed" in (out / "sweep.html").read_text()
        assert sorted(p.name for p in (out / "variants").iterdir() if p.is_dir()) == [
            "00-seed=1,horizon_days=1", "02-seed=2,horizon_days=1", "03-seed=2,horizon_days=2"]
        assert "variant 01-seed=1,horizon_days=2 failed: FileExistsError" in capsys.readouterr().err
        errors[backend] = table[1]["error"].replace(str(out), "OUT")
    assert errors["ray"] == errors["pool"]
    assert errors["ray"].startswith("FileExistsError: ") and "OUT/variants/01-seed=1,horizon_days=2" in errors["ray"]


def _dies_on_one(x: int) -> int:
    if x == 1:
        os._exit(3)  # the worker process goes away mid-task, as on an out-of-memory kill
    return x * 10


def test_a_worker_that_dies_is_reported_through_lost_and_the_others_complete(ray_address: str) -> None:
    got = sorted(RayBackend(max_retries=0).map_unordered(
        _dies_on_one, [0, 1, 2, 3], lost=lambda item, error: -1 if "WorkerCrashedError" in repr(error) else -2))
    assert got == [-1, 0, 20, 30]
    assert ray.is_initialized()


def test_the_cli_joins_a_cluster_by_address_and_shows_progress(ray_address: str, tmp_path: Path) -> None:
    # Another process, as a planner runs it: a second driver on this module's cluster.
    scenario, out = _scenario(tmp_path), tmp_path / "out"
    done = subprocess.run([str(BIN / "grid-scheduler"), "whatif", "sweep", str(scenario), "--param", "seed=1,2",
                           "--out", str(out), "--ray", ray_address],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr
    assert "2 variants" in done.stdout
    assert "sweep small-test" in done.stderr and "2/2" in done.stderr  # the progress bar
    with (out / "sweep.csv").open() as f:
        assert [r["seed"] for r in csv.DictReader(f)] == ["1", "2"]
    assert ray.is_initialized() and len(ray.nodes()) == 1  # the subprocess left the cluster running


def test_an_address_where_no_cluster_listens_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scenario, out = _scenario(tmp_path), tmp_path / "out"
    done = subprocess.run([str(BIN / "grid-scheduler"), "whatif", "sweep", str(scenario), "--param", "seed=1,2",
                           "--out", str(out), "--ray", f"127.0.0.1:{port}", "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"error: --ray 127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port}" in done.stderr
    assert not out.exists()
