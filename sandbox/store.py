"""Shared state: rate-limit counters, revoked tokens, the request journal.

Two backends with one interface. The embedded default is a SQLite file in the data folder:
no service to run, and every gunicorn worker of the instance shares it, so counts stay exact
across processes. Redis mode shares the same state across processes and hosts.
Each request costs one round trip: `admit` checks revocation and counts in one call.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from .settings import ConfigError


class StoreUnavailable(Exception):
    """The shared store cannot be reached: the request is answered 503, never unlimited."""


class SqliteStore:
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, at REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, entry TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS journal_owner ON journal (owner, id);
    """

    def __init__(self, path: Path, journal_size: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.journal_size = journal_size
        self._local = threading.local()
        self._writes = 0
        with self._db() as db:
            db.executescript(self.SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")
            self._local.db = db
        return db

    def reset_after_fork(self):
        self._local = threading.local()

    def ping(self):
        self._db().execute("SELECT 1")

    def admit(self, jti: str | None, counters) -> tuple[bool, list]:
        """(revoked, [count after this hit for each (key, period)])."""
        db = self._db()
        now = time.time()
        revoked = bool(jti) and db.execute("SELECT 1 FROM revoked WHERE jti = ?", (jti,)).fetchone() is not None
        counts = []
        for key, period in counters:
            window = int(now // period)
            row = db.execute(
                "INSERT INTO counters (key, count, expires) VALUES (?, 1, ?) "
                "ON CONFLICT(key) DO UPDATE SET count = count + 1 RETURNING count",
                (f"{key}:{window}", (window + 1) * period)).fetchone()
            counts.append(row[0])
        self._writes += 1
        if self._writes % 2000 == 0:
            db.execute("DELETE FROM counters WHERE expires < ?", (now - 60,))
        return revoked, counts

    def revoke(self, jti: str):
        self._db().execute("INSERT OR IGNORE INTO revoked (jti, at) VALUES (?, ?)", (jti, time.time()))

    def record(self, owner: str, entry: dict):
        db = self._db()
        cursor = db.execute("INSERT INTO journal (owner, entry) VALUES (?, ?)", (owner, json.dumps(entry)))
        if cursor.lastrowid % 50 == 0:  # trimming every insert would double the cost of a call
            db.execute("DELETE FROM journal WHERE owner = ? AND id <= ("
                       "SELECT id FROM journal WHERE owner = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                       (owner, owner, self.journal_size))

    def journal(self, owner: str) -> list:
        rows = self._db().execute("SELECT entry FROM journal WHERE owner = ? ORDER BY id DESC LIMIT ?",
                                  (owner, self.journal_size)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def forget(self, owner: str):
        self._db().execute("DELETE FROM journal WHERE owner = ?", (owner,))


class RedisStore:
    def __init__(self, url: str, journal_size: int):
        import redis
        self.journal_size = journal_size
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0,
                                           retry_on_timeout=False, health_check_interval=0)
        self._errors = (redis.ConnectionError, redis.TimeoutError, OSError)
        try:
            self._redis.ping()
        except self._errors as exc:
            raise ConfigError(f"Redis at {url} is unreachable: {exc}") from None

    def reset_after_fork(self):
        self._redis.connection_pool.reset()

    def _run(self, build):
        try:
            pipe = self._redis.pipeline(transaction=False)
            build(pipe)
            return pipe.execute()
        except self._errors as exc:
            raise StoreUnavailable(str(exc)) from None

    def ping(self):
        self._run(lambda p: p.ping())

    def admit(self, jti, counters):
        now = time.time()

        def build(pipe):
            pipe.sismember("sandbox:revoked", jti or "-")
            for key, period in counters:
                window = int(now // period)
                name = f"sandbox:rl:{key}:{window}"
                pipe.incr(name)
                pipe.expire(name, period + 1, nx=True)
        results = self._run(build)
        return bool(results[0]), [results[1 + 2 * i] for i in range(len(counters))]

    def revoke(self, jti):
        self._run(lambda p: p.sadd("sandbox:revoked", jti))

    def record(self, owner, entry):
        name = f"sandbox:journal:{owner}"
        self._run(lambda p: (p.lpush(name, json.dumps(entry)), p.ltrim(name, 0, self.journal_size - 1)))

    def journal(self, owner):
        rows = self._run(lambda p: p.lrange(f"sandbox:journal:{owner}", 0, self.journal_size - 1))[0]
        return [json.loads(r) for r in rows]

    def forget(self, owner):
        self._run(lambda p: p.delete(f"sandbox:journal:{owner}"))


def open_store(settings):
    if settings.redis_url:
        return RedisStore(settings.redis_url, settings.journal_size)
    try:
        return SqliteStore(settings.data_dir / "store.sqlite3", settings.journal_size)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the sandbox store in {settings.data_dir}: {exc}") from None
