"""``grid-scheduler whatif plan PLAN.yaml --out DIR``: capacity-expansion planning.

Exit status: 0 when the chosen plan meets every target in its replay; 1 when no plan can
(the report says which target and why) or the replay still misses after every round.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_plan_parser(cmds: Any) -> None:
    plan = cmds.add_parser("plan", help="choose the cheapest expansions that meet targets, and replay them")
    plan.add_argument("plan", help="plan file (base scenario, growth, candidates, targets)")
    plan.add_argument("--out", required=True, help="report directory")
    plan.add_argument("--quiet", action="store_true", help="no progress lines")
    plan.set_defaults(run=_plan)


def _plan(args: argparse.Namespace) -> int:
    from grid_scheduler.whatif.planning.planner import run_plan
    from grid_scheduler.whatif.planning.report import markdown, write_plan_report
    from grid_scheduler.whatif.planning.spec import load_plan
    from grid_scheduler.whatif.simulator import quiet_logs

    quiet_logs(cache=True)
    loaded = load_plan(args.plan)

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    run = run_plan(loaded, say)
    out = Path(args.out)
    write_plan_report(run, out)
    print(markdown(run), end="")
    print(f"report: {out / 'comparison.html'}, {out / 'plan.csv'}, {out / 'plan.json'}")
    chosen = run.chosen
    return 0 if chosen is not None and chosen.met and not run.infeasible else 1
