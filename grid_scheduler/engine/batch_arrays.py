"""Per-class checks and costs for the batch optimiser, built from shared parts.

At 100k jobs a batch has ~40k classes, but far fewer distinct *parts*: a residency mask, a GPU
type mask, a latency cover, a packing term per GPU count, a data-movement term per dataset. The
online path (``compute_checks``, ``pool_costs``) recomputes every part for every call (~150 us a
class); here each part is computed once per batch tier and a class's ``Checks`` / ``PoolCosts``
is assembled from them (a few us). The result is field for field what ``compute_checks`` and
``pool_costs`` return (tests/test_batch_scale.py compares them on generated jobs), so every
consumer downstream (masks, candidates, ``build_placement``) is unchanged.

Policies with quotas take the exact functions: quota state is per tenant and rare enough. So do
a ledger with node detail and a job asking for a topology inside pools (issue 11: node-level free
GPUs, whole domains or slices, the fragmentation term), whose parts are not shared: ``plain``.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

from grid_scheduler.engine.feasibility import Checks, compute_checks, latency_coverage, residency_rules, unit_of
from grid_scheduler.engine.feasibility import Unit as CheckUnit
from grid_scheduler.engine.index import BoolArray, FloatArray, GridIndex, IntArray, Usage
from grid_scheduler.engine.preference import allowed_sites
from grid_scheduler.engine.preference import entries as preference_entries
from grid_scheduler.engine.priority import Holds, Shadow
from grid_scheduler.engine.quota import policy_rules
from grid_scheduler.engine.scoring import PoolCosts, pool_costs, site_data_movement, site_latency
from grid_scheduler.model import JobKind, JobSpec, Policy


class ClassArrays:
    """Checks and costs of classes against one usage (plus the holds a tier sees), memoised by part."""

    def __init__(self, index: GridIndex, usage: Usage, policy: Policy, holds: Holds) -> None:
        self.index, self.usage, self.policy, self.holds = index, usage, policy, holds
        # Quotas (per-tenant state) or node detail (issue 11): the exact functions for every class.
        self.exact = policy_rules(index, policy) is not None or node_detail(index, usage)
        site = index.pool_site
        w = policy.weights
        self.zeros: FloatArray = np.zeros(len(site), dtype=np.float64)
        self.carbon: FloatArray = w.carbon * index.site_carbon_term[site]
        self.energy_price: FloatArray = w.energy_price * index.site_price_term[site]
        self._memo: dict[Hashable, Any] = {}

    def _get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = build()
        return value

    def memo(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """A value shared between classes, built once per ``key`` (an ``id`` in it must be of a
        memoised object, which stays alive as long as this)."""
        return self._get(("memo", key), build)

    def view(self, spec: JobSpec) -> tuple[Hashable, Usage]:
        """The usage ``spec`` is checked against (``Holds.overlay``): one per (held?, priority)."""
        # Memoised per (preemptible, priority), all the overlay reads of the spec: ``held_pools``
        # ORs two pool arrays per call, and this runs once per class (~100k at 200k jobs).
        return self._get(("view_of", spec.preemptible, spec.priority), lambda: self._view(spec))  # type: ignore[no-any-return]

    def _view(self, spec: JobSpec) -> tuple[Hashable, Usage]:
        held = not spec.preemptible and self.holds.held_pools(spec) is not None
        key = ("view", held, spec.priority if held else None)
        return key, self._get(key, lambda: self.holds.overlay(self.usage, spec))

    def _cover_key(self, spec: JobSpec) -> Hashable:
        if spec.inference is None:
            return None
        return (tuple(d.endpoint for d in spec.inference.demand), spec.inference.latency_slo_ms)

    def check_key(self, spec: JobSpec) -> Hashable:
        """Everything ``compute_checks`` reads of ``spec`` (with quotas off)."""
        return (self._base_key(spec), self._cover_key(spec))

    def _base_key(self, spec: JobSpec) -> Hashable:
        """``check_key`` but the demand endpoints and SLO (the latency cover)."""
        rules = spec.residency
        return (
            self.view(spec)[0], spec.kind, spec.gang, spec.gpus.count, spec.total_gpus, tuple(spec.gpus.types),
            spec.gpus.min_memory_gib, tuple(rules.allowed), tuple(rules.denied), tuple(spec.datasets),
            spec.tenant if spec.tenant in self.policy.tenant_residency else None,
            tuple(preference_entries(spec, self.policy)),
        )

    def checks(self, spec: JobSpec) -> Checks:
        if self.exact or not plain(spec):
            return compute_checks(self.index, self.view(spec)[1], spec, self.policy)
        base_key, cover_key = self._base_key(spec), self._cover_key(spec)
        key = ("checks", base_key, cover_key)
        checks: Checks | None = self._memo.get(key)
        if checks is None:
            # Two levels: most classes at scale are deployments that differ from one another only in
            # their demand endpoints (~60k distinct endpoint sets at 200k jobs), so everything else
            # (residency, types, capacity, power: the base) is computed once and each endpoint set
            # adds only its latency cover and the masks it changes (interned, so mostly shared).
            base = self._get(("checks", base_key, None), lambda: self._checks(spec))
            checks = self._memo[key] = base if cover_key is None else self._with_cover(base, spec, cover_key)
        return checks

    def prepare(self, specs: Iterable[JobSpec]) -> None:
        """Compute the checks of many deployments at once, as ``checks`` would one by one: their
        latency covers (``latency_coverage``, and the sites within SLO of any endpoint), then, per
        base (``_base_key``), their pool masks as rows of one array; all interned and memoised under
        ``checks``'s keys. A tier at 1M jobs has ~100k distinct endpoint sets, and the dozen numpy
        calls per set cost far more than their work (~120 -> ~45 us a set)."""
        if self.exact:
            return
        index = self.index
        deployments = [s for s in specs if s.inference is not None and s.inference.demand and plain(s)]
        todo: dict[Hashable, None] = {}
        for spec in deployments:
            key = self._cover_key(spec)
            if key not in todo and ("cover", key) not in self._memo:
                todo[key] = None
        by_slo: dict[float, list[Any]] = defaultdict(list)
        for key in todo:
            by_slo[key[1]].append(key)  # type: ignore[index]
        latency = index.topology.endpoint_site_latency_ms
        for slo, keys in by_slo.items():
            within = latency <= slo  # [endpoint, site]
            width = max(len(k[0]) for k in keys)
            # Each set's endpoint rows, padded to ``width`` with its first (``any`` is unchanged): one
            # gather for every set (``logical_or.reduceat`` over rows was ~75 us a set).
            rows = np.array([[index.endpoint_index[e] for e in (*k[0], *(k[0][0],) * (width - len(k[0])))]
                             for k in keys], dtype=np.int64)
            for a in range(0, len(keys), _PREPARE_ROWS):
                covers: BoolArray = np.asarray(within[rows[a:a + _PREPARE_ROWS]])  # [set, endpoint, site]
                any_ok: BoolArray = np.asarray(covers.any(axis=1))
                packed = np.packbits(any_ok, axis=-1)
                for i, key in enumerate(keys[a:a + _PREPARE_ROWS]):
                    self._memo[("cover", key)] = covers[i, :len(key[0])]
                    self._memo[("cover_any", key)] = self._intern_row("sites", packed[i].tobytes(), any_ok[i])
        by_base: dict[Hashable, dict[Hashable, JobSpec]] = defaultdict(dict)
        for spec in deployments:
            base_key, cover_key = self._base_key(spec), self._cover_key(spec)
            if ("checks", base_key, cover_key) not in self._memo:
                by_base[base_key].setdefault(cover_key, spec)
        for base_key, by_cover in by_base.items():
            first = next(iter(by_cover.values()))
            base = self._memo.get(("checks", base_key, None))
            if base is None:
                base = self._memo[("checks", base_key, None)] = self._checks(first)
            items = list(by_cover.items())
            for a in range(0, len(items), _PREPARE_ROWS):
                self._with_covers(base, base_key, items[a:a + _PREPARE_ROWS])

    def _with_covers(self, base: Checks, base_key: Hashable, items: list[tuple[Hashable, JobSpec]]) -> None:
        """``_with_cover`` for deployments with one base and many endpoint sets: their pool masks as
        rows of one array each (what ``_share_masks`` computes one by one), then memoised under the
        same keys and interned, so a later ``checks`` finds them."""
        assert isinstance(base_key, tuple)
        view_key, kind = base_key[0], items[0][1].kind
        pref = tuple(preference_entries(items[0][1], self.policy))
        site_ok = base.site_residency_ok
        if base.site_preference_ok is not None:
            site_ok = site_ok & base.site_preference_ok
        latency_ok = [self._memo[("cover_any", cover_key)] for cover_key, _ in items]
        # ``take``, not ``[:, pool_site]``: that result is not C-ordered, and packing its rows was ~100x slower.
        static = np.take(np.stack(latency_ok) & site_ok, base.pool_site, axis=1) & base.pool_type_ok
        static &= base.pool_workload_ok
        eligible = static & base.pool_health_ok
        load_key = ("load", view_key, base.need_gpus)
        feasible = eligible & self._get(load_key, lambda: _load_ok(base))
        packed = [np.packbits(m, axis=-1) for m in (static, eligible, feasible)]
        fields = self._get(("fields", id(base)), lambda: {f: base.__dict__[f] for f in _CHECK_FIELDS})
        memo = self._memo
        for j, (cover_key, _) in enumerate(items):
            key: Hashable = ("static", id(base.site_residency_ok), id(latency_ok[j]), pref, id(base.pool_type_ok), kind)
            s_ok = memo.get(key)
            if s_ok is None:
                s_ok = memo[key] = self._intern_row("pools", packed[0][j].tobytes(), static[j])
            key = ("eligible", id(s_ok), view_key)
            e_ok = memo.get(key)
            if e_ok is None:
                e_ok = memo[key] = self._intern_row("pools", packed[1][j].tobytes(), eligible[j])
            key = ("feasible", id(e_ok), load_key)
            f_ok = memo.get(key)
            if f_ok is None:
                f_ok = memo[key] = self._intern_row("pools", packed[2][j].tobytes(), feasible[j])
            checks = Checks(**{**fields, "site_latency_ok": latency_ok[j], "demand_cover": memo[("cover", cover_key)]})
            checks.__dict__.update(pool_static_ok=s_ok, pool_eligible=e_ok, pool_feasible=f_ok)
            self._memo[("checks", base_key, cover_key)] = checks

    def _with_cover(self, base: Checks, spec: JobSpec, cover_key: Hashable) -> Checks:
        """``base`` (checked as if every site met the SLO) with ``spec``'s latency cover."""
        cover = self._get(("cover", cover_key), lambda: latency_coverage(self.index, spec))
        site_latency_ok = self._get(("cover_any", cover_key),
                                    lambda: self.intern("sites", np.asarray(cover.any(axis=0))))
        fields = self._get(("fields", id(base)), lambda: {f: base.__dict__[f] for f in _CHECK_FIELDS})
        checks = Checks(**{**fields, "site_latency_ok": site_latency_ok, "demand_cover": cover})
        self._share_masks(checks, self.view(spec)[0], spec)
        return checks

    def _checks(self, spec: JobSpec) -> Checks:
        """The base checks of ``spec`` (see ``checks``): its latency cover left out."""
        index, policy = self.index, self.policy
        view_key, usage = self.view(spec)
        unit = unit_of(spec)
        need_gpus = spec.gpus.count if unit is not CheckUnit.SPLIT else spec.total_gpus
        site_latency_ok = self._get("all_sites", lambda: np.ones(len(index.site_ids), dtype=np.bool_))
        capacity = index.pool_healthy_gpus
        checks = Checks(
            unit=unit,
            need_gpus=need_gpus,
            site_residency_ok=index.residency_mask(residency_rules(spec, index, policy)),
            site_latency_ok=site_latency_ok,
            pool_type_ok=index.gpu_type_mask(tuple(spec.gpus.types), spec.gpus.min_memory_gib),
            pool_workload_ok=index.training_pools if spec.kind is JobKind.TRAINING else index.inference_pools,
            pool_health_ok=self._get(("health", view_key), lambda: ~usage.pool_drained & (capacity > 0)),
            pool_free_gpus=self._get(("free", view_key), lambda: np.maximum(capacity - usage.pool_used_gpus, 0)),
            site_headroom_kw=self._get(("headroom", view_key), lambda: index.site_envelope_kw - usage.site_used_kw),
            pool_need_kw=self._get(("need_kw", need_gpus), lambda: index.pool_kw_per_gpu * need_gpus),
            pool_site=index.pool_site,
            site_preference_ok=self._get(("preference", tuple(preference_entries(spec, policy))),
                                         lambda: _Boxed(allowed_sites(index, spec, policy))).value,
            # As ``compute_checks`` sets it (the field's default factory validates a new one: ~100 us).
            topology=spec.topology,
        )
        self._share_masks(checks, view_key, spec)
        return checks

    def _intern_row(self, kind: str, packed: bytes, row: BoolArray) -> BoolArray:
        """``intern(kind, row)`` given ``np.packbits(row).tobytes()`` (``prepare`` packs many rows at
        once); a new content is copied out of its array."""
        key = ("intern", kind, row.shape, packed)
        value: BoolArray | None = self._memo.get(key)
        if value is None:
            value = self._memo[key] = row.copy()
        return value

    def intern(self, kind: str, mask: BoolArray) -> BoolArray:
        """One array per distinct content: the masks of deployments with different endpoint sets
        are mostly equal (at 200k jobs, 15.5k pool masks held 5.6k contents), so they share one
        (memory, and every memo keyed by the array's id: split shares, price rows, warm-start skips)."""
        return self._get(("intern", kind, mask.shape, np.packbits(mask).tobytes()), lambda: mask)  # type: ignore[no-any-return]

    def _share_masks(self, checks: Checks, view_key: Hashable, spec: JobSpec) -> None:
        """Fill the masks ``Checks`` would compute on first use (``cached_property``, stored in the
        instance's ``__dict__``) with arrays shared by every class with the same parts, so ~30k
        classes cost a few hundred mask computations, not ~30k."""
        pref = tuple(preference_entries(spec, self.policy))
        residency = id(checks.site_residency_ok)
        static_key = ("static", residency, id(checks.site_latency_ok), pref, id(checks.pool_type_ok), spec.kind)
        static = self._get(static_key, lambda: self.intern("pools", _static_ok(checks)))
        eligible = self._get(("eligible", id(static), view_key),
                             lambda: self.intern("pools", np.asarray(static & checks.pool_health_ok)))
        load_key = ("load", view_key, checks.need_gpus)
        loaded = self._get(load_key, lambda: _load_ok(checks))
        feasible = self._get(("feasible", id(eligible), load_key),
                             lambda: self.intern("pools", np.asarray(eligible & loaded)))
        checks.__dict__.update(pool_static_ok=static, pool_eligible=eligible, pool_feasible=feasible)

    def costs(self, spec: JobSpec, checks: Checks) -> PoolCosts:
        """``pool_costs(index, checks, spec, policy)``, its terms shared between classes."""
        if self.exact or not plain(spec):
            return pool_costs(self.index, checks, spec, self.policy)
        index, w = self.index, self.policy.weights
        site = checks.pool_site
        latency_key: Hashable = None
        if spec.inference is not None:
            latency_key = (tuple((d.endpoint, d.weight) for d in spec.inference.demand),
                           spec.inference.latency_slo_ms)
        data_key = tuple(spec.datasets)
        packing_key = (id(checks.pool_free_gpus), checks.need_gpus)

        shared = self.keeps_costs(spec)

        def build() -> PoolCosts:
            latency = self.zeros
            if latency_key is not None:
                if shared:
                    latency = self._get(("latency", latency_key), lambda: w.latency * site_latency(index, spec)[site])
                else:
                    latency = w.latency * site_latency(index, spec)[site]
            data_movement = self.zeros
            if data_key:
                data_movement = self._get(("data", data_key),
                                          lambda: w.data_movement * site_data_movement(index, spec)[site])
            packing = self._get(("packing", packing_key),
                                lambda: packing_term(index, self.policy, checks.pool_free_gpus, checks.need_gpus))
            return PoolCosts(latency=latency, carbon=self.carbon, energy_price=self.energy_price, packing=packing,
                             data_movement=data_movement)

        if not shared:
            return build()
        # One PoolCosts (and so one ``total`` array) per distinct set of terms: classes share them.
        return self._get(("costs", latency_key, data_key, packing_key), build)  # type: ignore[no-any-return]

    def keeps_costs(self, spec: JobSpec) -> bool:
        """Whether a class keeps its costs once computed (``costs`` memoises them, or the exact
        functions computed them once for the class). Not a deployment with several weighted
        demand endpoints: its latency term is its own (random weights make ~150k distinct ones at
        1M jobs, 80 KB each over 5,000 pools), so it is computed on each use and not kept."""
        if self.exact or not plain(spec):
            return True  # the exact functions: one PoolCosts per class, kept by the class
        return spec.inference is None or len(spec.inference.demand) <= 1

    def _scaled_shadow(self, checks: Checks) -> Shadow:
        """``_shadow`` of memoised checks in O(sites): their static mask is a site mask (residency,
        latency, preference) over a pool mask (type, workload: ``_static_ok``), so a site's largest
        power per GPU is that of its type-and-workload pools where the site is admitted, 0 elsewhere;
        a slot's power is ``pool_kw_per_gpu * need_gpus`` (``_checks``), and the largest ``g * x``
        is ``g`` times the largest ``x``, exactly (rounding a product keeps the order). ~1 us of
        numpy instead of a ``reduceat`` over pools (~80 us) per distinct static mask."""
        pools = (checks.pool_type_ok, checks.pool_workload_ok)
        per_gpu = self._get(("kw_per_gpu_max", *map(id, pools)),
                            lambda: _per_gpu_shadow(self.index, pools[0] & pools[1]))
        sites = checks.site_residency_ok & checks.site_latency_ok
        if checks.site_preference_ok is not None:
            sites = sites & checks.site_preference_ok
        return np.asarray(checks.pool_static_ok, dtype=np.bool_), np.where(sites, per_gpu, 0.0) * checks.need_gpus

    def shadow(self, spec: JobSpec, checks: Checks | None = None) -> Shadow:
        """``priority.shadow``: the pools ``spec`` could ever use and its power per site (static parts
        only). ``checks``: ``self.checks(spec)`` when the caller has it (a class keeps its own)."""
        checks = checks if checks is not None else self.checks(spec)
        if not self.exact and plain(spec):
            # Memoised checks: their static mask (interned) and power per slot are memo entries, so
            # alive and shared: one shadow per pair (at 1M jobs ~3x fewer than per checks).
            static, need = checks.pool_static_ok, checks.pool_need_kw
            return self._get(("shadow_of", id(static), id(need)), lambda: self._scaled_shadow(checks))  # type: ignore[no-any-return]
        # Keyed by the checks object, kept in the entry: an id alone could be reused by a later
        # object once a checks that was not memoised (a topology job's) is freed.
        entry = self._get(("shadow", id(checks)), lambda: (checks, _shadow(self.index, checks)))
        if entry[0] is not checks:
            entry = (checks, _shadow(self.index, checks))
            self._memo[("shadow", id(checks))] = entry
        return entry[1]  # type: ignore[no-any-return]


