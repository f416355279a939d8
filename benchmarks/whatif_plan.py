"""Capacity-expansion planning quality: chosen (CP-SAT + replay) vs greedy vs do nothing.

For each example plan (grid_scheduler/examples/plans/), ``run_plan`` is run end to end: the
aggregated CP-SAT model, the replays of the chosen plan (with the cap search), the greedy
"add where queues are longest" heuristic and the do-nothing baseline, all replayed through the
same simulator. The table puts side by side, per plan: the cost ($M) of each, whether each met
every target in its replay, when the chosen plan's capacity enters service vs greedy's (mean
in-service day, cost-weighted: capital spent later is cheaper), the model-vs-replay gap per
target of the chosen plan, solve/replay rounds, and wall time (model solves and the whole run).

    .venv/bin/python benchmarks/whatif_plan.py            # the three example plans (1-2 min)
    .venv/bin/python benchmarks/whatif_plan.py --quick    # the UK plan only (15-40 s)
    # --out PATH (JSON; default benchmarks/results/whatif_plan.json)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from grid_scheduler.whatif.planning.planner import Outcome, PlanRun, run_plan
from grid_scheduler.whatif.planning.report import gap_rows
from grid_scheduler.whatif.planning.spec import load_plan
from grid_scheduler.whatif.simulator import quiet_logs

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "examples" / "plans"
RESULTS = ROOT / "benchmarks" / "results" / "whatif_plan.json"
QUICK = ("uk-sovereign-growth",)


def _day(o: Outcome | None) -> float | None:
    if o is None or not o.expansions or o.cost_musd <= 0:
        return None
    return round(sum(c.cost_musd * at for c, at in o.expansions) / o.cost_musd, 1)


def row(name: str, run: PlanRun, wall_s: float) -> dict[str, Any]:
    chosen, greedy = run.chosen, run.greedy
    return {
        "plan": name,
        "do_nothing_met": run.do_nothing.met,
        "greedy_cost_musd": greedy.cost_musd if greedy else None,
        "greedy_met": greedy.met if greedy else None,
        "greedy_mean_day": _day(greedy),
        "chosen_cost_musd": chosen.cost_musd if chosen else None,
        "chosen_met": chosen.met if chosen else None,
        "chosen_mean_day": _day(chosen),
        "chosen_expansions": [f"{c.id}@{at:g}" for c, at in chosen.expansions] if chosen else [],
        "gaps": [{"target": r[0], "model": r[1], "replay": r[2], "gap": r[3]} for r in gap_rows(run)],
        "rounds": len(run.rounds),
        "replays": 1 + sum(1 for r in run.rounds if r.outcome is not None and r.outcome is not run.do_nothing)
        + len([s for s in run.greedy_steps if "added" in s]),
        "solve_s": round(run.feasibility.wall_s + sum(r.solution.wall_s for r in run.rounds), 3),
        "wall_s": round(wall_s, 1),
        "infeasible": run.infeasible,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the UK plan only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    quiet_logs(cache=True)
    names = list(QUICK) if args.quick else sorted(p.stem for p in PLANS.glob("*.yaml"))
    load = os.getloadavg()[0]
    rows = []
    for name in names:
        t0 = time.perf_counter()
        run = run_plan(load_plan(PLANS / f"{name}.yaml"))
        rows.append(row(name, run, time.perf_counter() - t0))
    print(f"load average at start {load:.2f}, end {os.getloadavg()[0]:.2f}")
    print("| plan | do nothing | greedy $M (met, mean day) | chosen $M (met, mean day) | chosen expansions "
          "| rounds | replays | solve s | wall s |")
    print("|---|---|--:|--:|---|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['plan']} | {'met' if r['do_nothing_met'] else 'missed'} "
              f"| {r['greedy_cost_musd']:,.0f} ({'met' if r['greedy_met'] else 'missed'}, d{r['greedy_mean_day']}) "
              f"| {r['chosen_cost_musd']:,.0f} ({'met' if r['chosen_met'] else 'missed'}, d{r['chosen_mean_day']}) "
              f"| {', '.join(r['chosen_expansions'])} | {r['rounds']} | {r['replays']} | {r['solve_s']} "
              f"| {r['wall_s']} |")
    print()
    print("| plan | target | model | replay | gap |")
    print("|---|---|--:|--:|--:|")
    for r in rows:
        for g in r["gaps"]:
            print(f"| {r['plan']} | {g['target']} | {g['model']} | {g['replay']} | {g['gap']:+.4f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
        "load_average_start": load, "rows": rows}, indent=2) + "\n")
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
