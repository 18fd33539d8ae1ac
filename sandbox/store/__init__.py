"""Shared state: rate-limit counters, revoked tokens, the request journal.

Two backends with one interface. The embedded default lives in the data folder: a SQLite
file (journal, revoked tokens) and a memory-mapped file beside it (counters, see shared.py);
no service to run, and every gunicorn worker of the instance shares both, so counts stay
exact across processes. Redis mode shares the same state across processes and hosts.

An API call goes through `settle(jti, counters, owner, decide)`: revocation check and counts,
then `decide(revoked, hits)` gives the call's journal entry with its final status.
A store that cannot answer raises StoreUnavailable, which the routes answer 503: the sandbox
never serves a call it could not count (no "fail open").
"""
from __future__ import annotations

import sqlite3

from ..settings import ConfigError
from .base import Hit, StoreUnavailable
from .sqlite import SqliteStore

__all__ = ["Hit", "StoreUnavailable", "SqliteStore", "open_store"]


def open_store(settings):
    if settings.redis_url:
        from .redis_store import RedisStore
        return RedisStore(settings.redis_url, settings.journal_size)
    try:
        return SqliteStore(settings.data_dir / "store.sqlite3", settings.journal_size)
    except (sqlite3.Error, OSError) as exc:
        raise ConfigError(f"cannot open the sandbox store in {settings.data_dir}: {exc}") from None
