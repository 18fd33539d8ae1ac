"""Shared state: rate-limit counters, revoked tokens, the request journal.

Two backends with one interface, each doing an API call's whole store work in one step:
- embedded (default): an LMDB environment, a memory-mapped transactional key-value store that
  every gunicorn worker of the instance opens; one write transaction per call;
- Redis: the same state shared by every process and host; one round trip per call.

`count(call)` checks the revocation, counts the call in each of its windows and journals it
with its final status (a revoked token or a call over its limit is journaled with the 401 or
429 it gets).

Bounded by design (calls.Bounds, from the settings): a journal row is capped in size (long
values cut, the row marked `"truncated": true`); each token's journal and all of them together
have a byte bound beyond which the OLDEST rows are dropped, in the same step as the call (never a
503 for capacity); journals, revocations and personas expire with their token; personas have
count and size quotas (QuotaExceeded). The work is amortized: every row or persona is removed
once, by the call that needs the room or finds it expired, and no step scans a table. The
LMDB map is sized from the bounds with margin, so it never fills. A store that cannot answer raises StoreUnavailable, which the routes answer 503:
the sandbox never serves a call it could not count (no "fail open").

May import: settings only. The store keeps rows and counters; it knows no route, rule or person.
"""
from __future__ import annotations

from .calls import Bounds, Call, Health, Hit, PersonasMoved, QuotaExceeded, StoreUnavailable, refused_entry  # noqa: F401 - the store's interface


def open_store(settings):
    from ..settings import ConfigError
    bounds = settings.bounds()
    wrong = bounds.problems()
    if wrong:
        raise ConfigError("; ".join(wrong))
    if settings.redis_url:
        from .redis_store import RedisStore
        return RedisStore(settings.redis_url, bounds)
    from .lmdb_store import LmdbStore
    try:
        return LmdbStore(settings.store_dir, bounds)
    except (OSError, StoreUnavailable) as exc:
        raise ConfigError(f"cannot open the sandbox store in {settings.store_dir}: {exc}") from None
