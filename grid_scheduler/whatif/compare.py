"""Scenarios side by side: a table of every metric with its delta against the first, overlaid plots.

One scenario under several policies (``whatif compare S --policy A --policy B``) adds the
per-tenant outcomes side by side (``whatif/tenants.py``): tenants.csv, tenants.json and a
section of compare.html."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grid_scheduler.model import Policy
from grid_scheduler.whatif import html, plots
from grid_scheduler.whatif.report import delays_by_kind, flatten, headline
from grid_scheduler.whatif.simulator import RunResult
from grid_scheduler.whatif.tenants import run_outcomes, tenants_csv, tenants_html


def numeric_metrics(summary: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(summary) if isinstance(v, int | float) and not isinstance(v, bool)}


def delta_rows(runs: list[RunResult]) -> list[list[Any]]:
    """metric, value per run, and for each run after the first: delta and relative delta vs the first."""
    values = [numeric_metrics(r.summary) for r in runs]
    keys = list(dict.fromkeys(k for v in values for k in v))
    rows = []
    for key in keys:
        row: list[Any] = [key, *[v.get(key, math.nan) for v in values]]
        base = values[0].get(key, math.nan)
        for v in values[1:]:
            other = v.get(key, math.nan)
            relative = (other - base) / abs(base) if base != 0.0 and not math.isnan(base) else math.nan
            row += [other - base, relative]
        rows.append(row)
    return rows


def delta_header(names: list[str]) -> list[str]:
    header = ["metric", *names]
    for name in names[1:]:
        header += [f"delta {name}", f"relative delta {name}"]
    return header


def write_comparison(
    runs: list[RunResult], names: list[str], out: Path, policies: list[Policy] | None = None
) -> list[Path]:
    """``policies``: the policy of each run, when they are one scenario under several policies."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    extra: list[str] = []
    if policies is not None:
        outcomes = run_outcomes(runs, policies)
        (out / "tenants.csv").write_text(tenants_csv(outcomes, names))
        (out / "tenants.json").write_text(json.dumps(dict(zip(names, outcomes, strict=True)), indent=2) + "\n")
        written += [out / "tenants.csv", out / "tenants.json"]
        extra.append(tenants_html(outcomes, names))
    rows = delta_rows(runs)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(delta_header(names))
    writer.writerows(rows)
    (out / "comparison.csv").write_text(buf.getvalue())
    pngs = comparison_plots(runs, names)
    for name, png in pngs.items():
        (out / name).write_bytes(png)
    (out / "compare.html").write_text(comparison_html(runs, names, pngs, extra))
    return [out / "comparison.csv", *(out / n for n in pngs), out / "compare.html", *written]


def _series(run: RunResult, metric: str, key: str | None = None) -> tuple[list[float], list[float]]:
    hours, series = plots.pivot(run.recorder.samples, metric)
    if key is not None:
        return hours, series.get(key, [])
    total = [sum(0.0 if math.isnan(v[i]) else v[i] for v in series.values()) for i in range(len(hours))]
    return hours, total


def comparison_plots(runs: list[RunResult], names: list[str]) -> dict[str, bytes]:
    delays = {}
    for name, run in zip(names, runs, strict=True):
        for kind, values in delays_by_kind(run.jobs).items():
            delays[f"{name}: {kind}"] = values
    return {
        "compare_utilisation.png": plots.overlay(
            {n: _series(r, "utilisation_fleet", "fleet") for n, r in zip(names, runs, strict=True)},
            "used / healthy GPUs", "fleet GPU utilisation"),
        "compare_pending.png": plots.overlay(
            {n: _series(r, "jobs", "pending") for n, r in zip(names, runs, strict=True)},
            "jobs waiting", "jobs waiting in the queue"),
        "compare_power.png": plots.overlay(
            {n: _series(r, "power_mw") for n, r in zip(names, runs, strict=True)},
            "MW", "facility power draw, all sites"),
        "compare_delay_cdf.png": plots.delay_cdf(delays, "compared"),
    }


def comparison_html(runs: list[RunResult], names: list[str], pngs: dict[str, bytes], extra: Sequence[str] = ()) -> str:
    heads = [dict(headline(r.summary)) for r in runs]
    header = ["metric", *names] + [f"Δ {n}" for n in names[1:]]

    def rows_for(items: list[tuple[str, list[float]]]) -> list[list[Any]]:
        return [[label, *vals, *[v - vals[0] for v in vals[1:]]] for label, vals in items]

    head_rows = rows_for([(k, [float(h[k]) for h in heads]) for k in heads[0]])
    sites = sorted({s for r in runs for s in r.summary["utilisation"]["by_site"]})
    site_rows = rows_for([(f"utilisation {s}", [float(r.summary["utilisation"]["by_site"].get(s, {}).get(
        "utilisation", math.nan)) for r in runs]) for s in sites])
    endpoints = sorted({e for r in runs for e in r.summary["slo_attainment"]["by_endpoint"]})
    slo_rows = rows_for([(f"SLO attainment {e}", [float(r.summary["slo_attainment"]["by_endpoint"].get(e, {}).get(
        "attainment", math.nan)) for r in runs]) for e in endpoints])
    kinds = sorted({k for r in runs for k in r.summary["queue_delay_hours"]["by_kind"]})
    delay_rows = rows_for([(f"queue delay {p} (h) {k}", [float(r.summary["queue_delay_hours"]["by_kind"].get(k, {}).get(
        p, math.nan)) for r in runs]) for k in kinds for p in ("p50", "p95", "p99")])
    changes = [html.paragraph(f"{n}: " + ("; ".join(sorted({c.what for c in r.changes})) or "no timed changes"))
               for n, r in zip(names, runs, strict=True)]
    return html.page(
        "What-if comparison: " + " vs ".join(names),
        html.paragraph("Deltas are against the first scenario. Every metric is in comparison.csv.", "muted"),
        html.section("Headline", html.table(header, head_rows), *changes),
        *extra,
        html.section("Over time", html.image(pngs["compare_utilisation.png"], "utilisation"),
                     html.image(pngs["compare_pending.png"], "pending"),
                     html.image(pngs["compare_power.png"], "power")),
        html.section("Queueing delay", html.image(pngs["compare_delay_cdf.png"], "delay CDF"),
                     html.table(header, delay_rows)),
        html.section("Utilisation by site", html.table(header, site_rows)),
        html.section("Inference SLO attainment by endpoint", html.table(header, slo_rows)),
    )
