"""What ``whatif plan`` writes to ``--out``:

- ``plan.csv``: the chosen plan, one row per expansion (candidate, kind, site, what, in service
  from day, period, cost $M);
- ``plan.json``: everything: the aggregate, the feasibility check (and, if no plan can meet the
  targets, which and why), each solve/replay round (status, bound, model vs replay per target
  and the gap), the greedy steps and the three plans compared;
- ``comparison.md`` and ``comparison.html``: do nothing vs greedy vs chosen (cost, expansions,
  every target), and the chosen plan's model-vs-replay table;
- ``perf.json``: solver wall times (kept apart: everything else is deterministic for a plan and seed);
- ``replay/``: the chosen plan's replay report (``write_run_report``; do-nothing's if no plan).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from grid_scheduler.whatif import html
from grid_scheduler.whatif.changes import describe
from grid_scheduler.whatif.planning.planner import Outcome, PlanRun
from grid_scheduler.whatif.planning.spec import QueueDelayTarget, Target
from grid_scheduler.whatif.planning.targets import describe as describe_target
from grid_scheduler.whatif.report import write_run_report

PLAN_COLUMNS = ["candidate", "kind", "site", "what", "in_service_day", "period", "cost_musd", "note"]


def _site(change: Any) -> str:
    site = getattr(change, "site", "")
    return site if isinstance(site, str) else site.id


def plan_rows(run: PlanRun, outcome: Outcome) -> list[list[Any]]:
    rows = []
    for candidate, at_days in outcome.expansions:
        change = candidate.at(at_days)
        period = int(at_days // run.loaded.plan.period_days)
        rows.append([candidate.id, change.kind, _site(change), describe(change), at_days, period,
                     candidate.cost_musd, candidate.note])
    return rows


def gap(target: Target, predicted: float, replayed: float) -> float:
    """Replay minus model, in the target's unit (a share, or hours of p95 delay)."""
    del target
    return round(replayed - predicted, 6)


def outcome_json(outcome: Outcome, targets: list[Target]) -> dict[str, Any]:
    return {
        "name": outcome.name,
        "cost_musd": outcome.cost_musd,
        "expansions": [{"candidate": c.id, "in_service_day": at} for c, at in outcome.expansions],
        "targets_met": outcome.met,
        "targets": [{"target": describe_target(t), "value": round(m.value, 6), "met": m.met, "jobs": m.jobs}
                    for t, m in zip(targets, outcome.measured, strict=True)],
    }


def plan_json(run: PlanRun) -> dict[str, Any]:
    plan = run.loaded.plan
    targets = plan.targets
    agg = run.agg
    rounds = []
    for i, r in enumerate(run.rounds):
        item: dict[str, Any] = {
            "round": i + 1, "utilisation_cap": round(r.cap, 6), "status": r.solution.status,
            "cost_musd": r.solution.cost_musd, "bound_musd": r.solution.bound_musd,
            "choices": [{"candidate": c.candidate, "period": c.period} for c in r.solution.choices],
        }
        if r.outcome is not None:
            item["model_vs_replay"] = [
                {"target": describe_target(t), "predicted": round(r.solution.predicted.get(k, 0.0), 6),
                 "replayed": round(m.value, 6), "gap": gap(t, r.solution.predicted.get(k, 0.0), m.value),
                 "met": m.met}
                for k, (t, m) in enumerate(zip(targets, r.outcome.measured, strict=True))]
            item["replay_met_targets"] = r.outcome.met
        rounds.append(item)
    chosen = run.chosen
    return {
        "plan": {"name": plan.name, "description": plan.description, "source": run.loaded.source,
                 "scenario": plan.scenario, "horizon_days": run.loaded.horizon_days,
                 "period_days": plan.period_days, "seed": run.loaded.base.scenario.seed,
                 "targets": [describe_target(t) for t in targets]},
        "aggregate": {
            "periods": agg.periods, "groups": len(agg.groups),
            "classes": [{"label": c.label, "targets": sorted(c.targets), "jobs": c.jobs,
                         "eligible_groups": len(c.groups), "gpu_hours": [round(h, 3) for h in c.gpu_hours]}
                        for c in agg.classes],
        },
        "feasibility": {"status": run.feasibility.status, "shortfall": {
            describe_target(targets[t]): [round(s, 6) for s in short]
            for t, short in run.feasibility.shortfall.items()}},
        "infeasible": run.infeasible,
        "rounds": rounds,
        "iterated": len(run.rounds) > 1,
        "chosen": outcome_json(chosen, targets) if chosen else None,
        "greedy": outcome_json(run.greedy, targets) if run.greedy else None,
        "greedy_steps": run.greedy_steps,
        "do_nothing": outcome_json(run.do_nothing, targets),
    }


