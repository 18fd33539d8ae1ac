"""What a call asks of the store and what the store answers, shared by both backends."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

logger = logging.getLogger("sandbox.store")


class StoreUnavailable(Exception):
    """The shared store cannot be reached: the request is answered 503, never unlimited."""


class Hit(NamedTuple):
    """One counted call in one fixed window."""
    count: int    # calls in this window, this one included
    reset: int    # epoch second at which the window ends (RateLimit-Reset)
    now: float    # the counting clock at that moment, for Retry-After


class PersonasMoved(Exception):
    """The runtime personas changed since the call's answer was worked out: nothing was counted."""

    def __init__(self, version: int):
        super().__init__(version)
        self.version = version


@dataclass(frozen=True)
class Bounds:
    """What the store lets callers grow (Settings: SANDBOX_JOURNAL_*, SANDBOX_*PERSONA*). Every
    resource an anonymous caller can grow has one: the journal drops its oldest rows, the
    personas refuse (QuotaExceeded), and both, like revocations, expire with their token."""
    journal_rows: int = 1000            # rows of one token's journal
    row_bytes: int = 2048               # one row (longer values cut: cap_entry)
    token_bytes: int = 1 << 20          # one token's journal
    journal_bytes: int = 256 << 20      # every journal together
    revocations: int = 100_000
    persona_bytes: int = 256 << 10      # one persona
    token_personas: int = 50
    token_persona_bytes: int = 2 << 20
    personas: int = 1000
    personas_bytes: int = 32 << 20
    persona_ttl: int = 7 * 86400

    # What one row or revocation costs beyond its own bytes in the embedded store (its key, its
    # entry in the eviction order, the B-tree's node headers); counted in the journal's bytes.
    ROW_OVERHEAD = 96
    REVOCATION_BYTES = 160

    def problems(self) -> list:
        """What makes these bounds unusable (a row must hold a call's short values)."""
        wrong = [f"{name} must be at least 1" for name, value in vars(self).items() if value < 1]
        if self.row_bytes < 256:
            wrong.append("SANDBOX_JOURNAL_ROW_BYTES must be at least 256 bytes")
        return wrong

    def map_size(self) -> int:
        """The LMDB map the bounds need, with margin: B-tree pages may be half empty and a value
        past half a page takes overflow pages of its own, so four times what is counted, plus
        room for the rate-limit counters (two windows of callers) and the free-page lists."""
        counted = self.journal_bytes + self.personas_bytes + 2 * self.personas * 64 + \
            self.revocations * self.REVOCATION_BYTES
        return 4 * counted + (8 << 20)


class QuotaExceeded(Exception):
    """A persona the quotas refuse: `quota` names the setting, the route answers 413 (one persona
    too large) or 429 (a count or size quota reached)."""

    def __init__(self, quota: str, limit: int, used: int | None = None):
        super().__init__(quota)
        self.quota, self.limit, self.used = quota, limit, used


TRUNCATED = "…[truncated]"


def cap_entry(entry: dict, limit: int) -> tuple[dict, bytes]:
    """(entry, its JSON) within `limit` bytes: a row over it keeps the head of each long value
    (marked `…[truncated]`), then fewer query parameters, and says `"truncated": true`."""
    text = json.dumps(entry).encode()
    if len(text) <= limit:
        return entry, text
    cut = 512
    while True:
        out = {key: _shrink(value, cut) if key != "status" else value for key, value in entry.items()}
        out["truncated"] = True
        text = json.dumps(out).encode()
        if len(text) <= limit or cut <= 8:
            break
        cut //= 2
    while len(text) > limit:  # still too long: few values, but very many of them, or a tiny limit
        for key in ("query", "near_miss", "fault", "path", "case"):
            if out.get(key):
                out[key] = None if key != "query" else dict(list(out[key].items())[:len(out[key]) // 2])
                break
        else:
            out = {"status": entry.get("status"), "truncated": True}
        text = json.dumps(out).encode()
    return out, text


def _shrink(value, cut: int):
    if isinstance(value, str):
        return value if len(value) <= cut else value[:cut] + TRUNCATED
    if isinstance(value, dict):
        return {_shrink(k, cut): _shrink(v, cut) for k, v in list(value.items())[:max(1, cut // 4)]}
    if isinstance(value, list):
        return [_shrink(v, cut) for v in value[:max(1, cut // 4)]]
    return value


@dataclass
class Call:
    """What one call asks of the store."""
    jti: str | None                       # checked against the revocations (sandbox JWTs only)
    counters: list = field(default_factory=list)  # [(key, period in seconds)]
    amounts: list = field(default_factory=list)   # the limit of each counter
    owner: str | None = None              # whose journal gets the entry (None: not journaled)
    entry: dict | None = None             # the journal entry, as answered
    expires_at: float | None = None       # when the owner's token expires: its journal goes with it
    # The runtime personas' version the answer was worked out with (None: no persona was looked
    # up). The store counts nothing and raises PersonasMoved when a persona the owner sees (its
    # own, or a global one) changed after that version:
    # the pipeline learns of a persona created or deleted by another worker in the same step
    # as the count (one round trip to Redis), and answers again.
    personas_version: int | None = None

    def refused_status(self, revoked: bool, hits) -> int | None:
        """The status the store's verdict imposes: 401 revoked, 429 over a limit, else None.
        (The Redis script applies the same rule on the server.)"""
        if revoked:
            return 401
        if any(hit.count > amount for hit, amount in zip(hits, self.amounts)):
            return 429
        return None


def refused_entry(entry: dict, status: int) -> dict:
    """The journal entry of a call the store refused: its status, and no case or fault."""
    out = {k: v for k, v in entry.items() if k not in ("near_miss", "fault")}
    out["status"], out["case"] = status, None
    return out


class Health:
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
