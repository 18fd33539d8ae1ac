"""The request journal: what each token's calls were, so a CI pipeline can assert on them."""
from __future__ import annotations

import datetime
import re
import time


_second = (None, "")  # (epoch second, its ISO text): every call of that second reuses it


def now_iso() -> str:
    """UTC, milliseconds, `Z`: 2026-11-28T15:17:57.123Z."""
    global _second
    now = time.time()
    second = int(now)
    if _second[0] != second:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


def _parse_since(text):
    # An unencoded `+01:00` in a query string arrives as ` 01:00`: put the sign back.
    text = re.sub(r" (\d{2}:?\d{2})$", r"+\1", text.strip())
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


class Journal:
    """Each token's calls, newest first. Every row has an `id` that grows with each call the
    store counts (whatever the worker or host): `after=<id>` lists the calls made after that
    one, a cursor that two calls of one clock tick cannot share, where `since=<time>` can."""

    def __init__(self, store):
        self.store = store

    @staticmethod
    def entry(request, status, case=None, near_miss=None, fault=None) -> dict:
        """What the journal keeps of one call (the API pipeline writes it with the call's counts)."""
        query = {k: v if len(v) > 1 else v[0] for k, v in request.args.lists() if k != "token"}
        entry = {"method": request.method, "path": request.path, "query": query, "status": status,
                 "at": now_iso(), "case": case.id if case else None}
        if near_miss:
            entry["near_miss"] = near_miss
        if fault:
            entry["fault"] = fault
        return entry

    def entries(self, identity, path=None, since=None, after=None) -> list:
        entries = self.store.journal(identity.key)
        if path:
            entries = [e for e in entries if e["path"] == path or e["path"].startswith(path.rstrip("/") + "/")]
        if since:
            moment = _parse_since(since)
            if moment is None:
                raise ValueError("since must be an ISO 8601 date-time")
            entries = [e for e in entries if _parse_since(e["at"]) >= moment]
        if after is not None:
            if not after.isdigit():
                raise ValueError("after must be the id of a journal row (a whole number)")
            entries = [e for e in entries if e["id"] > int(after)]
        return entries

    def forget(self, identity):
        self.store.forget(identity.key)
