"""The embedded store: the journal and the revoked tokens in a SQLite file in the data folder,
the rate-limit counters in shared memory beside it (shared.py).

An API call counts in shared memory, then hands its journal row to its process's journal
writer, a thread that writes whatever rows have queued in one transaction: the call does not
wait for SQLite, and under load one commit (and one round of the lock between workers) serves
dozens of calls. A read of the journal first waits until every process has written the rows it
had queued (each writer publishes its progress in shared memory), so a call is in the journal,
whichever worker is asked, as soon as it has been answered. Rows are numbered when their call
is counted (shared memory, under the counting lock) and listed by that number, so the journal
keeps the order of the calls even when two workers' writers commit out of turn.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from .base import Health, Hit, StoreUnavailable, after_fork
from .shared import SharedState, _alive

logger = logging.getLogger("sandbox.store")


class SqliteStore:
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, at REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, entry TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS journal_owner ON journal (owner, id);
    """
    # How long a write waits for another process's transaction before the store is reported
    # down. Writes last microseconds, so reaching this means the file is stuck (e.g. a dead NFS mount).
    BUSY_TIMEOUT = 5.0
    CACHE_KIB = 512  # SQLite page cache per connection: reads touch one owner's index range

    def __init__(self, path: Path, journal_size: int, clock=time.time):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.journal_size = journal_size
        self.clock = clock
        self.health = Health(f"the sandbox store {self.path}")
        self._local = threading.local()
        self._pid = os.getpid()
        self._revoked: frozenset = frozenset()
        self._revoked_generation = None  # of the shared header; None: never loaded
        # WAL lets readers and the single writer proceed together; the mode is kept in the
        # file, so it is set once here. This connection is closed before gunicorn forks:
        # a SQLite connection must not cross a fork.
        setup = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT, isolation_level=None)
        try:
            setup.execute("PRAGMA journal_mode=WAL")
            setup.executescript(self.SCHEMA)
            last_row = setup.execute("SELECT COALESCE(MAX(id), 0) FROM journal").fetchone()[0]
        finally:
            setup.close()
        self._shared = SharedState(self.path.with_suffix(".counters"))
        self._shared.raise_numbers(last_row)
        self._writer = JournalWriter(self)
        after_fork(self, SqliteStore.reset_after_fork)  # before any thread of the child runs

    def connect(self) -> sqlite3.Connection:
        # `timeout` is SQLite's busy timeout: a statement that meets another process's
        # transaction waits for it instead of failing "database is locked".
        db = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=OFF")  # the journal is not worth an fsync
        db.execute(f"PRAGMA cache_size=-{self.CACHE_KIB}")
        return db

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (reads, revocations)."""
        if self._pid != os.getpid():  # a forked worker: never reuse the parent's connections
            self.reset_after_fork()
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self.connect()
        return db

    def reset_after_fork(self):
        """Drop the connections (a SQLite connection must not cross a fork) and the parent's
        journal writer."""
        self._pid = os.getpid()
        self._local = threading.local()
        self._shared.reset_after_fork()
        self._writer = JournalWriter(self)

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

    # --- counting ----------------------------------------------------------------------------
    def admit(self, jti: str | None, counters) -> tuple[bool, list[Hit]]:
        """(revoked, [Hit for each (key, period)]); each count is one atomic increment."""
        return self._count(jti, counters)[:2]

    def _count(self, jti, counters, numbered=False) -> tuple[bool, list[Hit], int | None]:
        now = self.clock()
        try:
            if numbered:
                counts, number = self._shared.count(counters, now, numbered=True)
            else:
                counts, number = self._shared.count(counters, now) if counters else [], None
        except OSError as exc:
            raise StoreUnavailable(f"{self._shared.path}: {exc}") from None
        hits = [Hit(count, (int(now // period) + 1) * period, now) for count, (_, period) in zip(counts, counters)]
        return bool(jti) and jti in self._revoked_set(), hits, number

    def _revoked_set(self) -> frozenset:
        """This process's copy of the revoked jtis, reloaded when a revocation bumped the generation."""
        generation = self._shared.generation()
        if generation != self._revoked_generation:
            rows = self._run(lambda db: db.execute("SELECT jti FROM revoked").fetchall())
            self._revoked = frozenset(r[0] for r in rows)
            self._revoked_generation = generation
        return self._revoked

    def settle(self, jti: str | None, counters, owner: str, decide) -> tuple[bool, list[Hit]]:
        """An API call's whole store work: the counts and the revocation check, then
        `decide(revoked, hits)` -> the call's journal entry (None: nothing to record), queued
        for this process's journal writer."""
        revoked, hits, number = self._count(jti, counters, numbered=True)
        entry = decide(revoked, hits)
        if entry is not None:
            self._queue(number, owner, entry)
        return revoked, hits

    def revoke(self, jti: str):
        self._run(lambda db: db.execute("INSERT OR IGNORE INTO revoked (jti, at) VALUES (?, ?)", (jti, time.time())))
        self._shared.bump_generation()  # every worker reloads the revoked set on its next call

    # --- journal -----------------------------------------------------------------------------
    def record(self, owner: str, entry: dict):
        self._queue(self._shared.number(), owner, entry)

    def _queue(self, number: int, owner: str, entry: dict):
        if self._writer.health.down:  # a call that could not be journaled is not answered
            raise StoreUnavailable("the store is down, the journal cannot be written")
        self._writer.put(number, owner, json.dumps(entry))

    def journal(self, owner: str) -> list:
        self.wait_for_writers()
        rows = self._run(lambda db: db.execute(
            "SELECT entry FROM journal WHERE owner = ? ORDER BY id DESC LIMIT ?",
            (owner, self.journal_size)).fetchall())
        return [json.loads(r[0]) for r in rows]

    def forget(self, owner: str):
        self.wait_for_writers()
        self._run(lambda db: db.execute("DELETE FROM journal WHERE owner = ?", (owner,)))

    def wait_for_writers(self, timeout: float | None = None):
        """Until every process has written the journal rows it had queued when this was called."""
        deadline = time.monotonic() + (self.BUSY_TIMEOUT if timeout is None else timeout)
        for index, pid, queued in self._shared.writers():
            pause = 0.0002
            while self._shared.written(index) < queued:
                if pid != os.getpid() and not _alive(pid):
                    logger.warning("a worker (pid %d) ended with journal rows unwritten", pid)
                    self._shared.abandon_writer(index, pid)
                    break
                if time.monotonic() > deadline:
                    raise StoreUnavailable(f"the journal writer of pid {pid} is "
                                           f"{queued - self._shared.written(index)} rows behind")
                time.sleep(pause)
                pause = min(pause * 2, 0.005)

    def flush(self, timeout: float = BUSY_TIMEOUT):
        """Write what this process queued (a worker that stops gracefully loses no row)."""
        self._writer.flush(timeout)


