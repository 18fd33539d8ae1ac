"""20 requests/second/token, 1,000/minute/IP, and RateLimit-* headers.

Fixed windows aligned on the epoch (`limits`' fixed-window strategy), counted in the shared
store so that every worker and every host sees one count. `limits` parses the rate strings;
the counting is one atomic increment per window in the store, which also reports the
revocation state in the same round trip.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import parse

from .errors import ApiError
from .settings import ConfigError


def _rate(text: str):
    if not text or text.lower() in ("off", "none", "0"):
        return None
    try:
        item = parse(text)
    except ValueError:
        raise ConfigError(f"not a rate limit: {text!r} (expected e.g. 20/second)") from None
    return item.amount, item.get_expiry()


@dataclass
class Decision:
    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset)}


class RateLimiter:
    def __init__(self, store, per_token: str, per_ip: str, sandbox: str):
        self.store = store
        self.per_token = _rate(per_token)
        self.per_ip = _rate(per_ip)
        self.sandbox = _rate(sandbox)

    def admit(self, identity, ip: str) -> Decision | None:
        """Count one API call; ApiError when the token is revoked or a limit is exceeded."""
        counters = []
        if self.per_token:
            counters.append((f"t:{identity.key}", self.per_token[1]))
        if self.per_ip:
            counters.append((f"ip:{ip}", self.per_ip[1]))
        revoked, counts = self.store.admit(identity.key if identity.kind == "jwt" else None, counters)
        if revoked:
            raise ApiError("revoked_token")
        now = time.time()
        decision = None
        limits = [r for r in (self.per_token, self.per_ip) if r]
        for (amount, period), count in zip(limits, counts):
            reset = (int(now // period) + 1) * period
            if count > amount:
                retry = max(1, math.ceil(reset - now))
                headers = Decision(amount, 0, reset).headers() | {"Retry-After": str(retry)}
                raise ApiError("rate_limited", headers=headers)
            if decision is None:  # the per-token window is the one clients pace themselves on
                decision = Decision(amount, amount - count, reset)
        return decision

    def admit_sandbox(self, ip: str):
        """The generous limit of /sandbox/* and /docs, per client address."""
        if not self.sandbox:
            return
        amount, period = self.sandbox
        _, (count,) = self.store.admit(None, [(f"sb:{ip}", period)])
        if count > amount:
            reset = (int(time.time() // period) + 1) * period
            raise ApiError("rate_limited", headers={"Retry-After": str(max(1, math.ceil(reset - time.time())))})
