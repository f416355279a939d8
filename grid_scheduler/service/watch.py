"""Job events fanned out to watch streams: one store reader per store, streams that take turns to send.

Why it is built this way (measured with benchmarks/watch_contention.py; see benchmarks/README.md):

- In the sync gRPC server every WatchJobs stream is a thread. When each stream polled the store
  itself, every event meant N store reads under the store's lock (N blocking XREADs held open on
  Redis), N conversions to protobuf, and N threads all runnable at once to send.
- Sending is what costs: ~40 µs of CPU per streamed message with a few threads sending, ~100 µs
  with 64 sending at once (they queue on the GIL). While 64 threads send, a unary call that
  needs the GIL back waits behind them: with 64 streams, SubmitJob's p99 went up ~5-10x.

So one reader thread per store pulls events (one store read per batch of events, however many
watchers) and converts each event once; each stream has a queue of those shared batches; and
the streams take turns to send, at most ``SEND_WIDTH`` at a time, first come first served.
A unary call then waits for at most one stream's message, not for all of them. The price is
delivery: under a burst the streams fall behind and catch up afterwards. A stream whose queue
passes ``MAX_QUEUED_EVENTS`` drops its oldest batches and reads them back from the store; one
that has fallen behind the store's retained window gets :class:`EventsTrimmed` (the servicer
ends it with OUT_OF_RANGE), never a silent gap.

A turn held longer than ``TURN_STALL_S`` (its client stopped reading, so its send waits on
HTTP/2 flow control) stops counting against the width, so one stuck client cannot stall the rest.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass

import structlog

from grid_scheduler._proto.v1 import placement_pb2 as pb
from grid_scheduler.model import JobEvent
from grid_scheduler.service import convert
from grid_scheduler.state import Store, StoreError

log = structlog.get_logger("grid_scheduler.watch")

SEND_WIDTH = 1  # streams sending at once
EVENTS_PER_TURN = 32  # most events one stream sends per turn before the next stream's turn
TURN_STALL_S = 0.2  # a turn this old is blocked on its client: let another stream send meanwhile
MAX_QUEUED_EVENTS = 10_000  # per stream; past it the oldest are dropped and re-read from the store
POLL_S = 0.25  # the reader's longest wait in the store for new events


class EventsTrimmed(Exception):
    """Events after ``after`` are gone from the store: its oldest retained is ``first``."""

    def __init__(self, after: int, first: int) -> None:
        super().__init__(f"events after sequence {after} are no longer retained; the oldest is {first}")
        self.after = after
        self.first = first


@dataclass(frozen=True, slots=True)
class _Item:
    """One event, converted once, shared by every stream's queue."""

    sequence: int
    job_id: str
    tenant: str
    message: pb.WatchJobsResponse


class Subscription:
    """One stream's place in the feed: the events it has passed, its queue, its turns.

    Used by one stream thread: ``wait_turn``, then ``take``, send what it returned, then
    ``end_turn``; ``close`` when the stream ends, however it ends.
    """

    def __init__(
        self, feed: EventFeed, sequence: int, job_id: str, behind: bool, tenants: frozenset[str] | None = None
    ) -> None:
        self._feed = feed
        self.sequence = sequence  # the last event passed on (sent, or filtered out)
        self.job_id = job_id
        self.tenants = tenants  # the tenants this stream's caller may read; None: every tenant
        # Guarded by the feed's lock:
        self._batches: deque[list[_Item]] = deque()
        self._head = 0  # position in self._batches[0]
        self._queued = 0
        self._error: StoreError | None = None
        self._ready = False  # in the feed's queue of streams waiting for a turn
        self._turn_since: float | None = None
        # The stream thread's own:
        self._behind = behind  # events between self.sequence and the queue are in the store only
        self._backlog: deque[JobEvent] = deque()
        self._turn = threading.Event()

    def wait_turn(self, timeout_s: float) -> bool:
        """Wait until this stream has something to send and its turn to send it."""
        return self._turn.wait(timeout_s)

    def take(self, limit: int = EVENTS_PER_TURN) -> list[pb.WatchJobsResponse]:
        """The next messages to send, at most ``limit``; during a turn.

        Raises EventsTrimmed when the next event this stream needs is gone from the store,
        and StoreError (StoreUnavailable) when the store cannot be read.
        """
        if self._error is not None:
            raise self._error
        out: list[pb.WatchJobsResponse] = []
        while len(out) < limit:
            if self._backlog:
                event = self._backlog.popleft()
                if self._pass(event.sequence, event.job_id, event.tenant):
                    out.append(convert.event_to_pb(event))
            elif self._behind:
                self._read_store()
            else:
                items = self._feed._pop(self, limit - len(out))
                if not items:
                    break
                for item in items:
                    if item.sequence > self.sequence + 1:
                        # A gap: batches dropped past MAX_QUEUED_EVENTS, or the stream started behind
                        # the reader. The store has the missing events (or says they are gone); what
                        # was popped after the gap is read again from there.
                        self._behind = True
                        break
                    if self._pass(item.sequence, item.job_id, item.tenant):
                        out.append(item.message)
        return out

    def _pass(self, sequence: int, job_id: str, tenant: str) -> bool:
        """Move past one event; whether this stream sends it (its job, in its caller's tenants)."""
        if sequence <= self.sequence:  # already passed (read from the store, then queued too)
            return False
        self.sequence = sequence
        if self.tenants is not None and tenant not in self.tenants:
            return False
        return not self.job_id or job_id == self.job_id

    def _read_store(self) -> None:
        store = self._feed.store
        events = store.events_after(self.sequence, 0)
        if not events:
            # Nothing after self.sequence in the store: every later event reaches the queue.
            self._behind = False
            return
        if events[0].sequence > self.sequence + 1:
            first = store.first_sequence()
            if self.sequence + 1 < first:
                raise EventsTrimmed(self.sequence, first)
        self._backlog.extend(events)

    def end_turn(self) -> None:
        self._feed._end_turn(self, more=bool(self._backlog) or self._behind)

    def close(self) -> None:
        self._feed._unsubscribe(self)


