"""A policy survives the trip through its protobuf message: every field, defaults and all.

A field the message lacks would be silently dropped for a client that sends a ``Policy``
message instead of YAML (the YAML path carries everything).
"""

from __future__ import annotations

from grid_scheduler.model import Policy
from grid_scheduler.service.policy_convert import policy_dict, policy_to_pb

FULL = Policy.model_validate({
    "version": "full",
    "weights": {"latency": 2.0, "carbon": 0.1, "energy_price": 0.0, "packing": 0.7, "data_movement": 3.0},
    "tenant_residency": {"bank": {"allowed": ["UK"], "denied": []}},
    "tenant_placement_preference": {"bank": ["site:london-hub", "jurisdiction:UK", "*"]},
    "fair_share": {"enabled": True, "weights": {"bank": 2.0, "acme": 0.5}, "default_weight": 1.5},
    "quotas": {
        "resource_groups": [{"name": "gb300-eu", "gpu_types": ["GB300"], "jurisdictions": ["EU"]},
                            {"name": "hubs", "tiers": ["regional_hub"], "sites": ["london-hub"]}],
        "cohorts": [{"name": "research", "tenants": {
            "acme": {"gb300-eu": {"nominal_gpus": 64, "borrowing_limit_gpus": 32, "lending_limit_gpus": 16}},
            "bank": {"gb300-eu": {"nominal_gpus": 32}, "hubs": {"nominal_gpus": 8, "borrowing_limit_gpus": 0}},
        }}],
    },
    "max_run_hours": {"default": 72.0, "tenants": {"bank": 12.5}},
    "inference_placement": "optimal",
    "inference_time_limit_s": 2.5,
})


def test_every_field_round_trips() -> None:
    assert Policy.model_validate(policy_dict(policy_to_pb(FULL))) == FULL
    assert Policy.model_validate(policy_dict(policy_to_pb(Policy()))) == Policy()


def test_every_model_field_has_a_message_field() -> None:
    """A new policy section must be added to the proto too (or this test names it)."""
    data = policy_dict(policy_to_pb(FULL))
    missing = set(Policy.model_fields) - set(data)
    assert not missing, f"not carried by the Policy message: {sorted(missing)}"