class JournalWriter:
    """The journal writer thread of one process, started on its first row."""
    RETRY = 0.1  # seconds between attempts while the file cannot be written
    GATHER = 0.002  # after a batch, let the next one gather: fewer, larger transactions under load

    def __init__(self, store: SqliteStore):
        self.store = store
        self.health = Health(f"the sandbox store {store.path} (journal writer)")
        self._pid = os.getpid()
        lock = threading.Lock()
        self._wake = threading.Condition(lock)   # the writer waits on it for rows
        self._done = threading.Condition(lock)   # flush() waits on it for a batch written
        self._rows: list[tuple[int, str, str]] = []  # (row number, owner, entry JSON)
        self._queued = self._written = 0
        self._slot = None
        self._thread = None
        self._idle = False
        self._writes: dict[str, int] = {}  # owner -> rows written by this process, to trim

    def put(self, number: int, owner: str, entry_json: str):
        with self._wake:
            if self._thread is None:
                self._start()
            self._rows.append((number, owner, entry_json))
            self._queued += 1
            self.store._shared.set_queued(self._slot, self._queued)
            if self._idle:  # wake the writer once per batch, not once per row
                self._idle = False
                self._wake.notify()

    def _start(self):
        self._slot = self.store._shared.claim_writer()
        self._thread = threading.Thread(target=self._loop, name="journal-writer", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def flush(self, timeout: float = 5.0):
        if self._pid != os.getpid():  # the parent's writer, copied by a fork: not ours to wait for
            return
        deadline = time.monotonic() + timeout
        with self._done:
            while self._written < self._queued and time.monotonic() < deadline:
                self._done.wait(0.05)

    def _loop(self):
        db = None
        while True:
            with self._wake:
                while not self._rows:
                    self._idle = True
                    self._wake.wait()
                self._idle = False
                rows, upto, self._rows = self._rows, self._queued, []
            try:
                db = db or self.store.connect()
                self._write(db, rows)
            except Exception as exc:  # sqlite3.Error mostly; a writer that died would stall every read
                self.health.failed(exc)
                db = None
                with self._wake:
                    self._rows[:0] = rows  # queued again, ahead of the newer ones: retried, never dropped
                time.sleep(self.RETRY)
                continue
            self.health.ok()
            with self._done:
                self._written = upto
                self.store._shared.set_written(self._slot, upto)
                self._done.notify_all()
            time.sleep(self.GATHER)

    def _write(self, db, rows):
        """The rows, in order, in one transaction; then trim the owners that grew past the size."""
        db.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(rows), 200):  # 600 parameters a statement, well under SQLite's cap
                chunk = rows[start:start + 200]
                db.execute("INSERT INTO journal (id, owner, entry) VALUES " + ", ".join(["(?, ?, ?)"] * len(chunk)),
                           [value for row in chunk for value in row])
            self._trim(db, rows)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _trim(self, db, rows):
        # Trimming on every insert would double the cost of a row: trim an owner every 50 of
        # its rows (a rule on the global row id never trims a token whose calls alternate with another's).
        if len(self._writes) > 10_000:
            self._writes.clear()
        for _, owner, _ in rows:
            count = self._writes[owner] = self._writes.get(owner, 0) + 1
            if count % 50 == 0:
                db.execute("DELETE FROM journal WHERE owner = ? AND id <= ("
                           "SELECT id FROM journal WHERE owner = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                           (owner, owner, self.store.journal_size))
