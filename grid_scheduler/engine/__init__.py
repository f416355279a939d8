"""The functional core: given a capacity snapshot, a job and a policy, decide and explain.

Nothing here touches gRPC, Redis or the clock, so the server, the benchmarks and the
what-if simulator all run the same decisions.
"""

from grid_scheduler.engine.explain import site_reasons, wait_info
from grid_scheduler.engine.index import GridIndex, Usage
from grid_scheduler.engine.online import Decision, could_ever_place, decide

__all__ = ["Decision", "GridIndex", "Usage", "could_ever_place", "decide", "site_reasons", "wait_info"]