_CHECK_FIELDS = tuple(f.name for f in dataclasses.fields(Checks))
_PREPARE_ROWS = 2048  # endpoint sets whose pool masks ``prepare`` computes in one array (~10 MB each at 5,000 pools)


def _per_gpu_shadow(index: GridIndex, pools: BoolArray) -> FloatArray:
    """``_shadow``'s power per site for a job of one GPU per slot."""
    need = np.where(pools, index.pool_kw_per_gpu, 0.0)
    site_kw = np.zeros(len(index.site_ids), dtype=np.float64)
    bounds = index.site_pool_bounds
    filled = bounds[1:] > bounds[:-1]
    if need.size:
        site_kw[filled] = np.maximum(np.maximum.reduceat(need, bounds[:-1][filled]), 0.0)
    return site_kw


def node_detail(index: GridIndex, usage: Usage) -> bool:
    """Whether the ledger keeps per-node usage (``Usage.nodes``, issue 11; absent before it)."""
    nodes = getattr(usage, "nodes", None)
    return callable(nodes) and nodes(index) is not None


_DEFAULTS: dict[type, Any] = {}  # the default topology, built once (a validation per call was ~100 us)


def plain(spec: JobSpec) -> bool:
    """A job that asks for no topology inside pools (``JobSpec.topology`` at its default, issue 11)."""
    topology = getattr(spec, "topology", None)
    if topology is None:
        return True
    kind = type(topology)
    default = _DEFAULTS.get(kind)
    if default is None:
        default = _DEFAULTS[kind] = kind()
    return bool(topology == default)


