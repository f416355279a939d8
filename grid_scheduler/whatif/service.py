"""What a remote what-if run executes, in its own process: no gRPC here.

The ScenarioService (``grid_scheduler/service/scenario.py``) validates a scenario, then spawns
a process that runs ``run_in_child``: it loads the scenario again (confined to the same folders
as the server's check), simulates it while reporting progress through a queue, and writes the
report to a directory of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any, Literal

from grid_scheduler.whatif.paths import FileRoots
from grid_scheduler.whatif.scenario import LoadedScenario, load_scenario, load_scenario_text

__all__ = ["PROGRESS_EVERY_S", "RunSource", "run_in_child"]

PROGRESS_EVERY_S = 0.25  # a run reports at most this often


@dataclass(frozen=True)
class RunSource:
    """A scenario as the server accepted it: a file (its resolved path) or YAML text, and the
    folders its file fields may point into. Picklable: it crosses into the spawned process."""

    kind: Literal["path", "yaml"]
    text: str  # the path, or the YAML
    base_dir: Path
    files: FileRoots = FileRoots.UNCONFINED

    def load(self) -> LoadedScenario:
        if self.kind == "path":
            return load_scenario(self.text, self.files)
        return load_scenario_text(self.text, "yaml", self.base_dir, self.files)


def run_in_child(source: RunSource, out_dir: str, messages: Queue[tuple[Any, ...]]) -> None:
    """A run, in its own process: load, simulate (reporting progress), write the report.

    Messages: ``("progress", simulated_hours, arrived, total)``, then ``("done",)`` or
    ``("error", text)``.
    """
    try:
        from grid_scheduler.whatif.report import write_run_report
        from grid_scheduler.whatif.simulator import Progress, quiet_logs, simulate

        quiet_logs(cache=True)
        loaded = source.load()
        last = 0.0

        def progress(p: Progress) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or p.sim_s >= p.horizon_s:
                last = now
                messages.put(("progress", p.sim_s / 3600.0, p.arrived, p.arrivals))

        result = simulate(loaded, progress=progress)
        write_run_report(result, loaded, Path(out_dir))
        messages.put(("done",))
    except Exception as e:  # reported to the operation, not lost in a child's stderr
        messages.put(("error", f"{type(e).__name__}: {e}"))
