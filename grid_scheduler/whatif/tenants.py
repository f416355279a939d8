"""Per-tenant outcomes of a run, and several runs (one scenario under several policies) side by side.

Every figure is recomputable from the run's jobs.csv alone:

- ``gpu_hours``: the tenant's GPUs x seconds over its rows (``run_parts``, as the summary's
  GPU-hours used), ``math.fsum``, / 3600, rounded to 6 decimals;
- ``share``: its GPU-hours / every tenant's GPU-hours (the GPU side of the dominant share,
  integrated over the run; what the tenant actually got);
- ``entitlement``: its fair-share weight (the policy's ``fair_share.weights``, default weight
  otherwise; with fair share off every weight is the default) / the sum of the weights of every
  tenant that submitted work in the run (``engine/fairshare.py``: tenants with work);
- ``queue_delay_p50_h``/``p95_h``: first start - arrival of its jobs that started (as the
  summary's ``queue_delay_hours``), in hours; ``never_started``: its jobs that never ran.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from typing import Any

from grid_scheduler.model import Policy
from grid_scheduler.whatif import html
from grid_scheduler.whatif.metrics import DECIMALS, HOUR_S, JobLog, percentiles, run_parts
from grid_scheduler.whatif.simulator import RunResult

__all__ = ["TENANT_COLUMNS", "tenant_outcomes", "tenant_rows", "tenants_csv", "tenants_html"]

# The figures per tenant and run, in the order the table shows them.
TENANT_COLUMNS = ["gpu_hours", "share", "entitlement", "share_minus_entitlement", "queue_delay_p50_h",
                  "queue_delay_p95_h", "jobs", "never_started"]


def tenant_outcomes(jobs: list[JobLog], horizon_s: float, policy: Policy) -> dict[str, dict[str, float]]:
    """tenant -> its figures (see the module doc), tenants by name."""
    gpu_s: dict[str, list[float]] = defaultdict(list)
    for part in run_parts(jobs, horizon_s):
        gpu_s[part.job.spec.tenant].append(part.gpu_s)
    delays: dict[str, list[float]] = defaultdict(list)
    count: dict[str, int] = defaultdict(int)
    never: dict[str, int] = defaultdict(int)
    for j in jobs:
        count[j.spec.tenant] += 1
        if j.runs:
            delays[j.spec.tenant].append((j.runs[0].start_s - j.arrival_s) / HOUR_S)
        else:
            never[j.spec.tenant] += 1
    tenants = sorted(count)
    hours = {t: round(math.fsum(gpu_s[t]) / HOUR_S, DECIMALS) for t in tenants}
    total_hours = math.fsum(hours.values())
    fs = policy.fair_share
    total_weight = math.fsum(fs.weight(t) for t in tenants)
    out: dict[str, dict[str, float]] = {}
    for t in tenants:
        share = hours[t] / total_hours if total_hours > 0 else 0.0
        entitlement = fs.weight(t) / total_weight
        p = percentiles(delays[t])
        out[t] = {
            "gpu_hours": hours[t], "share": share, "entitlement": entitlement,
            "share_minus_entitlement": share - entitlement,
            "queue_delay_p50_h": p.get("p50", math.nan), "queue_delay_p95_h": p.get("p95", math.nan),
            "jobs": float(count[t]), "never_started": float(never[t]),
        }
    return out


def tenant_rows(outcomes: list[dict[str, dict[str, float]]], names: list[str]) -> tuple[list[str], list[list[Any]]]:
    """One row per (tenant, figure): the value under each run, then each run's delta against the first."""
    header = ["tenant", "metric", *names, *[f"delta {n}" for n in names[1:]]]
    tenants = sorted({t for o in outcomes for t in o})
    rows: list[list[Any]] = []
    for tenant in tenants:
        for metric in TENANT_COLUMNS:
            values = [o.get(tenant, {}).get(metric, math.nan) for o in outcomes]
            rows.append([tenant, metric, *values, *[v - values[0] for v in values[1:]]])
    return header, rows


def tenants_csv(outcomes: list[dict[str, dict[str, float]]], names: list[str]) -> str:
    header, rows = tenant_rows(outcomes, names)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def tenants_html(outcomes: list[dict[str, dict[str, float]]], names: list[str]) -> str:
    """The section of compare.html: per tenant, GPU-hours, p95 queue delay, share vs entitlement."""
    tenants = sorted({t for o in outcomes for t in o})
    header = ["tenant", *[f"{m} {n}" for m in ("GPU-h", "share", "entitled", "p95 delay h") for n in names]]
    rows: list[list[Any]] = []
    for t in tenants:
        row: list[Any] = [t]
        for metric in ("gpu_hours", "share", "entitlement", "queue_delay_p95_h"):
            row += [o.get(t, {}).get(metric, math.nan) for o in outcomes]
        rows.append(row)
    return html.section(
        "Per tenant", html.paragraph(
            "share: the tenant's GPU-hours / all GPU-hours delivered; entitled: its fair-share weight / the "
            "weights of every tenant with work. Deltas per tenant are in tenants.csv.", "muted"),
        html.table(header, rows))


def run_outcomes(results: list[RunResult], policies: list[Policy]) -> list[dict[str, dict[str, float]]]:
    return [tenant_outcomes(r.jobs, r.horizon_s, p) for r, p in zip(results, policies, strict=True)]
