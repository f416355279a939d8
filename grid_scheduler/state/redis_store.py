"""The shared ledger on Redis: restarts lose nothing, several scheduler replicas never double-book.

Same contract as ``MemoryStore`` (tests/test_store_contract.py runs against both). Every
commit is ONE Lua script: it re-checks every pool and site the job touches, then writes the
job record, its reservation, the counters, the request-id index and the event. Redis runs a
script to completion before any other command, so a crash or a racing replica can never see
(or leave) a half-written job.

Key layout (``{grid}`` is a Redis Cluster hash tag: every key of one grid lives in one slot,
so the multi-key scripts would also run on a cluster; scripts build key names from the
prefix ``gs:{grid}:``, which is legal there because they all hash to the same slot):

    gs:{grid}:pool:<pool_id>      hash  used (GPUs), drained (0|1)
    gs:{grid}:site:<site_id>      hash  used_w (facility watts, integer)
    gs:{grid}:ledger_version      int   bumped by every change of usage or drains (Scheduler caches by it)
    gs:{grid}:job:<job_id>        hash  record (JobRecord JSON), version, state,
                                        res (reservation: JSON list of Assignment + integer watts)
    gs:{grid}:jobs                zset  every job id, score 0: ZRANGEBYLEX pages in id order
    gs:{grid}:state:<state>       zset  job ids in that state (pending, running, ...), score 0
    gs:{grid}:requests            hash  request_id -> job_id (idempotent submission)
    gs:{grid}:event_seq           int   last event sequence
    gs:{grid}:events              stream  one entry per event; entry id is ``<sequence>-0``, so
                                        ``events_after(n)`` is ``XREAD ... <n>-0`` and a restarted
                                        watcher resumes from the sequence it last saw
    gs:{grid}:lease:<name>        string  batch-cycle lease "<token>:<owner>" (state/lease.py)
    gs:{grid}:lease:<name>:fence  int     its fencing token counter

Limits (GPUs per pool, watts per site) are not stored: each call passes the limits of the
pools and sites it touches, from the grid file the replica loaded.

Failures: every redis-py connection error or timeout surfaces as ``StoreUnavailable``. The
client is retry-free with short socket timeouts, so a call fails fast instead of hanging the
gRPC worker; a commit whose reply was lost may still have happened, which is why submission
carries a ``request_id``.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import redis
from redis.commands.core import Script

from grid_scheduler.model import Assignment, EventType, JobEvent, JobRecord, JobState
from grid_scheduler.state.lease import Lease, LeaseLost
from grid_scheduler.state.redis_conn import SOCKET_TIMEOUT_S, guarded, redact, redis_client
from grid_scheduler.state.store import (
    CapacityConflict,
    LedgerSnapshot,
    Limits,
    StaleRecord,
    Transition,
    UnknownJob,
    to_watts,
)

MAX_EVENTS = 100_000  # the stream is trimmed (approximately) to this many entries, like MemoryStore
EVENT_BATCH = 1_000  # events per read; a watcher far behind catches up in several reads
HEALTH_TIMEOUT_S = 0.25  # healthy() is polled every half second: it must answer well within that
MAX_BLOCK_S = 5.0  # longest XREAD BLOCK; the blocking connection's socket timeout is set above it

Arg = str | int | float  # what a script argument may be

# --- Lua --------------------------------------------------------------------------
# The commit scripts take ARGV = prefix, meta (JSON), record (JSON), reservation (JSON or '').
# Everything small travels in the one meta argument: per-argument encoding is a large part of a
# commit's client-side cost. meta: id, rid (request id), v (new version), st (state), ev (event
# type), t (time), msg, max (events kept), fk/ft (fence key and token, '' = unfenced),
# pools [[pool_id, gpus, limit]...] and sites [[site_id, watts, limit]...] (aggregated), and for
# apply: exp (expected version), rel (release what the job holds first).
_LUA_COMMON = r"""
local P = ARGV[1]
local m = cjson.decode(ARGV[2])

-- A fenced commit (batch results) goes through only while its lease token is current.
local function fence_error()
  if m.fk == '' then return nil end
  local holder = redis.call('GET', m.fk)
  if not holder or string.match(holder, '^(%d+):') ~= m.ft then
    return 'lease ' .. m.fk .. ' is no longer held with token ' .. m.ft
  end
  return nil
