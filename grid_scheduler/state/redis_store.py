"""The shared ledger on Redis: restarts lose nothing, several scheduler replicas never double-book.

Same contract as ``MemoryStore`` (tests/test_store_contract.py runs against both). Every
commit is ONE Lua script: it re-checks every pool and site the job touches, then writes the
job record, its reservation, the counters, the request-id index and the event; a preemption
(evictions and the preemptor's placement) is one script too. Redis runs a
script to completion before any other command, so a crash or a racing replica can never see
(or leave) a half-written job.

Key layout (``{grid}`` is a Redis Cluster hash tag: every key of one grid lives in one slot,
so the multi-key scripts would also run on a cluster; scripts build key names from the
prefix ``gs:{grid}:``, which is legal there because they all hash to the same slot):

    gs:{grid}:pool:<pool_id>      hash  used (GPUs), drained (0|1), down (GPUs on failed or drained nodes),
                                        nv (bumped whenever the pool's node string changes)
    gs:{grid}:nodes:<pool_id>     string  2 x nodes bytes: byte i = GPUs reserved on node i (BITFIELD u8 #i),
                                        byte nodes + i = 1 when node i is out of service (set_nodes_out);
                                        missing or short reads as zeros, the grid file's drained nodes out
    gs:{grid}:site:<site_id>      hash  used_w (facility watts, integer)
    gs:{grid}:ledger_version      int   bumped by every change of usage or drains (Scheduler caches by it)
    gs:{grid}:job:<job_id>        hash  record (JobRecord JSON), version, state,
                                        res (reservation: JSON list of Assignment + integer watts)
    gs:{grid}:jobs                zset  every job id, score 0: ZRANGEBYLEX pages in id order
    gs:{grid}:state:<state>       zset  job ids in that state (pending, running, ...), score 0
    gs:{grid}:requests            hash  "<tenant>/<request_id>" -> job_id (idempotent submission, per tenant)
    gs:{grid}:tq:<tenant>         hash  pool_id -> GPUs the tenant holds there (quota usage, with the reservation)
    gs:{grid}:tenants             set   tenants that ever held GPUs (the snapshot reads their tq hashes)
    gs:{grid}:finished            zset  finished job ids, score = when: archive_finished forgets the oldest
    gs:{grid}:grid_sha256         string  hash of the grid file the first replica loaded; others must match
    gs:{grid}:event_seq           int   last event sequence
    gs:{grid}:events              stream  one entry per event; entry id is ``<sequence>-0``, so
                                        ``events_after(n)`` is ``XREAD ... <n>-0`` and a restarted
                                        watcher resumes from the sequence it last saw
    gs:{grid}:audit_seq           int   last audit sequence
    gs:{grid}:audit               stream  one entry per mutating call (``<sequence>-0`` -> record JSON)
    gs:{grid}:policy_version      int   the active policy version (the newest; 0 or absent = none)
    gs:{grid}:policy:<n>          hash  version n of the policy history: content (Policy JSON), sha256,
                                        by, at, reason, rollback_of (written once, never changed)
    gs:{grid}:lease:<name>        string  batch-cycle lease "<token>:<owner>" (state/lease.py)
    gs:{grid}:lease:<name>:fence  int     its fencing token counter
    gs:{grid}:agent...            site agents: see state/agents_redis.py

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
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import redis
from pydantic_core import to_json
from redis.commands.core import Script

from grid_scheduler.engine.priority import queue_key
from grid_scheduler.engine.quota import QuotaRules
from grid_scheduler.model import (
    Assignment,
    AuditRecord,
    EventType,
    JobEvent,
    JobRecord,
    JobState,
    Policy,
    PolicyVersion,
)
from grid_scheduler.state.agents_redis import RedisAgents
from grid_scheduler.state.lease import Lease, LeaseLost
from grid_scheduler.state.redis_conn import SOCKET_TIMEOUT_S, ScriptLane, guarded, redact, redis_client
from grid_scheduler.state.redis_group import GroupCommit, GroupStats
from grid_scheduler.state.store import (
    CapacityConflict,
    Committed,
    LedgerMoved,
    LedgerSnapshot,
    Limits,
    PolicyMoved,
    Probe,
    QuotaConflict,
    StalePolicy,
    StaleRecord,
    Transition,
    UnknownJob,
    Update,
    Versions,
    request_key,
    to_watts,
)

MAX_EVENTS = 100_000  # the stream is trimmed (approximately) to this many entries, like MemoryStore
EVENT_BATCH = 1_000  # events per read; a watcher far behind catches up in several reads
HEALTH_TIMEOUT_S = 0.25  # healthy() is polled every half second: it must answer well within that
KNOWN_JOBS = 4_096  # records kept for known_job: a window of recent jobs, not a copy of the ledger
MAX_BLOCK_S = 5.0  # longest XREAD BLOCK; the blocking connection's socket timeout is set above it

Arg = str | int | float  # what a script argument may be

# --- Lua --------------------------------------------------------------------------
# One commit script for every change of jobs: a create, a transition, or both at once with the
# evictions that make room for a preemptor (all or nothing). ARGV = prefix, meta (JSON), then
# for each op a record (JSON) and a reservation (JSON or ''). Everything small travels in the
# one meta argument: per-argument encoding is a large part of a commit's client-side cost.
# meta: rk (tenant-scoped request key of the created job, '' = none), cid (its id), fk/ft (fence
# key and token, '' = unfenced), max (events kept), now (time, for the finished index), ops:
# [{id, v (new version), exp (expected version; -1 = create), st (state), fin (1 if final), ev
# (event type), t (time), msg, rel (release what the job holds first), pools [[pool_id, gpus,
# limit]...], sites [[site_id, watts, limit]...]}] (pools and sites aggregated per op); elv (the
# ledger version expected, -1 = any), els (or up to this many past it) and sa (with elv: the ARGV
# index where the snapshot's arguments start, after the ops: pools, sites, node versions held).
# Prefixed with _LUA_SNAPSHOT_FN below: a refusal for a moved ledger brings the snapshot along.
_LUA_COMMIT_BODY = r"""
local P = ARGV[1]
local m = cjson.decode(ARGV[2])

if m.rk ~= '' then
  local existing = redis.call('HGET', P .. 'requests', m.rk)
  if existing then return {'dup', redis.call('HGET', P .. 'job:' .. existing, 'record')} end
