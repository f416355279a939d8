"""The part every benchmark's JSON report shares: the machine and its load around the run, and how
the report is written and announced. Benchmarks run as scripts, so they import it as ``report``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def machine(load_at_start: Sequence[float]) -> dict[str, Any]:
    """Cores and the 1/5/15-minute load averages at the start and now (the end of the run)."""
    return {
        "cores": os.cpu_count(),
        "load_average_1_5_15_at_start": [round(x, 2) for x in load_at_start],
        "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def write(out: Path, report: dict[str, Any], load_at_start: Sequence[float]) -> None:
    """Write ``report`` as JSON to ``out`` and say where, with the load it ran under."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nload average (1 min) {load_at_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end; "
          f"{os.cpu_count()} cores\nwrote {out} ({report['seconds']} s)")
