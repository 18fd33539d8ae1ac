"""What every part of the Airtable sync shares: its two errors, token scrubbing, strict equality.

Kept apart so that cells, files, client, push, pull and sync can all raise the same SyncError and
compare documents the same way without importing one another (and without a cycle through the
package's __init__). Nothing here touches Airtable or the disk.
"""
from __future__ import annotations

import os


class SyncError(Exception):
    """Something a person must fix; the message says what and where, never the token."""


class SetupError(SyncError):
    """The sync cannot even start: no token, bad settings."""


def scrub(text: str, token: str | None = None) -> str:
    """The message with the Airtable token masked, wherever it came from."""
    token = token or os.environ.get("AIRTABLE_TOKEN")
    # a real token is long; masking a 3-letter test value would garble every message
    return text.replace(token, "[AIRTABLE_TOKEN]") if token and len(token) >= 8 else text


def same(a, b) -> bool:
    """Deep equality that tells 1 from 1.0 from True and '1' from 1: types must survive."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    return a == b
