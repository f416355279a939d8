"""A run's report: CSV of every metric, PNG plots, and one self-contained HTML page.

Files written to the output directory:

- ``summary.json``: every total (deterministic for a scenario and seed); ``perf.json``: wall time;
- ``metrics.csv``: the same totals flattened to ``metric,value`` rows;
- ``timeseries.csv``: ``time_hours,metric,key,value`` samples (utilisation by site / tier /
  GPU type, GPUs used / free and power per site and per pool, envelope per site, jobs running
  and waiting);
- ``jobs.csv``: one row per part (site, pool) of each run of a job, with the job's facts
  (residency, datasets, demand endpoints) and the run's (start, end, how it ended, latencies);
- ``changes.csv``: every timed change, with the jobs and GPUs it displaced;
- PNGs and ``report.html`` (the PNGs embedded, so the page stands alone).
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from grid_scheduler.whatif import html, plots
from grid_scheduler.whatif.changes import DAY_S, describe
from grid_scheduler.whatif.metrics import HOUR_S, JobLog, Run, run_parts
from grid_scheduler.whatif.scenario import LoadedScenario
from grid_scheduler.whatif.simulator import RunResult


def scenario_meta(loaded: LoadedScenario) -> dict[str, Any]:
    s = loaded.scenario
    return {
        "name": s.name, "description": s.description, "source": loaded.source, "grid": loaded.grid.name,
        "seed": s.seed, "horizon_days": s.horizon_days, "policy_version": loaded.policy.version,
        "changes": [describe(c) for c in s.changes],
        # Where a run started from live state (whatif run --from): server, ledger version, job counts.
        "live": loaded.live.meta() if loaded.live is not None else None,
    }


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        out: list[tuple[str, Any]] = []
        for k, v in data.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(data, list):
        out = []
        for i, v in enumerate(data):
            out += flatten(v, f"{prefix}[{i}]")
        return out
    return [(prefix, data)]


def delays_by_kind(jobs: list[JobLog]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for j in jobs:
        if j.runs:
            out[j.spec.kind.value].append((j.runs[0].start_s - j.arrival_s) / HOUR_S)
    return dict(sorted(out.items()))


def change_hours(result: RunResult) -> list[float]:
    return sorted({c.time_s / HOUR_S for c in result.changes})


def write_run_report(result: RunResult, loaded: LoadedScenario, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, content: str | bytes) -> None:
        path = out / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        written.append(path)

    summary = {"scenario": scenario_meta(loaded), **result.summary}
    write("summary.json", json.dumps(summary, indent=2) + "\n")
    write("perf.json", json.dumps(result.perf, indent=2) + "\n")
    write("metrics.csv", _csv(["metric", "value"], flatten(result.summary)))
    write("timeseries.csv", _csv(["time_hours", "metric", "key", "value"],
                                 [(s.time_s / HOUR_S, s.metric, s.key, s.value) for s in result.recorder.samples]))
    write("jobs.csv", _csv(JOB_COLUMNS, job_rows(result.jobs, result.horizon_s)))
    write("changes.csv", _csv(["time_days", "change", "what", "displaced_jobs", "displaced_gpus", "replaced_jobs"],
                              [(c.time_s / DAY_S, c.change, c.what, c.displaced_jobs, c.displaced_gpus,
                                c.replaced_jobs) for c in result.changes]))
    pngs = run_plots(result)
    for name, png in pngs.items():
        write(name, png)
    write("report.html", run_html(result, loaded, pngs))
    return written


def run_plots(result: RunResult) -> dict[str, bytes]:
    samples, marks, name = result.recorder.samples, change_hours(result), result.scenario
    util = result.summary["utilisation"]["by_site"]
    hours = result.horizon_s / HOUR_S
    sites = {
        site: {**meta, "gpus": util.get(site, {}).get("gpu_hours_available", 0.0) / hours,
               "utilisation": util.get(site, {}).get("utilisation", 0.0)}
        for site, meta in result.recorder.site_meta.items()
    }
    return {
        "utilisation_sites.png": plots.utilisation_heatmap(samples, marks, name),
        "utilisation_groups.png": plots.utilisation_lines(samples, marks, name),
        "queue_delay_cdf.png": plots.delay_cdf(delays_by_kind(result.jobs), name),
        "power_vs_envelope.png": plots.power_vs_envelope(samples, marks, name),
        "jobs_over_time.png": plots.jobs_over_time(samples, marks, name),
        "site_map.png": plots.site_map(sites, name),
    }


# jobs.csv: one row per part (site, pool) of each run of a job; a job never placed has one row
# with the run's columns empty. The job's columns repeat on each of its rows. Every column is
# described in the README (What-if scenarios, "Output files").
JOB_COLUMNS = [
    # the job
    "job_id", "source", "kind", "tenant", "priority", "preemptible", "gpus_requested", "arrival_s", "duration_s",
    "state_at_end", "runs", "requeues", "preemptions", "residency_allowed", "residency_denied", "datasets",
    "demand_endpoints", "latency_slo_ms",
    # the run
    "run", "start_s", "end_s", "ended", "ended_by", "latency_ms",
    # the part of the run's placement
    "site", "pool", "gpu_type", "gpus", "power_w",
]


def _job_columns(j: JobLog) -> list[Any]:
    spec = j.spec
    inference = spec.inference
    demand = " ".join(f"{d.endpoint}={d.weight:g}" for d in inference.demand) if inference else ""
    return [j.job_id, j.source, spec.kind.value, spec.tenant, spec.priority, spec.preemptible, spec.total_gpus,
            j.arrival_s, j.duration_s, j.state, len(j.runs), j.requeues, j.preemptions,
            " ".join(spec.residency.allowed), " ".join(spec.residency.denied), " ".join(spec.datasets), demand,
            inference.latency_slo_ms if inference else ""]


def _ended_by(run: Run) -> str:
    if run.displaced_by is not None:
        c = run.displaced_by
        return f"changes[{c.change}] at day {c.time_s / DAY_S:g}: {c.what}"
    return run.preempted_by


def job_rows(jobs: list[JobLog], horizon_s: float) -> list[list[Any]]:
    """The rows of jobs.csv: ``run_parts`` (what the summary's energy and GPU-hours are summed
    from), and a row for each job that never ran."""
    rows: list[list[Any]] = []
    parts = iter(run_parts(jobs, horizon_s))
    part = next(parts, None)
    for j in jobs:
        job = _job_columns(j)
        if not j.runs:
            rows.append(job + [""] * (len(JOB_COLUMNS) - len(job)))
        while part is not None and part.job is j:
            run, a = part.run, part.assignment
            latency = " ".join(f"{e}={ms:g}" for e, ms in run.latency_ms.items())
            rows.append([*job, part.number, run.start_s, part.end_s, run.ended, _ended_by(run), latency,
                         a.site_id, a.pool_id, a.gpu_type, a.gpus, part.power_w])
            part = next(parts, None)
    return rows


def _csv(header: list[str], rows: Any) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# --- the page -------------------------------------------------------------------------
def headline(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    jobs, delay = summary["jobs"], summary["queue_delay_hours"]
    return [
        ("jobs arrived", jobs["arrived"]),
        ("placed", jobs["placed"]),
        ("never placed", summary["never_placed"]["count"]),
        ("fleet utilisation", summary["utilisation"]["fleet"]["utilisation"]),
        ("queue delay p95 (h)", delay["all"].get("p95", 0.0)),
        ("queue delay p99 (h)", delay["all"].get("p99", 0.0)),
        ("SLO attainment", summary["slo_attainment"]["overall"]),
        ("energy (MWh)", summary["energy"]["total"]["mwh"]),
        ("energy cost (USD)", summary["energy"]["total"]["cost"]),
        ("carbon (tCO2)", summary["energy"]["total"]["tco2"]),
        ("jobs displaced by changes", summary["disruption"]["displaced_jobs"]),
        ("preemptions", summary["disruption"]["preemptions"]),
        ("residency violations", summary["residency"]["violations"]),
    ]


def _live_paragraph(live: dict[str, Any]) -> str:
    return html.paragraph(
        f"started from the live state of {live['address']} at ledger version {live['ledger_version']} "
        f"(policy version {live['policy_version']}): {live['running_jobs']} running and {live['pending_jobs']} "
        f"waiting jobs at time zero, {live['anonymised_jobs']} of them anonymised", "muted")


def run_html(result: RunResult, loaded: LoadedScenario, pngs: dict[str, bytes]) -> str:
    s = result.summary
    meta = scenario_meta(loaded)
    u = s["utilisation"]
    delay = s["queue_delay_hours"]
    never = s["never_placed"]
    parts = [
        html.paragraph(meta["description"] or "", "muted"),
        html.paragraph(f"grid {meta['grid']} · horizon {meta['horizon_days']:g} days · seed {meta['seed']} · "
                       f"policy {meta['policy_version']} · {result.perf.get('jobs', 0):,.0f} jobs simulated in "
                       f"{result.perf.get('wall_s', 0):.1f} s wall time", "muted"),
        *([_live_paragraph(meta["live"])] if meta["live"] else []),
        html.cards(headline(s)),
        html.section(
            "Timed changes",
            html.paragraph("Jobs displaced: running where the change took capacity or power away; they were "
                           "re-queued (keeping their place in the queue) and placed again by the scheduler when "
                           "it could. Re-placed = of those, placed again before the horizon."),
            html.table(["day", "change", "displaced jobs", "displaced GPUs", "re-placed"],
                       [[c.time_s / DAY_S, c.what, c.displaced_jobs, c.displaced_gpus, c.replaced_jobs]
                        for c in result.changes]) if result.changes else html.paragraph("none"),
        ),
        html.section("Utilisation", html.image(pngs["utilisation_groups.png"], "utilisation by tier and type"),
                     html.image(pngs["utilisation_sites.png"], "utilisation by site"),
                     _group_table(u, "tier"), _group_table(u, "gpu_type"), _group_table(u, "site"),
                     _group_table(u, "pool"),
                     html.image(pngs["site_map.png"], "site map")),
        html.section("Queueing delay (hours)", html.image(pngs["queue_delay_cdf.png"], "queue delay CDF"),
                     _delay_table(delay), html.image(pngs["jobs_over_time.png"], "jobs over time")),
        html.section(
            "Jobs never placed, and why",
            html.paragraph(f"{never['count']:,} jobs; by state at the end: {never['by_state']}; by source: "
                           f"{never['by_source']}. Reasons: jobs whose wait carried each reason (a job counts "
                           "once per reason; from the scheduler's JobRecord.waiting)."),
            html.table(["reason", "jobs"], list(never["jobs_per_reason"].items())),
            html.table(["most frequent first reason", "jobs"],
                       [[t["summary"], t["jobs"]] for t in never["top_summaries"]]),
        ),
        html.section(
            "Inference SLO attainment per endpoint",
            html.paragraph("Share of the demand-hours each deployment wanted (from its arrival, for its duration) "
                           "that it was served within its SLO; waiting, refusal and displacement count against it."),
            html.table(["endpoint", "attainment", "deployments", "wanted h", "served h", "latency p50 ms",
                        "latency p95 ms"],
                       [[e, v["attainment"], v["deployments"], v["wanted_hours"], v["served_hours"],
                         v["latency_ms_p50"], v["latency_ms_p95"]]
                        for e, v in s["slo_attainment"]["by_endpoint"].items()]),
        ),
        html.section(
            "Power, energy, cost and carbon",
            html.image(pngs["power_vs_envelope.png"], "power vs envelope"),
            html.table(["site", "peak MW", "mean MW", "lowest envelope MW", "peak / envelope", "MWh", "cost USD",
                        "tCO2"],
                       [[site, p["peak_mw"], p["mean_mw"], p["min_envelope_mw"], p["peak_over_envelope"],
                         s["energy"]["by_site"][site]["mwh"], s["energy"]["by_site"][site]["cost"],
                         s["energy"]["by_site"][site]["tco2"]] for site, p in s["power"].items()]),
        ),
        html.section(
            "Residency",
            html.paragraph(f"{s['residency']['placements_checked']:,} placements re-checked against the grid model "
                           f"(site tags vs job, tenant and dataset rules), independently of the engine: "
                           f"{s['residency']['violations']} violations."),
        ),
        html.section("Workload", html.table(["source", "arrivals"], list(s["workload"]["by_source"].items())),
                     html.paragraph(f"trace rows read {s['workload']['trace_rows_read']:,}; dropped "
                                    f"{s['workload']['trace_rows_dropped']}; scaling added "
                                    f"{s['workload']['scaled_extra_arrivals']:,} and removed "
                                    f"{s['workload']['scaled_away_arrivals']:,} arrivals.", "muted")),
    ]
    return html.page(f"What-if: {meta['name']}", *parts)


def _group_table(u: dict[str, Any], group: str) -> str:
    return html.table([group, "utilisation", "GPU-hours used", "GPU-hours available"],
                      [[k, v["utilisation"], v["gpu_hours_used"], v["gpu_hours_available"]]
                       for k, v in u[f"by_{group}"].items()])


def _delay_table(delay: dict[str, Any]) -> str:
    rows = [["all", *_pcts(delay["all"])]]
    rows += [[f"kind {k}", *_pcts(v)] for k, v in delay["by_kind"].items()]
    rows += [[f"priority {k}", *_pcts(v)] for k, v in delay["by_priority"].items()]
    return html.table(["jobs", "count", "p50", "p95", "p99", "max"], rows)


def _pcts(p: dict[str, float]) -> list[Any]:
    return [int(p.get("count", 0)), p.get("p50"), p.get("p95"), p.get("p99"), p.get("max")]
