"""20 requests/second/token, 1,000/minute/IP, and RateLimit-* headers.

Fixed windows aligned on the epoch, as production's: the second 1700000000 is one window,
whatever the host. Counted in the shared store (one atomic increment per window), so every
worker and every host sees one count and the limit is exact, not "about 20 per worker".
`limits` only parses the rate strings. The store also reports the revocation state in the
same step, and the clock it counted on, so Reset and Retry-After agree with the count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from limits import parse

from .errors import ApiError
from .store import Call
from .settings import ConfigError

OFF = ("off", "none", "0")


def parse_rate(text: str | None) -> tuple[int, int] | None:
    """'20/second' -> (20, 1); 'off' -> None (no limit)."""
    if not text or text.strip().lower() in OFF:
        return None
    try:
        item = parse(text)
    except ValueError:
        raise ConfigError(f"not a rate limit: {text!r} (expected e.g. 20/second, 1000/minute or off)") from None
    if item.amount < 1:
        raise ConfigError(f"not a rate limit: {text!r} (the amount must be at least 1; use off to disable)")
    return item.amount, int(item.get_expiry())


def retry_after(hit) -> int:
    """Whole seconds until the window of `hit` ends; at least 1, as clients sleep on it."""
    return max(1, math.ceil(hit.reset - hit.now))


@dataclass
class Decision:
    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset)}


class RateLimiter:
    """The per-token and per-address limits of API calls, and the sandbox routes' own limit.

    The per-token count is keyed by the token (its jti), never by the address: two tokens
    behind one NAT each get their 20/second. The per-address ceiling is separate.
    """

    def __init__(self, store, per_token: str, per_ip: str, sandbox: str):
        self.store = store
        self.per_token = parse_rate(per_token)
        self.per_ip = parse_rate(per_ip)
        self.sandbox = parse_rate(sandbox)

    def call(self, identity, ip: str, owner=None, entry=None) -> Call:
        """What one API call of `identity` from `ip` asks of the store."""
        call = Call(identity.key if identity.kind == "jwt" else None, owner=owner, entry=entry)
        for key, rate in ((f"t:{identity.key}", self.per_token), (f"ip:{ip}", self.per_ip)):
            if rate:
                call.counters.append((key, rate[1]))
                call.amounts.append(rate[0])
        return call

    @staticmethod
    def judge(call: Call, revoked: bool, hits) -> Decision | None:
        """The store's answer -> the call's RateLimit state; ApiError when revoked or over a limit."""
        if revoked:
            raise ApiError("revoked_token")
        decision = None
        for amount, hit in zip(call.amounts, hits):
            if hit.count > amount:
                headers = Decision(amount, 0, hit.reset).headers() | {"Retry-After": str(retry_after(hit))}
                raise ApiError("rate_limited", headers=headers)
            if decision is None:  # the per-token window is the one clients pace themselves on
                decision = Decision(amount, amount - hit.count, hit.reset)
        return decision

    def admit_sandbox(self, ip: str):
        """The generous limit of /sandbox/* and /docs, per client address."""
        if not self.sandbox:
            return
        amount, period = self.sandbox
        call = Call(None, [(f"sb:{ip}", period)], [amount])
        self.judge(call, *self.store.count(call))
