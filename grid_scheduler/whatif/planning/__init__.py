"""Capacity-expansion planning (``whatif plan``): the cheapest expansions that meet targets.

``spec.py`` is the plan file; ``aggregate.py`` turns the base scenario into demand classes and
capacity groups per period; ``model.py`` is the CP-SAT model over them; ``explain.py`` says why
a target cannot be met; ``targets.py`` measures targets on a replay; ``planner.py`` solves,
replays (with the production simulator), iterates, and runs the do-nothing and greedy
baselines; ``report.py`` writes the outputs; ``cli.py`` is the subcommand.
"""
