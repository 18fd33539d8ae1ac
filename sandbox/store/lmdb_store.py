"""The embedded store: one LMDB environment in the store folder, shared by every worker.

LMDB serialises writers across processes itself and readers never wait, so every rule that
spans processes (exact counts, journal order, revocations seen by all) is one transaction.

Tables (LMDB named databases):
- counters: (period, window, key) -> count. Windows are fixed and aligned on the epoch; the
  keys of a period's older windows are deleted by the first call of a new window, so the table
  holds at most two windows' callers however long the sandbox runs;
- revoked: jti -> revocation time;
- journal: (owner, row number) -> entry JSON, the newest `journal_size` rows of each owner;
- meta: the last row number given, each owner's row count, and the runtime personas' version;
- personas: persona id -> expiry (8-byte float, +inf: none) + the persona's JSON (sandbox.population.runtime).
"""
from __future__ import annotations

import json
import os
import struct
import threading
import time
from pathlib import Path

import lmdb

from .calls import Call, Health, Hit, PersonasMoved, StoreUnavailable, refused_entry

# LMDB allows one open environment per file and process (its locks belong to the process), and
# none may cross a fork: each process opens an environment once, whichever stores use it, and
# closes it before it forks (a gunicorn master before each worker); the child opens its own.
_ENVIRONMENTS: dict[str, tuple] = {}  # path -> (environment, its tables)
TABLES = (b"counters", b"revoked", b"journal", b"meta", b"personas")
_ENVIRONMENTS_LOCK = threading.Lock()


def _close_before_fork():
    for env, _ in _ENVIRONMENTS.values():
        env.close()
    _ENVIRONMENTS.clear()


os.register_at_fork(before=_close_before_fork)

U64 = struct.Struct(">Q")
WINDOW = struct.Struct(">IQ")  # period, window: big-endian, so a period's windows sort in time order
SEQUENCE = b"seq"
PERSONAS_VERSION = b"personas-version"
EXPIRY = struct.Struct(">d")


