"""Redis mode: counters, revocations and the journal in one Redis, shared by every host."""
from __future__ import annotations

import json
import time

from ..settings import ConfigError
from .calls import Bounds, Call, Health, Hit, PersonasMoved, QuotaExceeded, StoreUnavailable, cap_entry, refused_entry

# One round trip per API call: the revocation check, every counter, and the journal row with
# the call's final status. Counting on the Redis server's TIME (not each host's) keeps the
# windows of all hosts aligned: two hosts whose clocks differ by 300 ms count in the same
# second. The counter keys derive from that time inside the script, and so do the keys of the
# journals the global bound trims, so this targets a single Redis (or a primary), not Redis Cluster.
#
# The journal's bounds: the owner's list is trimmed to its rows and bytes (its bytes in a key
# beside it); both expire with the owner's token (EXPIREAT). Every row also takes a place at the
# end of one global order list ("owner<TAB>id<TAB>bytes"), and a total counts the bytes of the
# places held; past the global bound, the oldest places are taken off, and each one's row with it
# when it is still its journal's oldest. The total counts a row until its place is taken off,
# even when its journal was trimmed, forgotten or expired first: an overestimate, so the bound
# holds on what Redis really keeps.
# KEYS: revocations (sorted set by expiry), journal sequence, journal list, the owner's personas
# mark, the list's bytes, order list, order total, the global personas' mark, then one counter
# prefix per counter.
# ARGV: jti, journal rows, entry JSON as answered, as refused (401/429), the personas version
# the answer was worked out with ('' for none: moved when the caller's own personas or the global
# ones changed after it, LmdbStore._moved), the owner, its token's expiry ('' for none),
# token bytes, journal bytes, journal key prefix, then period, amount of each counter. The
# verdict rule is Call.refused_status's. When the personas version has moved, nothing is
# counted and the script answers {'moved', version} (Call.personas_version).
COUNT_SCRIPT = """
if ARGV[5] ~= '' then
  local moved = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), tonumber(redis.call('GET', KEYS[8]) or '0'))
  if moved > tonumber(ARGV[5]) then return {'moved', moved} end
end
local t = redis.call('TIME')
local seconds = tonumber(t[1])
local revoked = 0
if ARGV[1] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if expiry and tonumber(expiry) > seconds then revoked = 1 end
end
local out = {revoked, t[1], t[2]}
local over = false
for i = 9, #KEYS do
  local period = tonumber(ARGV[2 * i - 7])
  local window = math.floor(seconds / period)
  local key = KEYS[i] .. ':' .. window
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, period + 1) end
  if count > tonumber(ARGV[2 * i - 6]) then over = true end
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
  row = row .. string.sub(entry, 2)
  local size = #row + 96
  redis.call('LPUSH', KEYS[3], row)
  local held = redis.call('INCRBY', KEYS[5], size)
  local rows = redis.call('LLEN', KEYS[3])
  while rows > 1 and (rows > tonumber(ARGV[2]) or held > tonumber(ARGV[8])) do
    local old = redis.call('RPOP', KEYS[3])
    held = redis.call('INCRBY', KEYS[5], -(#old + 96))
    rows = rows - 1
  end
  if ARGV[7] ~= '' then
    redis.call('EXPIREAT', KEYS[3], ARGV[7])
    redis.call('EXPIREAT', KEYS[5], ARGV[7])
  end
  redis.call('RPUSH', KEYS[6], ARGV[6] .. '\t' .. number .. '\t' .. size)
  local total = redis.call('INCRBY', KEYS[7], size)
  local taken = 0
  while total > tonumber(ARGV[9]) and taken < 64 do
    local place = redis.call('LPOP', KEYS[6])
    if not place then break end
    local owner, id, bytes = string.match(place, '^(.*)\t(%d+)\t(%d+)$')
    total = redis.call('INCRBY', KEYS[7], -tonumber(bytes))
    local list = ARGV[10] .. owner
    local oldest = redis.call('LINDEX', list, -1)
    if oldest and string.match(oldest, '^{"id":(%d+),') == id then
      redis.call('RPOP', list)
      if redis.call('EXISTS', list .. ':bytes') == 1 then redis.call('DECRBY', list .. ':bytes', #oldest + 96) end
    end
    taken = taken + 1
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', seconds)
end
return out
"""

