"""The embedded store's runtime personas (sandbox.population.runtime), a part of LmdbStore.

Tables: runtime-personas: persona id -> expiry, global or not, owner + the persona's JSON;
persona-expiry: (expiry, id); persona-log: (version, id), which persona each version changed, so
that a worker updates its index from the changes instead of re-reading every persona (the log
keeps the last LOG_KEEP changes; `log-floor` in meta says how far back it is whole);
persona-owners: (expiry of the token, owner) of the `pv:<owner>` marks in meta, the last version
that changed each owner's own personas (dropped once the token has expired: it calls no more).
meta also holds each owner's and everyone's count and bytes (`p:<owner>`, `personas-total`),
checked against the quotas by the write that would pass them.
"""
from __future__ import annotations

import struct

from .calls import QuotaExceeded

# Formats both parts of the store use (lmdb_store imports them from here).
U64 = struct.Struct(">Q")
EXPIRY = struct.Struct(">d")     # big-endian: as a key prefix, sorts in time order
PAIR = struct.Struct(">QQ")      # an owner's personas, or all of them: count, bytes
INF = float("inf")
PURGE_STEP = 32     # expired rows a write removes at most: a call never pays for a whole table
PERSONAS_TOTAL = b"personas-total"

PERSONAS_VERSION = b"personas-version"
PERSONA = struct.Struct(">d?H")  # a persona's expiry, global or not, its owner's length; then the owner, the JSON
MARK = struct.Struct(">Qd")      # the last version that changed an owner's own personas, and its token's expiry
GLOBAL_MARK = b"personas-global-version"  # the last version that changed a global persona
LOG_FLOOR = b"log-floor"
LOG_KEEP = 4096     # persona changes kept; a worker further behind re-reads every persona


