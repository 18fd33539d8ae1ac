"""The embedded store: one LMDB environment in the store folder, shared by every worker.

LMDB serialises writers across processes itself and readers never wait, so every rule that
spans processes (exact counts, journal order, revocations seen by all) is one transaction.

Tables (LMDB named databases):
- counters: (period, window, key) -> count. Windows are fixed and aligned on the epoch; the
  keys of a period's older windows are deleted by the first call of a new window, so the table
  holds at most two windows' callers however long the sandbox runs;
- revoked: jti -> expiry of the revoked token; revoked-by-expiry: (expiry, jti), the order in
  which revocations expire, and are dropped first when there are more than the bound;
- journal: (owner, row number) -> entry JSON; order: row number -> owner, the oldest row of all
  first (dropped when the journals pass their byte bound); journal-expiry: (expiry, owner), the
  journals whose token expires first;
- meta: the last row number given, each owner's rows/bytes/expiry, the totals, the runtime
  personas' version;
- runtime-personas, persona-expiry, persona-log, persona-owners: the runtime personas, their
  quotas and their change log (lmdb_personas.py).

Every bound is kept by the write that would pass it, removing what is oldest (or expired) one
row at a time: each row is written once and removed once, so a call's cost stays constant.
"""
from __future__ import annotations

import json
import os
import struct
import threading
import time
from pathlib import Path

import lmdb

from .calls import Bounds, Call, Health, Hit, PersonasMoved, QuotaExceeded, StoreUnavailable, cap_entry, refused_entry
from .lmdb_personas import EXPIRY, INF, PAIR, PERSONAS_TOTAL, PURGE_STEP, U64, PersonaTables

# LMDB allows one open environment per file and process (its locks belong to the process), and
# none may cross a fork: each process opens an environment once, whichever stores use it, and
# closes it before it forks (a gunicorn master before each worker); the child opens its own.
_ENVIRONMENTS: dict[str, tuple] = {}  # path -> (environment, its tables)
TABLES = (b"counters", b"revoked", b"journal", b"meta", b"runtime-personas", b"order", b"journal-expiry",
          b"revoked-by-expiry", b"persona-expiry", b"persona-log", b"persona-owners")
_ENVIRONMENTS_LOCK = threading.Lock()


def _close_before_fork():
    for env, _ in _ENVIRONMENTS.values():
        env.close()
    _ENVIRONMENTS.clear()


os.register_at_fork(before=_close_before_fork)

WINDOW = struct.Struct(">IQ")  # period, window: big-endian, so a period's windows sort in time order
SEQUENCE = b"seq"
OWNER = struct.Struct(">QQd")    # an owner's journal: rows, bytes, its token's expiry (+inf: none)
JOURNAL_BYTES, REVOCATIONS = b"journal-bytes", b"revocations"


