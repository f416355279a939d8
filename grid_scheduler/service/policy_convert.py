"""Policies between proto and model: documents (YAML or message) in, versions and diffs out."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from grid_scheduler._proto.v1 import placement_pb2 as ppb
from grid_scheduler._proto.v1 import policy_pb2 as pb
from grid_scheduler.engine.policy_diff import JobChange, Move, PolicyDiff, SiteDelta, TenantDelta, Totals
from grid_scheduler.model import Grid, JobState, Policy, PolicyVersion
from grid_scheduler.model.errors import violations
from grid_scheduler.model.policy import policy_violations_against_grid
from grid_scheduler.scheduler import InvalidJob
from grid_scheduler.service.convert import STATE_TO_PB, placement_to_pb, timestamp

WEIGHTS = ("latency", "carbon", "energy_price", "packing", "data_movement", "fragmentation")


def policy_from_document(document: pb.PolicyDocument, grid: Grid, field: str = "document") -> Policy:
    """The policy a request carries; InvalidJob naming every bad field (``document.yaml.weights.carbon``),
    including names the grid does not know (a preferred site it lacks)."""
    policy = _policy_from_document(document, field)
    where = f"{field}.{document.WhichOneof('source')}"
    problems = [(f"{where}.{path}", message) for path, message in policy_violations_against_grid(policy, grid)]
    if problems:
        raise InvalidJob(problems)
    return policy


def _policy_from_document(document: pb.PolicyDocument, field: str) -> Policy:
    source = document.WhichOneof("source")
    if source == "yaml":
        where = f"{field}.yaml"
        try:
            data = yaml.safe_load(document.yaml) or {}
        except yaml.YAMLError as e:
            raise InvalidJob([(where, f"not valid YAML: {e}")]) from e
        if not isinstance(data, dict):
            raise InvalidJob([(where, "must be a mapping (weights, tenant_residency, inference_placement, ...)")])
        return _validate(data, where, {})
    if source == "policy":
        return _validate(policy_dict(document.policy), f"{field}.policy", {"version": "label"})
    raise InvalidJob([(field, "give the policy as yaml or as a policy message")])


def _validate(data: dict[str, Any], where: str, renames: dict[str, str]) -> Policy:
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise InvalidJob([(_rename(f"{where}.{path}", where, renames), message)
                          for path, message in violations(e)]) from e


def _rename(path: str, where: str, renames: dict[str, str]) -> str:
    for model_name, proto_name in renames.items():
        if path == f"{where}.{model_name}":
            return f"{where}.{proto_name}"
    return path


def policy_dict(message: pb.Policy) -> dict[str, Any]:
    """A plain dict for pydantic: only the fields the message sets, so unset means the default."""
    data: dict[str, Any] = {}
    if message.HasField("weights"):
        data["weights"] = {w: getattr(message.weights, w) for w in WEIGHTS if message.weights.HasField(w)}
    if message.tenant_residency:
        data["tenant_residency"] = {
            tenant: {"allowed": list(rule.allowed), "denied": list(rule.denied)}
            for tenant, rule in message.tenant_residency.items()
        }
    if message.tenant_placement_preference:
        data["tenant_placement_preference"] = {
            tenant: list(preference.entries) for tenant, preference in message.tenant_placement_preference.items()
        }
    if message.HasField("fair_share"):
        fair: dict[str, Any] = {"enabled": message.fair_share.enabled, "weights": dict(message.fair_share.weights)}
        if message.fair_share.HasField("default_weight"):
            fair["default_weight"] = message.fair_share.default_weight
        data["fair_share"] = fair
    if message.HasField("quotas"):
        data["quotas"] = _quotas_dict(message.quotas)
    if message.HasField("max_run_hours"):
        limits: dict[str, Any] = {"tenants": dict(message.max_run_hours.tenants)}
        if message.max_run_hours.HasField("default"):
            limits["default"] = message.max_run_hours.default
        data["max_run_hours"] = limits
    if message.inference_placement:
        data["inference_placement"] = message.inference_placement
    if message.HasField("inference_time_limit_s"):
        data["inference_time_limit_s"] = message.inference_time_limit_s
    if message.label:
        data["version"] = message.label
    return data


def policy_to_pb(policy: Policy) -> pb.Policy:
    w = policy.weights
    return pb.Policy(
        weights=pb.PolicyWeights(latency=w.latency, carbon=w.carbon, energy_price=w.energy_price, packing=w.packing,
                                 data_movement=w.data_movement, fragmentation=w.fragmentation),
        tenant_residency={t: ppb.ResidencyRule(allowed=r.allowed, denied=r.denied)
                          for t, r in policy.tenant_residency.items()},
        tenant_placement_preference={t: pb.PlacementPreference(entries=e)
                                     for t, e in policy.tenant_placement_preference.items()},
        fair_share=pb.FairSharePolicy(enabled=policy.fair_share.enabled, weights=policy.fair_share.weights,
                                      default_weight=policy.fair_share.default_weight),
        quotas=_quotas_to_pb(policy),
        max_run_hours=pb.MaxRunHoursPolicy(default=policy.max_run_hours.default,
                                           tenants=policy.max_run_hours.tenants),
        inference_placement=policy.inference_placement,
        inference_time_limit_s=policy.inference_time_limit_s,
        label=policy.version,
    )


def _quotas_dict(message: pb.QuotaPolicy) -> dict[str, Any]:
    def limits(q: pb.QuotaLimits) -> dict[str, Any]:
        out: dict[str, Any] = {"nominal_gpus": q.nominal_gpus}
        if q.HasField("borrowing_limit_gpus"):
            out["borrowing_limit_gpus"] = q.borrowing_limit_gpus
        if q.HasField("lending_limit_gpus"):
            out["lending_limit_gpus"] = q.lending_limit_gpus
        return out

    return {
        "resource_groups": [{"name": g.name, "gpu_types": list(g.gpu_types), "jurisdictions": list(g.jurisdictions),
                             "tiers": list(g.tiers), "sites": list(g.sites)} for g in message.resource_groups],
        "cohorts": [{"name": c.name, "tenants": {t: {g: limits(q) for g, q in quotas.groups.items()}
                                                  for t, quotas in c.tenants.items()}} for c in message.cohorts],
    }


def _quotas_to_pb(policy: Policy) -> pb.QuotaPolicy:
    q = policy.quotas
    return pb.QuotaPolicy(
        resource_groups=[pb.QuotaResourceGroup(name=g.name, gpu_types=g.gpu_types, jurisdictions=g.jurisdictions,
                                               tiers=g.tiers, sites=g.sites) for g in q.resource_groups],
        cohorts=[pb.QuotaCohort(name=c.name, tenants={
            t: pb.QuotaTenantQuotas(groups={g: pb.QuotaLimits(nominal_gpus=lim.nominal_gpus,
                                                               borrowing_limit_gpus=lim.borrowing_limit_gpus,
                                                               lending_limit_gpus=lim.lending_limit_gpus)
                                            for g, lim in groups.items()})
            for t, groups in c.tenants.items()}) for c in q.cohorts],
    )


def policy_yaml(policy: Policy) -> str:
    data = policy.model_dump(mode="json")
    if not policy.quotas.cohorts and not policy.quotas.resource_groups:
        del data["quotas"]  # a policy without quotas reads as it did before quotas existed
    return yaml.safe_dump(data, sort_keys=False)


def version_to_pb(entry: PolicyVersion) -> pb.PolicyVersion:
    return pb.PolicyVersion(
        version=entry.version, policy=policy_to_pb(entry.policy), sha256=entry.sha256, applied_by=entry.applied_by,
        apply_time=timestamp(entry.applied_at), reason=entry.reason, rollback_of=entry.rollback_of,
        yaml=policy_yaml(entry.policy),
    )


def diff_to_pb(diff: PolicyDiff, active_version: int, candidate: Policy, max_jobs: int) -> pb.DiffPolicyResponse:
    return pb.DiffPolicyResponse(
        active_version=active_version,
        candidate_sha256=PolicyVersion.new(candidate, "", 0.0, "").sha256,
        policy_changes=[pb.PolicyFieldChange(field=f, before=b, after=a) for f, b, a in diff.policy_changes],
        jobs_considered=diff.jobs_considered,
        unchanged=diff.unchanged,
        moved_count=len(diff.moved),
        became_placeable_count=len(diff.became_placeable),
        became_unplaceable_count=len(diff.became_unplaceable),
        moved=[_move(m) for m in diff.moved[:max_jobs]],
        became_placeable=[_change(c) for c in diff.became_placeable[:max_jobs]],
        became_unplaceable=[_change(c) for c in diff.became_unplaceable[:max_jobs]],
        sites=[_delta(d.site_id, d) for d in diff.sites],
        tenants=[_delta(d.tenant, d) for d in diff.tenants],
        before=_totals(diff.before),
        after=_totals(diff.after),
        queue_shift_count=len(diff.queue_shifts),
        queue_shifts=[pb.QueueShift(job_id=q.job_id, tenant=q.tenant, priority=q.priority,
                                    position_before=q.position_before, position_after=q.position_after)
                      for q in diff.queue_shifts[:max_jobs]],
    )


def _state(state: str) -> ppb.JobState:
    return STATE_TO_PB.get(JobState(state), ppb.JOB_STATE_UNSPECIFIED)


def _move(m: Move) -> pb.JobMove:
    return pb.JobMove(
        job_id=m.job_id, tenant=m.tenant, state=_state(m.state), before=placement_to_pb(m.before),
        after=placement_to_pb(m.after),
        terms=[pb.CostTermChange(term=t.term, before=t.before, after=t.after) for t in m.terms],
    )


def _change(c: JobChange) -> pb.JobPlacementChange:
    return pb.JobPlacementChange(job_id=c.job_id, tenant=c.tenant, state=_state(c.state),
                                 placement=placement_to_pb(c.placement), reasons=list(c.reasons))


def _delta(key: str, d: SiteDelta | TenantDelta) -> pb.GpuPowerDelta:
    return pb.GpuPowerDelta(key=key, gpus_before=d.gpus_before, gpus_after=d.gpus_after,
                            power_kw_before=d.power_kw_before, power_kw_after=d.power_kw_after)


def _totals(t: Totals) -> pb.PolicyTotals:
    return pb.PolicyTotals(jobs_placed=t.jobs_placed, gpus=t.gpus, power_kw=t.power_kw,
                           carbon_kg_per_hour=t.carbon_kg_per_hour, energy_cost_per_hour=t.energy_cost_per_hour,
                           mean_inference_latency_ms=t.mean_inference_latency_ms)
