"""Small what-if scenarios on examples/grids/small.yaml: each runs in well under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from grid_scheduler.whatif.scenario import LoadedScenario, load_scenario_data, load_scenario_text
from tests.conftest import GRIDS

# A copy of ../shared/data/alibaba-gpu-v2023 (see its README), so a fresh clone runs the tests.
TRACE = Path(__file__).resolve().parents[1] / "examples" / "data" / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"


def small(**overrides: Any) -> dict[str, Any]:
    """Four days on the small grid: training (gang, 8-256 GPUs) and inference at every endpoint."""
    data: dict[str, Any] = {
        "name": "small-test",
        "grid": str(GRIDS / "small.yaml"),
        "seed": 5,
        "horizon_days": 4,
        "sample_every_hours": 2,
        "workload": {
            "generated": [
                {"name": "train", "kind": "training", "tenants": {"acme": 2, "labs": 1}, "arrivals_per_day": 40,
                 "gpus": {"min": 8, "max": 256, "decay": 0.7}, "duration_hours": {"min": 1, "max": 30},
                 "gpu_types": ["GB300", "H100"], "priority": 50, "preemptible": True},
                {"name": "serve", "kind": "inference", "tenants": {"acme": 1}, "arrivals_per_day": 40,
                 "endpoints": {"london": 2, "frankfurt": 1, "manchester": 1, "lisbon": 1},
                 "gpus": {"min": 1, "max": 8}, "replicas": {"min": 1, "max": 3},
                 "duration_hours": {"min": 1, "max": 20}, "latency_slo_ms": 15, "diurnal_amplitude": 0.5,
                 "priority": 200},
                {"name": "big", "kind": "training", "tenants": {"acme": 1}, "arrivals_per_day": 3,
                 "gpus": {"min": 128, "max": 256}, "duration_hours": {"min": 4, "max": 24},
                 "gpu_types": ["GB300"], "priority": 100},
            ],
        },
    }
    data.update(overrides)
    return data


def load(data: dict[str, Any], base_dir: Path | None = None) -> LoadedScenario:
    return load_scenario_data(data, "test", base_dir or Path.cwd())


def load_text(data: dict[str, Any]) -> LoadedScenario:
    """Through the YAML text, as a file would be (so errors carry lines)."""
    return load_scenario_text(yaml.safe_dump(data, sort_keys=False), "test", Path.cwd())


EVENTFUL_CHANGES: list[dict[str, Any]] = [
    {"kind": "site_failure", "at_days": 1, "duration_days": 1, "site": "glomfjord"},
    {"kind": "power_cut", "at_days": 1.5, "duration_days": 1, "site": "sines", "lose_mw": 0.2},
    {"kind": "drain", "at_days": 0.5, "duration_days": 1, "pools": ["london-b200", "frankfurt-h100"]},
    {"kind": "gpu_delivery", "at_days": 0.25, "every_days": 1, "deliveries": 3, "site": "sines",
     "pool": {"id": "sines-vr", "gpu_type": "GB300", "gpus_per_node": 4, "interconnect_domain_gpus": 72,
              "workload": "training"},
     "nodes_per_delivery": 16},
    {"kind": "add_pool", "at_days": 2, "site": "frankfurt-hub",
     "pool": {"id": "frankfurt-h200", "gpu_type": "H200", "nodes": 8, "gpus_per_node": 8, "workload": "any"}},
    {"kind": "remove_pool", "at_days": 3, "pool": "manchester-h100"},
]
