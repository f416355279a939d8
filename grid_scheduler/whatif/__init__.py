"""What-if capacity planning: replay workloads against scenarios with the production scheduler.

A scenario (``scenario.py``) names a grid, timed changes (``changes.py``), a workload
(``workload.py``), a policy, a horizon and a seed. The simulator (``simulator.py``) drives the
same ``Scheduler`` the server runs, with an in-memory ledger and a simulated clock; grid
changes move the jobs to a rebuilt scheduler (``ledger.py``). ``metrics.py`` measures,
``report.py`` / ``plots.py`` / ``html.py`` write CSV, PNG and HTML, ``compare.py`` and
``sweep.py`` put runs side by side, ``service.py`` is what a ScenarioService run executes (the
gRPC servicer itself is ``service/scenario.py``: nothing here imports gRPC), ``cli.py`` is the CLI.
``planning/`` is capacity-expansion planning (``whatif plan``): a CP-SAT choice of expansions,
verified by replaying it here.
"""
