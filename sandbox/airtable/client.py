"""Talking to Airtable: the throttled pyairtable client, its errors for people, progress bars.

pyairtable is imported only inside these functions: it costs about a second to import and only
a running sync needs it (the sandbox imports this package at start-up for start_sync). The client
spaces its requests to Airtable's per-base rate and retries 429s with backoff; every call goes
through talking_to_airtable(), which turns the client's exceptions into one SyncError saying what
was being done, never the token. read_schema() lives here because push and pull both need it.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time

from .common import SetupError, SyncError, scrub

DEFAULT_ENDPOINT = "https://api.airtable.com"
RATE = 5.0          # Airtable allows 5 requests per second per base
RETRIES = 6         # a 429 from Airtable asks for a 30 s pause: 0+2+4+8+16+30 s of backoff covers it
BACKOFF = 1.0
PAGE_SIZE = 100     # Airtable's largest page

_CLIENT = None


def _client_class():
    """pyairtable's Api, throttled to the per-base rate before every request."""
    global _CLIENT
    if _CLIENT is None:
        from pyairtable import Api

        class ThrottledApi(Api):
            def __init__(self, token, *, rate, **kwargs):
                super().__init__(token, **kwargs)
                self._gap, self._next, self._lock = 1.0 / rate, 0.0, threading.Lock()

            def request(self, *args, **kwargs):
                with self._lock:
                    now = time.monotonic()
                    if self._next > now:
                        time.sleep(self._next - now)
                    self._next = max(now, self._next) + self._gap
                return super().request(*args, **kwargs)

            def __repr__(self):
                return "<ThrottledApi>"  # never the token
        _CLIENT = ThrottledApi
    return _CLIENT


def connect(env=os.environ):
    """An Api from AIRTABLE_TOKEN / AIRTABLE_ENDPOINT_URL (+ SANDBOX_AIRTABLE_RATE, _BACKOFF)."""
    from pyairtable import retry_strategy
    token = env.get("AIRTABLE_TOKEN")
    if not token:
        raise SetupError("AIRTABLE_TOKEN is not set: create a personal access token with the "
                        "data.records and schema.bases scopes and export it")
    try:
        rate = float(env.get("SANDBOX_AIRTABLE_RATE") or RATE)
        backoff = float(env.get("SANDBOX_AIRTABLE_BACKOFF") or BACKOFF)
    except ValueError:
        raise SetupError("SANDBOX_AIRTABLE_RATE and SANDBOX_AIRTABLE_BACKOFF must be numbers") from None
    retry = retry_strategy(total=RETRIES, backoff_factor=backoff, backoff_max=30)
    return _client_class()(token, rate=rate, retry_strategy=retry, timeout=(10, 60),
                           endpoint_url=(env.get("AIRTABLE_ENDPOINT_URL") or DEFAULT_ENDPOINT).rstrip("/"))


def describe(exc: Exception) -> str:
    """What went wrong talking to Airtable, for a person (and without the token)."""
    import requests
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        try:
            error = exc.response.json().get("error")
        except ValueError:
            error = None
        kind, message = (error.get("type"), error.get("message")) if isinstance(error, dict) else (error, "")
        text = f"Airtable answered {status} {kind or ''}: {message or exc.response.reason}"
        if status == 401:
            text += " (check AIRTABLE_TOKEN)"
        elif status in (403, 404):
            text += " (check the base id and the token's access to it)"
        return scrub(" ".join(text.split()))
    if isinstance(exc, requests.exceptions.RetryError):
        return (f"Airtable kept answering 429 Too Many Requests after {RETRIES} retries with backoff; "
                "try again later")
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                        requests.Timeout)):
        return f"the connection to Airtable was lost ({type(exc).__name__})"
    return scrub(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def talking_to_airtable(doing: str):
    """Turn the client's exceptions into one SyncError saying what was being done."""
    import requests
    try:
        yield
    except requests.RequestException as exc:
        raise SyncError(f"{doing}: {describe(exc)}") from None


class _NoProgress:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n, current_item=None):
        pass


def read_schema(base) -> dict:
    """{table name: {"id", "fields": [field names in column order]}} from the meta API.

    Read as plain JSON: pyairtable's schema models (and Base.create_table, which re-reads and
    re-validates the whole base after each table) cost about a second of CPU per read on a base
    of this size, which a one-second sync cannot afford."""
    with talking_to_airtable("reading the base schema"):
        data = base.api.get(base.urls.tables)
    return {t["name"]: {"id": t["id"], "fields": [f["name"] for f in t.get("fields", [])]}
            for t in data.get("tables", [])}