class EventFeed:
    """Events from one store to every watch stream in this process; see the module's docstring."""

    def __init__(self, store: Store) -> None:
        # Weak, so that the process-wide map of feeds does not keep a closed store alive.
        self._store = weakref.ref(store)
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()
        self._ready: deque[Subscription] = deque()
        self._turns: set[Subscription] = set()
        self._position = 0  # the last sequence the reader has handed out
        self._reader: threading.Thread | None = None

    @property
    def store(self) -> Store:
        store = self._store()
        if store is None:
            raise RuntimeError("the store of this feed is gone")
        return store

    def subscribe(self, sequence: int, job_id: str = "", tenants: frozenset[str] | None = None) -> Subscription:
        """A stream that passes on every event after ``sequence`` (of ``job_id`` only, if given, and of
        ``tenants`` only, unless None)."""
        with self._lock:
            if self._reader is None:
                # Read before the reader starts: it hands out everything after this.
                self._position = self.store.last_sequence()
                self._reader = threading.Thread(target=self._read, name="watch-feed", daemon=True)
                self._reader.start()
            sub = Subscription(self, sequence, job_id, behind=sequence < self._position, tenants=tenants)
            self._subscriptions.add(sub)
            if sub._behind:
                self._make_ready(sub)
                self._grant()
        return sub

    # --- the reader ------------------------------------------------------------------------
    def _read(self) -> None:
        store = self.store  # held while the reader runs
        while True:
            with self._lock:
                if not self._subscriptions:
                    self._reader = None
                    return
                position = self._position
            started = time.monotonic()
            try:
                events = store.events_after(position, POLL_S)
            except StoreError as e:
                # Every stream ends with it (the servicer maps it to UNAVAILABLE, naming the
                # sequence to resume from); the reader tries again while any remain.
                with self._lock:
                    for sub in self._subscriptions:
                        sub._error = e
                        self._make_ready(sub)
                    self._grant()
                time.sleep(POLL_S)
                continue
            except Exception:
                log.exception("watch_feed_failed")
                time.sleep(POLL_S)
                continue
            if not events and time.monotonic() - started < POLL_S / 10:
                time.sleep(POLL_S)  # a closed store answers at once: do not spin until the streams end
            items = [_Item(e.sequence, e.job_id, e.tenant, convert.event_to_pb(e)) for e in events]
            with self._lock:
                if items:
                    self._position = items[-1].sequence
                    for sub in self._subscriptions:
                        self._push(sub, items)
                self._grant()  # also lets a stream past a stalled turn

    def _push(self, sub: Subscription, items: list[_Item]) -> None:
        sub._batches.append(items)
        sub._queued += len(items)
        while sub._queued > MAX_QUEUED_EVENTS and len(sub._batches) > 1:
            dropped = sub._batches.popleft()
            sub._queued -= len(dropped) - sub._head
            sub._head = 0
        self._make_ready(sub)

    # --- turns (all under self._lock) ------------------------------------------------------
    def _make_ready(self, sub: Subscription) -> None:
        if not sub._ready and sub._turn_since is None:
            sub._ready = True
            self._ready.append(sub)

    def _grant(self) -> None:
        now = time.monotonic()
        sending = sum(1 for s in self._turns if s._turn_since is not None and now - s._turn_since < TURN_STALL_S)
        while self._ready and sending < SEND_WIDTH:
            sub = self._ready.popleft()
            sub._ready = False
            sub._turn_since = now
            self._turns.add(sub)
            sub._turn.set()
            sending += 1

    def _pop(self, sub: Subscription, limit: int) -> list[_Item]:
        with self._lock:
            out: list[_Item] = []
            while sub._batches and len(out) < limit:
                batch = sub._batches[0]
                end = min(len(batch), sub._head + limit - len(out))
                out.extend(batch[sub._head:end])
                sub._head = end
                if end == len(batch):
                    sub._batches.popleft()
                    sub._head = 0
            sub._queued -= len(out)
            return out

    def _end_turn(self, sub: Subscription, more: bool) -> None:
        with self._lock:
            sub._turn.clear()
            sub._turn_since = None
            self._turns.discard(sub)
            if more or sub._batches or sub._error is not None:
                self._make_ready(sub)
            self._grant()

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(sub)
            self._turns.discard(sub)
            sub._turn_since = None
            if sub._ready:
                self._ready.remove(sub)
                sub._ready = False
            sub._batches.clear()
            self._grant()

    @property
    def subscriptions(self) -> int:
        return len(self._subscriptions)


_feeds: weakref.WeakKeyDictionary[Store, EventFeed] = weakref.WeakKeyDictionary()
_feeds_lock = threading.Lock()


def feed_for(store: Store) -> EventFeed:
    """The process's feed for ``store`` (made on first use; its reader runs while anyone watches)."""
    with _feeds_lock:
        feed = _feeds.get(store)
        if feed is None:
            feed = _feeds[store] = EventFeed(store)
        return feed
