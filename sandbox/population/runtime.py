"""Personas created at run time: `POST /sandbox/personas`, served at once by every worker and host.

A persona is a case like a fixture file's (operation, params, status, payload), checked the same
way (the parameters by the operation's own validation, the payload against the response schema
of its status once its relative dates are resolved), and kept in the shared store (LMDB or
Redis) as JSON, so every gunicorn worker and every host on one Redis answers it.

Visibility: the token that created it (its identity key), or everyone when made `global` (never
on a public instance: `allow_global` off). The
caller's own persona wins over a global one, and both win over the fixture files; among
personas of one visibility with the same parameters, the newest answers.

Each serving process keeps an index of the personas, stamped with the store's personas version.
An API call is answered from the index as it is, and the store checks that version in the same
step as it counts the call (`Call.personas_version`): when another worker or host changed a
persona the caller sees (its own, or a global one) since, nothing is counted, the index is
brought up to date and the call answered again. Another token's own personas never send a call
round again, however fast that token creates them. The sandbox routes read the version first
(`current()`). The index is brought up to a version from
the store's log of changes (`persona_changes`: which personas changed since), one persona at a
time, never by re-reading them all (only when a process is further behind than the log keeps).
Expiry is checked at match time against the store's clock, so an expired persona stops
answering at once though nothing was written.

Bounded: a persona lives at most `persona_ttl` (and a token's own no longer than the token), and
the store's quotas (store.Bounds: one persona's size, each token's and everyone's count and
size) refuse what would pass them, 413 or 429 naming the quota (PersonaQuota). A process's index
holds what the store holds, so its memory is bounded by the same quotas.
A persona never changes once created, so its Case object is kept across index rebuilds and the
pipeline's rendering memo (keyed by the Case) can never serve a stale body.
"""
from __future__ import annotations

import datetime
import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from . import dates, submitted
from .submitted import InvalidPersona
from .calls import client_query, curl
from ..production.errors import ApiError
from .files import SchemaChecker
from .fixtures import Case
from .lookup import canonical_identity, case_key, identity_agrees, other_params, request_key
from ..store import QuotaExceeded, StoreUnavailable
from ..production import clock

RUNTIME = "runtime/"


# quota -> (status, setting, what it bounds), for PersonaQuota's message
QUOTAS = {
    "persona_bytes": (413, "SANDBOX_PERSONA_BYTES", "octets par persona"),
    "token_personas": (429, "SANDBOX_TOKEN_PERSONAS", "personas par jeton"),
    "token_persona_bytes": (429, "SANDBOX_TOKEN_PERSONA_BYTES", "octets de personas par jeton"),
    "personas": (429, "SANDBOX_PERSONAS", "personas pour tous les jetons"),
    "personas_bytes": (429, "SANDBOX_PERSONAS_BYTES", "octets de personas pour tous les jetons"),
}


class PersonaQuota(ApiError):
    """A persona over a quota: 413 when it is too large by itself, else 429; the message names
    the quota, its setting and the way out (delete personas, or wait for them to expire)."""

    def __init__(self, refused: QuotaExceeded):
        self.status, setting, what = QUOTAS[refused.quota]
        kind = "payload_too_large" if self.status == 413 else "quota_exceeded"
        way_out = "" if self.status == 413 else (
            " ; supprimez des personas (DELETE /sandbox/personas/<id>) ou attendez leur expiration"
            " (GET /sandbox/usage)")
        super().__init__(kind, parameter=refused.quota,
                         detail=f"Quota {refused.quota} atteint : {refused.limit} {what} au plus ({setting})"
                                f"{'' if refused.used is None else f', demandé : {refused.used}'}{way_out}")


@dataclass(eq=False)
class RuntimeCase(Case):
    persona_id: str = ""
    owner: str = ""          # identity key of the token that created it
    shared: bool = False     # `global`: visible to every token
    created_at: float = 0.0
    expires_at: float | None = None
    like: str | None = None

    @functools.cached_property
    def id(self) -> str:  # X-Sandbox-Case and the journal's `case`
        return RUNTIME + self.persona_id

    def visible_to(self, identity, now: float) -> bool:
        if self.expires_at is not None and self.expires_at <= now:
            return False
        return self.shared or (identity is not None and identity.key == self.owner)


@dataclass
class _Index:
    version: int = -1         # the store's personas version it was built from (-1: not built yet)
    cases: dict = None        # persona id -> RuntimeCase (created order)
    by_key: dict = None       # (operation id, owner or None) -> {match key: case}, the newest kept
    identities: dict = None   # (operation id, owner or None) -> [(canonical identity, case)], newest first
    buckets: dict = None      # (operation id, owner or None) -> [case], oldest first


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


