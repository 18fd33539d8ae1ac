"""Shared state: rate-limit counters, revoked tokens, the request journal.

Two backends with one interface. The embedded default is a SQLite file in the data folder:
no service to run, and every gunicorn worker of the instance shares it, so counts stay exact
across processes. Redis mode shares the same state across processes and hosts.
Each API call costs one round trip: `admit` checks revocation and counts in one call.

A store that cannot answer raises StoreUnavailable, which the routes answer 503: the sandbox
never serves a call it could not count (no "fail open").
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import NamedTuple

from .settings import ConfigError

logger = logging.getLogger("sandbox.store")


class StoreUnavailable(Exception):
    """The shared store cannot be reached: the request is answered 503, never unlimited."""


class Hit(NamedTuple):
    """One counted call in one fixed window."""
    count: int    # calls in this window, this one included
    reset: int    # epoch second at which the window ends (RateLimit-Reset)
    now: float    # the counting clock at that moment, for Retry-After


class _Health:
    """Logs a store going down and coming back once each, not once per request."""

    def __init__(self, name: str):
        self.name = name
        self.down = False

    def failed(self, exc):
        if not self.down:
            self.down = True
            logger.warning("%s unreachable, API calls answer 503 until it is back: %s", self.name, exc)

    def ok(self):
        if self.down:
            self.down = False
            logger.warning("%s reachable again", self.name)


class SqliteStore:
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, at REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, entry TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS journal_owner ON journal (owner, id);
    """
    # How long a call waits for another writer before it is answered 503. Writes last
    # microseconds, so reaching this means the file is stuck (e.g. a dead NFS mount).
    BUSY_TIMEOUT = 5.0

    def __init__(self, path: Path, journal_size: int, clock=time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.journal_size = journal_size
        self.clock = clock
        self.health = _Health(f"the sandbox store {self.path}")
        self._local = threading.local()
        self._pid = os.getpid()
        self._writes = 0
        self._journal_writes: dict[str, int] = {}  # owner -> journal writes by this process
        # WAL lets readers and the single writer proceed together; the mode is kept in the
        # file, so it is set once here. This connection is closed before gunicorn forks:
        # a SQLite connection must not cross a fork.
        setup = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT, isolation_level=None)
        try:
            setup.execute("PRAGMA journal_mode=WAL")
            setup.executescript(self.SCHEMA)
        finally:
            setup.close()

    def _db(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # a forked worker: never reuse the parent's connections
            self.reset_after_fork()
        db = getattr(self._local, "db", None)
        if db is None:
            # One connection per thread; `timeout` is SQLite's busy timeout, so concurrent
            # writers from every worker and thread queue instead of failing "database is locked".
            db = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA synchronous=OFF")  # counters and journal are not worth an fsync
            self._local.db = db
        return db

    def reset_after_fork(self):
        self._pid = os.getpid()
        self._local = threading.local()

    def _run(self, work):
        try:
            result = work(self._db())
        except sqlite3.OperationalError as exc:
            self.health.failed(exc)
            raise StoreUnavailable(str(exc)) from None
        self.health.ok()
        return result

    def ping(self):
        self._run(lambda db: db.execute("SELECT 1"))

    def admit(self, jti: str | None, counters) -> tuple[bool, list[Hit]]:
        """(revoked, [Hit for each (key, period)]); each count is one atomic upsert."""
        def work(db):
            now = self.clock()
            revoked = bool(jti) and db.execute("SELECT 1 FROM revoked WHERE jti = ?", (jti,)).fetchone() is not None
            hits = []
            for key, period in counters:
                window = int(now // period)
                reset = (window + 1) * period
                row = db.execute(
                    "INSERT INTO counters (key, count, expires) VALUES (?, 1, ?) "
                    "ON CONFLICT(key) DO UPDATE SET count = count + 1 RETURNING count",
                    (f"{key}:{window}", reset)).fetchone()
                hits.append(Hit(row[0], reset, now))
            self._writes += 1
            if counters and self._writes % 2000 == 0:
                db.execute("DELETE FROM counters WHERE expires < ?", (now - 60,))
            return revoked, hits
        return self._run(work)

    def revoke(self, jti: str):
        self._run(lambda db: db.execute("INSERT OR IGNORE INTO revoked (jti, at) VALUES (?, ?)", (jti, time.time())))

    def record(self, owner: str, entry: dict):
        if self.health.down:  # the call's own admit just failed: do not wait out a second timeout
            raise StoreUnavailable("the store is down, the journal is skipped")

        def work(db):
            db.execute("INSERT INTO journal (owner, entry) VALUES (?, ?)", (owner, json.dumps(entry)))
            # Trimming every insert would double the cost of a call: trim every 50 writes of this
            # owner (a rule on the global row id never trims a token whose calls alternate with another's).
            if len(self._journal_writes) > 10_000:
                self._journal_writes.clear()
            count = self._journal_writes[owner] = self._journal_writes.get(owner, 0) + 1
            if count % 50 == 0:
                db.execute("DELETE FROM journal WHERE owner = ? AND id <= ("
                           "SELECT id FROM journal WHERE owner = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                           (owner, owner, self.journal_size))
        self._run(work)

    def journal(self, owner: str) -> list:
        rows = self._run(lambda db: db.execute(
            "SELECT entry FROM journal WHERE owner = ? ORDER BY id DESC LIMIT ?",
            (owner, self.journal_size)).fetchall())
        return [json.loads(r[0]) for r in rows]

    def forget(self, owner: str):
        self._run(lambda db: db.execute("DELETE FROM journal WHERE owner = ?", (owner,)))


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
        self.health = _Health(f"Redis at {url}")
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


def open_store(settings):
    if settings.redis_url:
        return RedisStore(settings.redis_url, settings.journal_size)
    try:
        return SqliteStore(settings.data_dir / "store.sqlite3", settings.journal_size)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the sandbox store in {settings.data_dir}: {exc}") from None