def comparison_rows(run: PlanRun) -> tuple[list[str], list[list[Any]]]:
    outcomes = [o for o in (run.do_nothing, run.greedy, run.chosen) if o is not None]
    header = ["", *(o.name if o is not run.chosen else "chosen" for o in outcomes)]
    rows: list[list[Any]] = [
        ["cost ($M)", *(o.cost_musd for o in outcomes)],
        ["expansions", *(", ".join(f"{c.id}@d{at:g}" for c, at in o.expansions) or "-" for o in outcomes)],
    ]
    for k, t in enumerate(run.loaded.plan.targets):
        rows.append([describe_target(t), *(_cell(t, o.measured[k].value, o.measured[k].met) for o in outcomes)])
    rows.append(["all targets met", *("yes" if o.met else "no" for o in outcomes)])
    return header, rows


def _cell(t: Target, value: float, met: bool) -> str:
    shown = f"{value:.1f} h" if isinstance(t, QueueDelayTarget) else f"{value:.4f}"
    return f"{shown} {'ok' if met else 'MISSED'}"


def gap_rows(run: PlanRun) -> list[list[Any]]:
    r = run.chosen_round
    if r is None or r.outcome is None:
        return []
    return [[describe_target(t), round(r.solution.predicted.get(k, 0.0), 4), round(m.value, 4),
             gap(t, r.solution.predicted.get(k, 0.0), m.value), "yes" if m.met else "no"]
            for k, (t, m) in enumerate(zip(run.loaded.plan.targets, r.outcome.measured, strict=True))]


GAP_HEADER = ["target", "model", "replay", "gap (replay - model)", "met in replay"]
ROUND_HEADER = ["round", "utilisation cap", "solver", "cost ($M)", "expansions", "replay"]


def round_rows(run: PlanRun) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for i, r in enumerate(run.rounds):
        replayed = "-" if r.outcome is None else ("met every target" if r.outcome.met else "missed " + ", ".join(
            describe_target(t) for t, m in zip(run.loaded.plan.targets, r.outcome.measured, strict=True)
            if not m.met))
        rows.append([i + 1, round(r.cap, 4), r.solution.status, r.solution.cost_musd,
                     ", ".join(f"{c.candidate}@p{c.period}" for c in r.solution.choices) or "-", replayed])
    return rows


def markdown(run: PlanRun) -> str:
    def md(header: list[str], rows: list[list[Any]]) -> str:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)

    parts = [f"# Plan {run.loaded.name}", ""]
    if run.infeasible:
        parts += ["**No plan can meet the targets.**", ""]
        parts += [f"- {item['what']}: {item['why']}" for item in run.infeasible]
        parts.append("")
    header, rows = comparison_rows(run)
    parts += ["## Do nothing vs greedy vs chosen (all replayed)", "", md(header, rows), ""]
    gaps = gap_rows(run)
    if gaps:
        r = run.chosen_round
        assert r is not None
        parts += [f"## Chosen plan: model vs replay (round {run.rounds.index(r) + 1} of {len(run.rounds)}, "
                  f"utilisation cap {r.cap:.3g}, solver {r.solution.status}, "
                  f"cost ${r.solution.cost_musd:,.0f}M, bound ${r.solution.bound_musd:,.0f}M)", "",
                  md(GAP_HEADER, gaps), ""]
        if len(run.rounds) > 1:
            parts += ["## Solve and replay rounds (the cap is tightened after a miss, loosened after a meet)", "",
                      md(ROUND_HEADER, round_rows(run)), ""]
    return "\n".join(parts) + "\n"


def comparison_html(run: PlanRun) -> str:
    parts = []
    if run.infeasible:
        parts.append(html.section("No plan can meet the targets", *(
            html.paragraph(f"{item['what']}: {item['why']}", "bad") for item in run.infeasible)))
    header, rows = comparison_rows(run)
    parts.append(html.section("Do nothing vs greedy vs chosen (all replayed)", html.table(header, rows)))
    gaps = gap_rows(run)
    if gaps:
        chosen = run.chosen
        assert chosen is not None
        parts.append(html.section("Chosen plan", html.table(PLAN_COLUMNS, plan_rows(run, chosen))))
        parts.append(html.section("Model vs replay", html.table(GAP_HEADER, gaps), html.paragraph(
            "replay report: replay/report.html", "muted")))
        parts.append(html.section("Solve and replay rounds", html.table(ROUND_HEADER, round_rows(run)), html.paragraph(
            "the utilisation cap is tightened after a replay misses a target, loosened after one meets them; "
            "the chosen plan is the cheapest that met them", "muted")))
    return html.page(f"Plan {run.loaded.name}", *parts)


def write_plan_report(run: PlanRun, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    chosen = run.chosen
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PLAN_COLUMNS)
    writer.writerows(plan_rows(run, chosen) if chosen else [])
    perf = {"feasibility_solve_s": round(run.feasibility.wall_s, 3),
            "round_solve_s": [round(r.solution.wall_s, 3) for r in run.rounds]}
    for name, text in (("plan.csv", buf.getvalue()), ("plan.json", json.dumps(plan_json(run), indent=2) + "\n"),
                       ("perf.json", json.dumps(perf, indent=2) + "\n"),
                       ("comparison.md", markdown(run)), ("comparison.html", comparison_html(run))):
        (out / name).write_text(text)
        written.append(out / name)
    shown = chosen or run.do_nothing
    written += write_run_report(shown.result, shown.scenario, out / "replay")
    return written
