"""AgentStore on Redis (for RedisStore): every check-and-write is one Lua script.

Keys (same ``gs:{grid}:`` prefix and slot as the ledger):

    gs:{grid}:agents              set   site ids an agent ever registered for
    gs:{grid}:agent:<site>        hash  agent_id, generation, registered_at, heartbeat_at,
                                        pools (JSON: pool -> node names), nodes (JSON: unhealthy nodes)
    gs:{grid}:agent:<site>:jobs   hash  job id -> "<sequence>|<JobReport JSON>" (the latest report kept)
    gs:{grid}:node_drains:<pool>  set   nodes an operator drained (DrainNodes)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis
from redis.commands.core import Script

from grid_scheduler.state.agents import (
    AgentHealth,
    AgentReplaced,
    Beat,
    FleetHealth,
    JobReport,
    NoAgent,
    NodeCondition,
    SiteAgent,
    canonical_nodes,
    nodes_from_json,
    nodes_to_json,
)
from grid_scheduler.state.redis_conn import guarded

# ARGV: prefix, site, agent id, pools JSON, now. Node health stays until the new agent's first heartbeat.
_LUA_REGISTER = r"""
local P = ARGV[1]
local key = P .. 'agent:' .. ARGV[2]
redis.call('HINCRBY', key, 'generation', 1)
redis.call('HSET', key, 'agent_id', ARGV[3], 'pools', ARGV[4], 'registered_at', ARGV[5], 'heartbeat_at', ARGV[5],
           'hb_seq', 0)
redis.call('HSETNX', key, 'nodes', '[]')
redis.call('SADD', P .. 'agents', ARGV[2])
return redis.call('HGETALL', key)
"""

# ARGV: prefix, site, agent id, nodes JSON (canonical), now, sequence (0: unsequenced).
# Returns {status, changed, fields...}; a sequence not above the last applied one changes nothing.
_LUA_HEARTBEAT = r"""
local P = ARGV[1]
local key = P .. 'agent:' .. ARGV[2]
local current = redis.call('HGET', key, 'agent_id')
if not current then return {'none', 0} end
if current ~= ARGV[3] then return {'replaced', current} end
local seq = tonumber(ARGV[6])
local changed = 0
if seq > 0 and seq <= (tonumber(redis.call('HGET', key, 'hb_seq')) or 0) then
  local out = {'old', 0}
  for _, v in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = v end
  return out
end
if seq > 0 then redis.call('HSET', key, 'hb_seq', seq) end
if redis.call('HGET', key, 'nodes') ~= ARGV[4] then changed = 1 end
redis.call('HSET', key, 'heartbeat_at', ARGV[5], 'nodes', ARGV[4])
local out = {'ok', changed}
for _, v in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = v end
return out
"""

# ARGV: prefix, site, agent id, nodes JSON (canonical), now, sequence, pool ids... The heartbeat and
# everything its reply needs in one round trip: {status ('ok' or 'old': a sequence not above the last
# applied, nothing written), changed, previous heartbeat_at, event sequence, the nodes kept, drains per pool...}.
_LUA_BEAT = r"""
local P = ARGV[1]
local key = P .. 'agent:' .. ARGV[2]
local current = redis.call('HGET', key, 'agent_id')
if not current then return {'none', 0} end
if current ~= ARGV[3] then return {'replaced', current} end
local seq = tonumber(ARGV[6])
local status = 'ok'
local changed = 0
local before = redis.call('HGET', key, 'heartbeat_at')
if seq > 0 and seq <= (tonumber(redis.call('HGET', key, 'hb_seq')) or 0) then
  status = 'old'
else
  if seq > 0 then redis.call('HSET', key, 'hb_seq', seq) end
  if redis.call('HGET', key, 'nodes') ~= ARGV[4] then changed = 1 end
  redis.call('HSET', key, 'heartbeat_at', ARGV[5], 'nodes', ARGV[4])
