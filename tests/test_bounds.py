"""Absurd sizes are refused by the model's bounds, naming the field (issue 9), while every
example job and scenario still validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.client import Client
from grid_scheduler.config import load_job
from grid_scheduler.model import JobSpec
from grid_scheduler.model.errors import violations
from grid_scheduler.model.job import MAX_DATASETS, MAX_DEMAND, MAX_GPU_TYPES, MAX_GPUS, MAX_REPLICAS
from grid_scheduler.service.convert import spec_to_pb
from grid_scheduler.whatif.scenario import load_scenario
from tests.test_service import bad_request_fields

ROOT = Path(__file__).resolve().parent.parent


def inference(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "inf", "tenant": "acme", "kind": "inference", "gpus": {"count": 8},
        "inference": {"replicas": 2, "demand": [{"endpoint": "london"}], "latency_slo_ms": 20},
    }
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target = spec
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value
    return spec


def training(**changes: Any) -> dict[str, Any]:
    spec = inference(**changes)
    spec["kind"] = "training"
    spec.pop("inference")
    return spec


ABSURD = [
    (inference(**{"inference.replicas": 10_000}), "inference.replicas"),
    (inference(**{"gpus.count": 1_000_000}), "gpus.count"),
    (training(**{"gpus.count": MAX_GPUS + 1}), "gpus.count"),
    (training(**{"gpus.types": [f"T{i}" for i in range(100_000)]}), "gpus.types"),
    (training(**{"residency.allowed": ["EU"] * 50_000}), "residency.allowed"),
    (training(**{"residency.denied": ["NO"] * 65}), "residency.denied"),
    (inference(**{"inference.demand": [{"endpoint": f"e{i}"} for i in range(20_000)]}), "inference.demand"),
    (training(**{"training.datasets": [f"d{i}" for i in range(MAX_DATASETS + 1)]}), "training.datasets"),
    (training(name="n" * 257), "name"),
    (training(tenant="t" * 129), "tenant"),
    (training(**{"gpus.types": ["T" * 129]}), "gpus.types[0]"),
    (inference(**{"inference.demand": [{"endpoint": "e" * 129}]}), "inference.demand[0].endpoint"),
    (training(**{"training.duration_hours": 1e9}), "training.duration_hours"),
    (training(**{"gpus.min_memory_gib": 1e12}), "gpus.min_memory_gib"),
    (inference(**{"inference.demand": [{"endpoint": "london", "weight": 1e300}]}), "inference.demand[0].weight"),
]


@pytest.mark.parametrize(("data", "field"), ABSURD, ids=[f for _, f in ABSURD])
def test_absurd_sizes_are_refused_naming_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(data)
    assert field in [path for path, _ in violations(exc.value)]


def test_the_bounds_themselves_are_accepted() -> None:
    JobSpec.model_validate(inference(**{"inference.replicas": MAX_REPLICAS, "gpus.count": MAX_GPUS,
                                        "inference.demand": [{"endpoint": f"e{i}"} for i in range(MAX_DEMAND)],
                                        "gpus.types": [f"T{i}" for i in range(MAX_GPU_TYPES)]}))


def test_a_huge_demand_list_over_grpc_is_invalid_argument_with_a_bounded_status(client: Client) -> None:
    # 20,000 unknown endpoints used to be 20,000 violations: a status over gRPC's metadata limit.
    spec = JobSpec.model_validate(inference())
    message = spec_to_pb(spec)
    del message.inference.demand[:]
    message.inference.demand.extend(pb.Demand(endpoint=f"nowhere-{i}", weight=1) for i in range(20_000))
    with pytest.raises(grpc.RpcError) as exc:
        client.placement.SubmitJob(pb.SubmitJobRequest(spec=message), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(exc.value) == ["spec.inference.demand"]
    # At the bound, every endpoint is unknown: violations are capped, then "... and N more".
    del message.inference.demand[MAX_DEMAND:]
    with pytest.raises(grpc.RpcError) as exc:
        client.placement.SubmitJob(pb.SubmitJobRequest(spec=message), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = bad_request_fields(exc.value)
    assert fields[0] == "spec.inference.demand[0].endpoint" and fields[-1] == "..." and len(fields) <= 21
    assert (exc.value.details() or "").endswith("more")


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_jobs_validate(path: Path) -> None:
    load_job(path)


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_example_scenarios_validate(path: Path) -> None:
    load_scenario(path)
