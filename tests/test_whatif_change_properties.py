"""Timed changes compose: drains, failures, power cuts and pool changes in any order and overlap.

Over random change sequences (many sharing an instant), every displacement is charged to the
change that took the job's capacity: at that change, one of the job's pools lost healthy GPUs
or vanished, or one of its sites' envelopes fell. So is every move of a deployment's replicas
off a failed site (its run ends "replicas moved" and the next one starts). Nothing else displaces a running job; in
particular a drain never does, and no change undoes a drain.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from grid_scheduler.model import Grid
from grid_scheduler.whatif.metrics import ChangeLog
from grid_scheduler.whatif.scenario import ScenarioError
from grid_scheduler.whatif.simulator import Simulator
from tests.whatif_scenarios import load, small

SITES = ["sines", "glomfjord", "london-hub", "frankfurt-hub", "manchester-edge"]
POOLS = ["sines-gb300", "sines-h100", "glomfjord-gb300", "london-h200", "london-b200", "frankfurt-h100",
         "manchester-h100"]
# Few instants, so that changes often coincide (and start or end while another is in force).
AT_DAYS = [0.25, 0.5, 0.75, 1.0, 1.25]
DURATIONS: list[float | None] = [None, 0.25, 0.5, 0.75]


@st.composite
def changes(draw: st.DrawFn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    removed: set[str] = set()
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["site_failure", "power_cut", "drain", "drain", "remove_pool"]))
        at = draw(st.sampled_from(AT_DAYS))
        duration = draw(st.sampled_from(DURATIONS))
        timed: dict[str, Any] = {"at_days": at} if duration is None else {"at_days": at, "duration_days": duration}
        if kind == "site_failure":
            out.append({"kind": kind, "site": draw(st.sampled_from(SITES)), **timed})
        elif kind == "power_cut":
            amount = draw(st.one_of(st.builds(lambda mw: {"lose_mw": mw}, st.sampled_from([0.05, 0.1, 0.3, 0.6])),
                                    st.builds(lambda mw: {"envelope_mw": mw}, st.sampled_from([0.05, 0.2, 0.5]))))
            out.append({"kind": kind, "site": draw(st.sampled_from(SITES)), **amount, **timed})
        elif kind == "drain":
            pools = draw(st.lists(st.sampled_from([p for p in POOLS if p not in removed]), min_size=1, max_size=3,
                                  unique=True))
            out.append({"kind": kind, "pools": pools, **timed})
        else:
            pool = draw(st.sampled_from(POOLS))
            if pool not in removed and not any(pool in c.get("pools", ()) for c in out):
                removed.add(pool)
                out.append({"kind": kind, "pool": pool, "at_days": at})
    return out


def _took(before: Grid, after: Grid, pool_ids: set[str], site_ids: set[str]) -> bool:
    """Whether going from ``before`` to ``after`` took capacity or power from these pools or sites."""
    for pool_id in pool_ids:
        old, new = before.pool_by_id.get(pool_id), after.pool_by_id.get(pool_id)
        if old is not None and (new is None or new[1].healthy_gpus < old[1].healthy_gpus):
            return True
    for site_id in site_ids:
        old_site, new_site = before.site_by_id.get(site_id), after.site_by_id.get(site_id)
        if old_site is not None and (new_site is None or new_site.power_envelope_mw < old_site.power_envelope_mw):
            return True
    return False


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes())
def test_every_displacement_is_charged_to_the_change_that_took_its_capacity(change_list: list[dict[str, Any]]) -> None:
    try:
        loaded = load(small(horizon_days=1.6, changes=change_list))
    except ScenarioError:
        assume(False)  # e.g. a pool drained after it was removed
        raise
    timeline = loaded.timeline
    # the grid just before and just after each grid change, in the order the simulator applies them
    grids: dict[tuple[float, int], tuple[Grid, Grid]] = {}
    key = timeline.in_force(0.0)
    for moment, after in timeline.steps():
        grids[(moment.time_s, moment.change)] = (timeline.grid_for(key), timeline.grid_for(after))
        key = after

    result = Simulator(loaded, check_invariants=True).run()

    charged: dict[int, int] = {}
    for job in result.jobs:
        for run in job.runs:
            if run.ended not in ("displaced", "replicas moved"):
                assert run.displaced_by is None
                continue
            change = run.displaced_by
            assert isinstance(change, ChangeLog) and change.time_s == run.end_s
            before, after = grids[(change.time_s, change.change)]
            pools = {a.pool_id for a in run.assignments}
            assert _took(before, after, pools, set(run.sites)), (
                f"{job.job_id} in {sorted(pools)} {run.ended} by {change.what!r}, which took nothing from it")
            if run.ended == "displaced":  # (a deployment whose replicas moved runs on: not a requeue)
                charged[id(change)] = charged.get(id(change), 0) + 1
    for change in result.changes:
        assert change.displaced_jobs == charged.get(id(change), 0), change.what
    assert result.summary["disruption"]["displaced_jobs"] == sum(charged.values())
    assert result.summary["disruption"]["requeues"] == sum(charged.values())
