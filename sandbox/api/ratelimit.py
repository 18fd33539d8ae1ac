"""Production's limits per token (sandbox/production/data/rate_limits.yml), 1,000/minute/IP, providers'
own limits, and RateLimit-* headers.

Fixed windows aligned on the epoch, as production's: the second 1700000000 is one window,
whatever the host. Counted in the shared store (one atomic increment per window), so every
worker and every host sees one count and the limit is exact, not "about 20 per worker".
The store also reports the revocation state in the
same step, and the clock it counted on, so Reset and Retry-After agree with the count.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
from pathlib import Path

import yaml
from dataclasses import dataclass

from ..production.errors import ApiError
from ..store import Call
from ..settings import ConfigError

OFF = ("off", "none", "0")
TOKEN_KEY = "t"  # counters of production's per-token throttles: "tv2:<key>", "tv3:<key>"
LIMITS = Path(__file__).resolve().parent.parent / "production" / "data" / "rate_limits.yml"


# The `limits` package parses these strings too, but importing it costs a tenth of a start-up
# (it loads its async storages); the grammar is one line.
RATE = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(\d*)\s*(second|minute|hour|day)s?\s*", re.IGNORECASE)
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate(text: str | None) -> tuple[int, int] | None:
    """'20/second' -> (20, 1), '100 per 2 minutes' -> (100, 120); 'off' -> None (no limit)."""
    if not text or text.strip().lower() in OFF:
        return None
    found = RATE.fullmatch(text)
    if not found:
        raise ConfigError(f"not a rate limit: {text!r} (expected e.g. 20/second, 1000/minute or off)")
    amount, multiple, unit = int(found[1]), int(found[2] or 1), found[3].lower()
    if amount < 1 or multiple < 1:
        raise ConfigError(f"not a rate limit: {text!r} (the amount must be at least 1; use off to disable)")
    return amount, multiple * UNIT_SECONDS[unit]


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


def load_limits(path: Path = LIMITS) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


class RateLimiter:
    """The per-token and per-address limits of API calls, providers' own limits, and the
    sandbox routes' own limit.

    The per-token count is keyed by the token (its jti), never by the address: two tokens
    behind one NAT each get their own. v2 and v3+ count apart, as production's two throttles
    do. The per-address ceiling is separate.
    """

    def __init__(self, store, settings):
        limits = load_limits()
        profiles = limits["profiles"]
        if settings.rate_limit_profile not in profiles:
            raise ConfigError(f"unknown rate-limit profile {settings.rate_limit_profile!r} "
                              f"(known: {', '.join(sorted(profiles))})")
        profile = profiles[settings.rate_limit_profile]
        self.store = store
        self.counted_on = limits["counted_on"]  # version -> "token" or the header a throttle keys on
        # --rate-limit, when given, replaces the profile's limit on every version
        self.per_token = {version: parse_rate(settings.rate_limit or rate) for version, rate in profile.items()}
        self.per_ip = parse_rate(settings.ip_rate_limit)
        self.sandbox = parse_rate(settings.sandbox_rate_limit)
        self.providers = [(rule["operations_containing"], parse_rate(rule["rate"]))
                          for rule in limits.get("provider_limits") or []] if settings.provider_limits else []

    def call(self, identity, op, ip: str, owner=None, entry=None, headers=None) -> Call:
        """What one API call of `identity` from `ip` asks of the store; `headers`: the request's,
        for a throttle keyed on a header (v2: X-Api-Key, rate_limits.yml `counted_on`)."""
        call = Call(identity.key if identity.kind == "jwt" else None, owner=owner, entry=entry,
                    expires_at=identity.expires_at)  # its journal goes when the token expires
        version = "v3" if op.v3 else "v2"
        who = self._counted_as(version, identity, headers)
        counters = [(f"{TOKEN_KEY}{version}:{who}" if who else None, self.per_token[version]), (f"ip:{ip}", self.per_ip)]
        for key, rate in counters:
            if key and rate:
                call.counters.append((key, rate[1]))
                call.amounts.append(rate[0])
        return call

    def _counted_as(self, version: str, identity, headers) -> str | None:
        """The key production's throttle counts the call under, or None: not throttled."""
        source = self.counted_on[version]
        if source == "token":
            return identity.key
        value = headers.get(source) if headers is not None else None
        if value is None or not value.strip():  # Ruby's blank?
            return None
        return hashlib.sha256(value.encode()).hexdigest()[:32]

    @functools.lru_cache(maxsize=None)  # asked on every call; one answer per operation
    def provider_limit(self, operation_id: str) -> tuple[int, int] | None:
        """(amount, period) of the provider's own limit on the operation, or None."""
        return next((rate for fragment, rate in self.providers if fragment in operation_id), None)

    def provider_refuses(self, op, person: str) -> bool:
        """Count the call against its provider's own limit for `person`; True when beyond it."""
        amount, period = self.provider_limit(op.operation_id)
        digest = hashlib.sha256(person.encode()).hexdigest()[:24]
        _, (hit,) = self.store.count(Call(None, [(f"p:{op.operation_id}:{digest}", period)], [amount]))
        return hit.count > amount

    @staticmethod
    def judge(call: Call, revoked: bool, hits) -> Decision | None:
        """The store's answer -> the call's RateLimit state; ApiError when revoked or over a limit."""
        if revoked:
            raise ApiError("revoked_token")
        decision = None
        for (key, _), amount, hit in zip(call.counters, call.amounts, hits):
            if hit.count > amount:
                headers = Decision(amount, 0, hit.reset).headers() | {"Retry-After": str(retry_after(hit))}
                raise ApiError("rate_limited", headers=headers)
            if key.startswith(TOKEN_KEY):  # production's headers come from its throttle only
                decision = Decision(amount, amount - hit.count, hit.reset)
        return decision

    def admit_sandbox(self, ip: str):
        """The generous limit of /sandbox/* and /docs, per client address."""
        if not self.sandbox:
            return
        amount, period = self.sandbox
        call = Call(None, [(f"sb:{ip}", period)], [amount])
        self.judge(call, *self.store.count(call))