# Revocations: a sorted set of jti by the revoked token's expiry ('+inf' when unknown): the
# expired ones leave it, and beyond the bound those whose token expires first. KEYS: the set.
# ARGV: jti, expiry, bound.
REVOKE_SCRIPT = """
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over > 0 then redis.call('ZPOPMIN', KEYS[1], over) end
return 1
"""

# Runtime personas: a hash id -> JSON, a hash id -> "owner<TAB>bytes", a sorted set of ids by
# expiry, a hash of usage (c:<owner>, b:<owner>, and c:, b: for all), a version counter, and the
# change log (a sorted set of "version:id" by version, its floor below which it is incomplete).
# Every write purges a few expired personas (at the caller's clock, ARGV[1]) and stamps each
# change with the next version, in one step; a write that changes nothing moves no version.
# Each change also sets the mark of what it changed: the owner's (`personas:v:<owner>`, expiring
# with the owner's token) or the global personas' (LmdbStore._moved).
# KEYS: personas, meta, expiry, usage, version, log, log floor, global mark.
# ARGV: now, id, owner, owner mark key, then JSON, expiry and the quotas (persona bytes, token
# personas, token persona bytes, personas, personas bytes), global ('1' or ''), the token's
# expiry ('' for none) to put; nothing more to delete.
# Returns 1 when the id was there (or is now), {quota, limit, value} when a quota refuses it.
PERSONA_SCRIPT = """
local version = tonumber(redis.call('GET', KEYS[5]) or '0') + 1
local changed = false
local function account(owner, count, bytes)
  for _, who in ipairs({owner, ''}) do
    if redis.call('HINCRBY', KEYS[4], 'c:' .. who, count) <= 0 then
      redis.call('HDEL', KEYS[4], 'c:' .. who, 'b:' .. who)
    else
      redis.call('HINCRBY', KEYS[4], 'b:' .. who, bytes)
    end
  end
end
local function mark(owner, shared)
  if shared == '1' then redis.call('SET', KEYS[8], version)
  else redis.call('SET', ARGV[4] .. owner, version, 'XX', 'KEEPTTL') end
end
local function remove(id)
  local meta = redis.call('HGET', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  if not meta then return 0 end
  local owner, bytes, shared = string.match(meta, '^(.*)\t(%d+)\t(%d?)$')
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  account(owner, -1, -tonumber(bytes))
  mark(owner, shared)
  redis.call('ZADD', KEYS[6], version, version .. ':' .. id)
  changed = true
  return 1
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 32)) do remove(id) end
local found = 1
if ARGV[5] then
  local size = #ARGV[5]
  local count = tonumber(redis.call('HGET', KEYS[4], 'c:' .. ARGV[3]) or '0')
  local used = tonumber(redis.call('HGET', KEYS[4], 'b:' .. ARGV[3]) or '0')
  local all = tonumber(redis.call('HGET', KEYS[4], 'c:') or '0')
  local all_used = tonumber(redis.call('HGET', KEYS[4], 'b:') or '0')
  local checks = {{'persona_bytes', ARGV[7], size}, {'token_personas', ARGV[8], count + 1},
                  {'token_persona_bytes', ARGV[9], used + size}, {'personas', ARGV[10], all + 1},
                  {'personas_bytes', ARGV[11], all_used + size}}
  for _, check in ipairs(checks) do
    if check[3] > tonumber(check[2]) then
      found = {check[1], check[2], check[3]}
      break
    end
  end
  if found == 1 then
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[5])
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. '\t' .. size .. '\t' .. ARGV[12])
    redis.call('ZADD', KEYS[3], ARGV[6], ARGV[2])
    account(ARGV[3], 1, size)
    if ARGV[12] == '1' then redis.call('SET', KEYS[8], version)
    elseif ARGV[13] ~= '' then redis.call('SET', ARGV[4] .. ARGV[3], version, 'EXAT', ARGV[13])
    else redis.call('SET', ARGV[4] .. ARGV[3], version) end
    redis.call('ZADD', KEYS[6], version, version .. ':' .. ARGV[2])
    changed = true
  end
else
  found = remove(ARGV[2])
end
if changed then
  redis.call('SET', KEYS[5], version)
  local over = redis.call('ZCARD', KEYS[6]) - 4096
  if over > 0 then
    local gone = redis.call('ZPOPMIN', KEYS[6], over)
    redis.call('SET', KEYS[7], gone[#gone])
  end
end
return found
"""


