"""The policy-only cost terms cached on the index (engine/scoring.py ``policy_pool_terms``) give
the costs an index without the cache gives, whatever policies came before on the same index."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_scheduler.engine import GridIndex, Usage
from grid_scheduler.engine.feasibility import compute_checks
from grid_scheduler.engine.scoring import POLICY_TERMS_KEPT, policy_pool_terms, pool_costs
from grid_scheduler.model import Grid, JobSpec, Policy, Weights
from tests.strategies import job_specs

TERMS = ("latency", "carbon", "energy_price", "packing", "data_movement", "total")
weight = st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5])
weights = st.builds(Weights, latency=weight, carbon=weight, energy_price=weight, packing=weight,
                    data_movement=weight, fragmentation=weight)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(weights, job_specs()), min_size=1, max_size=25))
def test_cached_policy_terms_equal_uncached(small_grid: Grid, calls: list[tuple[Weights, JobSpec]]) -> None:
    shared = GridIndex.build(small_grid)  # one index across policies, as a server keeps it
    for w, spec in calls:
        policy = Policy(weights=w)
        fresh = GridIndex(shared.grid, shared.topology)  # same grid, no cache yet
        cached = pool_costs(shared, compute_checks(shared, Usage.empty(shared), spec, policy), spec, policy)
        uncached = pool_costs(fresh, compute_checks(fresh, Usage.empty(fresh), spec, policy), spec, policy)
        for term in TERMS:
            np.testing.assert_array_equal(getattr(cached, term), getattr(uncached, term), err_msg=term)
        np.testing.assert_array_equal(cached.carbon, w.carbon * shared.site_carbon_term[shared.pool_site])
        np.testing.assert_array_equal(cached.energy_price, w.energy_price * shared.site_price_term[shared.pool_site])
    assert len(shared._policy_terms_cache) <= POLICY_TERMS_KEPT


def test_shared_terms_cannot_be_written(small_grid: Grid) -> None:
    """Every decision shares them: a write in place would change other jobs' costs, so it fails."""
    carbon, price, zeros = policy_pool_terms(GridIndex.build(small_grid), Policy())
    for array in (carbon, price, zeros):
        with pytest.raises(ValueError):
            array[0] = 1.0