end

-- Checks everything before writing anything: all of it fits, or nothing is taken.
-- freed_*: what this same commit releases first (a job moved from one placement to another).
local function check(freed_pool, freed_site)
  for _, p in ipairs(m.pools) do
    local v = redis.call('HMGET', P .. 'pool:' .. p[1], 'used', 'drained')
    if v[2] == '1' then return 'pool ' .. p[1] .. ' is drained' end
    local used = (tonumber(v[1]) or 0) - (freed_pool[p[1]] or 0)
    if used + p[2] > p[3] then return string.format('pool %s: %d GPUs do not fit', p[1], p[2]) end
  end
  for _, s in ipairs(m.sites) do
    local used = (tonumber(redis.call('HGET', P .. 'site:' .. s[1], 'used_w')) or 0) - (freed_site[s[1]] or 0)
    if used + s[2] > s[3] then return string.format('site %s: %.1f kW do not fit', s[1], s[2] / 1000) end
  end
  return nil
end

local function add(pool_delta, site_delta)
  local changed = false
  for id, d in pairs(pool_delta) do
    redis.call('HINCRBY', P .. 'pool:' .. id, 'used', d)
    changed = true
  end
  for id, d in pairs(site_delta) do
    redis.call('HINCRBY', P .. 'site:' .. id, 'used_w', d)
    changed = true
  end
  if changed then redis.call('INCR', P .. 'ledger_version') end
end

local function emit()
  local seq = redis.call('INCR', P .. 'event_seq')
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', m.max, seq .. '-0',
             'job_id', m.id, 'type', m.ev, 'state', m.st, 'time', m.t, 'message', m.msg)
end
"""

_LUA_CREATE = _LUA_COMMON + r"""
if m.rid ~= '' then
  local existing = redis.call('HGET', P .. 'requests', m.rid)
  if existing then return {'dup', redis.call('HGET', P .. 'job:' .. existing, 'record')} end
end
local err = fence_error()
if err then return {'fenced', err} end
local jkey = P .. 'job:' .. m.id
if redis.call('EXISTS', jkey) == 1 then return {'stale', 'job ' .. m.id .. ' exists'} end
err = check({}, {})
if err then return {'conflict', err} end
local pool_delta, site_delta = {}, {}
for _, p in ipairs(m.pools) do pool_delta[p[1]] = p[2] end
for _, s in ipairs(m.sites) do site_delta[s[1]] = s[2] end
add(pool_delta, site_delta)
if ARGV[4] ~= '' then
  redis.call('HSET', jkey, 'record', ARGV[3], 'version', m.v, 'state', m.st, 'res', ARGV[4])
else
  redis.call('HSET', jkey, 'record', ARGV[3], 'version', m.v, 'state', m.st)
end
redis.call('ZADD', P .. 'jobs', 0, m.id)
redis.call('ZADD', P .. 'state:' .. m.st, 0, m.id)
if m.rid ~= '' then redis.call('HSET', P .. 'requests', m.rid, m.id) end
emit()
return {'ok'}
"""

_LUA_APPLY = _LUA_COMMON + r"""
local jkey = P .. 'job:' .. m.id
local cur = redis.call('HMGET', jkey, 'version', 'state', 'res')
if not cur[1] then return {'unknown', m.id} end
if tonumber(cur[1]) ~= m.exp then
  return {'stale', 'job ' .. m.id .. ' is at version ' .. cur[1] .. ', not ' .. m.exp}
end
local err = fence_error()
if err then return {'fenced', err} end
local freed_pool, freed_site = {}, {}
local pool_delta, site_delta = {}, {}
if m.rel and cur[3] then
  for _, a in ipairs(cjson.decode(cur[3])) do
    freed_pool[a.pool_id] = (freed_pool[a.pool_id] or 0) + a.gpus
    freed_site[a.site_id] = (freed_site[a.site_id] or 0) + a.watts
    pool_delta[a.pool_id] = (pool_delta[a.pool_id] or 0) - a.gpus
    site_delta[a.site_id] = (site_delta[a.site_id] or 0) - a.watts
  end
