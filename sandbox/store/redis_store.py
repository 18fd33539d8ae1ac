"""Redis mode: counters, revocations and the journal in one Redis, shared by every host."""
from __future__ import annotations

import json
import time

from ..settings import ConfigError
from .calls import Call, Health, Hit, PersonasMoved, StoreUnavailable, refused_entry

# One round trip per API call: the revocation check, every counter, and the journal row with
# the call's final status. Counting on the Redis server's TIME (not each host's) keeps the
# windows of all hosts aligned: two hosts whose clocks differ by 300 ms count in the same
# second. The counter keys derive from that time inside the script, so this targets a single
# Redis (or a primary), not Redis Cluster.
# KEYS: revoked set, journal sequence, journal list, personas version, then one counter prefix
# per counter. ARGV: jti, journal size, entry JSON as answered, as refused (401/429), the
# personas version the answer was worked out with ('' for none), then period, amount of each
# counter. The verdict rule is Call.refused_status's. When the personas version has moved,
# nothing is counted and the script answers {'moved', version} (Call.personas_version).
COUNT_SCRIPT = """
if ARGV[5] ~= '' then
  local version = redis.call('GET', KEYS[4]) or '0'
  if version ~= ARGV[5] then return {'moved', version} end
end
local t = redis.call('TIME')
local seconds = tonumber(t[1])
local revoked = 0
if ARGV[1] ~= '' then revoked = redis.call('SISMEMBER', KEYS[1], ARGV[1]) end
local out = {revoked, t[1], t[2]}
local over = false
for i = 5, #KEYS do
  local period = tonumber(ARGV[2 * i - 4])
  local window = math.floor(seconds / period)
  local key = KEYS[i] .. ':' .. window
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, period + 1) end
  if count > tonumber(ARGV[2 * i - 3]) then over = true end
  out[#out + 1] = count
  out[#out + 1] = (window + 1) * period
end
if ARGV[3] ~= '' then
  local entry = ARGV[3]
  local status = nil
  if revoked == 1 then status = 401 elseif over then status = 429 end
  if status then entry = ARGV[4] end
  local number = redis.call('INCR', KEYS[2])
  local row = '{"id":' .. number .. ','
  if status then row = row .. '"status":' .. status .. ',' end
  redis.call('LPUSH', KEYS[3], row .. string.sub(entry, 2))
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[2]) - 1)
end
return out
"""

# Runtime personas: a hash id -> JSON, a sorted set of the expiring ones by expiry, a version
# counter. Every write purges what has expired (at the caller's clock, ARGV[1]) and bumps the
# version, in one step. KEYS: hash, expiry set, version. ARGV: now, id, then JSON and expiry
# ('' for none) to put, or nothing to delete. Returns 1 when the id was there (or is now).
PERSONA_SCRIPT = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(expired) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local found = 1
if ARGV[3] then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2]) else redis.call('ZREM', KEYS[2], ARGV[2]) end
else
  found = redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
