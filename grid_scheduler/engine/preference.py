"""Site masks of a job's ordered placement preference (the rule lives in model/preference.py).

``preference_levels`` gives, for each entry in order, the sites that entry adds; placement (engine/online.py
``decide``) tries the union of the first k levels for k = 1, 2, ... and stops at the first that
takes the job. ``allowed`` is the union of all of them: every path that does not walk the levels
(the batch optimiser, shadows and holds, preemption's freed-capacity bound) still never places a
job outside its preference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grid_scheduler.engine.index import BoolArray, GridIndex, IntArray
from grid_scheduler.model import JobSpec, Policy
from grid_scheduler.model.preference import ANY, parse_entry


@dataclass(frozen=True)
class Level:
    entry: str  # as written: "site:pt-sines", "jurisdiction:EU", "*"
    sites: BoolArray  # the sites this entry names (earlier entries may name some of them too)


def entries(spec: JobSpec, policy: Policy) -> list[str]:
    """The job's own preference, else its tenant's, else none."""
    if spec.placement_preference:
        return spec.placement_preference
    return policy.tenant_placement_preference.get(spec.tenant, [])


def preference_levels(index: GridIndex, spec: JobSpec, policy: Policy) -> tuple[Level, ...]:
    return tuple(Level(text, _sites(index, text)) for text in entries(spec, policy))


def allowed_sites(index: GridIndex, spec: JobSpec, policy: Policy) -> BoolArray | None:
    """Sites the preference lets the job use at all; None when it has no preference."""
    texts = entries(spec, policy)
    if not texts:
        return None
    if ANY in texts:
        return None
    mask = np.zeros(len(index.site_ids), dtype=np.bool_)
    for text in texts:
        mask |= _sites(index, text)
    return mask


def pool_rank(index: GridIndex, spec: JobSpec, policy: Policy) -> IntArray | None:
    """Per pool, the position of the first preference entry naming its site (pools no entry names:
    the entry count); None without a preference. The batch optimiser, which places many jobs at
    once instead of walking the entries, ranks pools by it before cost."""
    texts = entries(spec, policy)
    if not texts:
        return None
    site_rank = np.full(len(index.site_ids), len(texts), dtype=np.int64)
    for i, text in reversed(list(enumerate(texts))):
        site_rank[_sites(index, text)] = i
    return np.asarray(site_rank[index.pool_site], dtype=np.int64)


def _sites(index: GridIndex, text: str) -> BoolArray:
    return index.preference_sites(text, lambda: _build(index, text))


def _build(index: GridIndex, text: str) -> BoolArray:
    entry = parse_entry(text)
    sites = index.grid.sites
    if entry.kind == ANY:
        return np.ones(len(sites), dtype=np.bool_)
    if entry.kind == "site":
        return np.array([s.id == entry.value for s in sites], dtype=np.bool_)
    if entry.kind == "jurisdiction":
        return np.array([entry.value in s.tags for s in sites], dtype=np.bool_)
    return np.array([s.tier.value == entry.value for s in sites], dtype=np.bool_)
