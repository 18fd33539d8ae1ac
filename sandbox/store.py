"""Shared state: rate-limit counters, revoked tokens, the request journal.

Two backends with one interface. The embedded default lives in the data folder: a SQLite
file (journal, revoked tokens) and a memory-mapped counter file beside it; no service to run,
and every gunicorn worker of the instance shares both, so counts stay exact across processes.
Redis mode shares the same state across processes and hosts.
An API call goes through `settle`: revocation check, counts, then its journal entry with the
call's final status (Redis: one script round trip, then the journal; SQLite: shared memory,
then one journal insert, committed together with the other threads' calls).

A store that cannot answer raises StoreUnavailable, which the routes answer 503: the sandbox
never serves a call it could not count (no "fail open").
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import mmap
import os
import sqlite3
import struct
import threading
import time
import weakref
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


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class _JournalRow(NamedTuple):
    owner: str
    entry: str  # JSON


class _Item:
    __slots__ = ("work", "wake", "lead", "result", "error")

    def __init__(self, work):
        self.work = work
        self.wake = None  # the waiting thread's lock, held: released when its work is done
        self.lead = False
        self.result = self.error = None

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


class _Combiner:
    """Group commit for the threads of one process: the first thread to arrive runs, in one
    transaction, its own work and that of every thread queued meanwhile, then hands over to the
    first thread that queued during its transaction. Under load one commit (and one round of
    the lock between workers) serves several calls; alone, a call runs at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queue: list[_Item] = []
        self._busy = False
        self._local = threading.local()

    def _wake_lock(self) -> threading.Lock:
        wake = getattr(self._local, "wake", None)
        if wake is None:
            wake = self._local.wake = threading.Lock()
            wake.acquire()  # held: acquiring it again waits until another thread releases it
        return wake

    def run(self, execute, work):
        item = _Item(work)
        with self._lock:
            self._queue.append(item)
            lead = not self._busy
            if not lead:
                item.wake = self._wake_lock()
            self._busy = True
        if not lead:
            item.wake.acquire()  # released by the thread that ran our work, or made us lead
            if not item.lead:
                return item.outcome()
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            execute(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake.release()
                else:
                    self._busy = False
            for other in batch:
                if other is not item:
                    other.wake.release()
        return item.outcome()


class _SharedCounters:
    """The embedded store's rate-limit counters: a hash table in a memory-mapped file beside the
    SQLite file, so every worker (and every instance on this data folder) counts in one place
    for a few microseconds, where a SQLite upsert costs tens.

    One lock guards it: a thread lock within the process, then flock(2) on the file between
    processes (the kernel hands it over at once, and frees it if its holder dies). Nothing but
    memory is touched under it. The header also holds the revocation generation, which a
    revocation bumps so that every worker reloads its copy of the revoked set.

    Layout: 64-byte header (magic, slot count, revocation generation), then slots of
    (key hash u64, expires i64, count u64). A key names its window (`t:<jti>:<window>`), so a
    slot is never reset, only reused once its window is 60 s past.
    """
    MAGIC = b"PSBXCNT1"
    SLOTS = 1 << 17       # 3 MiB; at most a few live keys per active token
    SLOT = struct.Struct("<QqQ")
    HEADER = 64
    GENERATION = 16       # offset of the revocation generation (u64)
    MAX_PROBE = 256
    GRACE = 60

    def __init__(self, path: Path):
        self.path = path
        self._pid = None
        self._thread_lock = threading.Lock()
        self._reopen_lock = threading.Lock()
        self._open()
        # A forked child (a gunicorn worker) reopens the file at once, while it has one thread:
        # flock(2) locks belong to the open file, which parent and child would otherwise share.
        _after_fork(self, _SharedCounters.reset_after_fork)

    def _open(self):
        self._pid = os.getpid()
        self._thread_lock = threading.Lock()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = self.HEADER + self.SLOTS * self.SLOT.size
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size != size or os.pread(fd, 12, 0) != self.MAGIC + struct.pack("<I", self.SLOTS):
                    os.ftruncate(fd, 0)  # new, or another layout: start from zeros
                    os.ftruncate(fd, size)
                    os.pwrite(fd, self.MAGIC + struct.pack("<I", self.SLOTS), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def reset_after_fork(self):
        """A forked process must lock through its own open file: flock locks belong to it."""
        with self._reopen_lock:
            if self._pid != os.getpid():
                old_fd, old_map = self._fd, self._map
                self._open()
                old_map.close()
                os.close(old_fd)

    def _locked(self):
        if self._pid != os.getpid():
            self.reset_after_fork()
        return _FileLock(self._thread_lock, self._fd)

    def generation(self) -> int:
        return struct.unpack_from("<Q", self._map, self.GENERATION)[0]

    def bump_generation(self):
        with self._locked():
            struct.pack_into("<Q", self._map, self.GENERATION, self.generation() + 1)

    def count(self, keys, now: float) -> list[int]:
        """Add one to each (key, expires) and return the new counts, all under one lock."""
        out = []
        with self._locked():
            for key, expires in keys:
                out.append(self._add(key, expires, now))
        return out

    def _add(self, key: str, expires: int, now: float) -> int:
        wanted = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1
        mask, mm, slot, base = self.SLOTS - 1, self._map, self.SLOT, self.HEADER
        index, free = wanted & mask, None
        stale = now - self.GRACE
        for _ in range(self.MAX_PROBE):
            offset = base + index * slot.size
            held, until, count = slot.unpack_from(mm, offset)
            if held == wanted:
                slot.pack_into(mm, offset, held, until, count + 1)
                return count + 1
            if held == 0:  # the end of the chain: the key is not there
                break
            if free is None and until < stale:
                free = offset
            index = (index + 1) & mask
        else:
            if free is None:
                raise StoreUnavailable(f"{self.path}: no free rate-limit counter (too many live keys)")
        slot.pack_into(mm, offset if free is None else free, wanted, expires, 1)
        return 1


def _after_fork(obj, method):
    """Call method(obj) in every forked child while obj lives (os.register_at_fork, weakly)."""
    ref = weakref.ref(obj)

    def in_child():
        target = ref()
        if target is not None:
            method(target)
    os.register_at_fork(after_in_child=in_child)


class _FileLock:
    __slots__ = ("thread_lock", "fd")

    def __init__(self, thread_lock, fd):
        self.thread_lock, self.fd = thread_lock, fd

    def __enter__(self):
        self.thread_lock.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.thread_lock.release()
            raise

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.thread_lock.release()


class SqliteStore:
    """The embedded store: the journal and the revoked tokens in a SQLite file, the rate-limit
    counters in a shared memory-mapped file beside it (_SharedCounters)."""
    SCHEMA = """
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
        self._combiner = _Combiner()
        self._writer_db = None
        self._journal_writes: dict[str, int] = {}  # owner -> journal writes by this process
        self._revoked: frozenset = frozenset()
        self._revoked_generation = None  # of the shared counters' header; None: never loaded
        # WAL lets readers and the single writer proceed together; the mode is kept in the
        # file, so it is set once here. This connection is closed before gunicorn forks:
        # a SQLite connection must not cross a fork.
        setup = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT, isolation_level=None)
        try:
            setup.execute("PRAGMA journal_mode=WAL")
            setup.executescript(self.SCHEMA)
        finally:
            setup.close()
        self._counters = _SharedCounters(self.path.with_suffix(".counters"))
        _after_fork(self, SqliteStore.reset_after_fork)  # before any thread of the child runs

    def _db(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # a forked worker: never reuse the parent's connections
            self.reset_after_fork()
        db = getattr(self._local, "db", None)
        if db is None:
            # One connection per thread for reads; `timeout` is SQLite's busy timeout, so a read
            # that meets a writer waits instead of failing "database is locked". Writes go
            # through _transaction, on the process's one writer connection.
            db = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA synchronous=OFF")  # the journal is not worth an fsync
            self._local.db = db
        return db

    def _writer(self) -> sqlite3.Connection:
        """The process's connection for write transactions, used by one thread at a time (the
        _Combiner's); no busy handler: _begin waits for other processes its own way."""
        if self._pid != os.getpid():
            self.reset_after_fork()
        db = self._writer_db
        if db is None:
            db = self._writer_db = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                                   check_same_thread=False)
            db.execute("PRAGMA synchronous=OFF")
        return db

    def reset_after_fork(self):
        """Drop the connections (a SQLite connection must not cross a fork); in a forked child,
        also the parent's locks."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._combiner = _Combiner()
        self._local = threading.local()
        self._writer_db = None
        self._counters.reset_after_fork()

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

    def _count(self, jti, counters) -> tuple[bool, list[Hit]]:
        now = self.clock()
        keys = []
        for key, period in counters:
            window = int(now // period)
            keys.append((f"{key}:{window}", (window + 1) * period))
        try:
            counts = self._counters.count(keys, now) if keys else []
        except OSError as exc:
            raise StoreUnavailable(f"{self._counters.path}: {exc}") from None
        hits = [Hit(count, reset, now) for count, (_, reset) in zip(counts, keys)]
        return bool(jti) and jti in self._revoked_set(), hits

    def _revoked_set(self) -> frozenset:
        """This process's copy of the revoked jtis, reloaded when a revocation bumped the generation."""
        generation = self._counters.generation()
        if generation != self._revoked_generation:
            rows = self._run(lambda db: db.execute("SELECT jti FROM revoked").fetchall())
            self._revoked = frozenset(r[0] for r in rows)
            self._revoked_generation = generation
        return self._revoked

    def _append(self, db, rows: list):
        """Journal rows [(owner, entry JSON)], in order, with one statement."""
        for start in range(0, len(rows), 200):  # 400 parameters a statement, well under SQLite's cap
            chunk = rows[start:start + 200]
            db.execute("INSERT INTO journal (owner, entry) VALUES " + ", ".join(["(?, ?)"] * len(chunk)),
                       [value for row in chunk for value in row])
        # Trimming every insert would double the cost of a call: trim every 50 writes of this
        # owner (a rule on the global row id never trims a token whose calls alternate with another's).
        if len(self._journal_writes) > 10_000:
            self._journal_writes.clear()
        for owner, _ in rows:
            count = self._journal_writes[owner] = self._journal_writes.get(owner, 0) + 1
            if count % 50 == 0:
                db.execute("DELETE FROM journal WHERE owner = ? AND id <= ("
                           "SELECT id FROM journal WHERE owner = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                           (owner, owner, self.journal_size))

    def _transaction(self, db, work):
        """`work(db)` (or a _JournalRow to insert) in a write transaction: the calls of this
        worker's threads that arrive together share one (group commit), so a call waits for no
        SQLite busy handler."""
        return self._combiner.run(self._execute, work)

    def _execute(self, batch):
        """Run a batch of `_Item`s in one transaction, on the process's writer connection."""
        try:
            db = self._writer()
            self._begin(db)
            try:
                rows = []
                for item in batch:
                    if isinstance(item.work, _JournalRow):  # gathered: one INSERT for the batch
                        rows.append((item.work.owner, item.work.entry))
                        continue
                    if rows:
                        self._append(db, rows)
                        rows = []
                    try:
                        item.result = item.work(db)
                    except sqlite3.Error:
                        raise
                    except Exception as exc:  # this call's own failure, not the batch's
                        item.error = exc
                if rows:
                    self._append(db, rows)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            for item in batch:
                item.result, item.error = None, exc

    def _begin(self, db):
        """BEGIN IMMEDIATE, waiting for another process's transaction in short steps: SQLite's
        own busy handler sleeps 1 ms, then longer and longer, for a lock held microseconds."""
        deadline = None
        pause = 0.00005
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.BUSY_TIMEOUT
                if now > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.0005)

    def admit(self, jti: str | None, counters) -> tuple[bool, list[Hit]]:
        """(revoked, [Hit for each (key, period)]); each count is one atomic increment."""
        return self._count(jti, counters)

    def settle(self, jti: str | None, counters, owner: str, decide) -> tuple[bool, list[Hit]]:
        """An API call's whole store work: the counts and the revocation check, then
        `decide(revoked, hits)` -> the call's journal entry (None: nothing to record), written
        before the call is answered (group commit with the calls of the other threads)."""
        revoked, hits = self._count(jti, counters)
        entry = decide(revoked, hits)
        if entry is not None:
            row = _JournalRow(owner, json.dumps(entry))
            self._run(lambda db: self._transaction(db, row))
        return revoked, hits

    def revoke(self, jti: str):
        self._run(lambda db: self._transaction(db, lambda db: db.execute(
            "INSERT OR IGNORE INTO revoked (jti, at) VALUES (?, ?)", (jti, time.time()))))
        self._counters.bump_generation()  # every worker reloads the revoked set on its next call

    def record(self, owner: str, entry: dict):
        if self.health.down:  # the call's own admit just failed: do not wait out a second timeout
            raise StoreUnavailable("the store is down, the journal is skipped")
        row = _JournalRow(owner, json.dumps(entry))
        self._run(lambda db: self._transaction(db, row))

    def journal(self, owner: str) -> list:
        rows = self._run(lambda db: db.execute(
            "SELECT entry FROM journal WHERE owner = ? ORDER BY id DESC LIMIT ?",
            (owner, self.journal_size)).fetchall())
        return [json.loads(r[0]) for r in rows]

    def forget(self, owner: str):
        self._run(lambda db: self._transaction(db, lambda db: db.execute(
            "DELETE FROM journal WHERE owner = ?", (owner,))))


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


def open_store(settings):
    if settings.redis_url:
        return RedisStore(settings.redis_url, settings.journal_size)
    try:
        return SqliteStore(settings.data_dir / "store.sqlite3", settings.journal_size)
    except (sqlite3.Error, OSError) as exc:
        raise ConfigError(f"cannot open the sandbox store in {settings.data_dir}: {exc}") from None