end
err = check(freed_pool, freed_site)
if err then return {'conflict', err} end
for _, p in ipairs(m.pools) do pool_delta[p[1]] = (pool_delta[p[1]] or 0) + p[2] end
for _, s in ipairs(m.sites) do site_delta[s[1]] = (site_delta[s[1]] or 0) + s[2] end
add(pool_delta, site_delta)
redis.call('HSET', jkey, 'record', ARGV[3], 'version', m.v, 'state', m.st)
if ARGV[4] ~= '' then
  redis.call('HSET', jkey, 'res', ARGV[4])
elseif m.rel then
  redis.call('HDEL', jkey, 'res')
end
if cur[2] ~= m.st then
  redis.call('ZREM', P .. 'state:' .. cur[2], m.id)
  redis.call('ZADD', P .. 'state:' .. m.st, 0, m.id)
end
emit()
return {'ok'}
"""

# ARGV: prefix, number of pools, pool ids..., site ids...  One consistent read of every counter;
# comma-joined so a grid of thousands of pools is three strings to parse, not thousands of replies.
_LUA_SNAPSHOT = r"""
local P = ARGV[1]
local n = tonumber(ARGV[2])
local used, drained, watts = {}, {}, {}
for i = 1, n do
  local v = redis.call('HMGET', P .. 'pool:' .. ARGV[2 + i], 'used', 'drained')
  used[i] = v[1] or '0'
  drained[i] = v[2] or '0'
