"""Hypothesis strategies for jobs on the small example grid."""

from __future__ import annotations

from hypothesis import strategies as st

from grid_scheduler.model import JobSpec

GPU_TYPES = ["H100", "H200", "B200", "GB300"]
ENDPOINTS = ["london", "frankfurt", "manchester", "lisbon"]
RESIDENCY = [{}, {"allowed": ["EU"]}, {"allowed": ["UK"]}, {"allowed": ["EEA"]}, {"allowed": ["EU", "UK"]},
             {"denied": ["UK"]}, {"allowed": ["EEA"], "denied": ["EU"]}]
DATASETS = [[], ["uk-customer-records"], ["eu-corpus"]]
# Mostly none, as most jobs give none; the rest: one site, an overflow chain, a fence, tiers.
PREFERENCES = [[], [], [], ["site:sines"], ["jurisdiction:UK", "*"], ["site:london-hub", "site:glomfjord"],
               ["tier:edge", "tier:regional_hub"], ["jurisdiction:EU", "jurisdiction:UK"], ["site:frankfurt-hub", "*"]]


@st.composite
def topologies(draw: st.DrawFn, gpus: int) -> dict[str, object]:
    """Mostly none; else whole interconnect domains, or slices that divide ``gpus``."""
    slices = [n for n in (4, 8, 16, 72) if gpus % n == 0]
    options: list[dict[str, object]] = [{}, {}, {}, {"mode": "whole_domains"}]
    options += [{"mode": "slices", "slice_gpus": n} for n in slices]
    return draw(st.sampled_from(options))


@st.composite
def training_specs(draw: st.DrawFn) -> JobSpec:
    count = draw(st.sampled_from([1, 4, 8, 16, 32, 64, 72, 100, 128, 144, 256, 480, 600]))
    return JobSpec.model_validate(
        {
            "name": "train",
            "tenant": draw(st.sampled_from(["acme", "bank"])),
            "kind": "training",
            "gpus": {
                "count": count,
                "types": draw(st.lists(st.sampled_from(GPU_TYPES), unique=True, max_size=2)),
                "min_memory_gib": draw(st.sampled_from([0, 0, 100, 200])),
            },
            "gang": draw(st.booleans()),
            "priority": draw(st.integers(0, 10)),
            "residency": draw(st.sampled_from(RESIDENCY)),
            "training": {"duration_hours": 2, "datasets": draw(st.sampled_from(DATASETS))},
            "placement_preference": draw(st.sampled_from(PREFERENCES)),
            "topology": draw(topologies(count)),
        }
    )


@st.composite
def inference_specs(draw: st.DrawFn) -> JobSpec:
    endpoints = draw(st.lists(st.sampled_from(ENDPOINTS), unique=True, min_size=1, max_size=3))
    return JobSpec.model_validate(
        {
            "name": "serve",
            "tenant": draw(st.sampled_from(["acme", "bank"])),
            "kind": "inference",
            "gpus": {"count": draw(st.sampled_from([1, 4, 8, 16])),
                     "types": draw(st.lists(st.sampled_from(GPU_TYPES), unique=True, max_size=2))},
            "priority": draw(st.integers(0, 10)),
            "residency": draw(st.sampled_from(RESIDENCY)),
            "inference": {
                "replicas": draw(st.integers(1, 4)),
                "demand": [{"endpoint": e, "weight": draw(st.sampled_from([0.5, 1.0, 2.0]))} for e in endpoints],
                "latency_slo_ms": draw(st.sampled_from([2, 5, 8, 12, 30])),
            },
            "placement_preference": draw(st.sampled_from(PREFERENCES)),
        }
    )


def job_specs() -> st.SearchStrategy[JobSpec]:
    return st.one_of(training_specs(), inference_specs())