end
-- A decision made under a policy version that is no longer active (another replica applied one
-- since) is refused: decided again under the new policy, it cannot overshoot the new quotas.
if m.apv >= 0 then
  local active = tonumber(redis.call('GET', P .. 'policy_version') or '0')
  if active ~= m.apv then
    return {'policy', 'decided under policy v' .. m.apv .. '; v' .. active .. ' is active'}
  end
end
-- A fenced commit (batch results) goes through only while its lease token is current.
if m.fk ~= '' then
  local holder = redis.call('GET', m.fk)
  if not holder or string.match(holder, '^(%d+):') ~= m.ft then
    return {'fenced', 'lease ' .. m.fk .. ' is no longer held with token ' .. m.ft}
  end
end
-- Decided on a view the caller did not re-read: refused if anything moved the ledger since, with
-- what the caller needs to decide again (versions and snapshot), so that costs no further read.
-- With am (accept moved), not refused for that alone: re-checked below like any commit, and the
-- reply brings the snapshot as the commit left it.
local lv_read = nil  -- the ledger version as read here, reused below: one GET, not two
local moved = false
if m.elv >= 0 then
  local lv = redis.call('GET', P .. 'ledger_version') or '0'
  lv_read = lv
  if tonumber(lv) < m.elv or tonumber(lv) > m.elv + m.els then
    if m.am ~= 1 then
      return {'moved', lv, redis.call('GET', P .. 'policy_version') or '0',
              snapshot(P, ARGV[m.sa], ARGV[m.sa + 1], ARGV[m.sa + 2])}
    end
    moved = true
  end
end
-- A refusal: with a moved ledger accepted, it brings the snapshot as 'moved' does, so the caller
-- decides again on it without another read.
local function refused(kind, msg)
  if moved then
    return {'moved', lv_read, redis.call('GET', P .. 'policy_version') or '0',
            snapshot(P, ARGV[m.sa], ARGV[m.sa + 1], ARGV[m.sa + 2])}
  end
  return {kind, msg}
end

-- Every job where the caller saw it, before anything is written.
local cur = {}
for i, op in ipairs(m.ops) do
  local jkey = P .. 'job:' .. op.id
  if op.exp < 0 then
    if redis.call('EXISTS', jkey) == 1 then return {'stale', 'job ' .. op.id .. ' exists'} end
    cur[i] = {}
  else
    local c = redis.call('HMGET', jkey, 'version', 'state', 'res')
    if not c[1] then return {'unknown', op.id} end
    if tonumber(c[1]) ~= op.exp then
      -- With the job as it is now: the caller decides again on it without another read.
      return {'stale', 'job ' .. op.id .. ' is at version ' .. c[1] .. ', not ' .. op.exp,
              redis.call('HGET', jkey, 'record')}
    end
    cur[i] = c
  end
end

-- The net change per pool and site: everything released first, then everything reserved.
-- tenant_delta: the same per tenant and pool (quota usage, hash tq:<tenant>).
local pool_delta, site_delta, pool_limit, site_limit, pool_taken, tenant_delta = {}, {}, {}, {}, {}, {}
-- Per pool and node: the net change and what is newly taken; node_meta: pool -> {nodes, gpus per node}.
local node_delta, node_taken, node_meta = {}, {}, {}
local function nadd(tbl, pool, i, g)
  local t = tbl[pool]
  if not t then t = {}; tbl[pool] = t end
  t[i] = (t[i] or 0) + g
