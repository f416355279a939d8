"""A wheel that runs: built from this tree, installed (not editable) into a fresh venv, used from elsewhere.

The examples (default grid, jobs, scenarios and the trace they replay) are package data, so
``serve`` without ``--grid`` and ``whatif run`` on a shipped scenario must work with no repository
around. Slow (a venv and a dependency install from pip's cache), so bounded by its own timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.net import free_port
from tests.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT_S = 600
# Build products and caches of this tree stay behind: a stale *.egg-info/SOURCES.txt would put
# files in the wheel that the package-data rules no longer name, as a fresh clone would not.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
                                    ".hypothesis", "reports")


def run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, env=_clean_env())
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    # Nothing may lead the fresh venv back to this tree (the editable install, PYTHONPATH).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.mark.timeout(1500)
def test_a_wheel_serves_the_example_grid_and_runs_a_shipped_scenario(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)], tmp_path)
    (wheel,) = (tmp_path / "dist").glob("grid_scheduler-*.whl")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    # The pinned working set, from pip's cache where it has it.
    run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)], tmp_path)
    python, gs = str(venv / "bin" / "python"), str(venv / "bin" / "grid-scheduler")

    examples = Path(run([python, "-c", "from grid_scheduler.config import EXAMPLES_DIR; print(EXAMPLES_DIR)"],
                        elsewhere).strip())
    assert examples.is_relative_to(venv), f"grid_scheduler imported from {examples}, not the installed wheel"
    # Every shipped scenario loads: its grid and the trace it replays (baseline's) were shipped too.
    names = run([python, "-c", "from grid_scheduler.config import EXAMPLES_DIR\n"
                 "from grid_scheduler.whatif.scenario import load_scenario\n"
                 "for p in sorted((EXAMPLES_DIR / 'scenarios').glob('*.yaml')): print(load_scenario(p).name)"],
                elsewhere).split()
    assert {"baseline", "norway-eea-not-eu"} <= set(names), names

    address = f"127.0.0.1:{free_port()}"
    server = ServeProcess([gs, "serve", "--address", address, "--log-level", "warning"], address,
                          tmp_path / "serve.log", cwd=elsewhere)
    try:
        server.wait_serving()
        sites = run([gs, "sites", "--address", address], elsewhere)
        assert "sines" in sites and "monarch" in sites, sites  # the example grid (nscale.yaml)
    finally:
        code = server.terminate()
    assert code == 0, server.log()

    out = elsewhere / "report"
    run([gs, "whatif", "run", str(examples / "scenarios" / "norway-eea-not-eu.yaml"), "--quiet", "--out", str(out)],
        elsewhere)
    assert (out / "report.html").stat().st_size > 0
    assert (out / "summary.json").stat().st_size > 0