class RuntimePersonas:
    def __init__(self, store, operations: dict, population, allow_global: bool = True):
        self.store = store
        self.allow_global = allow_global  # off on a public instance: no persona answers for others
        self.bounds = store.bounds
        self.operations = operations
        self.population = population
        self.checker = SchemaChecker(operations)
        self._state = _Index(cases={}, by_key={}, identities={}, buckets={})
        self._lock = threading.Lock()

    # --- the index ------------------------------------------------------------------------
    @property
    def version(self):
        """The store's personas version this process's index was built from (-1: not yet)."""
        return self._state.version

    def current(self) -> _Index:
        """The index, rebuilt first if the store's version moved (the sandbox routes)."""
        try:
            return self.refresh(self.store.personas_version())
        except StoreUnavailable:
            raise ApiError("store_unavailable") from None

    def refresh(self, version) -> _Index:
        """The index at `version` (the store's, as a count or a read just gave it)."""
        if version == self._state.version:
            return self._state
        try:
            with self._lock:  # one update per version, whichever thread sees it first
                if version != self._state.version:
                    changes = self.store.persona_changes(self._state.version) if self._state.version >= 0 else None
                    if changes is None:  # never built, or further behind than the store's log
                        self._state = self._build(self.store.personas_version(), self.store.personas())
                    else:
                        self._state = self._apply(*changes)
                return self._state
        except StoreUnavailable:
            raise ApiError("store_unavailable") from None

    def _build(self, version, texts) -> _Index:
        known = self._state.cases
        docs = sorted((json.loads(text) for text in texts), key=lambda d: (d["created_at"], d["id"]))
        docs = [d for d in docs if self._admitted(d)]
        cases = {d["id"]: known.get(d["id"]) or self._case(d) for d in docs}
        buckets = {}
        for case in cases.values():
            buckets.setdefault(self._where(case), []).append(case)
        state = _Index(version, cases, {}, {}, buckets)
        for where in buckets:
            self._index(state, where)
        return state

    def _admitted(self, doc: dict) -> bool:
        """Global personas a non-public instance on the same store made stay unseen here."""
        return self.allow_global or not doc["global"]

    def _apply(self, version, changed: dict) -> _Index:
        """The index with the personas of `changed` (id -> JSON, None: gone) replaced: a new
        _Index sharing every untouched bucket, so threads reading the old one are undisturbed."""
        old = self._state
        state = _Index(version, dict(old.cases), dict(old.by_key), dict(old.identities), dict(old.buckets))
        touched = set()
        for persona_id, text in changed.items():
            gone = state.cases.pop(persona_id, None)
            if gone is not None:
                where = self._where(gone)
                state.buckets[where] = [c for c in state.buckets.get(where, ()) if c is not gone]
                touched.add(where)
            doc = json.loads(text) if text is not None and gone is None else None
            if text is not None and (gone is not None or self._admitted(doc)):
                case = gone or self._case(doc)
                state.cases[persona_id] = case
                where = self._where(case)
                state.buckets[where] = sorted([*state.buckets.get(where, ()), case],
                                              key=lambda c: (c.created_at, c.persona_id))
                touched.add(where)
        for where in touched:
            self._index(state, where)
        return state

    @staticmethod
    def _where(case) -> tuple:
        return case.operation_id, None if case.shared else case.owner

    def _index(self, state: _Index, where: tuple):
        """by_key and identities of one bucket (one operation and visibility), from its cases."""
        bucket = state.buckets.get(where)
        if not bucket:
            for table in (state.buckets, state.by_key, state.identities):
                table.pop(where, None)
            return
        # oldest first: a newer persona with the same key replaces it
        state.by_key[where] = {case.key: case for case in bucket}
        op = self.operations.get(where[0])
        if op is not None and op.france_connect:
            state.identities[where] = [(canonical_identity(case.params), case) for case in reversed(bucket)]

    def _case(self, doc: dict) -> RuntimeCase:
        case = RuntimeCase(operation_id=doc["operation_id"], file=Path("runtime") / doc["id"],
                           description=dates.resolve(doc.get("description") or "", clock.today()),
                           params=doc["params"], status=doc["status"], payload=doc["payload"],
                           checker=self.checker, dated=dates.scan(doc["payload"])[0], persona_id=doc["id"],
                           owner=doc["owner"], shared=doc["global"], created_at=doc["created_at"],
                           expires_at=doc["expires_at"], like=doc.get("like"))
        case.key = case_key(case.operation_id, case.params)
        return case

    def match(self, operation_id: str, identity, key: frozenset):
        """The caller's persona with these params, else a global one; None when neither. From the
        index as it is: the store checks its version when it counts the call."""
        state = self._state
        if not state.by_key:
            return None
        for where in ((operation_id, identity.key), (operation_id, None)):
            case = state.by_key.get(where, {}).get(key)
            if case is not None and case.visible_to(identity, self.store.clock()):
                return case
        return None

    def match_france_connect(self, operation_id: str, identity, args):
        state = self._state
        if not state.identities:
            return None
        wanted = canonical_identity(identity.france_connect)
        others = other_params(request_key(operation_id, args, france_connect=True))
        for where in ((operation_id, identity.key), (operation_id, None)):
            for canon, case in state.identities.get(where, ()):
                if (identity_agrees(wanted, canon) and other_params(case.key) == others
                        and case.visible_to(identity, self.store.clock())):
                    return case
        return None

    # --- the sandbox routes ----------------------------------------------------------------
    def visible(self, identity) -> list:
        state, now = self.current(), self.store.clock()
        return [case for case in state.cases.values() if case.visible_to(identity, now)]

    def get(self, wanted: str, identity):
        """A runtime persona (`<id>`, `runtime/<id>`) or a fixture case (`<operation>/<file>`), as
        X-Sandbox-Case names it; None when there is none the caller may see."""
        wanted = wanted.strip()
        if RUNTIME in wanted or "/" not in wanted.strip("/"):
            case = self.current().cases.get(wanted.rsplit(RUNTIME, 1)[-1])
            return case if case is not None and case.visible_to(identity, self.store.clock()) else None
        operation, _, name = wanted.rpartition("/")
        try:
            op = submitted.operation_named(self.operations, operation, "$.like")
        except InvalidPersona:
            return None
        for case in self.population.current.ordered.get(op.operation_id, ()):
            if name in (case.file.name, case.file.stem):
                return case
        return None

    def delete(self, wanted: str, identity) -> bool:
        """Its creator may delete a persona; anyone may delete a global one (nobody else could
        once its creator's token has expired). False: no such persona for this caller."""
        if RUNTIME not in wanted and "/" in wanted.strip("/"):
            return False  # a fixture file: not removable from here
        case = self.get(wanted, identity)
        if not isinstance(case, RuntimeCase):
            return False
        try:
            return self.store.delete_persona(case.persona_id)
        finally:
            self.current()  # this process answers the deletion's effect at once

    def catalogue(self, entries: list, identity) -> list:
        """The fixture catalogue (FixtureSet.catalogue) with the runtime personas the caller sees."""
        by_operation = {entry["operation_id"]: entry for entry in entries}
        for case in self.visible(identity):
            entry = by_operation.get(case.operation_id)
            if entry is None:
                op = self.operations[case.operation_id]
                entry = by_operation[case.operation_id] = {"operation_id": case.operation_id, "method": op.method,
                                                           "path": op.path, "cases": []}
                entries.append(entry)
            entry["cases"].append({"file": case.id, "description": case.description, "params": case.params,
                                   "status": case.status, "runtime": True, "id": case.persona_id,
                                   "global": case.shared, "expires_at": iso(case.expires_at)})
        entries.sort(key=lambda e: e["operation_id"])
        return entries

    def view(self, case, base_url: str) -> dict:
        """What POST and GET /sandbox/personas/<id> answer (a fixture case too, for `like` and cloning)."""
        op = self.operations[case.operation_id]
        plain = json.loads(json.dumps({"params": case.params, "payload": case.payload}, default=str))  # YAML dates
        out = {"case": case.id, "runtime": isinstance(case, RuntimeCase), "operation": case.operation_id,
               "method": op.method, "path": op.path, "description": case.description, **plain,
               "status": case.status}
        if isinstance(case, RuntimeCase):
            out = {"id": case.persona_id, **out, "global": case.shared, "like": case.like,
                   "created_at": iso(case.created_at), "expires_at": iso(case.expires_at)}
        out["curl"] = curl(base_url.rstrip("/"), op, op.path, client_query(op, case.params))
        return out

    # --- creation --------------------------------------------------------------------------
    def create(self, body, identity) -> RuntimeCase:
        """`body` checked (submitted.py), then kept in the store within its quotas."""
        doc = submitted.document(body, identity, self)
        text = json.dumps(doc, ensure_ascii=False, default=str)
        try:
            self.store.put_persona(doc["id"], text, doc["expires_at"], identity.key, doc["global"], identity.expires_at)
        except QuotaExceeded as refused:
            raise PersonaQuota(refused) from None
        return self.current().cases.get(doc["id"]) or self._case(json.loads(text))