FOREVER = 9_999_999_999  # the expiry of a revocation whose token's is unknown (kept while there is room)


class RedisStore:
    PREFIX = "sandbox:"
    # A Redis that needs more than this to answer is as good as down: the call is answered
    # 503 instead of hanging.
    TIMEOUT = 1.0

    def __init__(self, url: str, bounds: Bounds | int = Bounds(), clock=time.time):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        self.url = url
        self.bounds = bounds if isinstance(bounds, Bounds) else Bounds(journal_rows=bounds)
        self.journal_size = self.bounds.journal_rows
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
        # reloaded by redis-py after a restart
        self._count_script = self._redis.register_script(COUNT_SCRIPT)
        self._revoke_script = self._redis.register_script(REVOKE_SCRIPT)
        self._persona_script = self._redis.register_script(PERSONA_SCRIPT)
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
        journal = self._journal_key(call.owner or "")
        keys = [self.PREFIX + "revocations", self.PREFIX + "journal-seq", journal, self._mark_key(call.owner or ""),
                journal + ":bytes", self.PREFIX + "journal-order", self.PREFIX + "journal-bytes",
                self._persona_keys()[7]]
        keys += [f"{self.PREFIX}rl:{key}" for key, _ in call.counters]
        answered = refused = ""
        if call.owner is not None:
            # the row as the script writes it: {"id": N, "status": S, ...}: room for both
            limit = self.bounds.row_bytes - 40
            answered = cap_entry(call.entry, limit)[1].decode()
            refused = cap_entry({k: v for k, v in refused_entry(call.entry, 0).items() if k != "status"}, limit)[1].decode()
        version = "" if call.personas_version is None else str(call.personas_version)
        expiry = "" if call.expires_at is None else str(int(call.expires_at) + 1)
        args = [call.jti or "", self.journal_size, answered, refused, version, call.owner or "", expiry,
                self.bounds.token_bytes, self.bounds.journal_bytes, self.PREFIX + "journal:"]
        for (_, period), amount in zip(call.counters, call.amounts):
            args += [int(period), int(amount)]
        out = self._call(lambda r: self._count_script(keys=keys, args=args, client=r))
        if out[0] == b"moved":
            raise PersonasMoved(int(out[1]))
        now = int(out[1]) + int(out[2]) / 1_000_000
        hits = [Hit(int(out[3 + 2 * i]), int(out[4 + 2 * i]), now) for i in range(len(call.counters))]
        return bool(out[0]), hits

    def revoke(self, jti: str, expires_at: float | None = None):
        """Kept until the revoked token expires, at most `bounds.revocations` (LmdbStore.revoke)."""
        expiry = FOREVER if expires_at is None else int(expires_at) + 1
        args = [jti, expiry, self.bounds.revocations]
        self._call(lambda r: self._revoke_script(keys=[self.PREFIX + "revocations"], args=args, client=r))

    def is_revoked(self, jti: str) -> bool:
        expiry = self._call(lambda r: r.zscore(self.PREFIX + "revocations", jti))
        return expiry is not None and expiry > self.clock()

    def journal(self, owner: str) -> list:
        rows = self._call(lambda r: r.lrange(self._journal_key(owner), 0, self.journal_size - 1))
        return [json.loads(row) for row in rows]

    def forget(self, owner: str):
        # its places in the order stay, counted, until the global bound takes them off
        self._call(lambda r: r.delete(self._journal_key(owner), self._journal_key(owner) + ":bytes"))

    def usage(self, owner: str) -> dict:
        """What `owner` holds, and every caller together (GET /sandbox/usage)."""
        journal, usage = self._journal_key(owner), self._persona_keys()[3]

        def read(r):
            with r.pipeline(transaction=True) as pipe:
                pipe.llen(journal)
                pipe.get(journal + ":bytes")
                pipe.hmget(usage, "c:" + owner, "b:" + owner, "c:", "b:")
                pipe.get(self.PREFIX + "journal-bytes")
                pipe.zcard(self.PREFIX + "revocations")
                return pipe.execute()
        rows, size, (count, used, all_count, all_used), total, revocations = self._call(read)
        return {"journal_rows": rows, "journal_bytes": int(size or 0), "personas": int(count or 0),
                "persona_bytes": int(used or 0), "all_journal_bytes": int(total or 0),
                "all_personas": int(all_count or 0), "all_persona_bytes": int(all_used or 0),
                "revocations": revocations}

    # --- runtime personas (sandbox.population.runtime) ---------------------------------------
    def _persona_keys(self) -> list:
        return [self.PREFIX + "personas" + suffix for suffix in
                ("", ":meta", ":expiry", ":usage", ":version", ":log", ":log-floor", ":global-version")]

    def _mark_key(self, owner: str) -> str:
        return self.PREFIX + "personas:v:" + owner

    def put_persona(self, persona_id: str, text: str, expires_at: float | None, owner: str = "",
                    shared: bool = False, token_expires_at: float | None = None):
        """Keep a persona, within the quotas (QuotaExceeded names the one it would pass)."""
        b = self.bounds
        args = [repr(self.clock()), persona_id, owner, self._mark_key(""), text,
                "+inf" if expires_at is None else repr(float(expires_at)),
                b.persona_bytes, b.token_personas, b.token_persona_bytes, b.personas, b.personas_bytes,
                "1" if shared else "", "" if token_expires_at is None else str(int(token_expires_at) + 1)]
        found = self._call(lambda r: self._persona_script(keys=self._persona_keys(), args=args, client=r))
        if isinstance(found, list):
            raise QuotaExceeded(found[0].decode(), int(found[1]), int(found[2]))

    def personas(self) -> list:
        """The JSON of every persona not expired, in no particular order."""
        table, _, expiry, *_ = self._persona_keys()

        def read(r):
            with r.pipeline(transaction=True) as pipe:
                pipe.hgetall(table)
                pipe.zrangebyscore(expiry, "-inf", repr(self.clock()))
                return pipe.execute()
        held, expired = self._call(read)
        expired = set(expired)
        return [value.decode() for key, value in held.items() if key not in expired]

    def persona_changes(self, since: int):
        """(version, {id: JSON, or None when gone}) of what changed after version `since`; None
        when the log no longer reaches back that far (LmdbStore.persona_changes)."""
        table, _, expiry, _, version_key, log, floor, _ = self._persona_keys()

        def read(r):
            with r.pipeline(transaction=True) as pipe:
                pipe.get(floor)
                pipe.get(version_key)
                pipe.zrangebyscore(log, f"({since}", "+inf")
                return pipe.execute()
        held_floor, version, changes = self._call(read)
        if held_floor is not None and since < int(held_floor.split(b":")[0]):
            return None
        ids = list(dict.fromkeys(change.split(b":", 1)[1].decode() for change in changes))
        if not ids:
            return int(version or 0), {}

        def texts(r):
            with r.pipeline(transaction=True) as pipe:
                pipe.hmget(table, ids)
                pipe.zmscore(expiry, ids)
                return pipe.execute()
        values, expiries = self._call(texts)
        now = self.clock()
        return int(version or 0), {i: None if v is None or (e is not None and e <= now) else v.decode()
                                   for i, v, e in zip(ids, values, expiries)}

    def delete_persona(self, persona_id: str) -> bool:
        args = [repr(self.clock()), persona_id, "", self._mark_key("")]
        return bool(self._call(lambda r: self._persona_script(keys=self._persona_keys(), args=args, client=r)))

    def personas_version(self) -> int:
        """Bumped by every change: a worker updates its index of the personas when it moves."""
        return int(self._call(lambda r: r.get(self._persona_keys()[4])) or 0)

    def ping(self):
        self._call(lambda r: r.ping())