end
for i = 3 + n, #ARGV do
  watts[#watts + 1] = redis.call('HGET', P .. 'site:' .. ARGV[i], 'used_w') or '0'
end
return {redis.call('GET', P .. 'ledger_version') or '0',
        table.concat(used, ','), table.concat(drained, ','), table.concat(watts, ',')}
"""

# ARGV: prefix, pool id, 1|0
_LUA_DRAIN = r"""
local P = ARGV[1]
local key = P .. 'pool:' .. ARGV[2]
if (redis.call('HGET', key, 'drained') or '0') == ARGV[3] then return 0 end
redis.call('HSET', key, 'drained', ARGV[3])
redis.call('INCR', P .. 'ledger_version')
return 1
"""

# ARGV: prefix, request id
_LUA_BY_REQUEST = r"""
local P = ARGV[1]
local id = redis.call('HGET', P .. 'requests', ARGV[2])
if not id then return false end
return redis.call('HGET', P .. 'job:' .. id, 'record')
"""

# ARGV: prefix, after id ('' = from the start), limit, states...  Returns id, record, id, record...
# With several states, up to ``limit`` ids from each; the caller merges them (Lua's string
# comparison follows the C locale's collation, Python's does not: order is decided in Python).
_LUA_LIST = r"""
local P = ARGV[1]
local start = ARGV[2] == '' and '-' or '(' .. ARGV[2]
local limit = tonumber(ARGV[3])
local sets = {}
if #ARGV < 4 then sets[1] = P .. 'jobs' end
for i = 4, #ARGV do sets[#sets + 1] = P .. 'state:' .. ARGV[i] end
local out = {}
for _, set in ipairs(sets) do
  for _, id in ipairs(redis.call('ZRANGEBYLEX', set, start, '+', 'LIMIT', 0, limit)) do
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', P .. 'job:' .. id, 'record')
  end
end
return out
"""

# ARGV: prefix
_LUA_PENDING = r"""
local P = ARGV[1]
local out = {}
for i, id in ipairs(redis.call('ZRANGE', P .. 'state:pending', 0, -1)) do
  out[i] = redis.call('HGET', P .. 'job:' .. id, 'record')
end
return out
"""


class RedisStore:
    def __init__(self, limits: Limits, url: str, grid_name: str) -> None:
        if not grid_name or "{" in grid_name or "}" in grid_name:
            raise ValueError(f"grid name {grid_name!r} cannot be a Redis hash tag")
        self._limits = limits
        self.url = url
        self.safe_url = redact(url)
        self.grid_name = grid_name
        self.prefix = f"gs:{{{grid_name}}}:"
        # KEYS[1] of every script: it routes the call to the grid's slot; the script builds the
        # rest from the prefix.
        self._route = self.prefix + "ledger_version"
        self._r = redis_client(url)
        # XREAD BLOCK holds its connection for the whole wait: its own pool, a longer timeout.
        self._blocking = redis_client(url, socket_timeout_s=MAX_BLOCK_S + SOCKET_TIMEOUT_S)
        self._probe = redis_client(url, HEALTH_TIMEOUT_S, HEALTH_TIMEOUT_S)
        self._create = self._script(_LUA_CREATE)
        self._apply = self._script(_LUA_APPLY)
        self._snapshot = self._script(_LUA_SNAPSHOT)
        self._drain = self._script(_LUA_DRAIN)
        self._by_request = self._script(_LUA_BY_REQUEST)
        self._list = self._script(_LUA_LIST)
        self._pending = self._script(_LUA_PENDING)
        self._snapshot_args: list[Arg] = [self.prefix, len(limits.pool_ids), *limits.pool_ids, *limits.site_ids]
        self._fence: tuple[str, int] | None = None
        self._closed = threading.Event()

    def _script(self, lua: str) -> Script:
        return self._r.register_script(lua)

    def _run(self, script: Script, args: Sequence[Arg]) -> Any:
        # EVALSHA straight through execute_command: Script.__call__ adds per-call work on the hot path.
        # After a Redis restart the script cache is empty: load it and send once more.
        execute: Callable[..., Any] = self._r.execute_command
        try:
            return execute("EVALSHA", script.sha, 1, self._route, *args)
        except redis.exceptions.NoScriptError:
            script.sha = self._r.script_load(script.script)
            return execute("EVALSHA", script.sha, 1, self._route, *args)

    def fenced(self, lease: Lease, token: int) -> RedisStore:
        """A view of this store whose commits go through only while ``lease`` is held with ``token``.

        The check runs inside the same script as the commit, so a replica that lost the lease
        (paused past the TTL, partitioned) cannot commit batch results after a newer holder
        started: it gets ``LeaseLost`` and nothing is written. Reads and connections are shared.
        """
        if not lease.key.startswith(self.prefix):
            # The script reads the lease key: it must share the grid's hash tag (one cluster slot).
            raise ValueError(f"lease {lease.key} is not in this grid's keyspace: create it with grid_name=")
        view = object.__new__(RedisStore)
        view.__dict__.update(self.__dict__)
        view._fence = (lease.key, token)
        return view

    # --- commits ---------------------------------------------------------------
    def _meta(self, record: JobRecord, transition: Transition, **extra: object) -> str:
        # Aggregated per pool and per site: the same sums MemoryStore checks.
        gpus: dict[str, int] = defaultdict(int)
        watts: dict[str, int] = defaultdict(int)
        for a in transition.reserve:
            gpus[a.pool_id] += a.gpus
            watts[a.site_id] += to_watts(a.power_kw)
        limits = self._limits
        fence_key, fence_token = self._fence if self._fence else ("", 0)
        return json.dumps({
            "id": record.id, "rid": record.request_id, "v": record.version, "st": record.state.value,
            "ev": transition.event.value, "t": repr(record.updated_at), "msg": transition.message,
            "max": MAX_EVENTS, "fk": fence_key, "ft": str(fence_token),
            "pools": [[p, n, int(limits.pool_gpus[limits.pool_index[p]])] for p, n in gpus.items()],
            "sites": [[s, w, int(limits.site_power_w[limits.site_index[s]])] for s, w in watts.items()],
            **extra,
        }, ensure_ascii=False)

    @staticmethod
    def _res_json(assignments: Sequence[Assignment]) -> str:
        # The watts are stored with the assignment so release gives back exactly the integer reserve took.
        if not assignments:
            return ""
        return json.dumps([{**a.model_dump(mode="json"), "watts": to_watts(a.power_kw)} for a in assignments])

    def _check(self, reply: Any) -> Any:
        status = reply[0]
        if status in ("ok", "dup"):
            return reply
        message = reply[1] if len(reply) > 1 else ""
        if status == "conflict":
            raise CapacityConflict(message)
        if status == "stale":
            raise StaleRecord(message)
        if status == "unknown":
            raise UnknownJob(message)
        if status == "fenced":
            raise LeaseLost(message)
        raise RuntimeError(f"unexpected reply from the ledger script: {reply!r}")

    @guarded
    def create_job(self, transition: Transition) -> tuple[JobRecord, bool]:
        record = transition.record
        reply = self._check(self._run(self._create, [
            self.prefix, self._meta(record, transition), record.model_dump_json(), self._res_json(transition.reserve),
        ]))
        if reply[0] == "dup":
            return JobRecord.model_validate_json(reply[1]), False
        return record, True

    @guarded
    def apply(self, job_id: str, expected_version: int, transition: Transition) -> JobRecord:
        record = transition.record
        meta = self._meta(record, transition, id=job_id, exp=expected_version, rel=transition.release)
        self._check(self._run(self._apply, [
            self.prefix, meta, record.model_dump_json(), self._res_json(transition.reserve),
        ]))
        return record

    # --- reads -----------------------------------------------------------------
    @guarded
    def get_job(self, job_id: str) -> JobRecord | None:
        raw = self._r.hget(self.prefix + "job:" + job_id, "record")
        return JobRecord.model_validate_json(cast(str, raw)) if raw is not None else None

    @guarded
    def job_by_request(self, request_id: str) -> JobRecord | None:
        raw = self._run(self._by_request, [self.prefix, request_id])
        return JobRecord.model_validate_json(raw) if raw else None

    @guarded
    def list_jobs(self, states: frozenset[JobState], after_id: str, limit: int) -> list[JobRecord]:
        if limit <= 0:
            return []
        flat = self._run(self._list, [self.prefix, after_id, limit, *sorted(s.value for s in states)])
        pairs = sorted(zip(flat[::2], flat[1::2], strict=True))[:limit]
        return [JobRecord.model_validate_json(raw) for _, raw in pairs if raw]

    @guarded
    def pending_jobs(self) -> list[JobRecord]:
        pending = [JobRecord.model_validate_json(raw) for raw in self._run(self._pending, [self.prefix]) if raw]
        return sorted(pending, key=lambda r: (-r.spec.priority, r.created_at, r.id))

    @guarded
    def reservation(self, job_id: str) -> list[Assignment]:
        raw = self._r.hget(self.prefix + "job:" + job_id, "res")
        if not raw:
            return []
        return [Assignment.model_validate(a) for a in json.loads(cast(str, raw))]

    @guarded
    def snapshot(self) -> LedgerSnapshot:
        version, used, drained, watts = self._run(self._snapshot, self._snapshot_args)
        return LedgerSnapshot(
            version=int(version),
            pool_used_gpus=_ints(used),
            site_used_w=_ints(watts),
            pool_drained=np.asarray(_ints(drained) != 0, dtype=np.bool_),
        )

    @guarded
    def ledger_version(self) -> int:
        return int(cast(str | None, self._r.get(self.prefix + "ledger_version")) or 0)

    @guarded
    def set_drained(self, pool_id: str, drained: bool) -> bool:
        self._limits.pool_index[pool_id]  # KeyError for an unknown pool, as MemoryStore
        return bool(self._run(self._drain, [self.prefix, pool_id, 1 if drained else 0]))

    # --- events ----------------------------------------------------------------
    @guarded
    def events_after(self, sequence: int, timeout_s: float) -> list[JobEvent]:
        if self._closed.is_set():
            return []
        # XREAD's BLOCK 0 means "forever": no wait is no BLOCK at all.
        block = max(1, int(min(timeout_s, MAX_BLOCK_S) * 1000)) if timeout_s > 0 else None
        try:
            reply: Any = self._blocking.xread({self.prefix + "events": f"{sequence}-0"}, count=EVENT_BATCH, block=block)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            if self._closed.is_set():  # close() cut the connection under a waiting watcher
                return []
            raise
        events = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                events.append(JobEvent(
                    sequence=int(entry_id.partition("-")[0]), job_id=fields["job_id"], type=EventType(fields["type"]),
                    state=JobState(fields["state"]), time=float(fields["time"]), message=fields.get("message", ""),
                ))
        return events

    @guarded
    def last_sequence(self) -> int:
        return int(cast(str | None, self._r.get(self.prefix + "event_seq")) or 0)

    def healthy(self) -> bool:
        try:
            return bool(self._probe.ping())
        except (redis.RedisError, OSError):
            return False

    def close(self) -> None:
        self._closed.set()
        for client in (self._r, self._blocking, self._probe):
            client.connection_pool.disconnect()


def _ints(csv: str) -> npt.NDArray[np.int64]:
    return np.array([int(x) for x in csv.split(",")] if csv else [], dtype=np.int64)
