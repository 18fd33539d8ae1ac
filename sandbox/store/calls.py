"""What a call asks of the store and what the store answers, shared by both backends."""
from __future__ import annotations

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


@dataclass
class Call:
    """What one call asks of the store."""
    jti: str | None                       # checked against the revocations (sandbox JWTs only)
    counters: list = field(default_factory=list)  # [(key, period in seconds)]
    amounts: list = field(default_factory=list)   # the limit of each counter
    owner: str | None = None              # whose journal gets the entry (None: not journaled)
    entry: dict | None = None             # the journal entry, as answered
    # The runtime personas' version the answer was worked out with (None: no persona was looked
    # up). The store counts nothing and raises PersonasMoved when the version has moved since:
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
