"""``grid-scheduler whatif run | compare | sweep``: the capacity planner's commands.

Every scenario named on the command line is validated before anything runs, so a bad
file (or a bad ``--param``) fails with its field and line and writes nothing to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grid_scheduler.whatif.planning.cli import add_plan_parser

if TYPE_CHECKING:  # the handlers import the simulator when they run, not when the CLI starts
    from tqdm import tqdm

    from grid_scheduler.whatif.live import LiveStart
    from grid_scheduler.whatif.scenario import LoadedScenario
    from grid_scheduler.whatif.simulator import Progress, RunResult


def add_parser(
    sub: Any,
    add_credentials: Callable[[argparse.ArgumentParser], None] | None = None,
    fetch_live: Callable[[argparse.Namespace], LiveStart] | None = None,
) -> None:
    """Add the ``whatif`` command group to the CLI's subparsers. ``fetch_live`` (and the TLS and
    token flags ``add_credentials`` adds) give ``run --from ADDRESS``: the CLI's, since the
    snapshot comes over gRPC and this package speaks none."""
    whatif = sub.add_parser("whatif", help="capacity planning: replay workloads against scenarios")
    cmds = whatif.add_subparsers(dest="whatif_command", required=True)
    add_plan_parser(cmds)  # its own module: capacity-expansion planning

    run = cmds.add_parser("run", help="run one scenario and write its report (CSV, PNG, HTML)")
    run.add_argument("scenario")
    run.add_argument("--out", required=True, help="report directory")
    run.add_argument("--check-invariants", action="store_true",
                     help="after every event, check the ledger against the running jobs (slow)")
    if fetch_live is not None:
        run.add_argument("--from", dest="from_address", default=None, metavar="ADDRESS",
                         help="start from this server's live state: its grid, policy, running jobs (with their "
                              "remaining time) and queue replace the scenario's grid and policy")
        if add_credentials is not None:
            add_credentials(run)
    run.set_defaults(run=_run, fetch_live=fetch_live)

    compare = cmds.add_parser("compare", help="run scenarios (or one scenario under policies) side by side")
    compare.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                         help="two or more; deltas are against the first (one, with --policy)")
    compare.add_argument("--policy", action="append", default=[], metavar="FILE",
                         help="run the one scenario under each policy file (two or more, repeatable; same seed and "
                              "workload); adds per-tenant outcomes (tenants.csv, tenants.json)")
    compare.add_argument("--out", required=True)
    compare.set_defaults(run=_compare)

    sweep = cmds.add_parser("sweep", help="run a grid of variants of a scenario in parallel")
    sweep.add_argument("scenario")
    sweep.add_argument("--param", action="append", required=True, metavar="PATH=V1,V2",
                       help="a scenario field and its values, e.g. changes[0].lose_mw=0,250,500 (repeatable)")
    sweep.add_argument("--out", required=True)
    sweep.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="worker processes (ignored with --ray)")
    sweep.add_argument("--ray", metavar="auto|ADDRESS",
                       help="run each variant as a Ray task: 'auto' joins a running cluster or starts a local "
                            "one, or a cluster's address (needs pip install 'grid-scheduler[ray]')")
    sweep.add_argument("--reports", action="store_true", help="also write each variant's full report")
    sweep.set_defaults(run=_sweep)

    for p in (run, compare, sweep):
        p.add_argument("--quiet", action="store_true", help="no progress bar")


def _bar(loaded: LoadedScenario, quiet: bool) -> tuple[tqdm[Any], Callable[[Progress], None]]:
    from tqdm import tqdm

    bar: tqdm[Any] = tqdm(total=round(loaded.scenario.horizon_days * 24), unit="h", desc=loaded.name,
                          file=sys.stderr, disable=quiet, dynamic_ncols=True, mininterval=0.5)

    def update(p: Progress) -> None:
        bar.update(max(round(p.sim_s / 3600.0) - bar.n, 0))
        bar.set_postfix(jobs=f"{p.arrived:,}/{p.arrivals:,}", refresh=False)

    return bar, update


def _simulate(loaded: LoadedScenario, quiet: bool, check: bool = False) -> RunResult:
    from grid_scheduler.whatif.simulator import quiet_logs, simulate

    quiet_logs(cache=True)
    bar, update = _bar(loaded, quiet)
    with bar:
        return simulate(loaded, progress=update, check_invariants=check)


def _print_headline(result: RunResult) -> None:
    from grid_scheduler.whatif.report import headline

    print(f"scenario {result.scenario}: {result.perf['jobs']:,.0f} jobs in {result.perf['wall_s']:.1f} s "
          f"({result.perf['jobs_per_s']:,.0f} jobs/s)")
    for key, value in headline(result.summary):
        shown = f"{value:,.0f}" if isinstance(value, float) and abs(value) >= 1000 else (
            f"{value:.4g}" if isinstance(value, float) else f"{value:,}")
        print(f"  {key:<28} {shown}")


def _run(args: argparse.Namespace) -> int:
    from grid_scheduler.whatif.report import write_run_report
    from grid_scheduler.whatif.scenario import load_scenario

    loaded = _load_live(args) if getattr(args, "from_address", None) else load_scenario(args.scenario)
    result = _simulate(loaded, args.quiet, args.check_invariants)
    out = Path(args.out)
    write_run_report(result, loaded, out)
    _print_headline(result)
    if loaded.live is not None:
        live = loaded.live.meta()
        print(f"  started from {live['address']} at ledger version {live['ledger_version']}: "
              f"{live['running_jobs']} running, {live['pending_jobs']} waiting "
              f"({live['anonymised_jobs']} anonymised), policy version {live['policy_version']}")
    print(f"report: {out / 'report.html'}")
    return 0


def _load_live(args: argparse.Namespace) -> LoadedScenario:
    """The scenario checked against the live grid and set to start from the live state. A
    scenario that names a grid or a policy runs anyway, on the live ones: the grid and policy
    are what the snapshot is; a warning says what was ignored."""
    from grid_scheduler.whatif.live import ignored_fields, load_from_live

    live = args.fetch_live(args)
    loaded = load_from_live(args.scenario, live)
    for name in ignored_fields(loaded):
        print(f"warning: scenario {name} ignored: the run starts from the live state of {live.address}",
              file=sys.stderr)
    return loaded


def _compare(args: argparse.Namespace) -> int:
    from grid_scheduler.whatif.compare import write_comparison
    from grid_scheduler.whatif.report import write_run_report
    from grid_scheduler.whatif.scenario import load_scenario

    if args.policy:
        if len(args.scenarios) != 1 or len(args.policy) < 2:
            print("error: --policy compares one scenario under two or more policies", file=sys.stderr)
            return 2
        scenarios = _under_policies(load_scenario(args.scenarios[0]), args.policy)
        labels = [Path(p).stem for p in args.policy]
    elif len(args.scenarios) < 2:
        print("error: compare needs two or more scenarios", file=sys.stderr)
        return 2
    else:
        scenarios = [load_scenario(path) for path in args.scenarios]
        labels = [s.name for s in scenarios]
    names: list[str] = []
    for label in labels:
        name, n = label, 2
        while name in names:
            name, n = f"{label}-{n}", n + 1
        names.append(name)
    results = [_simulate(s, args.quiet) for s in scenarios]
    out = Path(args.out)
    for loaded, result, name in zip(scenarios, results, names, strict=True):
        write_run_report(result, loaded, out / name)
        _print_headline(result)
    write_comparison(results, names, out, [s.policy for s in scenarios] if args.policy else None)
    print(f"comparison: {out / 'compare.html'}")
    return 0


def _under_policies(loaded: LoadedScenario, paths: list[str]) -> list[LoadedScenario]:
    """The scenario once per policy file (every file is read before anything runs)."""
    from dataclasses import replace

    from grid_scheduler.config import load_policy

    return [replace(loaded, policy=load_policy(path)) for path in paths]


def _sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from grid_scheduler.config import ConfigError
    from grid_scheduler.whatif.scenario import load_scenario
    from grid_scheduler.whatif.sweep import Backend, ProcessBackend, parse_param, run_sweep, variants, write_sweep

    backend: Backend = ProcessBackend(args.workers)
    if args.ray is not None:
        from grid_scheduler.whatif.ray_backend import RayBackend, import_ray

        import_ray()  # not installed: say so before anything runs
        backend = RayBackend(args.ray)
    loaded = load_scenario(args.scenario)
    params = [parse_param(p) for p in args.param]
    out = Path(args.out)
    items = variants(loaded, params, out / "variants" if args.reports else None)
    with tqdm(total=len(items), unit="variant", desc=f"sweep {loaded.name}", file=sys.stderr,
              disable=args.quiet) as bar:
        try:
            results = run_sweep(items, backend, on_done=lambda _: _tick(bar))
        except ConnectionError as e:
            if args.ray is None:
                raise
            raise ConfigError(f"--ray {args.ray}: {e}") from e  # no cluster at that address
    write_sweep(results, params, out)
    failed = [r for r in results if r.failed]
    print(f"{len(results)} variants: {out / 'sweep.csv'}, {out / 'sweep.html'}")
    if failed:  # the others' results are written; the exit status says the table has holes
        for r in failed:
            print(f"variant {r.label} failed: {r.error}", file=sys.stderr)
        print(f"{len(failed)} of {len(results)} variants failed (the 'error' column of sweep.csv)", file=sys.stderr)
        return 1
    return 0


def _tick(bar: tqdm[Any]) -> None:
    bar.update(1)
