"""The cyclic garbage collector set for a long-running server, once its start-up state is loaded.

A submission allocates a few thousand short-lived objects (NumPy temporaries, pydantic models,
protobuf messages) and almost no reference cycles, while the process holds hundreds of thousands
of long-lived ones (the grid, its index and latency matrices, the policy, the job history). With
CPython's default thresholds (700, 10, 10) a young collection runs every few calls and a full one
walks every long-lived object again: on the handler at 500 sites that was ~10 % of its CPU time,
with full collections of 100+ ms landing in single calls (benchmarks/README.md, "Online placement").

``settle_heap`` moves everything alive at start-up to the permanent generation (``gc.freeze``:
never scanned again, never freed, which is right for the grid of a process that serves it until
it exits) and raises the thresholds, so young collections are ~30x rarer and full ones rarer
still. Cyclic garbage is still collected: what a submission leaves in cycles is a few objects
(benchmarks/memory_retention.py ``--settled-heap`` holds RSS flat over 200k submissions).

Process-wide: called by ``serve`` (and the benchmarks that measure what ``serve`` does), never
by ``start_server``, which tests call many times in one process.
"""

from __future__ import annotations

import gc

__all__ = ["SERVER_THRESHOLDS", "settle_heap"]

# (young, middle, old): a young collection every 20,000 net allocations; a middle one every 50
# of those; a full one every 100 middle ones (and then only when CPython's own rule, a quarter
# of the old generation new since the last full one, agrees).
SERVER_THRESHOLDS = (20_000, 50, 100)


def settle_heap(thresholds: tuple[int, int, int] = SERVER_THRESHOLDS) -> None:
    """Collect once, freeze what is left (the state loaded at start-up) and raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