class LmdbStore(PersonaTables):
    # The map is a sparse file (writemap sizes the file to the map): an upper bound, not a
    # reservation, sized from the bounds (Bounds.map_size) so that it never fills. Tests set a
    # smaller one to see what a store that cannot write answers.
    MAP_SIZE = None

    def __init__(self, path: Path, bounds: Bounds | int = Bounds(), clock=time.time):
        self.path = Path(path)
        self.bounds = bounds if isinstance(bounds, Bounds) else Bounds(journal_rows=bounds)
        self.journal_size = self.bounds.journal_rows
        self.map_size = self.MAP_SIZE or self.bounds.map_size()
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
                    env = lmdb.open(str(self.path), map_size=self.map_size, max_dbs=16, sync=False,
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
        (self._counters, self._revoked, self._journal, self._meta, self._personas, self._order, self._journal_expiry,
         self._revoked_expiry, self._persona_expiry, self._persona_log, self._persona_owners) = (tables[n] for n in TABLES)

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
        if isinstance(result, QuotaExceeded):  # refused, but what the write purged stays purged
            raise result
        return result

    # --- a call ------------------------------------------------------------------------------
    def count(self, call: Call) -> tuple[bool, list[Hit]]:
        return self._run(lambda txn: self._count(txn, call, self.clock()))

    def _count(self, txn, call: Call, now: float):
        # `now` is read inside the write transaction: calls are counted in clock order, so a
        # call never lands in a window whose keys a later window has already dropped.
        if call.personas_version is not None and self._moved(txn, call.owner, call.personas_version):
            raise PersonasMoved(self._personas_version(txn))
        revoked = bool(call.jti) and txn.get(call.jti.encode(), db=self._revoked) is not None
        hits = [Hit(self._add(txn, key, period, int(now // period)), (int(now // period) + 1) * period, now)
                for key, period in call.counters]
        if call.owner is not None:
            status = call.refused_status(revoked, hits)
            entry = call.entry if status is None else refused_entry(call.entry, status)
            self._record(txn, call.owner.encode(), entry, call.expires_at)
            self._purge_journals(txn, now)
            self._purge_revocations(txn, now)
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
    def revoke(self, jti: str, expires_at: float | None = None):
        """Kept until the revoked token expires (`expires_at`; None: kept while there is room),
        at most `bounds.revocations` of them: beyond, the one whose token expires first goes."""
        key = jti.encode()
        expiry = EXPIRY.pack(INF if expires_at is None else float(expires_at))

        def put(txn):
            self._purge_revocations(txn, self.clock())
            held = txn.get(key, db=self._revoked)
            count = self._number(txn, REVOCATIONS)
            if held is not None:
                txn.delete(self._expiry_of(held) + key, db=self._revoked_expiry)
            else:
                count += 1
            txn.put(key, expiry, db=self._revoked)
            txn.put(expiry + key, b"", db=self._revoked_expiry)
            cursor = txn.cursor(db=self._revoked_expiry)
            while count > self.bounds.revocations and cursor.first():
                txn.delete(cursor.key()[EXPIRY.size:], db=self._revoked)
                cursor.delete()
                count -= 1
            txn.put(REVOCATIONS, U64.pack(count), db=self._meta)
        self._run(put)

    def is_revoked(self, jti: str) -> bool:
        return self._run(lambda txn: txn.get(jti.encode(), db=self._revoked) is not None, write=False)

    @staticmethod
    def _expiry_of(held: bytes) -> bytes:
        return held if len(held) == EXPIRY.size else EXPIRY.pack(INF)  # a store of an older version

    def _purge_revocations(self, txn, now: float):
        cursor = txn.cursor(db=self._revoked_expiry)
        removed = 0
        while removed < PURGE_STEP and cursor.first() and EXPIRY.unpack_from(cursor.key())[0] <= now:
            txn.delete(cursor.key()[EXPIRY.size:], db=self._revoked)
            cursor.delete()
            removed += 1
        if removed:
            txn.put(REVOCATIONS, U64.pack(max(0, self._number(txn, REVOCATIONS) - removed)), db=self._meta)

    # --- journal -----------------------------------------------------------------------------
    def _number(self, txn, key: bytes) -> int:
        held = txn.get(key, db=self._meta)
        return U64.unpack(held)[0] if held else 0

    def _owner(self, txn, owner: bytes) -> tuple[int, int, float]:
        held = txn.get(b"n:" + owner, db=self._meta)
        return OWNER.unpack(held) if held is not None and len(held) == OWNER.size else (0, 0, INF)

    def _set_owner(self, txn, owner: bytes, rows: int, size: int, expiry: float):
        if rows > 0:
            txn.put(b"n:" + owner, OWNER.pack(rows, size, expiry), db=self._meta)
            return
        txn.delete(b"n:" + owner, db=self._meta)
        if expiry != INF:
            txn.delete(EXPIRY.pack(expiry) + owner, db=self._journal_expiry)

    def _record(self, txn, owner: bytes, entry: dict, expires_at: float | None):
        number = self._number(txn, SEQUENCE) + 1
        txn.put(SEQUENCE, U64.pack(number), db=self._meta)
        _, text = cap_entry({"id": number, **entry}, self.bounds.row_bytes)
        key = owner + b"\0" + U64.pack(number)
        txn.put(key, text, db=self._journal)
        txn.put(U64.pack(number), owner, db=self._order)
        cost = len(key) + len(text) + Bounds.ROW_OVERHEAD
        total = self._number(txn, JOURNAL_BYTES) + cost
        rows, size, expiry = self._owner(txn, owner)
        if rows == 0 and expires_at is not None:  # its first row: the journal expires with the token
            expiry = float(expires_at)
            txn.put(EXPIRY.pack(expiry) + owner, b"", db=self._journal_expiry)
        rows, size = rows + 1, size + cost
        cursor = txn.cursor(db=self._journal)
        while rows > 1 and (rows > self.bounds.journal_rows or size > self.bounds.token_bytes):
            cursor.set_range(owner + b"\0")  # the owner's oldest row
            freed = self._drop(txn, cursor)
            rows, size, total = rows - 1, size - freed, total - freed
        self._set_owner(txn, owner, rows, size, expiry)
        order = txn.cursor(db=self._order)
        while total > self.bounds.journal_bytes and order.first():  # the oldest row of all
            victim = order.value()
            if cursor.set_key(victim + b"\0" + order.key()):
                freed = self._drop(txn, cursor)
                v_rows, v_size, v_expiry = self._owner(txn, victim)
                self._set_owner(txn, victim, v_rows - 1, v_size - freed, v_expiry)
                total -= freed
            else:
                order.delete()  # cannot happen: a row and its place in the order go together
        txn.put(JOURNAL_BYTES, U64.pack(max(0, total)), db=self._meta)

    def _drop(self, txn, cursor) -> int:
        """Delete the journal row under `cursor` and its place in the order: its cost."""
        key, value = cursor.key(), cursor.value()
        txn.delete(key[-U64.size:], db=self._order)
        cursor.delete()
        return len(key) + len(value) + Bounds.ROW_OVERHEAD

    def _purge_journals(self, txn, now: float):
        """A few rows of the journal whose token expired first (none of it can be read any more)."""
        expiring = txn.cursor(db=self._journal_expiry)
        if not expiring.first() or EXPIRY.unpack_from(expiring.key())[0] > now:
            return
        owner = expiring.key()[EXPIRY.size:]
        rows, size, expiry = self._owner(txn, owner)
        cursor, freed = txn.cursor(db=self._journal), 0
        prefix = owner + b"\0"
        for _ in range(PURGE_STEP):
            if not (cursor.set_range(prefix) and cursor.key().startswith(prefix)):
                rows = 0
                break
            freed += self._drop(txn, cursor)
            rows -= 1
        if rows <= 0:
            expiring.delete()
            txn.delete(b"n:" + owner, db=self._meta)
        else:
            txn.put(b"n:" + owner, OWNER.pack(rows, size - freed, expiry), db=self._meta)
        txn.put(JOURNAL_BYTES, U64.pack(max(0, self._number(txn, JOURNAL_BYTES) - freed)), db=self._meta)

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
        key = owner.encode()
        prefix = key + b"\0"

        def delete(txn):
            _, _, expiry = self._owner(txn, key)
            cursor, freed = txn.cursor(db=self._journal), 0
            while cursor.set_range(prefix) and cursor.key().startswith(prefix):
                freed += self._drop(txn, cursor)
            self._set_owner(txn, key, 0, 0, expiry)
            txn.put(JOURNAL_BYTES, U64.pack(max(0, self._number(txn, JOURNAL_BYTES) - freed)), db=self._meta)
        self._run(delete)

    def usage(self, owner: str) -> dict:
        """What `owner` holds, and every caller together (GET /sandbox/usage)."""
        key = owner.encode()

        def read(txn):
            rows, size, _ = self._owner(txn, key)
            held = txn.get(b"p:" + key, db=self._meta)
            count, used = PAIR.unpack(held) if held else (0, 0)
            held = txn.get(PERSONAS_TOTAL, db=self._meta)
            all_count, all_bytes = PAIR.unpack(held) if held else (0, 0)
            return {"journal_rows": rows, "journal_bytes": size, "personas": count, "persona_bytes": used,
                    "all_journal_bytes": self._number(txn, JOURNAL_BYTES), "all_personas": all_count,
                    "all_persona_bytes": all_bytes, "revocations": self._number(txn, REVOCATIONS)}
        return self._run(read, write=False)

    def ping(self):
        self._run(lambda txn: txn.stat(self._counters), write=False)