end
local out = {status, changed, before, redis.call('GET', P .. 'event_seq') or '0', redis.call('HGET', key, 'nodes')}
for i = 7, #ARGV do
  out[#out + 1] = redis.call('SMEMBERS', P .. 'node_drains:' .. ARGV[i])
end
return out
"""

# ARGV: prefix, site, agent id, job id, sequence, "<sequence>|<report JSON>". Compare-and-set on the sequence.
_LUA_REPORT = r"""
local P = ARGV[1]
local key = P .. 'agent:' .. ARGV[2]
local current = redis.call('HGET', key, 'agent_id')
if not current then return {'none', ''} end
if current ~= ARGV[3] then return {'replaced', current} end
local jobs = key .. ':jobs'
local old = redis.call('HGET', jobs, ARGV[4])
if old and tonumber(string.match(old, '^(%d+)|')) >= tonumber(ARGV[5]) then return {'old', old} end
redis.call('HSET', jobs, ARGV[4], ARGV[6])
return {'kept', ARGV[6]}
"""

# ARGV: prefix, site, then (job id, sequence) pairs. A report is forgotten only while the sequence
# kept is the one the trim read: a newer report that came meanwhile stays.
_LUA_FORGET_REPORTS = r"""
local jobs = ARGV[1] .. 'agent:' .. ARGV[2] .. ':jobs'
local forgotten = 0
for i = 3, #ARGV, 2 do
  local old = redis.call('HGET', jobs, ARGV[i])
  if old and string.match(old, '^(%d+)|') == ARGV[i + 1] then
    redis.call('HDEL', jobs, ARGV[i])
    forgotten = forgotten + 1
  end
end
return forgotten
"""


def _agent(fields: Sequence[Any]) -> SiteAgent:
    d = {_s(fields[i]): _s(fields[i + 1]) for i in range(0, len(fields), 2)}
    return SiteAgent(
        site_id="", agent_id=d["agent_id"], generation=int(d["generation"]),
        registered_at_s=float(d["registered_at"]), heartbeat_at_s=float(d["heartbeat_at"]),
        pools={p: tuple(n) for p, n in json.loads(d["pools"]).items()}, nodes=nodes_from_json(json.loads(d["nodes"])),
        heartbeat_sequence=int(d.get("hb_seq") or 0),
    )


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _report(value: Any) -> JobReport:
    return JobReport.from_json(_s(value).split("|", 1)[1])


# Reports forgotten per script call.
FORGET_BATCH = 1_000


class RedisAgents:
    """Mixed into RedisStore, which provides the client, the key prefix and the script runner."""

    prefix: str
    safe_url: str
    _r: redis.Redis
    _run: Callable[[Script, Sequence[str | int | float]], Any]

    def _init_agents(self) -> None:
        self._register_lua = self._r.register_script(_LUA_REGISTER)
        self._heartbeat_lua = self._r.register_script(_LUA_HEARTBEAT)
        self._report_lua = self._r.register_script(_LUA_REPORT)
        self._beat_lua = self._r.register_script(_LUA_BEAT)
        self._forget_reports_lua = self._r.register_script(_LUA_FORGET_REPORTS)

    @guarded
    def register_agent(
        self, site_id: str, agent_id: str, pools: Mapping[str, Sequence[str]], now_s: float
    ) -> SiteAgent:
        inventory = json.dumps({p: list(pools[p]) for p in sorted(pools)})
        fields = self._run(self._register_lua, [self.prefix, site_id, agent_id, inventory, repr(now_s)])
        return _with_site(_agent(fields), site_id)

    @guarded
    def agent_heartbeat(
        self, site_id: str, agent_id: str, nodes: Sequence[NodeCondition], now_s: float, sequence: int = 0
    ) -> tuple[SiteAgent, bool]:
        unhealthy = json.dumps(nodes_to_json(canonical_nodes(nodes)))
        reply = self._run(self._heartbeat_lua, [self.prefix, site_id, agent_id, unhealthy, repr(now_s), int(sequence)])
        status = _s(reply[0])
        if status == "none":
            raise NoAgent(f"no agent registered for site {site_id}")
        if status == "replaced":
            raise AgentReplaced(site_id, _s(reply[1]))
        return _with_site(_agent(reply[2:]), site_id), int(reply[1]) == 1

    @guarded
    def agent_beat(
        self, site_id: str, agent_id: str, nodes: Sequence[NodeCondition], now_s: float, pool_ids: Sequence[str],
        sequence: int = 0,
    ) -> Beat:
        unhealthy = canonical_nodes(nodes)
        reply = self._run(self._beat_lua, [self.prefix, site_id, agent_id, json.dumps(nodes_to_json(unhealthy)),
                                           repr(now_s), int(sequence), *pool_ids])
        status = _s(reply[0])
        if status == "none":
            raise NoAgent(f"no agent registered for site {site_id}")
        if status == "replaced":
            raise AgentReplaced(site_id, _s(reply[1]))
        drained = {p: tuple(sorted(_s(n) for n in members)) for p, members in zip(pool_ids, reply[5:], strict=True)}
        kept = nodes_from_json(json.loads(_s(reply[4])))
        return Beat(float(_s(reply[2])), kept, int(reply[1]) == 1, drained, int(_s(reply[3])),
                    applied=status == "ok")

    @guarded
    def fleet_health(self, site_pools: Mapping[str, Sequence[str]]) -> FleetHealth:
        # Two round trips whatever the fleet's size; the node inventories (thousands of names per
        # site) are not read: judging a site's health does not need them.
        sites = sorted(_s(s) for s in self._r.smembers(self.prefix + "agents"))
        pools = [p for site in sites for p in site_pools.get(site, ())]
        pipe = self._r.pipeline(transaction=False)
        for site in sites:
            pipe.hmget(self.prefix + "agent:" + site, ["agent_id", "generation", "heartbeat_at", "nodes"])
        for pool in pools:
            pipe.smembers(self.prefix + "node_drains:" + pool)
        replies = pipe.execute()
        agents = tuple(
            AgentHealth(site, _s(r[0]), int(r[1]), float(r[2]), nodes_from_json(json.loads(r[3])))
            for site, r in zip(sites, replies[:len(sites)], strict=True) if r[0] is not None
        )
        drained = {p: tuple(sorted(_s(n) for n in members))
                   for p, members in zip(pools, replies[len(sites):], strict=True)}
        return FleetHealth(agents, drained)

    @guarded
    def site_agent(self, site_id: str) -> SiteAgent | None:
        fields = self._r.hgetall(self.prefix + "agent:" + site_id)
        if not fields:
            return None
        return _with_site(_agent([x for kv in fields.items() for x in kv]), site_id)

    @guarded
    def site_agents(self) -> list[SiteAgent]:
        sites = sorted(_s(s) for s in self._r.smembers(self.prefix + "agents"))
        return [a for a in (self.site_agent(s) for s in sites) if a is not None]

    @guarded
    def report_job(self, site_id: str, agent_id: str, report: JobReport) -> tuple[bool, JobReport]:
        value = f"{report.sequence}|{report.to_json()}"
        reply = self._run(self._report_lua, [self.prefix, site_id, agent_id, report.job_id, report.sequence, value])
        status = _s(reply[0])
        if status == "none":
            raise NoAgent(f"no agent registered for site {site_id}")
        if status == "replaced":
            raise AgentReplaced(site_id, _s(reply[1]))
        return status == "kept", _report(reply[1])

    @guarded
    def job_reports(self, site_id: str) -> list[JobReport]:
        values = self._r.hgetall(self.prefix + "agent:" + site_id + ":jobs")
        reports = [_report(v) for v in values.values()]
        return sorted(reports, key=lambda r: r.job_id)

    @guarded
    def job_report(self, site_id: str, job_id: str) -> JobReport | None:
        value = self._r.hget(self.prefix + "agent:" + site_id + ":jobs", job_id)
        return _report(value) if value is not None else None

    @guarded
    def forget_job_reports(self, site_id: str, reports: Sequence[JobReport]) -> int:
        forgotten = 0
        for start in range(0, len(reports), FORGET_BATCH):  # bounded scripts: Redis serves no one while one runs
            pairs = [x for r in reports[start:start + FORGET_BATCH] for x in (r.job_id, str(r.sequence))]
            forgotten += int(self._run(self._forget_reports_lua, [self.prefix, site_id, *pairs]))
        return forgotten

    @guarded
    def set_nodes_drained(self, pool_id: str, nodes: Sequence[str], drained: bool) -> None:
        if nodes:
            key = self.prefix + "node_drains:" + pool_id
            (self._r.sadd if drained else self._r.srem)(key, *nodes)

    @guarded
    def drained_nodes(self, pool_id: str) -> tuple[str, ...]:
        return tuple(sorted(_s(n) for n in self._r.smembers(self.prefix + "node_drains:" + pool_id)))


def _with_site(agent: SiteAgent, site_id: str) -> SiteAgent:
    return agent if agent.site_id == site_id else replace(agent, site_id=site_id)
