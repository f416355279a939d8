"""Group commit: the commits that threads of one process make at once share one script call.

A thread that commits while another thread's call is on its way to Redis queues its commit. When
that call returns, the first queued thread becomes the leader: it sends every commit queued by
then in ONE call (the group script applies them in order, each with its own checks, and replies
with each one's outcome), and hands each waiting thread its own reply. A thread alone sends its
commit as before, so a single caller pays nothing for this.

Why: every call costs a round trip and redis-py's per-call work (building the command, a
connection, reading the reply) on top of the script's own; with 8 clients on one server those
calls were made one after another anyway (the GIL), each paying it.

What it does not change: a commit's outcome is the one it would have had sent alone after those
queued before it (the script runs them in queue order and each re-checks against live usage, its
request id's twin and its expected versions), and a refused commit writes nothing whatever its
neighbours do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["GroupCommit", "GroupStats"]

A = TypeVar("A")  # what one commit sends
R = TypeVar("R")  # what it gets back

# Most commits in one call: a bound on the script's run (Redis serves nothing else meanwhile)
# and on one reply's size; more wait for the next call.
MAX_GROUP = 64


@dataclass
class GroupStats:
    """Calls sent and the commits they carried (``commits / calls`` is the mean group size)."""

    calls: int = 0
    commits: int = 0
    largest: int = 0


@dataclass
class _Pending(Generic[A, R]):
    item: A
    done: bool = False
    reply: R | None = None
    error: BaseException | None = None
    taken: bool = False  # a leader is sending it


class GroupCommit(Generic[A, R]):
    """``send_one(item)`` for a commit alone, ``send_many(items)`` (replies in the same order) for several."""

    def __init__(self, send_one: Callable[[A], R], send_many: Callable[[Sequence[A]], Sequence[R]],
                 max_group: int = MAX_GROUP) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._max_group = max_group
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Pending[A, R]] = []
        self._leading = False
        self.stats = GroupStats()

    def queued(self) -> int:
        """Commits waiting for a call (not the ones on their way)."""
        with self._cond:
            return sum(not p.taken for p in self._queue)

    def sending(self) -> bool:
        """Whether a call is on its way."""
        with self._cond:
            return self._leading

    def __call__(self, item: A) -> R:
        mine: _Pending[A, R] = _Pending(item)
        with self._cond:
            self._queue.append(mine)
        while True:
            with self._cond:
                while not mine.done and (self._leading or mine.taken):
                    self._cond.wait()
                if mine.done:
                    return self._result(mine)
                # No call on its way and this commit still queued: lead the next group, the queue's
                # oldest commits (this one among them unless more than a group's worth came first).
                self._leading = True
                group, self._queue = self._queue[:self._max_group], self._queue[self._max_group:]
                for p in group:
                    p.taken = True
                self.stats.calls += 1
                self.stats.commits += len(group)
                self.stats.largest = max(self.stats.largest, len(group))
            self._send(group)

    def _send(self, group: list[_Pending[A, R]]) -> None:
        try:
            if len(group) == 1:
                replies: Sequence[R] = [self._send_one(group[0].item)]
            else:
                replies = self._send_many([p.item for p in group])
            if len(replies) != len(group):
                raise RuntimeError(f"group commit: {len(replies)} replies for {len(group)} commits")
            for p, reply in zip(group, replies, strict=True):
                p.reply = reply
        except BaseException as e:  # the call failed for all of them alike: each caller gets the error
            for p in group:
                p.error = e
        finally:
            with self._cond:
                for p in group:
                    p.done = True
                self._leading = False
                self._cond.notify_all()

    @staticmethod
    def _result(p: _Pending[A, R]) -> R:
        if p.error is not None:
            raise p.error
        return p.reply  # type: ignore[return-value]  # set whenever error is not