class _Boxed:
    """A memo entry that may be None (``_get`` treats None as absent)."""

    def __init__(self, value: BoolArray | None) -> None:
        self.value = value


def packing_term(index: GridIndex, policy: Policy, free_gpus: IntArray, need_gpus: int) -> FloatArray:
    """``pool_costs``'s packing term: the weighted share of the pool left idle after the job."""
    capacity = np.maximum(index.pool_healthy_gpus, 1)
    return np.asarray(policy.weights.packing * np.clip((free_gpus - need_gpus) / capacity, 0.0, 1.0))


def _static_ok(checks: Checks) -> BoolArray:
    """``Checks.pool_static_ok``, computed on this instance without caching it there."""
    site_ok = checks.site_residency_ok & checks.site_latency_ok
    if checks.site_preference_ok is not None:
        site_ok = site_ok & checks.site_preference_ok
    return np.asarray(site_ok[checks.pool_site] & checks.pool_type_ok & checks.pool_workload_ok)


def _load_ok(checks: Checks) -> BoolArray:
    """Capacity, power and quota (none here: quotas take the exact path) as ``Checks`` computes them."""
    return np.asarray(checks.pool_capacity_ok & checks.pool_power_ok & checks.pool_quota_ok)


def _shadow(index: GridIndex, checks: Checks) -> Shadow:
    pools = checks.pool_static_ok
    need = np.where(pools, checks.pool_need_kw, 0.0)
    site_kw = np.zeros(len(index.site_ids), dtype=np.float64)
    # The grid lists pools site by site: a max per run of pools (``np.maximum.at`` was ~100 us a class).
    bounds = index.site_pool_bounds
    filled = bounds[1:] > bounds[:-1]
    if need.size:
        site_kw[filled] = np.maximum(np.maximum.reduceat(need, bounds[:-1][filled]), 0.0)
    return np.asarray(pools, dtype=np.bool_), site_kw
