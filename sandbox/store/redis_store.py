"""Redis mode: counters, revocations and the journal in one Redis, shared by every host."""
from __future__ import annotations

import json

from ..settings import ConfigError
from .base import Health, Hit, StoreUnavailable

# One round trip per API call: revocation check and every counter, on Redis' own clock.
# Counting on the Redis server's TIME (not each host's) is what keeps the windows of all
# hosts aligned: two hosts whose clocks differ by 300 ms still count in the same second.
# The counter keys are derived in the script from that time, so this targets a single
# Redis (or a primary), not Redis Cluster.
ADMIT_SCRIPT = """
local t = redis.call('TIME')
local seconds = tonumber(t[1])
local revoked = 0
if ARGV[1] ~= '' then revoked = redis.call('SISMEMBER', KEYS[1], ARGV[1]) end
local out = {revoked, t[1], t[2]}
for i = 2, #KEYS do
  local period = tonumber(ARGV[i])
  local window = math.floor(seconds / period)
  local key = KEYS[i] .. ':' .. window
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, period + 1) end
  out[#out + 1] = count
  out[#out + 1] = (window + 1) * period
end
return out
"""


class RedisStore:
    PREFIX = "sandbox:"
    # A Redis that needs more than this to answer is as good as down: the call is answered
    # 503 instead of hanging. Loopback or LAN Redis answers in well under a millisecond.
    TIMEOUT = 1.0

    def __init__(self, url: str, journal_size: int):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        self.url = url
        self.journal_size = journal_size
        self.health = Health(f"Redis at {url}")
        self._errors = (redis.RedisError, OSError)
        try:
            # No retries: redis-py's default retries with backoff would hold a call for
            # seconds while Redis is down, and a retried count could count one call twice.
            # Connections that a Redis restart closed are replaced when taken from the pool
            # (redis-py checks them), so service resumes on the first call after Redis is back.
            self._redis = redis.Redis.from_url(
                url, socket_timeout=self.TIMEOUT, socket_connect_timeout=self.TIMEOUT,
                retry=Retry(NoBackoff(), 0), health_check_interval=0)
        except ValueError as exc:
            raise ConfigError(f"--redis expects redis://HOST:PORT/DB, got {url!r}: {exc}") from None
        self._admit = self._redis.register_script(ADMIT_SCRIPT)  # reloaded by redis-py after a restart
        try:
            self._redis.ping()
        except self._errors as exc:
            raise ConfigError(f"Redis at {url} is unreachable: {exc}") from None

    def reset_after_fork(self):
        self._redis.connection_pool.reset()

    def _call(self, work):
        try:
            result = work(self._redis)
        except self._errors as exc:
            self.health.failed(exc)
            raise StoreUnavailable(str(exc)) from None
        self.health.ok()
        return result

    def _pipeline(self, build):
        def work(client):
            pipe = client.pipeline(transaction=False)
            build(pipe)
            return pipe.execute()
        return self._call(work)

    def ping(self):
        self._call(lambda r: r.ping())

    def admit(self, jti, counters) -> tuple[bool, list[Hit]]:
        keys = [self.PREFIX + "revoked"] + [f"{self.PREFIX}rl:{key}" for key, _ in counters]
        args = [jti or ""] + [int(period) for _, period in counters]
        out = self._call(lambda r: self._admit(keys=keys, args=args, client=r))
        now = int(out[1]) + int(out[2]) / 1_000_000
        hits = [Hit(int(out[3 + 2 * i]), int(out[4 + 2 * i]), now) for i in range(len(counters))]
        return bool(out[0]), hits

    def settle(self, jti, counters, owner, decide) -> tuple[bool, list[Hit]]:
        """The SQLite store's one transaction, as two round trips: count, then journal."""
        revoked, hits = self.admit(jti, counters)
        entry = decide(revoked, hits)
        if entry is not None:
            try:
                self.record(owner, entry)
            except StoreUnavailable:
                pass  # counted but not journaled: the journal is best effort when Redis drops mid-call
        return revoked, hits

    def revoke(self, jti):
        self._call(lambda r: r.sadd(self.PREFIX + "revoked", jti))

    def record(self, owner, entry):
        if self.health.down:  # the call's own admit just failed: do not wait out a second timeout
            raise StoreUnavailable("Redis is down, the journal is skipped")
        name = f"{self.PREFIX}journal:{owner}"
        self._pipeline(lambda p: (p.lpush(name, json.dumps(entry)), p.ltrim(name, 0, self.journal_size - 1)))

    def journal(self, owner):
        rows = self._call(lambda r: r.lrange(f"{self.PREFIX}journal:{owner}", 0, self.journal_size - 1))
        return [json.loads(r) for r in rows]

    def forget(self, owner):
        self._call(lambda r: r.delete(f"{self.PREFIX}journal:{owner}"))