end
-- BITFIELD in chunks: one call with thousands of sub-commands would overflow Lua's C stack in unpack.
local function bitfield(key, head, words)
  local out = {}
  for s = 1, #words, 600 do
    local part = {}
    for _, w in ipairs(head) do part[#part + 1] = w end
    for k = s, math.min(s + 599, #words) do part[#part + 1] = words[k] end
    for _, v in ipairs(redis.call('BITFIELD', key, unpack(part))) do out[#out + 1] = v end
  end
  return out
end
local released = {}  -- tenant, reservation JSON, ...: returned, so the caller follows its own commit
local function tadd(tn, pool, n)
  local t = tenant_delta[tn]
  if not t then t = {}; tenant_delta[tn] = t end
  t[pool] = (t[pool] or 0) + n
end
for i, op in ipairs(m.ops) do
  if op.rel and cur[i][3] then
    released[#released + 1] = op.tn
    released[#released + 1] = cur[i][3]
    for _, a in ipairs(cjson.decode(cur[i][3])) do
      pool_delta[a.pool_id] = (pool_delta[a.pool_id] or 0) - a.gpus
      site_delta[a.site_id] = (site_delta[a.site_id] or 0) - a.watts
      tadd(op.tn, a.pool_id, -a.gpus)
      if m.nt == 1 and a.nodes then
        for _, ng in ipairs(a.nodes) do nadd(node_delta, a.pool_id, ng[1], -ng[2]) end
      end
    end
  end
  for _, pn in ipairs(op.nodes) do
    node_meta[pn[1]] = {pn[2], pn[3]}
    local flat = pn[4]
    for j = 1, #flat, 2 do
      nadd(node_delta, pn[1], flat[j], flat[j + 1])
      nadd(node_taken, pn[1], flat[j], flat[j + 1])
    end
  end
  for _, p in ipairs(op.pools) do
    tadd(op.tn, p[1], p[2])
    pool_delta[p[1]] = (pool_delta[p[1]] or 0) + p[2]
    pool_taken[p[1]] = (pool_taken[p[1]] or 0) + p[2]
    pool_limit[p[1]] = p[3]
  end
  for _, s in ipairs(op.sites) do
    site_delta[s[1]] = (site_delta[s[1]] or 0) + s[2]
    site_limit[s[1]] = s[3]
  end
end
for id, taken in pairs(pool_taken) do
  local v = redis.call('HMGET', P .. 'pool:' .. id, 'used', 'drained', 'down')
  if v[2] == '1' then return refused('conflict', 'pool ' .. id .. ' is drained') end
  -- Node health: GPUs on failed or drained nodes (set_pool_down) are not the pool's to hand out.
  local down = tonumber(v[3]) or 0
  if (tonumber(v[1]) or 0) + pool_delta[id] > pool_limit[id] - down then
    return refused('conflict', string.format('pool %s: %d GPUs do not fit', id, taken))
  end
end
for id, limit in pairs(site_limit) do
  local used = tonumber(redis.call('HGET', P .. 'site:' .. id, 'used_w')) or 0
  if used + site_delta[id] > limit then
    return refused('conflict', string.format('site %s: %.1f kW do not fit', id, site_delta[id] / 1000))
  end
end
-- Nodes: none out of service takes GPUs, none holds more than it has (after the releases).
for pool, taken in pairs(node_taken) do
  local n, per_node = node_meta[pool][1], node_meta[pool][2]
  local idx, words = {}, {}
  for i, _ in pairs(taken) do
    idx[#idx + 1] = i
    for _, w in ipairs({'GET', 'u8', '#' .. i, 'GET', 'u8', '#' .. (n + i)}) do words[#words + 1] = w end
  end
  local v = bitfield(P .. 'nodes:' .. pool, {}, words)
  for k, i in ipairs(idx) do
    if v[2 * k] ~= 0 then return refused('conflict', string.format('pool %s: node %d is out of service', pool, i)) end
    if v[2 * k - 1] + node_delta[pool][i] > per_node then
      return refused('conflict', string.format('pool %s: node %d cannot take %d more GPUs', pool, i, taken[i]))
    end
  end
end

-- Quotas (engine/quota.py QuotaRules.violation, the same rule): for each tenant growing in a
-- limited group, its cap holds and its cohort does not borrow more than it lends (or than before).
local function group_used(tn, pools, with_delta)
  local used = 0
  local vals = redis.call('HMGET', P .. 'tq:' .. tn, unpack(pools))
  local d = tenant_delta[tn] or {}
  for j, pool in ipairs(pools) do
    used = used + (tonumber(vals[j]) or 0)
    if with_delta then used = used + (d[pool] or 0) end
  end
  return used
end
for _, q in ipairs(m.q or {}) do
  local after = group_used(q.t, q.pools, true)
  if after > group_used(q.t, q.pools, false) then
    if after > q.cap then
      return refused('quota', string.format('quota %s: tenant %s would hold %d > %d GPUs', q.g, q.t, after, q.cap))
    end
    local shared_before, shared_after = 0, 0
    for _, mem in ipairs(q.members) do
      shared_before = shared_before + math.max(0, group_used(mem[1], q.pools, false) - mem[2])
      shared_after = shared_after + math.max(0, group_used(mem[1], q.pools, true) - mem[2])
    end
    if shared_after > math.max(q.lend, shared_before) then
      return refused('quota', string.format('quota %s: cohort would borrow %d > %d GPUs it lends',
                                            q.g, shared_after, q.lend))
    end
  end
end

-- Write: counters, then each job, its indexes and its event, in the order given.
local changed = false
for tn, d in pairs(tenant_delta) do
  for pool, n in pairs(d) do
    if n ~= 0 then
      redis.call('SADD', P .. 'tenants', tn)
      redis.call('HINCRBY', P .. 'tq:' .. tn, pool, n)
      changed = true  -- quota usage is in the snapshot too: a replica caching it must see the move
    end
  end
end
for id, d in pairs(pool_delta) do
  if d ~= 0 then redis.call('HINCRBY', P .. 'pool:' .. id, 'used', d); changed = true end
end
for id, d in pairs(site_delta) do
  if d ~= 0 then redis.call('HINCRBY', P .. 'site:' .. id, 'used_w', d); changed = true end
end
for pool, t in pairs(node_delta) do
  local words = {}
  for i, d in pairs(t) do
    if d ~= 0 then
      for _, w in ipairs({'INCRBY', 'u8', '#' .. i, d}) do words[#words + 1] = w end
    end
  end
  -- SAT: a count never wraps below 0 or above 255 (the checks above keep it within the node anyway).
  if #words > 0 then
    bitfield(P .. 'nodes:' .. pool, {'OVERFLOW', 'SAT'}, words)
    redis.call('HINCRBY', P .. 'pool:' .. pool, 'nv', 1)
    changed = true
  end
end
local lv_before = tonumber(lv_read or redis.call('GET', P .. 'ledger_version') or '0')
local lv_after = lv_before
if changed then lv_after = redis.call('INCR', P .. 'ledger_version') end
for i, op in ipairs(m.ops) do
  local jkey = P .. 'job:' .. op.id
  local res = ARGV[2 + 2 * i]
  -- Every field of the job in one HSET (record, version, state, and the reservation and request key
  -- when there are): each redis.call costs the script time, and AOF a command.
  local fields = {'record', ARGV[1 + 2 * i], 'version', op.v, 'state', op.st}
  if res ~= '' then
    fields[#fields + 1] = 'res'
    fields[#fields + 1] = res
  end
  local created_rk = op.exp < 0 and op.id == m.cid and m.rk ~= ''
  if created_rk then
    fields[#fields + 1] = 'rk'
    fields[#fields + 1] = m.rk
  end
  redis.call('HSET', jkey, unpack(fields))
  if res == '' and op.rel then redis.call('HDEL', jkey, 'res') end
  if op.exp < 0 then
    redis.call('ZADD', P .. 'jobs', 0, op.id)
    redis.call('ZADD', P .. 'state:' .. op.st, 0, op.id)
    if created_rk then redis.call('HSET', P .. 'requests', m.rk, op.id) end
  elseif cur[i][2] ~= op.st then
    redis.call('ZREM', P .. 'state:' .. cur[i][2], op.id)
    redis.call('ZADD', P .. 'state:' .. op.st, 0, op.id)
  end
  if op.fin == 1 then redis.call('ZADD', P .. 'finished', op.t, op.id) end
  local seq = redis.call('INCR', P .. 'event_seq')
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', m.max, seq .. '-0',
             'job_id', op.id, 'type', op.ev, 'state', op.st, 'time', op.t, 'message', op.msg,
             'tenant', op.tn, 'pv', op.pv)
end
-- How many wait now, when the caller asked (wq: it released): with nothing waiting it skips the queue
-- pass without another read.
return {'ok', lv_before, lv_after, released, m.wq == 1 and redis.call('ZCARD', P .. 'state:pending') or -1,
        moved and snapshot(P, ARGV[m.sa], ARGV[m.sa + 1], ARGV[m.sa + 2]) or ''}
"""

# ARGV: prefix, finished before (time), limit. Forgets finished jobs and their request ids.
_LUA_ARCHIVE = r"""
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local jkey = P .. 'job:' .. id
  local v = redis.call('HMGET', jkey, 'state', 'rk')
  if v[1] then
    redis.call('ZREM', P .. 'state:' .. v[1], id)
    if v[2] then redis.call('HDEL', P .. 'requests', v[2]) end
  end
  redis.call('DEL', jkey)
  redis.call('ZREM', P .. 'jobs', id)
  redis.call('ZREM', P .. 'finished', id)
end
return #ids
"""

# ARGV: prefix, grid hash. The first replica records its grid; any other must match it.
_LUA_GRID = r"""
local P = ARGV[1]
local current = redis.call('GET', P .. 'grid_sha256')
if not current then
  redis.call('SET', P .. 'grid_sha256', ARGV[2])
  return ARGV[2]
end
return current
"""

# One consistent read of every counter; comma-joined so a grid of thousands of pools is a few strings
# to parse, not thousands of replies. The snapshot's body, shared by the snapshot script, the
# submission probe and the commit's refusal: ``pools`` and ``sites`` are the grid's pool and site ids,
# comma-joined (ids never hold a comma: model.grid.Id), each ONE argument, so a commit that carries
# them in case of a refusal pays for three arguments, not one per pool; ``known`` the pools' node
# versions the caller holds ("nv1,nv2,..."): a pool's node string is sent only when its version
# moved ('' else).
_LUA_SNAPSHOT_FN = r"""
local function split(csv)
  local out = {}
  for v in string.gmatch(csv, '[^,]+') do out[#out + 1] = v end
  return out
end
local function snapshot(P, pools_csv, sites_csv, known)
  local pools, sites, held = split(pools_csv), split(sites_csv), split(known)
  local n = #pools
  local used, drained, watts, down, nv = {}, {}, {}, {}, {}
  for i = 1, n do
    local v = redis.call('HMGET', P .. 'pool:' .. pools[i], 'used', 'drained', 'down', 'nv')
    used[i] = v[1] or '0'
    drained[i] = v[2] or '0'
    down[i] = v[3] or '0'
    nv[i] = v[4] or '0'
  end
  for i, site in ipairs(sites) do
    watts[i] = redis.call('HGET', P .. 'site:' .. site, 'used_w') or '0'
  end
  local tq = {}
  for _, tn in ipairs(redis.call('SMEMBERS', P .. 'tenants')) do
    tq[#tq + 1] = tn
    tq[#tq + 1] = redis.call('HGETALL', P .. 'tq:' .. tn)
  end
  -- One string per pool (state/redis_store.py key layout): '' where the caller holds this version
  -- already, or the store tracks no nodes.
  local nodes = {}
  for i = 1, n do
    if nv[i] == held[i] then nodes[i] = '' else nodes[i] = redis.call('GET', P .. 'nodes:' .. pools[i]) or '' end
  end
  return {redis.call('GET', P .. 'ledger_version') or '0',
          table.concat(used, ','), table.concat(drained, ','), table.concat(watts, ','), table.concat(down, ','), tq,
          table.concat(nv, ','), nodes}
end
"""

_LUA_COMMIT = _LUA_SNAPSHOT_FN + _LUA_COMMIT_BODY

# Several commits in one call (state/redis_group.py): the commit script's body as a function of its
# own ARGV, run for each in the order given; each checks, refuses (writing nothing) or writes as if
# sent alone after the ones before it. ARGV: prefix, n, then per commit its argument count c and the
# c arguments the commit script takes after the prefix. Returns each commit's reply, in order.
_LUA_GROUP = _LUA_SNAPSHOT_FN + "local function commit_one(ARGV)\n" + _LUA_COMMIT_BODY + r"""
end
local P = ARGV[1]
local out, at = {}, 3
for g = 1, tonumber(ARGV[2]) do
  local c = tonumber(ARGV[at])
  local one = {P}
  for k = 1, c do one[k + 1] = ARGV[at + k] end
  at = at + c + 1
  out[g] = commit_one(one)
end
return out
"""

_LUA_SNAPSHOT = _LUA_SNAPSHOT_FN + r"""
return snapshot(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""

# A submission's one read before it decides (Store.probe). ARGV: prefix, pools, sites, the node versions
# held (the snapshot's arguments), the ledger version the caller holds and the tenant-scoped request key
# ('' = none). Returns
# {'dup', record} | {'same', ledger, policy} | {'snap', ledger, policy, <snapshot>}.
_LUA_PROBE = _LUA_SNAPSHOT_FN + r"""
local P = ARGV[1]
local known, rk = ARGV[5], ARGV[6]
if rk ~= '' then
  local id = redis.call('HGET', P .. 'requests', rk)
  if id then return {'dup', redis.call('HGET', P .. 'job:' .. id, 'record')} end
end
local ledger = redis.call('GET', P .. 'ledger_version') or '0'
local policy = redis.call('GET', P .. 'policy_version') or '0'
if ledger == known then return {'same', ledger, policy} end
return {'snap', ledger, policy, snapshot(P, ARGV[2], ARGV[3], ARGV[4])}
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

# ARGV: prefix, pool id, GPUs down (node health)
_LUA_POOL_DOWN = r"""
local P = ARGV[1]
local key = P .. 'pool:' .. ARGV[2]
if (redis.call('HGET', key, 'down') or '0') == ARGV[3] then return 0 end
redis.call('HSET', key, 'down', ARGV[3])
redis.call('INCR', P .. 'ledger_version')
return 1
"""

# ARGV: prefix, pool id, nodes n, out flags (n bytes, 1 = out), the flags a missing key stands for
# (the grid file's drains). Replaces the pool's out set.
_LUA_NODES_OUT = r"""
local P = ARGV[1]
local key = P .. 'nodes:' .. ARGV[2]
local n = tonumber(ARGV[3])
local current = redis.call('GETRANGE', key, n, 2 * n - 1)
if current == '' then current = ARGV[5] end
if current == ARGV[4] then return 0 end
redis.call('SETRANGE', key, n, ARGV[4])
redis.call('HINCRBY', P .. 'pool:' .. ARGV[2], 'nv', 1)
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
# ARGV: prefix, max entries kept, record JSON... Numbers the records and appends them in one step;
# returns the first sequence.
_LUA_AUDIT = r"""
local P = ARGV[1]
local first = redis.call('INCRBY', P .. 'audit_seq', #ARGV - 2) - (#ARGV - 2) + 1
for i = 3, #ARGV do
  redis.call('XADD', P .. 'audit', 'MAXLEN', '~', tonumber(ARGV[2]), (first + i - 3) .. '-0', 'r', ARGV[i])
end
return first
"""

# ARGV: prefix, expected active version, content, sha256, by, at, reason, rollback_of.
# Compare-and-set: the check and both writes are one script, so two replicas applying at once
# cannot both become version n + 1.
_LUA_APPLY_POLICY = r"""
local P = ARGV[1]
local current = tonumber(redis.call('GET', P .. 'policy_version') or '0')
if current ~= tonumber(ARGV[2]) then return {'stale', tostring(current)} end
local n = current + 1
redis.call('HSET', P .. 'policy:' .. n, 'content', ARGV[3], 'sha256', ARGV[4], 'by', ARGV[5], 'at', ARGV[6],
           'reason', ARGV[7], 'rollback_of', ARGV[8])
redis.call('SET', P .. 'policy_version', n)
return {'ok', tostring(n)}
"""

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

# ARGV: prefix, state
_LUA_IN_STATE = r"""
local P = ARGV[1]
local out = {}
for i, id in ipairs(redis.call('ZRANGE', P .. 'state:' .. ARGV[2], 0, -1)) do
  out[i] = redis.call('HGET', P .. 'job:' .. id, 'record')
end
return out
"""


class RedisStore(RedisAgents):
    def __init__(self, limits: Limits, url: str, grid_name: str) -> None:
        if not grid_name or "{" in grid_name or "}" in grid_name:
            raise ValueError(f"grid name {grid_name!r} cannot be a Redis hash tag")
        self._limits = limits
        self._url = url  # holds the password: never in a message or a log line, only ``safe_url``
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
        # The snapshot's node strings are raw bytes (a used count may be any byte): read undecoded.
        self._raw = redis_client(url, decode=False)
        # The scripts' calls, on connections of the same pools (redis_conn.ScriptLane).
        self._lane, self._lane_raw = ScriptLane(self._r), ScriptLane(self._raw)
        self._commit = self._script(_LUA_COMMIT)
        self._group = self._script(_LUA_GROUP)
        # Commits of this process's threads at once share one call (state/redis_group.py); read raw,
        # as a refusal's snapshot holds node bytes.
        self._commits: GroupCommit[list[Arg | bytes], Any] = GroupCommit(self._commit_one, self._commit_many)
        self._archive = self._script(_LUA_ARCHIVE)
        self._grid = self._script(_LUA_GRID)
        self._snapshot = self._script(_LUA_SNAPSHOT)
        self._probe_script = self._script(_LUA_PROBE)
        self._drain = self._script(_LUA_DRAIN)
        self._pool_down = self._script(_LUA_POOL_DOWN)
        self._nodes_out = self._script(_LUA_NODES_OUT)
        self._by_request = self._script(_LUA_BY_REQUEST)
        self._list = self._script(_LUA_LIST)
        self._audit = self._script(_LUA_AUDIT)
        self._in_state = self._script(_LUA_IN_STATE)
        self._apply_policy = self._script(_LUA_APPLY_POLICY)
        self._version_keys = (self.prefix + "ledger_version", self.prefix + "policy_version")
        self._snapshot_args: list[Arg] = [self.prefix, ",".join(limits.pool_ids), ",".join(limits.site_ids)]
        self._fence: tuple[str, int] | None = None
        # The node strings of the last snapshot, by pool node version: the next read fetches only
        # the pools whose nodes changed since (a factory grid's strings are 100+ KiB in all).
        self._node_cache = _NodeCache(("-1",) * len(limits.pool_ids), (), ())
        # Records this replica committed or read last (``known_job``): ending one of its own jobs
        # commits against the version it holds, without reading the record first.
        self._known: dict[str, JobRecord] = {}
        self._known_lock = threading.Lock()
        self._closed = threading.Event()
        self._init_agents()  # site agents (state/agents_redis.py)

    def __repr__(self) -> str:
        return f"RedisStore({self.safe_url!r}, grid={self.grid_name!r})"

    def lease(self, name: str, ttl_s: float) -> Lease:
        """A lease on this store's Redis, in this grid's keyspace (so ``fenced`` may check it)."""
        return Lease(self._url, name, ttl_s, grid_name=self.grid_name)

    def _out_flags(self, pool: int, node_indices: Sequence[int]) -> bytes:
        assert self._limits.pool_nodes is not None
        out = np.zeros(int(self._limits.pool_nodes[pool]), dtype=np.uint8)
        out[list(node_indices)] = 1
        out[list(self._limits.grid_out_nodes(pool))] = 1
        return out.tobytes()

    def _script(self, lua: str) -> Script:
        return self._r.register_script(lua)

    def _run(self, script: Script, args: Sequence[Arg | bytes], client: redis.Redis | None = None) -> Any:
        # EVALSHA on the scripts' lean lane (redis_conn.ScriptLane): Script.__call__ and redis-py's
        # execute_command add per-call work on the hot path. After a Redis restart the script cache
        # is empty: load it and send once more.
        execute: Callable[..., Any] = (self._lane_raw if client is self._raw else self._lane).execute_command
        try:
            return execute("EVALSHA", script.sha, 1, self._route, *args)
        except redis.exceptions.NoScriptError:
            script.sha = self._r.script_load(script.script)
            return execute("EVALSHA", script.sha, 1, self._route, *args)

    def _commit_one(self, args: list[Arg | bytes]) -> Any:
        return self._run(self._commit, args, self._raw)

    def _commit_many(self, commits: Sequence[list[Arg | bytes]]) -> list[Any]:
        flat: list[Arg | bytes] = [self.prefix, len(commits)]
        for args in commits:
            flat.append(len(args) - 1)
            flat.extend(args[1:])  # each commit's own prefix is the group's
        return list(self._run(self._group, flat, self._raw))

    @property
    def group_stats(self) -> GroupStats:
        """Commit calls sent and the commits they carried (``state/redis_group.py``)."""
        return self._commits.stats

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
    def _op(self, job_id: str, transition: Transition, expected_version: int) -> dict[str, object]:
        # Aggregated per pool and per site: the same sums MemoryStore checks.
        record = transition.record
        gpus: dict[str, int] = defaultdict(int)
        watts: dict[str, int] = defaultdict(int)
        for a in transition.reserve:
            gpus[a.pool_id] += a.gpus
            watts[a.site_id] += to_watts(a.power_kw)
        limits = self._limits
        return {
            "id": job_id, "v": record.version, "exp": expected_version, "st": record.state.value,
            "fin": 1 if record.state.is_final else 0, "ev": transition.event.value,
            "t": repr(record.updated_at), "msg": transition.message, "tn": record.spec.tenant,
            "pv": record.policy_version,
            "rel": transition.release,
            "pools": [[p, n, int(limits.pool_gpus[limits.pool_index[p]])] for p, n in gpus.items()],
            "sites": [[s, w, int(limits.site_power_w[limits.site_index[s]])] for s, w in watts.items()],
            "nodes": self._op_nodes(transition.reserve),
        }

    def _op_nodes(self, reserve: Sequence[Assignment]) -> list[list[object]]:
        """[[pool id, nodes, GPUs per node, [node, GPUs, node, GPUs, ...]], ...]: what the op takes per node."""
        limits = self._limits
        if not limits.tracks_nodes:
            return []
        assert limits.pool_nodes is not None and limits.pool_gpus_per_node is not None
        per_pool: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for a in reserve:
            limits.check_nodes(a)
            for node, gpus in a.nodes:
                per_pool[a.pool_id][node] += gpus
        out: list[list[object]] = []
        for pool_id, nodes in per_pool.items():
            p = limits.pool_index[pool_id]
            # The grid file's drained nodes are out from the start, before any key exists (the key is
            # written by set_nodes_out; a missing one reads as zeros): refused here, without a round trip.
            drained = limits.grid_out_nodes(p)
            if any(node in drained for node in nodes):
                raise CapacityConflict(f"pool {pool_id}: nodes {drained.start}.. are drained in the grid file")
            flat = [x for node in sorted(nodes) for x in (node, nodes[node])]
            out.append([pool_id, int(limits.pool_nodes[p]), int(limits.pool_gpus_per_node[p]), flat])
        return out

    def _quota_checks(self, quota: QuotaRules | None, moves: Sequence[Transition]) -> list[dict[str, object]]:
        """The limits the script re-checks: one per (tenant, limited group) this commit reserves in."""
        if quota is None or quota.empty:
            return []
        groups: dict[str, set[int]] = defaultdict(set)
        for t in moves:
            for a in t.reserve:
                g = int(quota.pool_group[self._limits.pool_index[a.pool_id]])
                if g >= 0:
                    groups[t.record.spec.tenant].add(g)
        return [c for tenant, gs in sorted(groups.items()) for c in quota.checks_for(tenant, gs, self._limits.pool_ids)]

    @staticmethod
    def _res_json(assignments: Sequence[Assignment]) -> bytes:
        # The watts are stored with the assignment so release gives back exactly the integer reserve took.
        if not assignments:
            return b""
        return to_json([{**a.model_dump(), "watts": to_watts(a.power_kw)} for a in assignments])

    def _check(self, reply: Any) -> Any:
        status = reply[0]
        if status in ("ok", "dup"):
            return reply
        message = reply[1] if len(reply) > 1 else ""
        if status == "conflict":
            raise CapacityConflict(message)
        if status == "quota":
            raise QuotaConflict(message)
        if status == "policy":
            raise PolicyMoved(message)
        if status == "stale":
            raise StaleRecord(message, JobRecord.model_validate_json(reply[2]) if len(reply) > 2 and reply[2] else None)
        if status == "unknown":
            raise UnknownJob(message)
        if status == "fenced":
            raise LeaseLost(message)
        raise RuntimeError(f"unexpected reply from the ledger script: {reply!r}")

    def commit(
        self, updates: Sequence[Update], create: Transition | None = None, quota: QuotaRules | None = None,
        policy_version: int | None = None,
    ) -> tuple[JobRecord | None, bool]:
        done = self.commit_delta(updates, create, quota, policy_version)
        return done.record, done.created

    @guarded
    def commit_delta(
        self, updates: Sequence[Update], create: Transition | None = None, quota: QuotaRules | None = None,
        policy_version: int | None = None, expect_ledger: int | None = None, expect_slack: int = 0,
        accept_moved: bool = False,
    ) -> Committed:
        steps = [(u.job_id, u.transition, u.expected_version) for u in updates]
        rk = cid = ""
        if create is not None:
            steps.append((create.record.id, create, -1))
            cid = create.record.id
            if create.record.request_id:
                rk = request_key(create.record.spec.tenant, create.record.request_id)
        fence_key, fence_token = self._fence if self._fence else ("", 0)
        # pydantic_core's encoder: 8 µs for a submission's meta where json.dumps took 28 (measured:
        # benchmarks/README.md, "Store throughput"); already a dependency, and its output is compact UTF-8.
        meta = to_json({
            "rk": rk, "cid": cid, "fk": fence_key, "ft": str(fence_token), "max": MAX_EVENTS,
            "ops": [self._op(job_id, t, exp) for job_id, t, exp in steps],
            "q": self._quota_checks(quota, [t for _, t, _ in steps]),
            "apv": -1 if policy_version is None else policy_version,
            "nt": 1 if self._limits.tracks_nodes else 0,
            "elv": -1 if expect_ledger is None else expect_ledger, "els": expect_slack, "sa": 3 + 2 * len(steps),
            "wq": 1 if any(t.release for _, t, _ in steps) else 0, "am": 1 if accept_moved else 0,
        })
        args: list[Arg | bytes] = [self.prefix, meta]
        snapshot: LedgerSnapshot | None = None
        for _, transition, _ in steps:
            args.extend((transition.record.model_dump_json(), self._res_json(transition.reserve)))
        held = self._node_cache
        if expect_ledger is not None:
            args.extend((*self._snapshot_args[1:], held.known))
        # The snapshot a refusal brings holds raw node bytes: the reply is read undecoded.
        raw = self._commits(args)
        if raw[0] == b"moved":
            raise LedgerMoved(Versions(int(raw[1]), int(raw[2])), self._parse_snapshot(raw[3], held))
        if raw[0] == b"ok" and raw[5]:
            snapshot = self._parse_snapshot(raw[5], held)
        reply = self._check(_decoded(raw[:5] if raw[0] == b"ok" else raw))
        if reply[0] == "dup":
            return Committed(JobRecord.model_validate_json(reply[1]), False, -1, -1)
        _, before, after, flat, waiting = reply[:5]
        gave_back = tuple((tenant, Assignment.model_validate(a))
                          for tenant, res in zip(flat[::2], flat[1::2], strict=True) for a in json.loads(res))
        for _, transition, _ in steps:
            self._remember(transition.record)
        return Committed(create.record if create is not None else None, True, int(before), int(after), gave_back,
                         int(waiting), snapshot)

    def create_job(self, transition: Transition) -> tuple[JobRecord, bool]:
        record, created = self.commit((), transition)
        assert record is not None
        return record, created

    def apply(
        self, job_id: str, expected_version: int, transition: Transition, quota: QuotaRules | None = None,
        policy_version: int | None = None,
    ) -> JobRecord:
        self.commit((Update(job_id, expected_version, transition),), quota=quota, policy_version=policy_version)
        return transition.record

    @guarded
    def archive_finished(self, finished_before_s: float, limit: int = 10_000) -> int:
        return int(self._run(self._archive, [self.prefix, repr(finished_before_s), limit]))

    @guarded
    def claim_grid(self, grid_sha256: str) -> str:
        """Record this replica's grid hash if none is recorded; returns the recorded one."""
        return str(self._run(self._grid, [self.prefix, grid_sha256]))

    @guarded
    def replace_grid(self, grid_sha256: str) -> None:
        """Record a new grid hash (rolling a changed grid file: see the README)."""
        self._r.set(self.prefix + "grid_sha256", grid_sha256)

    # --- reads -----------------------------------------------------------------
    @guarded
    def get_job(self, job_id: str) -> JobRecord | None:
        raw = self._r.hget(self.prefix + "job:" + job_id, "record")
        if raw is None:
            return None
        record = JobRecord.model_validate_json(cast(str, raw))
        self._remember(record)
        return record

    def known_job(self, job_id: str) -> JobRecord | None:
        known = self._known.get(job_id)
        return known if known is not None else self.get_job(job_id)

    def _remember(self, record: JobRecord) -> None:
        # Oldest out first: the jobs a replica ends soonest are mostly the ones it wrote last.
        with self._known_lock:
            self._known.pop(record.id, None)
            self._known[record.id] = record
            if len(self._known) > KNOWN_JOBS:
                del self._known[next(iter(self._known))]

    @guarded
    def job_by_request(self, tenant: str, request_id: str) -> JobRecord | None:
        raw = self._run(self._by_request, [self.prefix, request_key(tenant, request_id)])
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
        return sorted(self._in(JobState.PENDING), key=queue_key)

    @guarded
    def running_jobs(self) -> list[JobRecord]:
        return sorted(self._in(JobState.RUNNING), key=lambda r: r.id)

    def _in(self, state: JobState) -> list[JobRecord]:
        raws = self._run(self._in_state, [self.prefix, state.value])
        return [JobRecord.model_validate_json(raw) for raw in raws if raw]

    @guarded
    def reservation(self, job_id: str) -> list[Assignment]:
        raw = self._r.hget(self.prefix + "job:" + job_id, "res")
        if not raw:
            return []
        return [Assignment.model_validate(a) for a in json.loads(cast(str, raw))]

    @guarded
    def snapshot(self) -> LedgerSnapshot:
        held = self._node_cache
        return self._parse_snapshot(self._run(self._snapshot, [*self._snapshot_args, held.known], self._raw), held)

    @guarded
    def probe(self, tenant: str, request_id: str, known_ledger: int) -> Probe:
        rk = request_key(tenant, request_id) if request_id else ""
        held = self._node_cache
        reply = self._run(self._probe_script, [*self._snapshot_args, held.known, str(known_ledger), rk], self._raw)
        status = _text(reply[0])
        if status == "dup":
            existing = JobRecord.model_validate_json(reply[1])
            return Probe(existing, Versions(known_ledger, 0), None)
        versions = Versions(int(reply[1]), int(reply[2]))
        return Probe(None, versions, self._parse_snapshot(reply[3], held) if status == "snap" else None)

    def _parse_snapshot(self, reply: Any, held: _NodeCache) -> LedgerSnapshot:
        # Read on the undecoded connection (the node strings are bytes): text fields decoded here.
        version, used, drained, watts, down, tq, node_versions, nodes = reply
        tenants: dict[str, npt.NDArray[np.int64]] = {}
        for tenant, flat in zip(tq[::2], tq[1::2], strict=True):
            row = np.zeros(len(self._limits.pool_ids), dtype=np.int64)
            for pool_id, gpus in zip(flat[::2], flat[1::2], strict=True):
                p = self._limits.pool_index.get(_text(pool_id))
                if p is not None:
                    row[p] = int(gpus)
            if row.any():
                tenants[_text(tenant)] = row
        node_used, node_out = self._parse_nodes(_text(node_versions), nodes, held)
        return LedgerSnapshot(
            version=int(version),
            pool_used_gpus=_ints(_text(used)),
            site_used_w=_ints(_text(watts)),
            pool_drained=np.asarray(_ints(_text(drained)) != 0, dtype=np.bool_),
            tenant_pool_gpus=tenants,
            pool_down_gpus=_ints(_text(down)),
            node_used_gpus=node_used,
            node_out=node_out,
        )

    def _parse_nodes(
        self, node_versions: str, nodes: Sequence[bytes], held: _NodeCache
    ) -> tuple[tuple[npt.NDArray[np.int32], ...], tuple[npt.NDArray[np.bool_], ...]]:
        limits = self._limits
        if not limits.tracks_nodes:
            return (), ()
        assert limits.pool_nodes is not None
        versions = tuple(node_versions.split(","))
        used, out = [], []
        for pool, raw in enumerate(nodes):
            if versions[pool] == held.versions[pool]:  # unchanged since the read the cache holds
                used.append(held.used[pool].copy())
                out.append(held.out[pool].copy())
                continue
            n = int(limits.pool_nodes[pool])
            # A key shorter than 2 x nodes (created by a release before set_nodes_out, or never): zeros beyond.
            flags = np.zeros(2 * n, dtype=np.uint8)
            got = np.frombuffer(raw[: 2 * n], dtype=np.uint8)
            flags[: len(got)] = got
            flags[n + limits.grid_out_nodes(pool).start: 2 * n] = 1
            used.append(flags[:n].astype(np.int32))
            out.append(flags[n:] != 0)
        # Kept for the next read (one tuple, replaced whole: a racing reader sees an old or a new one,
        # each consistent); callers get copies.
        self._node_cache = _NodeCache(versions, tuple(u.copy() for u in used), tuple(o.copy() for o in out))
        return tuple(used), tuple(out)

    @guarded
    def ledger_version(self) -> int:
        return int(cast(str | None, self._r.get(self.prefix + "ledger_version")) or 0)

    @guarded
    def versions(self) -> Versions:
        # One MGET: the scheduler reads this before every decision, so the policy version rides along
        # with the ledger version it already needed (no extra round trip on the hot path).
        ledger, policy = cast(list[str | None], self._r.mget(self._version_keys))
        return Versions(int(ledger or 0), int(policy or 0))

    @guarded
    def set_drained(self, pool_id: str, drained: bool) -> bool:
        self._limits.pool_index[pool_id]  # KeyError for an unknown pool, as MemoryStore
        return bool(self._run(self._drain, [self.prefix, pool_id, 1 if drained else 0]))

    @guarded
    def set_pool_down(self, pool_id: str, down_gpus: int) -> bool:
        self._limits.pool_index[pool_id]  # KeyError for an unknown pool, as MemoryStore
        return bool(self._run(self._pool_down, [self.prefix, pool_id, int(down_gpus)]))

    @guarded
    def set_nodes_out(self, pool_id: str, node_indices: Sequence[int]) -> bool:
        pool = self._limits.pool_index[pool_id]  # KeyError for an unknown pool, as MemoryStore
        if not self._limits.tracks_nodes:
            return False
        assert self._limits.pool_nodes is not None
        n = int(self._limits.pool_nodes[pool])
        indices = sorted(set(node_indices))
        if indices and not 0 <= indices[0] <= indices[-1] < n:
            raise ValueError(f"{pool_id} has nodes 0..{n - 1}, not {indices[0]}..{indices[-1]}")
        return bool(self._run(self._nodes_out, [self.prefix, pool_id, n, self._out_flags(pool, indices),
                                                self._out_flags(pool, ())]))

    # --- policy history --------------------------------------------------------------
    @guarded
    def apply_policy(self, expected_version: int, entry: PolicyVersion) -> PolicyVersion:
        status, value = self._run(self._apply_policy, [
            self.prefix, expected_version, entry.policy.model_dump_json(), entry.sha256, entry.applied_by,
            repr(entry.applied_at), entry.reason, entry.rollback_of,
        ])
        if status == "stale":
            raise StalePolicy(expected_version, int(value))
        return entry.model_copy(update={"version": int(value)})

    @guarded
    def get_policy(self, version: int = 0) -> PolicyVersion | None:
        if version <= 0:
            version = int(cast(str | None, self._r.get(self.prefix + "policy_version")) or 0)
            if version == 0:
                return None
        return self._policy_entry(version, cast(dict[str, str], self._r.hgetall(self.prefix + f"policy:{version}")))

    @guarded
    def policy_history(self, before_version: int, limit: int) -> list[PolicyVersion]:
        active = int(cast(str | None, self._r.get(self.prefix + "policy_version")) or 0)
        top = active if before_version <= 0 else min(before_version - 1, active)
        wanted = list(range(top, max(top - max(limit, 0), 0), -1))
        pipe = self._r.pipeline(transaction=False)
        for n in wanted:
            pipe.hgetall(self.prefix + f"policy:{n}")
        entries = [self._policy_entry(n, fields) for n, fields in zip(wanted, pipe.execute(), strict=True)]
        return [e for e in entries if e is not None]

    @staticmethod
    def _policy_entry(version: int, fields: dict[str, str]) -> PolicyVersion | None:
        if not fields:
            return None
        return PolicyVersion(
            version=version, policy=Policy.model_validate_json(fields["content"]), sha256=fields["sha256"],
            applied_by=fields["by"], applied_at=float(fields["at"]), reason=fields["reason"],
            rollback_of=int(fields.get("rollback_of") or 0),
        )

    # --- events ----------------------------------------------------------------
    @guarded
    def events_after(self, sequence: int, timeout_s: float) -> list[JobEvent]:
        if self._closed.is_set():
            return []
        # XREAD's BLOCK 0 means "forever": no wait is no BLOCK at all.
        block = max(1, int(min(timeout_s, MAX_BLOCK_S) * 1000)) if timeout_s > 0 else None
        try:
            reply: Any = self._blocking.xread({self.prefix + "events": f"{sequence}-0"}, count=EVENT_BATCH, block=block)
        except (redis.ConnectionError, redis.TimeoutError, OSError, ValueError):
            # ValueError: redis-py reading a socket that close() has just shut ("I/O on closed file").
            if self._closed.is_set():  # close() cut the connection under a waiting watcher
                return []
            raise
        events = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                events.append(JobEvent(
                    sequence=int(entry_id.partition("-")[0]), job_id=fields["job_id"], type=EventType(fields["type"]),
                    state=JobState(fields["state"]), time=float(fields["time"]), message=fields.get("message", ""),
                    tenant=fields.get("tenant", ""), policy_version=int(fields.get("pv") or 0),
                ))
        return events

    @guarded
    def last_sequence(self) -> int:
        return int(cast(str | None, self._r.get(self.prefix + "event_seq")) or 0)

    @guarded
    def first_sequence(self) -> int:
        # One transaction, so an empty stream and the counter are read at the same instant: the
        # stream is trimmed with MAXLEN ~ (whole nodes), and may be empty or missing.
        pipe = self._r.pipeline(transaction=True)
        pipe.xrange(self.prefix + "events", "-", "+", count=1)
        pipe.get(self.prefix + "event_seq")
        first, last = pipe.execute()
        if first:
            return int(first[0][0].partition("-")[0])
        return int(last or 0) + 1

    # --- audit -------------------------------------------------------------------
    @guarded
    def append_audit(self, records: Sequence[AuditRecord]) -> list[AuditRecord]:
        if not records:
            return []
        payload = [r.model_dump_json(exclude={"sequence"}) for r in records]
        first = int(self._run(self._audit, [self.prefix, MAX_EVENTS, *payload]))
        return [r.model_copy(update={"sequence": first + i}) for i, r in enumerate(records)]

    @guarded
    def audit_after(self, sequence: int, limit: int) -> list[AuditRecord]:
        if limit <= 0:
            return []
        # Entries are "<seq>-0": starting at "<seq>-1" excludes <seq> ("(" would need Redis 6.2).
        entries: Any = self._r.xrange(self.prefix + "audit", f"{sequence}-1", "+", count=limit)
        return [
            AuditRecord.model_validate_json(fields["r"]).model_copy(
                update={"sequence": int(entry_id.partition("-")[0])})
            for entry_id, fields in entries
        ]

    def healthy(self) -> bool:
        try:
            return bool(self._probe.ping())
        except (redis.RedisError, OSError):
            return False

    def close(self) -> None:
        self._closed.set()
        for client in (self._r, self._blocking, self._probe, self._raw):
            client.connection_pool.disconnect()
        self._lane.close()
        self._lane_raw.close()


@dataclass(frozen=True)
class _NodeCache:
    versions: tuple[str, ...]  # per pool, the node version (``nv``) the arrays are at; "-1": none
    used: tuple[npt.NDArray[np.int32], ...]
    out: tuple[npt.NDArray[np.bool_], ...]

    @property
    def known(self) -> str:
        return ",".join(self.versions)


def _decoded(reply: Any) -> Any:
    """A reply read undecoded, with its strings decoded (as the decoding connection returns them)."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, list):
        return [_decoded(v) for v in reply]
    return reply


def _text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _ints(csv: str) -> npt.NDArray[np.int64]:
    return np.array([int(x) for x in csv.split(",")] if csv else [], dtype=np.int64)