class PersonaTables:
    """LmdbStore's persona methods: `_run`, `_number`, `clock`, `bounds` and the tables are its own."""

    def put_persona(self, persona_id: str, text: str, expires_at: float | None, owner: str = "",
                    shared: bool = False, token_expires_at: float | None = None):
        """Keep a persona, within the quotas (QuotaExceeded names the one it would pass)."""
        data, who = text.encode(), owner.encode()
        expiry = INF if expires_at is None else float(expires_at)

        def put(txn):
            version = self._bump_personas(txn)
            self._purge_personas(txn, self.clock(), version)
            refused = self._refused(txn, who, len(data))
            if refused is not None:
                return refused
            txn.put(persona_id.encode(), PERSONA.pack(expiry, shared, len(who)) + who + data, db=self._personas)
            txn.put(EXPIRY.pack(expiry) + persona_id.encode(), b"", db=self._persona_expiry)
            self._account(txn, who, 1, len(data))
            self._log(txn, version, persona_id.encode())
            self._mark(txn, who, shared, version, token_expires_at)
        self._run(put)

    def _refused(self, txn, owner: bytes, size: int) -> QuotaExceeded | None:
        bounds = self.bounds
        held, total = txn.get(b"p:" + owner, db=self._meta), txn.get(PERSONAS_TOTAL, db=self._meta)
        count, used = PAIR.unpack(held) if held else (0, 0)
        all_count, all_used = PAIR.unpack(total) if total else (0, 0)
        for quota, limit, value in (("persona_bytes", bounds.persona_bytes, size),
                                    ("token_personas", bounds.token_personas, count + 1),
                                    ("token_persona_bytes", bounds.token_persona_bytes, used + size),
                                    ("personas", bounds.personas, all_count + 1),
                                    ("personas_bytes", bounds.personas_bytes, all_used + size)):
            if value > limit:
                return QuotaExceeded(quota, limit, value)
        return None

    def _account(self, txn, owner: bytes, count: int, size: int):
        for key in (b"p:" + owner, PERSONAS_TOTAL):
            held = txn.get(key, db=self._meta)
            was_count, was_size = PAIR.unpack(held) if held else (0, 0)
            if was_count + count > 0:
                txn.put(key, PAIR.pack(was_count + count, max(0, was_size + size)), db=self._meta)
            else:
                txn.delete(key, db=self._meta)

    def _remove_persona(self, txn, persona_id: bytes, version: int) -> bool:
        held = txn.get(persona_id, db=self._personas)
        if held is None:
            return False
        expiry, shared, length = PERSONA.unpack_from(held)
        owner = held[PERSONA.size:PERSONA.size + length]
        txn.delete(persona_id, db=self._personas)
        txn.delete(EXPIRY.pack(expiry) + persona_id, db=self._persona_expiry)
        self._account(txn, owner, -1, -(len(held) - PERSONA.size - length))
        self._log(txn, version, persona_id)
        self._mark(txn, owner, shared, version, create=False)
        return True

    def _log(self, txn, version: int, persona_id: bytes):
        txn.put(PERSONAS_VERSION, U64.pack(version), db=self._meta)
        txn.put(U64.pack(version) + persona_id, b"", db=self._persona_log)
        cursor = txn.cursor(db=self._persona_log)
        while txn.stat(self._persona_log)["entries"] > LOG_KEEP and cursor.first():
            txn.put(LOG_FLOOR, cursor.key()[:U64.size], db=self._meta)
            cursor.delete()

    @staticmethod
    def _text(value: bytes, now: float) -> str | None:
        expiry, _, length = PERSONA.unpack_from(value)
        return value[PERSONA.size + length:].decode() if expiry > now else None

    def personas(self) -> list:
        """The JSON of every persona not expired, in no particular order."""
        def read(txn):
            now = self.clock()
            return [text for _, value in txn.cursor(db=self._personas)
                    if (text := self._text(value, now)) is not None]
        return self._run(read, write=False)

    def persona_changes(self, since: int):
        """(version, {id: JSON, or None when gone}) of what changed after version `since`; None
        when the log no longer reaches back that far (then read every persona)."""
        def read(txn):
            if since < self._number(txn, LOG_FLOOR):
                return None
            now, changed = self.clock(), {}
            cursor = txn.cursor(db=self._persona_log)
            found = cursor.set_range(U64.pack(since + 1))
            while found:
                persona_id = cursor.key()[U64.size:]
                value = txn.get(persona_id, db=self._personas)
                changed[persona_id.decode()] = None if value is None else self._text(value, now)
                found = cursor.next()
            return self._personas_version(txn), changed
        return self._run(read, write=False)

    def delete_persona(self, persona_id: str) -> bool:
        def delete(txn):
            version = self._bump_personas(txn)
            self._purge_personas(txn, self.clock(), version)
            return self._remove_persona(txn, persona_id.encode(), version)
        return self._run(delete)

    def personas_version(self) -> int:
        """Bumped by every change: a worker updates its index of the personas when it moves."""
        return self._run(self._personas_version, write=False)

    def _moved(self, txn, owner: str | None, version: int) -> bool:
        """Whether a persona the caller sees changed after `version`: its own or a global one.
        Another token's own personas never make a caller's answer again."""
        if owner is None:
            return self._personas_version(txn) != version
        held = txn.get(b"pv:" + owner.encode(), db=self._meta)
        own = MARK.unpack(held)[0] if held else 0
        return max(own, self._number(txn, GLOBAL_MARK)) > version

    def _mark(self, txn, owner: bytes, shared: bool, version: int, token_expires_at: float | None = None,
              create: bool = True):
        if shared:
            txn.put(GLOBAL_MARK, U64.pack(version), db=self._meta)
            return
        held = txn.get(b"pv:" + owner, db=self._meta)
        if held is None and not create:  # its token expired: it calls no more
            return
        expiry = MARK.unpack(held)[1] if held else (INF if token_expires_at is None else float(token_expires_at))
        if held is None and expiry != INF:
            txn.put(EXPIRY.pack(expiry) + owner, b"", db=self._persona_owners)
        txn.put(b"pv:" + owner, MARK.pack(version, expiry), db=self._meta)

    def _personas_version(self, txn) -> int:
        return self._number(txn, PERSONAS_VERSION)

    def _bump_personas(self, txn) -> int:
        """The version this write's changes get; stored by the first change (_log): a write that
        changes nothing (a refused persona) moves no worker's index."""
        return self._number(txn, PERSONAS_VERSION) + 1

    def _purge_personas(self, txn, now: float, version: int):
        cursor = txn.cursor(db=self._persona_expiry)
        for _ in range(PURGE_STEP):
            if not cursor.first() or EXPIRY.unpack_from(cursor.key())[0] > now:
                break
            persona_id = cursor.key()[EXPIRY.size:]
            if not self._remove_persona(txn, persona_id, version):
                cursor.delete()
        owners = txn.cursor(db=self._persona_owners)  # marks of expired tokens: no call reads them again
        for _ in range(PURGE_STEP):
            if not owners.first() or EXPIRY.unpack_from(owners.key())[0] > now:
                break
            txn.delete(b"pv:" + owners.key()[EXPIRY.size:], db=self._meta)
            owners.delete()