redis.call('INCR', KEYS[3])
return found
"""


class RedisStore:
    PREFIX = "sandbox:"
    # A Redis that needs more than this to answer is as good as down: the call is answered
    # 503 instead of hanging.
    TIMEOUT = 1.0

    def __init__(self, url: str, journal_size: int, clock=time.time):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        self.url = url
        self.journal_size = journal_size
        self.clock = clock  # persona expiry (the counters use the Redis server's TIME)
        self.health = Health(f"Redis at {url}")
        self._errors = (redis.RedisError, OSError)
        try:
            # No retries: redis-py's default retries with backoff would hold a call for
            # seconds while Redis is down, and a retried count could count one call twice.
            # Connections that a Redis restart closed are replaced when taken from the pool.
            self._redis = redis.Redis.from_url(
                url, socket_timeout=self.TIMEOUT, socket_connect_timeout=self.TIMEOUT,
                retry=Retry(NoBackoff(), 0), health_check_interval=0)
        except ValueError as exc:
            raise ConfigError(f"--redis expects redis://HOST:PORT/DB, got {url!r}: {exc}") from None
        self._count_script = self._redis.register_script(COUNT_SCRIPT)
        self._persona_script = self._redis.register_script(PERSONA_SCRIPT)  # reloaded by redis-py after a restart
        try:
            self._redis.ping()
        except self._errors as exc:
            raise ConfigError(f"Redis at {url} is unreachable: {exc}") from None

    def _call(self, work):
        try:
            result = work(self._redis)
        except self._errors as exc:
            self.health.failed(exc)
            raise StoreUnavailable(str(exc)) from None
        self.health.ok()
        return result

    def _journal_key(self, owner: str) -> str:
        return f"{self.PREFIX}journal:{owner}"

    def count(self, call: Call) -> tuple[bool, list[Hit]]:
        keys = [self.PREFIX + "revoked", self.PREFIX + "journal-seq", self._journal_key(call.owner or ""),
                self._persona_keys()[2]]
        keys += [f"{self.PREFIX}rl:{key}" for key, _ in call.counters]
        answered = refused = ""
        if call.owner is not None:
            answered = json.dumps(call.entry)
            refused = json.dumps({k: v for k, v in refused_entry(call.entry, 0).items() if k != "status"})
        version = "" if call.personas_version is None else str(call.personas_version)
        args = [call.jti or "", self.journal_size, answered, refused, version]
        for (_, period), amount in zip(call.counters, call.amounts):
            args += [int(period), int(amount)]
        out = self._call(lambda r: self._count_script(keys=keys, args=args, client=r))
        if out[0] == b"moved":
            raise PersonasMoved(int(out[1]))
        now = int(out[1]) + int(out[2]) / 1_000_000
        hits = [Hit(int(out[3 + 2 * i]), int(out[4 + 2 * i]), now) for i in range(len(call.counters))]
        return bool(out[0]), hits

    def revoke(self, jti: str):
        self._call(lambda r: r.sadd(self.PREFIX + "revoked", jti))

    def is_revoked(self, jti: str) -> bool:
        return bool(self._call(lambda r: r.sismember(self.PREFIX + "revoked", jti)))

    def journal(self, owner: str) -> list:
        rows = self._call(lambda r: r.lrange(self._journal_key(owner), 0, self.journal_size - 1))
        return [json.loads(row) for row in rows]

    def forget(self, owner: str):
        self._call(lambda r: r.delete(self._journal_key(owner)))

    # --- runtime personas (sandbox.population.runtime) ----------------------------------------------------
    def _persona_keys(self) -> list:
        return [self.PREFIX + "personas", self.PREFIX + "personas:expiry", self.PREFIX + "personas:version"]

    def put_persona(self, persona_id: str, text: str, expires_at: float | None):
        args = [repr(self.clock()), persona_id, text, "" if expires_at is None else repr(float(expires_at))]
        self._call(lambda r: self._persona_script(keys=self._persona_keys(), args=args, client=r))

    def personas(self) -> list:
        """The JSON of every persona not expired, in no particular order."""
        table, expiry, _ = self._persona_keys()

        def read(r):
            with r.pipeline(transaction=True) as pipe:
                pipe.hgetall(table)
                pipe.zrangebyscore(expiry, "-inf", repr(self.clock()))
                return pipe.execute()
        held, expired = self._call(read)
        expired = set(expired)
        return [value.decode() for key, value in held.items() if key not in expired]

    def delete_persona(self, persona_id: str) -> bool:
        args = [repr(self.clock()), persona_id]
        return bool(self._call(lambda r: self._persona_script(keys=self._persona_keys(), args=args, client=r)))

    def personas_version(self) -> int:
        """Bumped by every change: a worker rebuilds its index of the personas when it moves."""
        return int(self._call(lambda r: r.get(self.PREFIX + "personas:version")) or 0)

    def ping(self):
        self._call(lambda r: r.ping())