class LmdbStore:
    # The map is a sparse file of this size (writemap sizes the file to the map): an upper bound,
    # not a reservation. A journal of 1,000 calls for each of a few thousand tokens fits.
    MAP_SIZE = 1 << 30

    def __init__(self, path: Path, journal_size: int, clock=time.time):
        self.path = Path(path)
        self.journal_size = journal_size
        self.clock = clock
        self.health = Health(f"the sandbox store {self.path}")
        self._key = str(self.path.resolve())
        self._env = None
        self._open()  # at once: a folder that cannot be written stops the start

    def _open(self):
        with _ENVIRONMENTS_LOCK:
            opened = _ENVIRONMENTS.get(self._key)
            if opened is None:
                # the journal is its callers' business only: the folders 0700, the files 0600
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.path.mkdir(mode=0o700, exist_ok=True)
                try:
                    # sync=False: the journal and counters are not worth an fsync per call; a
                    # crash loses the last rows, never the file's consistency. writemap: a commit
                    # writes into the map instead of copying each page out with pwrite (bench/README.md).
                    env = lmdb.open(str(self.path), map_size=self.MAP_SIZE, max_dbs=8, sync=False,
                                    metasync=False, readahead=False, max_readers=512, writemap=True, mode=0o600)
                    # The tables are opened once per environment, in one explicit transaction:
                    # open_db without one starts a write transaction of its own, which must never
                    # wait on the writer lock while another thread of ours holds it.
                    with env.begin(write=True) as txn:
                        tables = {name: env.open_db(name, txn=txn) for name in TABLES}
                except lmdb.Error as exc:
                    raise StoreUnavailable(str(exc)) from None
                opened = _ENVIRONMENTS[self._key] = (env, tables)
        self._env, tables = opened
        self._counters, self._revoked, self._journal, self._meta, self._personas = (tables[n] for n in TABLES)

    def _environment(self):
        opened = _ENVIRONMENTS.get(self._key)
        if opened is None or opened[0] is not self._env:  # closed by a fork since
            self._open()
        return self._env

    def _run(self, work, write=True):
        try:
            with self._environment().begin(write=write) as txn:
                result = work(txn)
        except lmdb.Error as exc:
            self.health.failed(exc)
            raise StoreUnavailable(str(exc)) from None
        self.health.ok()
        return result

    # --- a call ------------------------------------------------------------------------------
    def count(self, call: Call) -> tuple[bool, list[Hit]]:
        return self._run(lambda txn: self._count(txn, call, self.clock()))

    def _count(self, txn, call: Call, now: float):
        # `now` is read inside the write transaction: calls are counted in clock order, so a
        # call never lands in a window whose keys a later window has already dropped.
        if call.personas_version is not None:
            version = self._personas_version(txn)
            if version != call.personas_version:
                raise PersonasMoved(version)
        revoked = bool(call.jti) and txn.get(call.jti.encode(), db=self._revoked) is not None
        hits = [Hit(self._add(txn, key, period, int(now // period)), (int(now // period) + 1) * period, now)
                for key, period in call.counters]
        if call.owner is not None:
            status = call.refused_status(revoked, hits)
            entry = call.entry if status is None else refused_entry(call.entry, status)
            self._record(txn, call.owner, entry)
        return revoked, hits

    def _add(self, txn, key: str, period: int, window: int) -> int:
        prefix = WINDOW.pack(period, window)
        full = prefix + key.encode()
        held = txn.get(full, db=self._counters)
        if held is None:
            self._drop_windows_before(txn, period, window)
            count = 1
        else:
            count = U64.unpack(held)[0] + 1
        txn.put(full, U64.pack(count), db=self._counters)
        return count

    def _drop_windows_before(self, txn, period: int, window: int):
        """Delete the period's keys of windows before `window` (a new key: perhaps a new window)."""
        cursor = txn.cursor(db=self._counters)
        first = WINDOW.pack(period, 0)
        end = WINDOW.pack(period, window)
        if not cursor.set_range(first):
            return
        while cursor.key() < end and cursor.key()[:4] == first[:4]:
            if not cursor.delete():
                break

    # --- revocations -------------------------------------------------------------------------
    def revoke(self, jti: str):
        self._run(lambda txn: txn.put(jti.encode(), str(time.time()).encode(), db=self._revoked))

    def is_revoked(self, jti: str) -> bool:
        return self._run(lambda txn: txn.get(jti.encode(), db=self._revoked) is not None, write=False)

    # --- journal -----------------------------------------------------------------------------
    def _record(self, txn, owner: str, entry: dict):
        number = U64.unpack(txn.get(SEQUENCE, U64.pack(0), db=self._meta))[0] + 1
        txn.put(SEQUENCE, U64.pack(number), db=self._meta)
        prefix = owner.encode() + b"\0"
        txn.put(prefix + U64.pack(number), json.dumps({"id": number, **entry}).encode(), db=self._journal)
        held_key = b"n:" + owner.encode()
        held = U64.unpack(txn.get(held_key, U64.pack(0), db=self._meta))[0] + 1
        if held > self.journal_size:  # drop the owner's oldest row
            cursor = txn.cursor(db=self._journal)
            if cursor.set_range(prefix) and cursor.key().startswith(prefix):
                cursor.delete()
            held -= 1
        txn.put(held_key, U64.pack(held), db=self._meta)

    def journal(self, owner: str) -> list:
        """The owner's entries, newest first."""
        prefix = owner.encode() + b"\0"

        def read(txn):
            cursor = txn.cursor(db=self._journal)
            found = cursor.set_range(owner.encode() + b"\1")  # just past the owner's rows
            found = cursor.prev() if found else cursor.last()
            rows = []
            while found and cursor.key().startswith(prefix) and len(rows) < self.journal_size:
                rows.append(json.loads(cursor.value()))
                found = cursor.prev()
            return rows
        return self._run(read, write=False)

    def forget(self, owner: str):
        prefix = owner.encode() + b"\0"

        def delete(txn):
            cursor = txn.cursor(db=self._journal)
            found = cursor.set_range(prefix)
            while found and cursor.key().startswith(prefix):
                found = cursor.delete()
            txn.delete(b"n:" + owner.encode(), db=self._meta)
        self._run(delete)

    # --- runtime personas (sandbox.population.runtime) ----------------------------------------------------
    def put_persona(self, persona_id: str, text: str, expires_at: float | None):
        def put(txn):
            self._purge_personas(txn, self.clock())
            expiry = EXPIRY.pack(float("inf") if expires_at is None else float(expires_at))
            txn.put(persona_id.encode(), expiry + text.encode(), db=self._personas)
            self._bump_personas(txn)
        self._run(put)

    def personas(self) -> list:
        """The JSON of every persona not expired, in no particular order."""
        def read(txn):
            now = self.clock()
            return [value[EXPIRY.size:].decode() for _, value in txn.cursor(db=self._personas)
                    if EXPIRY.unpack_from(value)[0] > now]
        return self._run(read, write=False)

    def delete_persona(self, persona_id: str) -> bool:
        def delete(txn):
            self._purge_personas(txn, self.clock())
            found = txn.delete(persona_id.encode(), db=self._personas)
            self._bump_personas(txn)
            return found
        return self._run(delete)

    def personas_version(self) -> int:
        """Bumped by every change: a worker rebuilds its index of the personas when it moves."""
        return self._run(self._personas_version, write=False)

    def _personas_version(self, txn) -> int:
        held = txn.get(PERSONAS_VERSION, db=self._meta)
        return U64.unpack(held)[0] if held else 0

    def _bump_personas(self, txn):
        held = txn.get(PERSONAS_VERSION, db=self._meta)
        txn.put(PERSONAS_VERSION, U64.pack((U64.unpack(held)[0] if held else 0) + 1), db=self._meta)

    def _purge_personas(self, txn, now: float):
        expired = [key for key, value in txn.cursor(db=self._personas) if EXPIRY.unpack_from(value)[0] <= now]
        for key in expired:
            txn.delete(key, db=self._personas)

    def ping(self):
        self._run(lambda txn: txn.stat(self._counters), write=False)
